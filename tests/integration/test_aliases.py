"""Aliases through a real router and real etcd: a second name for a collection, which requests follow, and
which moves to another collection in one transaction, seen by every router on its watch."""
from __future__ import annotations

import asyncio

import pytest

from quiver.client import AsyncClient
from quiver.errors import AlreadyExists, FailedPrecondition, NotFound
from router.config import RouterConfig
from router.server import RouterServer
from tests.data_fixtures import glove_subset
from tests.integration.test_replication import cluster  # noqa: F401  (the fixture)


async def two_collections(client: AsyncClient) -> None:
    vectors = glove_subset().base[:400]
    for name in ("docs_a", "docs_b"):
        await client.create_collection(name, vectors.shape[1], index="flat", shards=2)
        await client.upsert(name, [f"{name}-{i}" for i in range(400)], vectors)


async def test_requests_naming_an_alias_reach_its_collection_and_a_switch_moves_them_all_at_once(cluster):  # noqa: F811
    await two_collections(cluster.client)
    await cluster.client.set_alias("docs", "docs_a", expected="")
    query = glove_subset().base[7]
    [hit] = (await cluster.client.search("docs", query, k=1))[0].hits
    assert hit.id == "docs_a-7"
    await cluster.client.upsert("docs", ["through-alias"], query[None])
    assert [p.id for p in await cluster.client.get("docs_a", ["through-alias"])] == ["through-alias"]
    assert (await cluster.client.describe_collection("docs")).spec.name == "docs_a"
    assert await cluster.client.aliases() == {"docs": "docs_a"}
    other = RouterServer(RouterConfig(etcd_endpoints=(cluster.etcd_endpoint,), etcd_root=cluster.root, controller=False))
    await other.start()
    try:
        async with AsyncClient(other.address, timeout=10.0) as elsewhere:
            seen: dict[int, list[str]] = {0: [], 1: []}
            stopped = False

            async def search(n: int, client: AsyncClient) -> None:
                while not stopped:
                    [result] = await client.search("docs", query, k=1)
                    seen[n].append(result.hits[0].id.split("-")[0])
                    await asyncio.sleep(0.002)

            searchers = [asyncio.ensure_future(search(n, c)) for n, c in enumerate((cluster.client, elsewhere))]
            await asyncio.sleep(0.3)
            await cluster.client.set_alias("docs", "docs_b", expected="docs_a")
            await asyncio.sleep(0.5)
            stopped = True
            await asyncio.gather(*searchers)  # a failed search fails the test here
            for answers in seen.values():
                # Every answer whole from one collection; on each router, a before and an after, never back.
                assert answers[0] == "docs_a" and answers[-1] == "docs_b"
                switched = answers.index("docs_b")
                assert set(answers[:switched]) == {"docs_a"} and set(answers[switched:]) == {"docs_b"}
    finally:
        await other.stop(0)


async def test_alias_switches_are_compare_and_set_and_names_never_clash(cluster):  # noqa: F811
    await two_collections(cluster.client)
    await cluster.client.set_alias("docs", "docs_a", expected="")
    with pytest.raises(FailedPrecondition, match="points at 'docs_a', not 'docs_b' as expected"):
        await cluster.client.set_alias("docs", "docs_a", expected="docs_b")
    with pytest.raises(FailedPrecondition, match="points at 'docs_a'"):
        await cluster.client.set_alias("docs", "docs_b", expected="")  # "create only": it exists
    # Of two switches from the same target to different ones, one wins and the other is refused.
    await cluster.client.create_collection("docs_c", 50, index="flat")
    results = await asyncio.gather(
        cluster.client.set_alias("docs", "docs_b", expected="docs_a"),
        cluster.client.set_alias("docs", "docs_c", expected="docs_a"),
        return_exceptions=True,
    )
    assert sum(isinstance(r, int) for r in results) == 1 and sum(isinstance(r, FailedPrecondition) for r in results) == 1, results
    winner = "docs_b" if isinstance(results[0], int) else "docs_c"
    assert (await cluster.client.aliases())["docs"] == winner
    with pytest.raises(NotFound, match="collection 'nope' does not exist"):
        await cluster.client.set_alias("docs", "nope")
    with pytest.raises(AlreadyExists, match="'docs_b' is the name of a collection"):
        await cluster.client.set_alias("docs_b", "docs_a")
    with pytest.raises(AlreadyExists, match="'docs' is an alias"):
        await cluster.client.create_collection("docs", 50)
    target = (await cluster.client.aliases())["docs"]
    with pytest.raises(FailedPrecondition, match="named by alias"):
        await cluster.client.drop_collection(target)
    await cluster.client.delete_alias("docs", expected=target)
    with pytest.raises(NotFound):
        await cluster.client.search("docs", glove_subset().base[0], k=1)
    with pytest.raises(NotFound, match="alias 'docs' does not exist"):
        await cluster.client.delete_alias("docs")
    await cluster.client.drop_collection(target)  # nothing names it now
