"""A SearchMany's outcomes, both ways: each search's response, or the status a lone Search would have ended
with (code, message, trailing metadata such as a refusal marker or a retry pushback).

The shard encodes them (from `quiver.rpc_guard.status_of`, the one place errors map to status), the router
decodes them into the grpc.aio.AioRpcError a lone Search raises, so failover and hedging see no difference.
"""
from __future__ import annotations

from typing import Iterable

import grpc
from grpc.aio import Metadata

from quiver.v1 import shard_pb2

_CODES = {code.value[0]: code for code in grpc.StatusCode}


def answered(response: shard_pb2.SearchResponse) -> shard_pb2.SearchOutcome:
    return shard_pb2.SearchOutcome(response=response)


def refused(code: grpc.StatusCode, message: str, trailing: Iterable[tuple[str, str]] = ()) -> shard_pb2.SearchOutcome:
    return shard_pb2.SearchOutcome(
        code=code.value[0], message=message, trailing=[shard_pb2.MetadataEntry(key=k, value=v) for k, v in trailing]
    )


def code_of(outcome: shard_pb2.SearchOutcome) -> grpc.StatusCode:
    """OK for an answered search; a number no gRPC code has reads as UNKNOWN, as gRPC itself reads it."""
    return _CODES.get(outcome.code, grpc.StatusCode.UNKNOWN)


def error_of(outcome: shard_pb2.SearchOutcome) -> grpc.aio.AioRpcError:
    """The error a lone Search would have raised for this refused search."""
    trailing = Metadata(*((entry.key, entry.value) for entry in outcome.trailing))
    return grpc.aio.AioRpcError(code_of(outcome), Metadata(), trailing, outcome.message)
