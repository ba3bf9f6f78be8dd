"""How much of faiss's IVF list slack is resident, by list length: the curve the sizing planner scales its
calibrated ivfpq_list_slack_fraction with (loadtest.sizing.IVF_LIST_SLACK_BY_LIST_BYTES).

Each configuration runs in a fresh process: an ArrayInvertedLists of 4,096 lists is filled as a shard fills
its index, in batches of 2,000 points whose lists are drawn uniformly, one add per list per batch; the
figure is RssAnon growth (after malloc_trim) over the exact bytes of codes and ids. No training or encoding:
list growth alone is measured. Prints JSON and a table.

    python -m loadtest.bench_ivf_list_slack [--out loadtest/results/ivf-list-slack-DATE]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click

from loadtest.bench_memory import memory_of
from shard.heap_release import release_free_heap

NLIST = 4096
BATCH = 2000
CONFIGS = ((300_000, 16), (1_000_000, 16), (3_000_000, 16), (1_000_000, 64), (3_000_000, 64), (10_000_000, 64))


def measure(n: int, code_size: int) -> dict[str, float]:
    """One configuration, in this process (run it in a fresh one)."""
    import faiss
    import numpy as np

    lists = np.random.default_rng(1).integers(0, NLIST, n)
    codes = np.zeros((BATCH, code_size), dtype=np.uint8)
    ids = np.arange(BATCH, dtype=np.int64)
    inverted = faiss.ArrayInvertedLists(NLIST, code_size)
    release_free_heap()
    before = memory_of(os.getpid())["RssAnon"]
    for start in range(0, n, BATCH):
        batch = np.sort(lists[start:start + BATCH])
        cuts = np.flatnonzero(np.diff(batch)) + 1
        for group in np.split(batch, cuts):
            inverted.add_entries(int(group[0]), len(group), faiss.swig_ptr(ids), faiss.swig_ptr(codes))
    release_free_heap()
    exact = n * (code_size + 8)
    grown = memory_of(os.getpid())["RssAnon"] - before
    return {"n": n, "code_bytes": code_size, "list_bytes": exact / NLIST, "rss_anon_growth_bytes": grown,
            "exact_bytes": exact, "resident_slack_fraction": grown / exact - 1}


@click.command()
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Write FILE.json and FILE.txt too.")
@click.option("--one", nargs=2, type=int, default=None, hidden=True)
def main(out: Path | None, one: tuple[int, int] | None) -> None:
    if one:
        print(json.dumps(measure(*one)))
        return
    rows = []
    for n, code_size in CONFIGS:
        done = subprocess.run([sys.executable, "-m", "loadtest.bench_ivf_list_slack", "--one", str(n), str(code_size)],
                              check=True, capture_output=True, text=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    report = {"benchmark": "ivf_list_slack", "nlist": NLIST, "batch": BATCH, "rows": rows}
    table = [f"{'n':>11} {'code B':>6} {'list bytes':>10} {'grown B/pt':>10} {'exact B/pt':>10} {'resident slack':>14}"]
    table += [f"{r['n']:>11,} {r['code_bytes']:>6} {r['list_bytes']:>10,.0f} {r['rss_anon_growth_bytes'] / r['n']:>10.1f} "
              f"{r['exact_bytes'] / r['n']:>10.0f} {r['resident_slack_fraction']:>14.3f}" for r in rows]
    print(json.dumps(report, indent=1))
    print("\n".join(table))
    if out:
        out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
        out.with_suffix(".txt").write_text("\n".join(table) + "\n")


if __name__ == "__main__":
    main()
