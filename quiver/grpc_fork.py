"""gRPC's fork handlers, turned off in the servers before gRPC loads.

grpcio is built with fork support, so gRPC core registers pthread_atfork handlers unless
GRPC_ENABLE_FORK_SUPPORT says otherwise when it starts; a child forked while other threads call into gRPC
then runs them and crashes a third of the time (measured: SIGSEGV in 10 of 30 forks under gRPC traffic).
The shard server forks children that run one GIL-holding call and never touch gRPC
(shard.indexes.forked_call), so its entry points import this module first; a process that did not (gRPC
loaded with its handlers on) is told so by `fork_handlers_off`, and runs such calls in-process instead.
"""
from __future__ import annotations

import os

_ENV = "GRPC_ENABLE_FORK_SUPPORT"
os.environ.setdefault(_ENV, "false")  # before gRPC loads; an operator's own setting wins


def fork_handlers_off() -> bool:
    """Whether gRPC core runs no handlers around a fork in this process: the variable it reads says so, and
    it said so when gRPC loaded (a value set after that is not what gRPC read, but only this module sets it,
    at import, before the servers import gRPC)."""
    return os.environ.get(_ENV, "").strip().lower() in ("0", "false", "no", "off")
