"""Fixtures shared by every test suite: one real etcd per session, and a fresh key prefix per test."""
from __future__ import annotations

import quiver.grpc_fork  # noqa: F401 - before any test loads gRPC, as the servers' entry points do
import uuid
from collections.abc import Iterator

import pytest

from quiver.etcd_process import EtcdProcess


@pytest.fixture(scope="session")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdProcess]:
    """A real etcd server on free loopback ports, started once per test session."""
    with EtcdProcess(tmp_path_factory.mktemp("etcd")) as process:
        yield process


@pytest.fixture
def etcd_root() -> str:
    """A key prefix no other test uses, so tests sharing the session's etcd never see each other's keys."""
    return f"/quiver-test/{uuid.uuid4().hex}/"
