"""Child processes that never outlive the process that started them.

`quiver up` and the tests start etcd, shard servers and a router as children. If the parent is killed
outright (SIGKILL, OOM killer), nothing in it runs to stop them, so each child is started through this
module: it asks the kernel (Linux prctl PR_SET_PDEATHSIG, kept across exec) to send it SIGTERM when its
parent dies, then execs the real command, which shuts down gracefully on SIGTERM. A `preexec_fn` would
do the same in fewer steps, but it makes Python fork a process that has gRPC threads running, which gRPC
does not survive.

    python -m quiver.child_process PARENT_PID COMMAND [ARG...]
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1


def command_dying_with_this_process(argv: list[str]) -> list[str]:
    """`argv` wrapped so that the command gets SIGTERM when the calling process dies."""
    if not sys.platform.startswith("linux"):
        return list(argv)
    return [sys.executable, "-m", "quiver.child_process", str(os.getpid()), *argv]


def die_with_parent(signum: int) -> bool:
    """Asks the kernel to send this process `signum` when the thread that forked it ends (Linux); whether
    it took effect."""
    if not sys.platform.startswith("linux"):
        return False
    return ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signum) == 0


def main() -> None:
    parent, argv = int(sys.argv[1]), sys.argv[2:]
    die_with_parent(signal.SIGTERM)
    if os.getppid() != parent:
        sys.exit(1)  # the parent died before the request took effect: its children must not run on
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    main()
