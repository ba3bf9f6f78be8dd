"""What the shard and router gRPC servers share: options, binding, health and reflection."""
from __future__ import annotations

import asyncio
import signal
from typing import Any, Callable, Iterable

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc


def server_options(max_message_bytes: int) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        # Two servers must never share a port by accident (tests bind many on one machine).
        ("grpc.so_reuseport", 0),
    ]


async def set_health(servicer: health.aio.HealthServicer, services: Iterable[str], serving: bool) -> None:
    status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
    for name in ("", *services):
        await servicer.set(name, status)


# grpcio-reflection serves only v1alpha. v1 is the same service under a new package name, with messages
# identical field for field, so v1alpha's servicer answers v1 too, registered under v1's method path.
# Tools have moved to v1 (grpcurl tries it first); older ones still ask v1alpha.
REFLECTION_V1_NAME = "grpc.reflection.v1.ServerReflection"


def add_health_and_reflection(server: grpc.aio.Server, service_name: str) -> health.aio.HealthServicer:
    """The standard health service (returned, to be set) and reflection (v1 and v1alpha) for `service_name`."""
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    names = (service_name, health.SERVICE_NAME, REFLECTION_V1_NAME, reflection.SERVICE_NAME)
    reflector = reflection.aio.ReflectionServicer(names)
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(reflector, server)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(REFLECTION_V1_NAME, {
        "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
            reflector.ServerReflectionInfo,
            request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
            response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
        ),
    }),))
    return servicer


async def until_stop_signal() -> None:
    """Returns once SIGTERM or SIGINT arrives: where a server process's orderly shutdown begins."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def bind(server: grpc.aio.Server, host: str, port: int) -> int:
    """Listens on host:port (0 = a free port) and returns the port bound."""
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"could not bind {host}:{port}")
    return bound


class Undecodable:
    """What a handler receives instead of its request when the bytes were not a valid message of its type.
    `rpc_guard` answers it INVALID_ARGUMENT; grpc's own answer to a failed parse would be INTERNAL."""

    def __init__(self, type_name: str, error: Exception) -> None:
        self.message = f"the request is not a valid {type_name} message ({type(error).__name__}: {error})"


def _tolerant_parser(cls: Any) -> Callable[[bytes], Any]:
    def parse(data: bytes) -> Any:
        try:
            return cls.FromString(data)
        except (DecodeError, RecursionError, ValueError) as error:
            return Undecodable(cls.DESCRIPTOR.full_name, error)

    return parse


def add_service(server: grpc.aio.Server, servicer: Any, service: ServiceDescriptor) -> None:
    """Like the generated add_<Service>Servicer_to_server (unary-unary methods, and client-streaming ones),
    but a request that does not parse reaches the handler as `Undecodable`, so the caller hears
    INVALID_ARGUMENT."""
    handlers = {}
    for method in service.methods:
        request_cls = message_factory.GetMessageClass(method.input_type)
        response_cls = message_factory.GetMessageClass(method.output_type)
        kind = grpc.stream_unary_rpc_method_handler if method.client_streaming else grpc.unary_unary_rpc_method_handler
        handlers[method.name] = kind(
            getattr(servicer, method.name),
            request_deserializer=_tolerant_parser(request_cls),
            response_serializer=response_cls.SerializeToString,
        )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))
