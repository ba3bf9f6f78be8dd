"""Child processes that never outlive the process that started them.

`quiver up` and the tests start etcd, shard servers and a router as children. If the parent is killed
outright (SIGKILL, OOM killer), nothing in it runs to stop them, so each child asks the kernel
(Linux prctl PR_SET_PDEATHSIG) to be sent SIGTERM when its parent dies: it then shuts down gracefully.
"""
from __future__ import annotations

import ctypes
import signal
import sys

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """A `preexec_fn` for subprocess.Popen: SIGTERM the child when its parent exits."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
