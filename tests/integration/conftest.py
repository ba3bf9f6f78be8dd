"""An etcd client and a cluster store on the session's real etcd, under the test's own key prefix."""
from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from quiver.control_plane.etcd_client import EtcdClient
from quiver.control_plane.store import ClusterStore
from quiver.etcd_process import EtcdProcess


@pytest.fixture
async def client(etcd: EtcdProcess) -> AsyncIterator[EtcdClient]:
    async with EtcdClient([etcd.endpoint], timeout=5.0) as c:
        yield c


@pytest.fixture
def store(client: EtcdClient, etcd_root: str) -> ClusterStore:
    return ClusterStore(client, root=etcd_root)
