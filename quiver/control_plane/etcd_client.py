"""A small asyncio wrapper over the synchronous pyetcd client; the only module that imports pyetcd.

pyetcd (etcd-sdk-python, the python-etcd3 API) is blocking gRPC, so every unary call runs in a thread pool
of this client's own (never asyncio's default one, which a server's other work could fill), lease renewals
in a thread of their own (so no burst of other etcd calls delays one past its TTL), and each watch stream
gets a thread of its own that feeds an asyncio queue (a stream can live for hours).

What this wrapper adds over pyetcd, and why:
- Failures are Quiver's domain errors: an unreachable etcd is `Unavailable` naming the endpoints, a failed
  transaction compare is `Aborted`, an unknown lease is `NotFound`.
- Outages heal by themselves. pyetcd's `Endpoint` marks a node failed after one UNAVAILABLE and then refuses
  to use it for `time_retry` seconds (300 by default, raising a bare ValueError); here a single endpoint is
  never quarantined, and gRPC's reconnect backoff is capped at 1 s so a restarted etcd is used within about a
  second instead of up to two minutes.
- `watch_prefix` is an async iterator that survives broken streams: it reconnects with capped backoff and
  resumes from the last delivered revision + 1, so no event is lost or repeated. If that revision was
  compacted away it re-reads the prefix and yields one `resync` event carrying the current contents.
- Each watch stream uses its own pyetcd client (its own Watcher thread): pyetcd closes the shared client's
  watcher whenever *any* call on it fails with UNAVAILABLE, which would end unrelated watches silently.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import math
import random
import threading
from concurrent.futures import ThreadPoolExecutor
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import grpc
import pyetcd
from pyetcd import events as etcd_events
from pyetcd import exceptions as etcd_exceptions
from pyetcd import utils as etcd_utils

from quiver.errors import Aborted, InvalidArgument, NotFound, Unavailable

_log = logging.getLogger(__name__)

T = TypeVar("T")

_GRPC_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    # Detect a silently dead peer on long-lived watch streams; etcd's server allows pings every 5 s.
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
]

_UNREACHABLE = (
    etcd_exceptions.ConnectionFailedError,
    etcd_exceptions.ConnectionTimeoutError,
    etcd_exceptions.NoServerAvailableError,
    etcd_exceptions.InternalServerError,
    etcd_exceptions.WatchTimedOut,
)
_UNREACHABLE_CODES = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


@dataclass(frozen=True)
class KeyValue:
    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int


@dataclass(frozen=True)
class RangeResult:
    """Keys read by one request, all as of `revision` (the store's revision when the read was served)."""

    revision: int
    kvs: tuple[KeyValue, ...]


@dataclass(frozen=True)
class LeaseGrant:
    id: int
    ttl: int  # seconds as granted; etcd may raise a small request to its minimum (about 2 s)


@dataclass(frozen=True)
class WatchEvent:
    """One change under a watched prefix.

    `put`/`delete`: `key` changed at `revision` (for a delete, `value` is empty). `resync`: the watch fell
    behind etcd's compaction, so changes were missed; `kvs` holds the prefix's full contents as of
    `revision`, and `key` is the prefix.
    """

    kind: Literal["put", "delete", "resync"]
    key: str
    value: bytes
    revision: int
    kvs: tuple[KeyValue, ...] = ()


def _parse_endpoint(endpoint: str) -> tuple[str, int]:
    address = endpoint.removeprefix("http://")
    if "://" in address:
        raise InvalidArgument(f"etcd endpoint {endpoint!r}: only plain http://host:port is supported")
    host, sep, port = address.rstrip("/").rpartition(":")
    if not sep or not host or not port.isdigit():
        raise InvalidArgument(f"etcd endpoint {endpoint!r} is not of the form host:port")
    return host, int(port)


def _key_value(kv: Any) -> KeyValue:
    return KeyValue(
        key=kv.key.decode(),
        value=bytes(kv.value),
        create_revision=kv.create_revision,
        mod_revision=kv.mod_revision,
        version=kv.version,
        lease=kv.lease,
    )


class _StreamEnded(Exception):
    """The watch stream closed without an error (pyetcd does this when its watcher is closed)."""


class _Compacted(Exception):
    def __init__(self, compacted_revision: int) -> None:
        super().__init__(compacted_revision)
        self.compacted_revision = compacted_revision


_STARTED = object()
CALL_THREADS = 4  # concurrent unary etcd calls per client; watches and lease renewals have their own threads


class EtcdClient:
    """Async access to one etcd cluster. Safe to share between tasks; close() when done."""

    def __init__(self, endpoints: list[str], timeout: float = 5.0) -> None:
        if not endpoints:
            raise InvalidArgument("at least one etcd endpoint is required")
        self._addresses = [_parse_endpoint(e) for e in endpoints]
        self._timeout = timeout
        self.where = ", ".join(f"{h}:{p}" for h, p in self._addresses)
        self._client = self._new_sync_client()
        self._closed = False
        self._calls = ThreadPoolExecutor(CALL_THREADS, thread_name_prefix="etcd-call")
        self._lease_renewals = ThreadPoolExecutor(1, thread_name_prefix="etcd-lease")

    def _new_sync_client(self) -> pyetcd.MultiEndpointEtcd3Client:
        # One endpoint: never quarantine it (time_retry=0), let gRPC's capped backoff pace reconnects.
        # Several: skip a failed one for a second so failover moves to the others.
        time_retry = 0.0 if len(self._addresses) == 1 else 1.0
        endpoints = [
            pyetcd.Endpoint(host, port, secure=False, time_retry=time_retry, opts=_GRPC_OPTIONS)
            for host, port in self._addresses
        ]
        return pyetcd.MultiEndpointEtcd3Client(endpoints=endpoints, timeout=self._timeout, failover=True)

    def _translate(self, exc: BaseException) -> BaseException:
        if isinstance(exc, _UNREACHABLE):
            return Unavailable(f"etcd at {self.where} is unreachable ({type(exc).__name__}: {exc})")
        if isinstance(exc, grpc.RpcError):
            code = exc.code()  # type: ignore[attr-defined]
            details = exc.details()  # type: ignore[attr-defined]
            if code in _UNREACHABLE_CODES:
                return Unavailable(f"etcd at {self.where} is unreachable ({code.name}: {details})")
            if code == grpc.StatusCode.NOT_FOUND:
                return NotFound(f"etcd at {self.where}: {details}")
        return exc

    def _call_sync(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if self._closed:
            raise RuntimeError(f"EtcdClient for {self.where} is closed")
        try:
            return fn(*args, **kwargs)
        except (etcd_exceptions.Etcd3Exception, grpc.RpcError) as exc:
            translated = self._translate(exc)
            if translated is exc:
                raise
            raise translated from exc

    async def _call(self, fn: Callable[..., T], *args: Any, _pool: ThreadPoolExecutor | None = None, **kwargs: Any) -> T:
        call = functools.partial(self._call_sync, fn, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(_pool or self._calls, call)

    async def get(self, key: str) -> KeyValue | None:
        response = await self._call(self._client.get_response, key)
        return _key_value(response.kvs[0]) if response.kvs else None

    async def last_change_under(self, prefix: str) -> int:
        """The highest mod revision of any key under `prefix` (0 when none): one linearizable read of the
        newest key's revision, no values."""
        response = await self._call(
            self._client.get_prefix_response, prefix, limit=1, sort_order="descend", sort_target="mod", keys_only=True,
        )
        return int(response.kvs[0].mod_revision) if response.kvs else 0

    async def get_prefix(self, prefix: str) -> RangeResult:
        """Every key under `prefix`, sorted by key, read at one revision."""
        response = await self._call(self._client.get_prefix_response, prefix)
        return RangeResult(response.header.revision, tuple(_key_value(kv) for kv in response.kvs))

    async def put(self, key: str, value: bytes, lease: int | None = None) -> int:
        """Write `key`; returns the revision of the write."""
        response = await self._call(self._client.put, key, value, lease=lease)
        return response.header.revision

    async def create_if_absent(
        self, key: str, value: bytes, *, also_put: Mapping[str, bytes] | None = None, lease: int | None = None,
    ) -> int:
        """Write `key` (and `also_put`) in one transaction only if `key` does not exist; else Aborted. With
        `lease`, `key` is attached to it (and vanishes when the lease expires)."""
        return await self.swap({key: 0}, put={key: value, **(also_put or {})}, lease_of={key: lease} if lease else None)

    async def swap(
        self,
        expected_mod_revisions: Mapping[str, int],
        *,
        put: Mapping[str, bytes] | None = None,
        delete: Iterable[str] = (),
        delete_prefixes: Iterable[str] = (),
        lease_of: Mapping[str, int] | None = None,
    ) -> int:
        """One transaction: if every key's mod_revision equals the expected one (0 = key absent), apply the
        puts (a key in `lease_of` attached to that lease), deletes and prefix deletes; else raise Aborted.
        Returns the revision of the transaction."""
        t = self._client.transactions
        compare = [t.mod(key) == revision for key, revision in expected_mod_revisions.items()]
        success: list[Any] = [t.put(key, value, lease=(lease_of or {}).get(key)) for key, value in (put or {}).items()]
        success += [t.delete(key) for key in delete]
        success += [
            t.delete(prefix, range_end=etcd_utils.prefix_range_end(prefix.encode()))
            for prefix in delete_prefixes
        ]
        if not success:
            raise InvalidArgument("an etcd transaction needs at least one operation")
        succeeded, responses = await self._call(self._client.transaction, compare, success, [])
        if not succeeded:
            raise Aborted(
                f"etcd transaction aborted: {sorted(expected_mod_revisions)} changed since they were read"
            )
        first = responses[0]
        return getattr(first, first.WhichOneof("response")).header.revision

    async def delete(self, key: str) -> bool:
        """Delete one key; True if it existed."""
        return await self._call(self._client.delete, key)

    async def delete_prefix(self, prefix: str) -> int:
        """Delete every key under `prefix`; returns how many were deleted."""
        response = await self._call(self._client.delete_prefix, prefix)
        return response.deleted

    async def compact(self, revision: int) -> None:
        """Discard history before `revision` (watches from older revisions then get a resync)."""
        await self._call(self._client.compact, revision)

    async def grant_lease(self, ttl: float) -> LeaseGrant:
        lease = await self._call(self._client.lease, max(1, math.ceil(ttl)))
        return LeaseGrant(lease.id, lease.ttl)

    async def keepalive_lease(self, lease_id: int) -> int:
        """Refresh a lease once; returns its TTL in seconds, 0 if the lease has expired or was revoked."""
        responses = await self._call(lambda: list(self._client.refresh_lease(lease_id)), _pool=self._lease_renewals)
        return responses[0].TTL if responses else 0

    async def revoke_lease(self, lease_id: int) -> bool:
        """Revoke a lease, deleting its keys; False if it no longer existed."""
        try:
            await self._call(self._client.revoke_lease, lease_id)
        except NotFound:
            return False
        return True

    async def watch_prefix(
        self, prefix: str, start_revision: int, *, max_backoff: float = 2.0
    ) -> AsyncIterator[WatchEvent]:
        """Every change under `prefix` from `start_revision` on, forever, surviving etcd outages.

        While etcd is unreachable the iterator just waits (retrying with backoff capped at `max_backoff`
        seconds and logging a warning); stop it by cancelling the consuming task or calling `aclose()`.
        """
        next_revision = start_revision
        delay = 0.05
        broken_since: BaseException | None = None  # warn once per outage, not once per retry
        while True:
            if self._closed:
                raise RuntimeError(f"EtcdClient for {self.where} is closed")
            stream = _WatchStream(self, prefix, next_revision)
            try:
                while True:
                    item = await stream.get()
                    if item is _STARTED:
                        if broken_since is not None:
                            _log.info("watch on %s resumed at revision %d", prefix, next_revision)
                        delay, broken_since = 0.05, None
                        continue
                    for event in item:
                        next_revision = event.revision + 1
                        yield event
            except _Compacted as compacted:
                _log.warning(
                    "watch on %s cannot resume at revision %d (history compacted up to %d); re-reading",
                    prefix, next_revision, compacted.compacted_revision,
                )
                try:
                    snapshot = await self.get_prefix(prefix)
                except Unavailable:
                    await asyncio.sleep(delay)
                    continue
                next_revision = snapshot.revision + 1
                yield WatchEvent("resync", prefix, b"", snapshot.revision, snapshot.kvs)
            except (Unavailable, _StreamEnded) as broken:
                level = logging.WARNING if broken_since is None else logging.DEBUG
                _log.log(level, "watch on %s broke (%s); reconnecting with backoff", prefix, broken)
                broken_since = broken
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, max_backoff)
            finally:
                stream.close()

    def close(self) -> None:
        self._closed = True
        self._client.close()
        # A call still in flight finishes (and fails) on its own; nobody waits for it here.
        self._calls.shutdown(wait=False)
        self._lease_renewals.shutdown(wait=False)

    async def __aenter__(self) -> EtcdClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()


class _WatchStream:
    """One pyetcd watch stream, read by a dedicated thread and handed to asyncio through a queue.

    `get()` returns _STARTED once the watch is established, then lists of WatchEvent; it raises the
    stream's failure (Unavailable, _Compacted, _StreamEnded) when the stream ends.
    """

    def __init__(self, owner: EtcdClient, prefix: str, start_revision: int) -> None:
        self._owner = owner
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._client = owner._new_sync_client()
        self._lock = threading.Lock()
        self._cancel: Callable[[], None] | None = None
        self._closed = False
        threading.Thread(
            target=self._run, args=(prefix, start_revision), name=f"quiver-etcd-watch {prefix}", daemon=True
        ).start()

    def _post(self, item: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:
            pass  # the event loop is closed: nobody is listening any more

    def _run(self, prefix: str, start_revision: int) -> None:
        try:
            responses, cancel = self._client.watch_prefix_response(prefix, start_revision=start_revision)
            with self._lock:
                self._cancel = cancel
                closed = self._closed
            if closed:
                cancel()
                return
            self._post(_STARTED)
            for response in responses:
                batch = [
                    WatchEvent(
                        "delete" if isinstance(event, etcd_events.DeleteEvent) else "put",
                        event.key.decode(),
                        b"" if isinstance(event, etcd_events.DeleteEvent) else bytes(event.value),
                        event.mod_revision,
                    )
                    for event in response.events
                ]
                if batch:
                    self._post(batch)
            self._post(_StreamEnded("watch stream closed"))
        except etcd_exceptions.RevisionCompactedError as exc:
            self._post(_Compacted(exc.compacted_revision))
        except BaseException as exc:  # handed to the consumer, which decides; nothing is swallowed here
            self._post(exc)

    async def get(self) -> Any:
        item = await self._queue.get()
        if isinstance(item, BaseException):
            translated = self._owner._translate(item)
            raise translated from (item if translated is not item else None)
        return item

    def close(self) -> None:
        with self._lock:
            self._closed = True
            cancel = self._cancel
        try:
            if cancel is not None:
                cancel()
        finally:
            self._client.close()
