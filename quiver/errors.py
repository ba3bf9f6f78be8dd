"""Quiver's domain errors and the one table that maps them to gRPC status codes.

Code below the servicers raises these; `grpc_status_for` is applied in one place (the servicer guard) so
every RPC answers a person-readable message with the right code. Anything not in the table is INTERNAL
and logged with its traceback. The client raises the same classes for the codes it receives; every error
has `.code` (its grpc.StatusCode):

    QuiverError                  (any other code, e.g. INTERNAL or UNKNOWN: a bug, please report it)
    ├── InvalidArgument          INVALID_ARGUMENT     the request is wrong; fix it, do not retry
    ├── NotFound                 NOT_FOUND            no such collection (or partition)
    ├── AlreadyExists            ALREADY_EXISTS       the name is taken by a different definition
    ├── FailedPrecondition       FAILED_PRECONDITION  not now: model mismatch, collection being created
    ├── Unavailable              UNAVAILABLE          a shard or etcd is unreachable; safe to retry
    ├── Aborted                  ABORTED              a concurrent change won; retry from a fresh read
    ├── ResourceExhausted        RESOURCE_EXHAUSTED   overloaded or over a limit; retry after `retry_after_s`
    └── DeadlineExceeded         DEADLINE_EXCEEDED    the deadline passed first
"""
from __future__ import annotations

import grpc


class QuiverError(Exception):
    """Base of every error Quiver reports to a caller."""

    @property
    def code(self) -> grpc.StatusCode:
        received = getattr(self, "received_code", None)  # set by the client for a code outside the table
        return received if received is not None else grpc_status_for(self)


class InvalidArgument(QuiverError):
    """The request is malformed: wrong dimension, NaN, bad filter, k out of range, ..."""


class NotFound(QuiverError):
    """A named collection or partition does not exist."""


class PartitionMissing(NotFound):
    """The shard server holds no such partition. Marked (`REFUSAL_KEY`) because, to a router, it means its
    placement is behind etcd's (a replica moved or dropped a moment ago), not that the caller erred: it asks
    another replica, or resends once its snapshot has caught up."""

    refusal = "no-partition"


STALE_TERM_REFUSAL = "stale-term"  # marks shard.durable_partition.StaleTerm: a write from a deposed primary
# Refusals that mean a router's placement is behind etcd's (a replica moved, a primary was replaced a moment
# ago), not that the caller erred: a router answers them UNAVAILABLE, which callers retry.
STALE_PLACEMENT_REFUSALS = frozenset({PartitionMissing.refusal, STALE_TERM_REFUSAL})


class AlreadyExists(QuiverError):
    """A collection or partition with that name exists with a different definition."""


class FailedPrecondition(QuiverError):
    """The request is well-formed but the system is not in a state to serve it (e.g. model mismatch)."""


class Unavailable(QuiverError):
    """A shard or etcd could not be reached; safe to retry idempotent calls."""

    def __init__(self, message: str, *, retry_now: bool = True) -> None:
        super().__init__(message)
        # False when a retry within the same deadline cannot help (a shard already had the whole deadline
        # and did not answer): sent as a negative retry pushback, which tells gRPC's retry policy not to.
        self.retry_now = retry_now


class SealedAgainstWrites(Unavailable):
    """A partition refuses writes while its version is cut over to another (nothing applied). Marked in the
    trailing metadata (`REFUSAL_KEY`), so a router tells it from a shard that is down by a marker, not text."""

    refusal = "sealed"


class Aborted(QuiverError):
    """A concurrent change won (an etcd transaction's compare failed); retry from a fresh read."""


class ResourceExhausted(QuiverError):
    """A request exceeds a configured size limit, or a budget (queue, disk space) is used up for now."""

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        # Sent as gRPC's retry pushback (trailing metadata `grpc-retry-pushback-ms`), which a client's retry
        # policy honours; None for a request that will never fit.
        self.retry_after_s = retry_after_s


class DeadlineExceeded(QuiverError):
    """The caller's deadline passed before the work finished."""


class OutOfRange(QuiverError):
    """A position past what exists (replicated log records that do not continue the replica's log)."""


GRPC_CODES: dict[type[QuiverError], grpc.StatusCode] = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    Unavailable: grpc.StatusCode.UNAVAILABLE,
    Aborted: grpc.StatusCode.ABORTED,
    ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    OutOfRange: grpc.StatusCode.OUT_OF_RANGE,
}

ERRORS_BY_CODE: dict[grpc.StatusCode, type[QuiverError]] = {code: exc for exc, code in GRPC_CODES.items()}


RETRY_PUSHBACK_KEY = "grpc-retry-pushback-ms"


def retry_pushback_s(trailing_metadata: object) -> float | None:
    """The retry pushback in a call's trailing metadata, in seconds as sent (negative: "do not retry"); None
    when there is none or it does not parse."""
    for key, value in trailing_metadata or ():  # type: ignore[attr-defined]
        if key == RETRY_PUSHBACK_KEY:
            try:
                return int(value) / 1000
            except (TypeError, ValueError):
                return None
    return None


REFUSAL_KEY = "quiver-refusal"  # trailing metadata: why a call was refused, where callers act on the reason


def refusal_of(trailing_metadata: object) -> str:
    """The `REFUSAL_KEY` value of a call's trailing metadata ("" when there is none)."""
    for key, value in trailing_metadata or ():  # type: ignore[attr-defined]
        if key == REFUSAL_KEY:
            return str(value)
    return ""


def trailing_metadata_for(error: BaseException) -> tuple[tuple[str, str], ...]:
    refusal = getattr(error, "refusal", "")
    marked = ((REFUSAL_KEY, refusal),) if refusal else ()
    if getattr(error, "retry_now", True) is False:
        return ((RETRY_PUSHBACK_KEY, "-1"),) + marked  # gRPC A6: a negative pushback means "do not retry"
    retry_after_s = getattr(error, "retry_after_s", None)
    if retry_after_s is None:
        return marked
    return ((RETRY_PUSHBACK_KEY, str(max(0, round(retry_after_s * 1000)))),) + marked


def grpc_status_for(error: BaseException) -> grpc.StatusCode:
    for exc_type in type(error).__mro__:
        code = GRPC_CODES.get(exc_type)  # type: ignore[arg-type]
        if code is not None:
            return code
    return grpc.StatusCode.INTERNAL
