"""The sizing planner's arithmetic against hand-computed cases, including the two seed figures."""

import dataclasses
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loadtest.sizing import (
    DEFAULT_CALIBRATION,
    HNSWLIB_LABEL_LOCK_BYTES,
    SNAPSHOTS_KEPT,
    Coefficients,
    SizingInput,
    format_plan,
    ivf_list_slack_fraction,
    load_coefficients,
    plan,
    save_coefficients,
)

# Explicit coefficients, so the expected figures do not move when calibration.json is replaced.
COEFFS = Coefficients(
    machine="test",
    measured=True,
    hnsw_overhead_bytes_per_vector=100.0,
    ivfpq_list_slack_fraction=0.5,
    flat_qps_per_core=10.0,
    hnsw_qps_per_core=1000.0,
    ivfpq_qps_per_core=1000.0,
)
BIG_NODE = dict(node_ram_bytes=2**40, node_cores=32)


def test_seed_figure_flat_1e9_by_1536():
    p = plan(SizingInput(vectors=10**9, dim=1536, index_kind="flat", id_bytes_per_point=0, **BIG_NODE), COEFFS)
    assert p.vector_bytes == 6_144_000_000_000
    assert p.index_bytes == 6_144_000_000_000
    assert p.index_bytes_per_vector == 6144
    assert p.replica_ram_bytes == 6_144_000_000_000
    assert (p.code_bytes, p.label_bytes, p.graph_bytes, p.overhead_bytes, p.fixed_bytes) == (0, 0, 0, 0, 0)


def test_seed_figure_ivf_pq_m64_nbits8():
    inp = SizingInput(vectors=10**9, dim=1536, index_kind="ivf_pq", pq_m=64, pq_nbits=8, ivf_nlist=65536, **BIG_NODE)
    p = plan(inp, COEFFS)
    assert p.code_bytes == 64_000_000_000
    assert p.label_bytes == 8_000_000_000
    # Lists past 175 KB keep 0.241 of their slack resident, the reference's 5.9 KB lists (1M points, 4096
    # lists, 24 B an entry) 0.608: the calibrated 0.5 scaled by 0.241 / 0.608, times 64 + 8 bytes.
    assert p.vectors_per_shard / 65536 * 72 > 175_781
    slack = 0.5 * 0.241 / 0.608 * 72 * 10**9
    assert p.overhead_bytes == pytest.approx(slack, rel=1e-4)  # the reference lists are 5,859.4 bytes, not 5,859
    assert p.vector_bytes == 0
    # Per shard: centroids 65536 * 1536 * 4 and codebooks 256 * 1536 * 4; the precomputed table
    # (65536 * 64 * 256 * 4 = 4 GiB) is over faiss's 2 GiB limit, so faiss does not build it.
    assert p.fixed_bytes == p.shards * (65536 * 1536 * 4 + 256 * 1536 * 4)
    assert p.index_bytes == pytest.approx(72_000_000_000 + slack + p.fixed_bytes, rel=1e-4)
    assert p.id_map_bytes == 40_000_000_000
    assert p.replica_ram_bytes == p.index_bytes + p.id_map_bytes


def test_ivf_pq_refine_adds_the_vectors_and_small_tables_are_counted_under_l2_only():
    inp = SizingInput(vectors=1_000_000, dim=128, index_kind="ivf_pq", pq_m=16, pq_nbits=8, ivf_nlist=1024,
                      refine=True, id_bytes_per_point=0, metric="l2", **BIG_NODE)
    p = plan(inp, COEFFS)
    assert p.vector_bytes == 512_000_000
    assert p.code_bytes == 16_000_000
    # Lists of 1M / 1024 * 24 = 23,438 bytes: between the curve's 17,578 (0.386) and 52,734 (0.248) bytes,
    # linear in log bytes; the reference's lists (5,859 bytes) keep 0.608.
    t = math.log(23_437.5 / 17_578) / math.log(52_734 / 17_578)
    slack_per_vector = 0.5 * (0.386 + t * (0.248 - 0.386)) / 0.608 * (16 + 8)
    assert p.overhead_bytes == pytest.approx(slack_per_vector * 1_000_000, rel=1e-4)
    table = 1024 * 16 * 256 * 4  # 16 MiB: under the limit, so faiss builds it
    assert p.fixed_bytes == 1024 * 128 * 4 + 256 * 128 * 4 + table
    assert p.index_bytes_per_vector == pytest.approx(512 + 16 + 8 + slack_per_vector, rel=1e-4)
    # Cosine and inner product search by inner product: faiss builds no precomputed table for them.
    for metric in ("cosine", "ip"):
        assert plan(dataclasses.replace(inp, metric=metric), COEFFS).fixed_bytes == 1024 * 128 * 4 + 256 * 128 * 4
    with pytest.raises(ValueError, match="metric"):
        dataclasses.replace(inp, metric="hamming")


def test_ivf_lists_keep_less_of_their_slack_resident_the_longer_they_grow():
    reference_list = 1_000_000 / 4096 * 24  # the calibration's own lists keep the calibrated fraction
    assert ivf_list_slack_fraction(COEFFS, reference_list) == pytest.approx(0.5)
    lengths = [500, 1_758, 5_000, 20_000, 60_000, 175_781, 10**7]
    fractions = [ivf_list_slack_fraction(COEFFS, b) for b in lengths]
    assert all(a >= b for a, b in zip(fractions, fractions[1:])) and fractions[0] > fractions[-1]
    assert fractions[0] == pytest.approx(0.5 * 0.704 / 0.608, rel=1e-4) and fractions[-1] == pytest.approx(0.5 * 0.241 / 0.608, rel=1e-4)


def test_an_ivf_plan_split_over_more_shards_carries_the_slack_of_its_shorter_lists():
    inp = SizingInput(vectors=100_000_000, dim=128, index_kind="ivf_pq", pq_m=16, ivf_nlist=4096, id_bytes_per_point=0,
                      node_cores=32, node_ram_bytes=2**40)
    one = plan(inp, COEFFS)
    many = plan(dataclasses.replace(inp, node_ram_bytes=2**28), COEFFS)
    assert (one.shards, many.shards > 4) == (1, True)
    assert many.overhead_bytes > one.overhead_bytes
    # The plan's slack is the one its own shards' lists carry, not that of the whole collection in one shard.
    per_list = many.vectors_per_shard / 4096 * 24
    assert many.overhead_bytes == pytest.approx(ivf_list_slack_fraction(COEFFS, per_list) * 24 * 100_000_000, abs=many.shards)


def test_ivf_pq_code_bytes_round_up_to_whole_bytes():
    inp = SizingInput(vectors=1000, dim=64, index_kind="ivf_pq", pq_m=8, pq_nbits=6, ivf_nlist=16,
                      ivf_nprobe=4, **BIG_NODE)
    assert plan(inp, COEFFS).code_bytes == 1000 * 6  # 8 * 6 bits = 48 bits


def test_hnsw_hand_computed():
    inp = SizingInput(vectors=1_000_000, dim=128, index_kind="hnsw", hnsw_m=16, metadata_bytes_per_point=60,
                      id_bytes_per_point=40, **BIG_NODE)
    p = plan(inp, COEFFS)
    assert p.vector_bytes == 512_000_000
    assert p.label_bytes == 8_000_000
    # Level 0: count + 2M links = 4 + 128; upper levels: (4 + 4M) / (M - 1) = 68 / 15 expected.
    assert p.graph_bytes == 132_000_000 + math.ceil(1_000_000 * 68 / 15)
    assert p.overhead_bytes == 100_000_000
    assert p.shards == 1 and p.fixed_bytes == HNSWLIB_LABEL_LOCK_BYTES
    assert p.index_bytes == 512_000_000 + 8_000_000 + p.graph_bytes + 100_000_000 + HNSWLIB_LABEL_LOCK_BYTES
    assert p.index_bytes_per_vector == pytest.approx(512 + 8 + 132 + 68 / 15 + 100)
    assert p.bytes_per_point == pytest.approx(p.index_bytes_per_vector + 100)
    assert p.replica_ram_bytes == p.index_bytes + 100_000_000


def test_shards_fill_the_ram_budget():
    # 552 bytes a point; budget 0.5 * 1e8 = 5e7 bytes holds 90,579 points; 1e6 / 90,579 -> 12 shards.
    inp = SizingInput(vectors=1_000_000, dim=128, index_kind="flat", node_ram_bytes=100_000_000, node_cores=4,
                      ram_headroom=0.5)
    p = plan(inp, COEFFS)
    assert p.bytes_per_point == 552
    assert p.node_ram_budget_bytes == 50_000_000
    assert p.shards_for_ram == p.shards == 12
    assert p.vectors_per_shard == 83_334
    assert p.shard_ram_bytes == 83_334 * 552 <= 50_000_000
    assert p.shard_replicas_per_node == 1 and p.nodes == 12


def test_small_collection_packs_replicas_on_distinct_nodes():
    inp = SizingInput(vectors=1000, dim=16, index_kind="flat", replication_factor=3, **BIG_NODE)
    p = plan(inp, COEFFS)
    assert p.shards == 1 and p.nodes == 3 and p.shard_replicas_per_node == 1
    assert p.cluster_ram_bytes == 3 * p.replica_ram_bytes


def test_target_qps_adds_shards():
    # Flat QPS per core scales with 1/(n*d): 10 at 1M x 128. A 10-core node holding n vectors of
    # 128-d serves 100 * 1e6 / n QPS; 400 QPS with one replica needs n <= 250,000: 16 shards.
    inp = SizingInput(vectors=4_000_000, dim=128, index_kind="flat", target_qps=400, node_ram_bytes=2**40,
                      node_cores=10)
    p = plan(inp, COEFFS)
    assert p.shards_for_ram == 1
    assert p.shards_for_qps == p.shards == 16
    assert p.qps_per_shard_replica == pytest.approx(400)
    assert p.shard_replicas_per_node == 1 and p.nodes == 16
    assert p.meets_target_qps and p.cluster_qps == pytest.approx(400)


def test_replicas_share_the_query_load():
    inp = SizingInput(vectors=4_000_000, dim=128, index_kind="flat", target_qps=400, replication_factor=2,
                      node_ram_bytes=2**40, node_cores=10)
    p = plan(inp, COEFFS)
    assert p.shards == 8 and p.nodes == 16
    assert p.cluster_qps == pytest.approx(400)


def test_unreachable_qps_is_reported_not_hidden():
    # ivf_pq has a per-query cost that does not shrink with the shard (the coarse search).
    inp = SizingInput(vectors=10**8, dim=128, index_kind="ivf_pq", pq_m=16, ivf_nlist=65536, target_qps=1e9,
                      **BIG_NODE)
    p = plan(inp, COEFFS)
    assert not p.meets_target_qps
    assert any("replication_factor" in note for note in p.notes)


def test_disk_holds_the_kept_snapshots_the_next_one_being_written_and_the_wal_back_to_the_oldest():
    inp = SizingInput(vectors=1_000_000, dim=128, index_kind="flat", metadata_bytes_per_point=10,
                      wal_fraction=0.1, **BIG_NODE)
    p = plan(inp, COEFFS)
    assert p.snapshot_bytes == 1_000_000 * (512 + 40 + 10)  # a flat snapshot: the vectors, ids and metadata
    assert p.wal_bytes == SNAPSHOTS_KEPT * 100_000 * (512 + 40 + 10 + 16)
    assert p.disk_bytes_per_node == (SNAPSHOTS_KEPT + 1) * p.snapshot_bytes + p.wal_bytes


def test_a_snapshot_holds_the_layouts_exact_bytes_not_the_allocators_slack():
    inp = SizingInput(vectors=1_000_000, dim=128, index_kind="hnsw", id_bytes_per_point=0, **BIG_NODE)
    p = plan(inp, COEFFS)
    # hnswlib's file: every element's level-0 block and its upper-level links, without the calibrated overhead.
    assert p.overhead_bytes > 0
    assert p.snapshot_bytes == pytest.approx(p.index_bytes - p.overhead_bytes, abs=2)


def test_build_time_scales_with_dim_and_cores():
    coeffs = dataclasses.replace(COEFFS, flat_build_core_s_per_vector=1e-6)
    p = plan(SizingInput(vectors=1_000_000, dim=256, index_kind="flat", node_ram_bytes=2**40, node_cores=4), coeffs)
    assert p.build_core_seconds == pytest.approx(2.0)
    assert p.build_wall_seconds == pytest.approx(0.5)


def test_ten_billion_vectors_stay_exact_integers():
    p = plan(SizingInput(vectors=10**10, dim=768, index_kind="flat", id_bytes_per_point=0, **BIG_NODE), COEFFS)
    assert p.vector_bytes == 30_720_000_000_000
    assert isinstance(p.vector_bytes, int)


@pytest.mark.parametrize(
    "change",
    [
        dict(index_kind="annoy"),
        dict(index_kind="ivf_pq", pq_m=7),
        dict(vectors=0),
        dict(vectors=1e10),
        dict(ram_headroom=1.5),
        dict(replication_factor=0),
        dict(hnsw_m=1),
    ],
)
def test_invalid_inputs_are_rejected(change):
    fields = dict(vectors=1000, dim=128, index_kind="flat", **BIG_NODE) | change
    with pytest.raises((ValueError, TypeError)):
        SizingInput(**fields)


def test_a_vector_that_cannot_fit_a_node_is_an_error():
    with pytest.raises(ValueError):
        plan(SizingInput(vectors=10, dim=1536, index_kind="flat", node_ram_bytes=1000, node_cores=1), COEFFS)


@given(
    vectors=st.integers(1, 10**10),
    dim=st.sampled_from([8, 64, 128, 768, 1536]),
    kind=st.sampled_from(["flat", "hnsw", "ivf_pq"]),
    node_gib=st.integers(8, 2048),
)
def test_shards_for_ram_is_the_smallest_count_that_fits(vectors, dim, kind, node_gib):
    inp = SizingInput(vectors=vectors, dim=dim, index_kind=kind, pq_m=8, ivf_nlist=1024,
                      node_ram_bytes=node_gib * 2**30, node_cores=8)
    p = plan(inp, COEFFS)
    assert p.shard_ram_bytes <= p.node_ram_budget_bytes
    if p.shards_for_ram > 1:
        bigger = math.ceil(vectors / (p.shards_for_ram - 1))
        fixed = p.fixed_bytes // p.shards
        assert fixed + bigger * p.bytes_per_point > p.node_ram_budget_bytes
    assert p.nodes >= p.shards * inp.replication_factor / p.shard_replicas_per_node


def test_format_plan_shows_the_key_figures():
    p = plan(SizingInput(vectors=10**9, dim=1536, index_kind="flat", **BIG_NODE), COEFFS)
    text = format_plan(p)
    assert "6,144,000,000,000 B" in text
    assert "6.14 TB" in text
    assert f"{p.shards:,}" in text and "nodes" in text


def test_calibration_file_loads_and_round_trips(tmp_path):
    coeffs = load_coefficients(DEFAULT_CALIBRATION)
    assert coeffs.machine
    path = tmp_path / "calibration.json"
    save_coefficients(coeffs, path)
    assert load_coefficients(path) == coeffs


def test_unknown_calibration_keys_are_rejected(tmp_path):
    path = tmp_path / "calibration.json"
    path.write_text('{"hnsw_overhead_bytes": 1}')
    with pytest.raises(ValueError):
        load_coefficients(path)
