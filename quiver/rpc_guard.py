"""Applies the error table in one place: every servicer method is wrapped by `rpc_guard`.

Domain errors become their gRPC status with the error's message; anything else is logged with its
traceback and answered INTERNAL, so the server stays up and the caller gets a status, not a hang.
"""
from __future__ import annotations

import functools
import logging
from typing import Any, Awaitable, Callable, TypeVar

import grpc

from quiver.errors import QuiverError, grpc_status_for, trailing_metadata_for
from quiver.grpc_server import Undecodable

_log = logging.getLogger(__name__)

Handler = TypeVar("Handler", bound=Callable[..., Awaitable[Any]])


def rpc_guard(method: Handler) -> Handler:
    @functools.wraps(method)
    async def guarded(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        if isinstance(request, Undecodable):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
        try:
            return await method(self, request, context)
        except grpc.aio.AbortError:
            raise
        except QuiverError as error:
            await context.abort(grpc_status_for(error), str(error), trailing_metadata_for(error))
        except Exception as error:  # noqa: BLE001 - the one place unexpected errors are turned into INTERNAL
            _log.exception("%s failed", method.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, f"internal error in {method.__name__}: {type(error).__name__}: {error}")

    return guarded  # type: ignore[return-value]
