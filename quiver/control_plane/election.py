"""One holder at a time of a role (the controller), through etcd: etcd's `concurrency.Election` recipe
reduced to what Quiver needs.

A candidate holds the role while its key exists under its own lease: it takes the key only if absent (one
transaction), renews the lease at a third of its TTL, and loses the role when a renewal fails past the TTL
or the lease is gone. The others retry taking the key every `retry_s`; when the holder dies, its lease
expires and its key with it. Being the holder is a hint, not a guarantee: every action the holder takes is
itself a transaction on the records it changes, so a holder that lost the role unknowingly cannot act on
state that changed meanwhile.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from quiver.control_plane.etcd_client import EtcdClient
from quiver.errors import Aborted, QuiverError

_log = logging.getLogger(__name__)


class Election:
    def __init__(self, client: EtcdClient, key: str, candidate: str, ttl_s: float = 5.0, retry_s: float = 1.0) -> None:
        self._client = client
        self.key = key
        self.candidate = candidate
        self._ttl_s = ttl_s
        self._retry_s = retry_s
        self._lease = 0
        self._valid_until = 0.0  # monotonic: until then the lease surely has not expired in etcd
        self._task: asyncio.Task[None] | None = None
        self.changed = asyncio.Event()  # set whenever leadership is won or lost

    @property
    def leader(self) -> bool:
        return self._lease != 0 and time.monotonic() < self._valid_until

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"election {self.key}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._lease:
            with contextlib.suppress(QuiverError):
                await self._client.revoke_lease(self._lease)  # hand the role on at once
            self._lease = 0

    async def _run(self) -> None:
        while True:
            try:
                if self._lease == 0:
                    await self._campaign()
                else:
                    await self._renew()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - etcd down or slow: keep trying; leadership lapses by time
                _log.warning("election %s: %s", self.key, error)
            await asyncio.sleep(self._retry_s if self._lease == 0 else max(0.2, self._ttl_s / 3))

    async def _campaign(self) -> None:
        sent = time.monotonic()
        lease = await self._client.grant_lease(self._ttl_s)
        try:
            await self._client.create_if_absent(self.key, self.candidate.encode(), lease=lease.id)
        except Aborted:
            await self._client.revoke_lease(lease.id)
            return
        except BaseException:
            with contextlib.suppress(Exception):
                await self._client.revoke_lease(lease.id)
            raise
        self._lease, self._valid_until = lease.id, sent + lease.ttl
        _log.info("%s holds %s", self.candidate, self.key)
        self.changed.set()

    async def _renew(self) -> None:
        sent = time.monotonic()
        try:
            ttl = await self._client.keepalive_lease(self._lease)
        except QuiverError:
            if not self.leader:
                self._lost("its lease could not be renewed in time")
            raise
        if ttl <= 0:
            self._lost("its lease expired")
        else:
            self._valid_until = sent + ttl

    def _lost(self, why: str) -> None:
        _log.warning("%s lost %s: %s", self.candidate, self.key, why)
        self._lease = 0
        self.changed.set()
