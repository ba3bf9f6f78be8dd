"""Shared pieces of the hand-run benchmarks (`bench_shard`, `bench_cluster`): closed-loop load, percentiles,
process CPU and memory readings, in-process index helpers, and the table/JSON output.

Closed loop: each of C workers sends one request, waits for its answer, then sends the next, until the
duration is up. Every call's latency is taken with `time.perf_counter`; throughput is calls (times the
queries each carries) over the wall time of the measured window, which ends when the last call returns.
A short warm-up run is made and thrown away first (connections, hnswlib's visited lists, CPU caches).

Tables go to stderr and the JSON report to stdout, so `python -m loadtest.bench_shard > run.json` keeps
a clean record while the terminal still shows the tables.
"""
from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Awaitable, Callable, Iterator, Sequence

import numpy as np

from quiver.local_cluster import ServerProcess
from quiver.wire.packed_hits import HitBatch
from shard.indexes import IndexConfig, QueryKnobs, VectorIndex, create_index

K = 10
# Same limits as quiver.client: a batch of 1000 GloVe vectors is 200 kB, a 500-query result a few hundred.
GRPC_OPTIONS = [("grpc.max_receive_message_length", 64 * 2**20), ("grpc.max_send_message_length", 64 * 2**20)]
# What the issue quotes for pgvector (HNSW, GloVe-50-angular-like, one client), for reference only.
PGVECTOR_P50_MS = 0.69
PGVECTOR_QPS_SINGLE_CLIENT = 1380.0

_T0 = time.perf_counter()


def log(message: str) -> None:
    print(f"[{time.perf_counter() - _T0:7.1f}s] {message}", file=sys.stderr, flush=True)


# -- load generation --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """One closed-loop measurement."""

    latencies_s: np.ndarray
    wall_s: float
    concurrency: int
    queries_per_call: int = 1

    @property
    def calls(self) -> int:
        return len(self.latencies_s)

    @property
    def qps(self) -> float:
        """Queries (not requests) per second."""
        return self.calls * self.queries_per_call / self.wall_s if self.wall_s > 0 else 0.0

    def percentile_ms(self, p: float) -> float:
        return float(np.percentile(self.latencies_s, p) * 1e3) if self.calls else float("nan")

    def summary(self) -> dict[str, Any]:
        return {
            "concurrency": self.concurrency,
            "queries_per_call": self.queries_per_call,
            "calls": self.calls,
            "wall_s": round(self.wall_s, 3),
            "qps": round(self.qps, 1),
            "p50_ms": round(self.percentile_ms(50), 4),
            "p99_ms": round(self.percentile_ms(99), 4),
            "mean_ms": round(float(np.mean(self.latencies_s) * 1e3), 4) if self.calls else float("nan"),
        }


async def _closed_loop_once(make_call: Callable[[int], Awaitable[Any]], concurrency: int, duration: float) -> tuple[list[float], float]:
    counter = itertools.count()
    latencies: list[float] = []
    start = time.perf_counter()
    deadline = start + duration

    async def worker() -> None:
        while True:
            begin = time.perf_counter()
            if begin >= deadline:
                return
            await make_call(next(counter))
            latencies.append(time.perf_counter() - begin)

    async with asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(worker())
    return latencies, time.perf_counter() - start


async def run_closed_loop(
    make_call: Callable[[int], Awaitable[Any]],
    concurrency: int,
    duration: float,
    *,
    warmup: float = 0.5,
    queries_per_call: int = 1,
) -> Run:
    """`concurrency` asyncio tasks, each awaiting `make_call(n)` (n counts calls, to cycle through queries)
    one at a time for `duration` seconds, after `warmup` seconds whose calls are not recorded."""
    if warmup > 0:
        await _closed_loop_once(make_call, concurrency, warmup)
    latencies, wall = await _closed_loop_once(make_call, concurrency, duration)
    return Run(np.asarray(latencies), wall, concurrency, queries_per_call)


def run_closed_loop_threads(
    call: Callable[[int], Any],
    concurrency: int,
    duration: float,
    *,
    warmup: float = 0.5,
    queries_per_call: int = 1,
) -> Run:
    """The same closed loop for blocking in-process calls: `concurrency` threads (1 = the calling thread).

    hnswlib and faiss release the GIL while searching, so threads are how in-process code uses the cores.
    """

    def once(seconds: float) -> tuple[list[float], float]:
        counter = itertools.count()  # next() on a count is atomic under the GIL
        per_thread: list[list[float]] = [[] for _ in range(concurrency)]
        start = time.perf_counter()
        deadline = start + seconds

        def worker(out: list[float]) -> None:
            while True:
                begin = time.perf_counter()
                if begin >= deadline:
                    return
                call(next(counter))
                out.append(time.perf_counter() - begin)

        if concurrency == 1:
            worker(per_thread[0])
        else:
            # Daemon threads: on Ctrl-C the main thread leaves and nothing waits on them past `seconds`.
            threads = [threading.Thread(target=worker, args=(out,), daemon=True) for out in per_thread]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        return [x for out in per_thread for x in out], time.perf_counter() - start

    if warmup > 0:
        once(warmup)
    latencies, wall = once(duration)
    return Run(np.asarray(latencies), wall, concurrency, queries_per_call)


# -- processes --------------------------------------------------------------------------------------


def run_main(body: Callable[[], None]) -> None:
    """Runs a benchmark's main; on Ctrl-C exits 130 with one line instead of the failures it caused.

    The terminal sends SIGINT to the server processes too, so in-flight RPCs fail (CANCELLED, UNAVAILABLE)
    at the same moment the KeyboardInterrupt arrives; either way the `finally` blocks have already stopped
    every process this run started by the time the exception gets here.
    """
    interrupted = threading.Event()

    def on_sigint(signum: int, frame: Any) -> None:
        interrupted.set()
        signal.default_int_handler(signum, frame)

    signal.signal(signal.SIGINT, on_sigint)
    try:
        body()
    except BaseException:
        if interrupted.is_set():
            log("interrupted; every process this run started has been stopped")
            raise SystemExit(130) from None
        raise


@contextlib.contextmanager
def running(process: ServerProcess, timeout: float = 120.0) -> Iterator[ServerProcess]:
    """Starts a server process and always stops it (SIGTERM, then SIGKILL), Ctrl-C included."""
    try:
        yield process.start(timeout)
    finally:
        process.stop()


def pid_of(process: ServerProcess) -> int:
    assert process.process is not None
    return process.process.pid


def rss_bytes(pid: int | None = None) -> int:
    """Resident set size (VmRSS) of a process, this one by default."""
    with open(f"/proc/{pid or os.getpid()}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int | None = None, tid: int | None = None) -> float:
    """User + system CPU time a process has used so far (all its threads, those that ended included), or
    with `tid` one of its threads."""
    process = f"/proc/{pid or os.getpid()}"
    with open(f"{process}/task/{tid}/stat" if tid is not None else f"{process}/stat") as f:
        # Field 2 (comm) may contain spaces; everything after its closing parenthesis is space-separated.
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


class CpuMeter:
    """CPU seconds used by named processes between `start()` and `stop()`."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self._before: dict[str, float] = {}
        self.used: dict[str, float] = {}

    def start(self) -> "CpuMeter":
        self._before = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        return self

    def stop(self) -> dict[str, float]:
        self.used = {name: cpu_seconds(pid) - self._before[name] for name, pid in self.pids.items()}
        return self.used

    def per_query_ms(self, queries: int) -> dict[str, float]:
        return {name: round(used * 1e3 / max(queries, 1), 4) for name, used in self.used.items()}


def py_spy_binary() -> str | None:
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


@contextlib.contextmanager
def py_spy(pid: int, path: Path, seconds: float, rate: int = 100) -> Iterator[Path | None]:
    """Samples a process with py-spy (if installed) while the block runs, as collapsed stacks in `path`.

    --nonblocking: the target is not paused to be sampled, so it slows down little (stacks may be torn).
    """
    binary = py_spy_binary()
    if binary is None:
        log("py-spy not installed (pip install py-spy); not profiling")
        yield None
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    command = [binary, "record", "-p", str(pid), "-d", str(max(1, round(seconds))), "-r", str(rate), "-f", "raw", "--threads", "--nonblocking", "-o", str(path)]
    spy = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield path
        spy.wait(seconds + 15)
    finally:
        if spy.poll() is None:
            spy.kill()
            spy.wait()


def py_spy_summary(path: Path | None, top: int = 15) -> dict[str, Any] | None:
    """Where the sampled process was: share of samples per thread, per innermost frame (self) and per frame
    anywhere on the stack (inclusive). Time inside C code (grpc's core, uvloop, hnswlib) shows as the
    Python frame that called into it; the event loop's own C work shows as `Runner.run`."""
    if path is None or not path.exists():
        return None
    threads: Counter[str] = Counter()
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        samples = int(count)
        frames = stack.split(";")
        total += samples
        thread = frames[0].split(": ", 1)[-1] if frames[0].startswith("thread") else "?"
        threads[thread] += samples
        own[f"{thread} | {frames[-1]}"] += samples
        for frame in set(frames[1:]):
            inclusive[frame] += samples
    if not total:
        return None

    def shares(counter: Counter[str], n: int) -> list[tuple[str, float]]:
        return [(name, round(count / total, 4)) for name, count in counter.most_common(n)]

    return {"file": str(path), "samples": total, "threads": shares(threads, 10), "self": shares(own, top), "inclusive": shares(inclusive, 3 * top)}


def print_py_spy(title: str, summary: dict[str, Any] | None, top: int = 12) -> None:
    if summary is None:
        return
    rows = [[name[:110], share] for name, share in summary["self"][:top]]
    print_table(f"{title}: py-spy, innermost frame ({summary['samples']} samples; {summary['file']})", ["thread | frame", "share"], rows)


# -- data and the in-process index ------------------------------------------------------------------


def normalized(vectors: np.ndarray) -> np.ndarray:
    """Unit-length float32 copy, what the shard makes of vectors and queries under cosine."""
    out = np.array(vectors, dtype=np.float32, order="C", copy=True)
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def parse_params(text: str) -> dict[str, int]:
    """'m=16,ef_construction=200' -> {'m': 16, 'ef_construction': 200} (all index parameters are integers)."""
    params: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"index parameter {item!r} is not name=value")
        params[name.strip()] = int(value)
    return params


def build_in_process(kind: str, params: dict[str, int], vectors: np.ndarray, batch: int) -> tuple[VectorIndex, float]:
    """The shard's own adapter, fed normalised vectors in batches of `batch` (as the shard receives them);
    returns the index and the seconds spent adding."""
    index = create_index(IndexConfig(kind, vectors.shape[1], "ip", dict(params)))
    start = time.perf_counter()
    for begin in range(0, len(vectors), batch):
        index.add(np.arange(begin, min(begin + batch, len(vectors)), dtype=np.int64), vectors[begin : begin + batch])
    return index, time.perf_counter() - start


def search_labels(index: VectorIndex, queries: np.ndarray, knobs: QueryKnobs, k: int = K, batch: int = 1000) -> np.ndarray:
    return np.concatenate([index.search(queries[i : i + batch], k, knobs, None).labels for i in range(0, len(queries), batch)])


def ids_to_rows(results: Sequence[Any], k: int = K) -> np.ndarray:
    """QueryResult messages whose ids are decimal row numbers -> int64 (n, k), -1 where fewer than k came back."""
    out = np.full((len(results), k), -1, dtype=np.int64)
    for row, result in enumerate(results):
        ids = [int(i) for i in result.ids[:k]]
        out[row, : len(ids)] = ids
    return out


def answered_rows(response: Any, k: int = K) -> np.ndarray:
    """A search response's hits as row numbers (ids_to_rows), from packed hits or per-query results alike."""
    if response.HasField("hits"):
        return ids_to_rows([SimpleNamespace(ids=ids) for ids in HitBatch.from_proto(response.hits).id_lists()], k)
    return ids_to_rows(response.results, k)


def row_ids(start: int, stop: int) -> list[str]:
    return [str(i) for i in range(start, stop)]


def packed(vectors: np.ndarray) -> bytes:
    return np.ascontiguousarray(vectors, dtype="<f4").tobytes()


# -- output -----------------------------------------------------------------------------------------


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0 or not np.isfinite(a) or not np.isfinite(b):
        return None
    return a / b


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if isinstance(value, (int, np.integer)):
        return f"{value:,}"
    value = float(value)
    if not np.isfinite(value):
        return "-"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.3f}"
    return f"{value:.4f}"


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]], note: str = "") -> None:
    cells = [[fmt(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    line = "  ".join("-" * w for w in widths)
    out = [f"\n{title}", line, "  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(headers, widths))), line]
    for row in cells:
        out.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
    out.append(line)
    if note:
        out.append(note)
    print("\n".join(out), file=sys.stderr, flush=True)


def emit_json(report: dict[str, Any]) -> None:
    print(json.dumps(report, indent=2, default=_jsonable), flush=True)


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def machine() -> dict[str, Any]:
    try:
        load = os.getloadavg()
    except OSError:
        load = (float("nan"),) * 3
    return {"cpus": os.cpu_count(), "loadavg_at_start": [round(x, 2) for x in load]}
