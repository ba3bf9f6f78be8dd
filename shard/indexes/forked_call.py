"""Runs a call that holds the GIL for long in a forked child, so this process's event loop and searches keep
running meanwhile.

hnswlib's save_index writes the whole graph in one call without releasing the GIL (about 0.3 ms per 1,000
points here: a third of a second for a million), and a snapshot runs it on a commit thread, which under
`--worker-policy idle` only gets the CPU other work leaves: the shard's event loop waited for the GIL for as
long as the save took (239-250 ms during a snapshot of a 300,000-point 50-d partition under searches; 29-31
ms with the child). As Redis's BGSAVE does, the child is a copy-on-write image of this process holding only
the forking thread: it runs the call and leaves by os._exit (no finalisers, no atexit handlers; gRPC's fork
support is off, and the child touches none of its state), while the forking thread waits for it without the
GIL. The parent pays for the fork itself: copying its page tables, which grows with its resident memory.
"""
from __future__ import annotations

import errno
import logging
import os
import signal
import sys
import time
import traceback
import warnings
from collections.abc import Callable

from quiver.child_process import die_with_parent
from quiver.grpc_fork import fork_handlers_off

_log = logging.getLogger(__name__)
_POLL_S = 0.002  # how often the parent looks at the child; each look holds the GIL for microseconds


def call_in_child(fn: Callable[[], None], what: str, timeout_s: float) -> bool:
    """Runs `fn` in a forked child and waits for it to finish. Returns False, having run nothing or having
    seen the child crash, where no child can be made or trusted (no fork on this platform, gRPC's fork
    handlers on in this process, no memory for one, a child killed by a signal): the caller then runs `fn`
    itself. Raises OSError when `fn` raised in the child, or the child did not finish within `timeout_s` (it
    is killed then)."""
    if not hasattr(os, "fork") or not fork_handlers_off():
        return False
    parent = os.getpid()
    try:
        with warnings.catch_warnings():
            # Python 3.12+ warns about forking a threaded process; the child runs no other thread's code.
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
    except OSError as error:  # ENOMEM or EAGAIN: no room for a child now
        _log.warning("%s: cannot fork a child to run it (%s); running it in this process", what, error)
        return False
    if pid == 0:  # the child: only this thread exists here
        code = 1
        try:
            # A server killed outright must not leave its child behind, holding a copy of its listening socket
            # (which a restarted server shares by SO_REUSEPORT) and writing into its partition's directory.
            die_with_parent(signal.SIGKILL)
            if os.getppid() != parent:
                os._exit(1)  # the parent died before the request took effect
            fn()
            code = 0
        except BaseException:  # noqa: BLE001 - reported to the parent by the exit code; the trace goes to the log
            traceback.print_exc(file=sys.stderr)
        finally:
            os._exit(code)
    return _wait(pid, what, timeout_s)


def _wait(pid: int, what: str, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise OSError(errno.ETIMEDOUT, f"{what} did not finish within {timeout_s:.0f} s in its child process (killed)")
        time.sleep(_POLL_S)
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        _log.warning("%s: its child process was killed by signal %d; running it in this process", what, -code)
        return False
    if code != 0:
        raise OSError(errno.EIO, f"{what} failed in its child process, which exited with {code} (its trace is in this server's log)")
    return True
