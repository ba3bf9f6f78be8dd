"""Applies the error table in one place: every servicer method is wrapped by `rpc_guard`.

Domain errors become their gRPC status with the error's message; anything else is logged with its
traceback and answered INTERNAL, so the server stays up and the caller gets a status, not a hang. Every
RPC is counted and timed here too (quiver.metrics), by the servicer's `SERVICE` name, method and code,
and logged with its request id (quiver.logs): at DEBUG, or at WARNING when slower than the servicer's
`slow_rpc_s`.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import time
from typing import Any, Awaitable, Callable, TypeVar

import grpc

from quiver.errors import QuiverError, grpc_status_for, trailing_metadata_for
from quiver.grpc_server import Undecodable
from quiver.logs import REQUEST_ID, REQUEST_ID_KEY, incoming_request_id
from quiver.metrics import observe_rpc

_log = logging.getLogger(__name__)

Handler = TypeVar("Handler", bound=Callable[..., Awaitable[Any]])


def rpc_guard(method: Handler) -> Handler:
    name = method.__name__

    @functools.wraps(method)
    async def guarded(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        service = getattr(self, "SERVICE", type(self).__name__)
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        request_id = incoming_request_id(context.invocation_metadata())
        REQUEST_ID.set(request_id)  # this handler's task only: asyncio gives each RPC its own context
        try:
            # In the trailers: they go out with the status anyway, so returning the id costs no extra write.
            tagged = ((REQUEST_ID_KEY, request_id),)
            context.set_trailing_metadata(tagged)
            if isinstance(request, Undecodable):
                code = grpc.StatusCode.INVALID_ARGUMENT
                await context.abort(code, request.message, tagged)
            try:
                return await method(self, request, context)
            except grpc.aio.AbortError:
                code = _code_of(context)
                raise
            except Exception as error:  # noqa: BLE001 - domain errors and unexpected ones, by status_of
                code, details, trailing = status_of(error, name)
                await context.abort(code, details, trailing + tagged)
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED  # the caller went away (or its deadline passed)
            raise
        finally:
            seconds = time.perf_counter() - started
            observe_rpc(service, name, code.name, seconds)
            slow = seconds >= getattr(self, "slow_rpc_s", float("inf"))
            if slow or _log.isEnabledFor(logging.DEBUG):
                _log.log(logging.WARNING if slow else logging.DEBUG, "slow rpc" if slow else "rpc",
                         extra={"method": f"{service}/{name}", "code": code.name, "ms": round(seconds * 1e3, 3)})

    return guarded  # type: ignore[return-value]


def status_of(error: Exception, name: str) -> tuple[grpc.StatusCode, str, tuple[tuple[str, str], ...]]:
    """The status, details and trailing metadata a call that raised `error` ends with: a domain error's own,
    else INTERNAL (logged with its traceback). Also what one search of a SearchMany is answered with."""
    if isinstance(error, QuiverError):
        return grpc_status_for(error), str(error), trailing_metadata_for(error)
    _log.exception("%s failed", name, exc_info=error)
    return grpc.StatusCode.INTERNAL, f"internal error in {name}: {type(error).__name__}: {error}", ()


def _code_of(context: grpc.aio.ServicerContext) -> grpc.StatusCode:
    """The code a handler aborted with itself (grpc.aio keeps it on the context)."""
    code = context.code() if hasattr(context, "code") else None
    return code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN
