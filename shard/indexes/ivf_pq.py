"""IVF-PQ adapter over faiss (IndexIVFPQ, with our own label -> list column for remove/replace: ivf_lists.py).

- Until trained, points live in a raw `VectorArena` and are searched exactly, so nothing written before
  training is ever invisible. Training happens automatically once `train_size` points exist, or on an
  explicit Train call; the buffered points then go into the index.
- `refine` > 0 keeps raw vectors and re-ranks refine*k PQ candidates exactly. With refine = 0 the raw
  vectors are dropped after training: that is what makes IVF-PQ ~m bytes per vector.
- Lists are compacted to their exact size after a build and, by the partition, once writes go quiet
  (ivf_lists.ListCompaction): faiss's doubling growth otherwise leaves 30-37 B a point resident at 10M.
- Per-query nprobe and filters travel in faiss SearchParametersIVF (no shared mutable state), the filter
  as an IDSelectorBitmap evaluated inside faiss.
"""
from __future__ import annotations

import dataclasses
import os

from typing import Any

import faiss
import numpy as np

from quiver.errors import FailedPrecondition, InvalidArgument
from shard.indexes.arena import VectorArena
from shard.indexes.base import IndexConfig, QueryKnobs, SearchHits
from shard.indexes.blob_container import map_file, pack, staging_dir, unpack
from shard.indexes.ivf_lists import LabeledIvf, ListCompaction
from shard.indexes.exact import exact_topk


def default_pq_m(dim: int) -> int:
    return max(d for d in range(1, min(64, max(dim // 2, 1)) + 1) if dim % d == 0)


def resolve_params(dim: int, params: dict[str, Any]) -> dict[str, int]:
    nlist = int(params.get("nlist") or 1024)
    resolved = {
        "nlist": nlist,
        "m": int(params.get("m") or default_pq_m(dim)),
        "nbits": int(params.get("nbits") or 8),
        "nprobe": int(params.get("nprobe") or 16),
        "train_size": int(params.get("train_size") or max(39 * nlist, 10_000)),
        "refine": int(params.get("refine") or 0),
    }
    if dim % resolved["m"]:
        raise InvalidArgument(f"ivf_pq: m={resolved['m']} must divide the dimension {dim}")
    if not 1 <= resolved["nbits"] <= 16:
        raise InvalidArgument(f"ivf_pq: nbits={resolved['nbits']} must be between 1 and 16")
    if resolved["train_size"] < max(nlist, 1 << resolved["nbits"]):
        raise InvalidArgument(
            f"ivf_pq: train_size={resolved['train_size']} must be at least nlist={nlist} and 2**nbits={1 << resolved['nbits']}"
        )
    if not 0 <= resolved["refine"] <= 64:
        raise InvalidArgument(f"ivf_pq: refine={resolved['refine']} must be between 0 and 64")
    return resolved


class IvfBuild:
    """Training plus indexing of the points present at `start_build`, runnable without any lock."""

    def __init__(self, dim: int, params: dict[str, int], metric: int, training: np.ndarray, labels: np.ndarray, vectors: np.ndarray) -> None:
        self._dim, self._params, self._metric = dim, params, metric
        self._training, self._labels, self._vectors = training, labels, vectors
        self.trained_on = len(training)
        self.lists: LabeledIvf | None = None

    def run(self) -> None:
        quantizer = faiss.IndexFlatIP(self._dim) if self._metric == faiss.METRIC_INNER_PRODUCT else faiss.IndexFlatL2(self._dim)
        ivf = faiss.IndexIVFPQ(quantizer, self._dim, self._params["nlist"], self._params["m"], self._params["nbits"], self._metric)
        ivf.own_fields = True
        quantizer.this.disown()
        ivf.train(self._training)
        lists = LabeledIvf(ivf)
        lists.add(self._labels, self._vectors)
        lists.compact()  # faiss grew each list one entry at a time: to exact size while nobody reads them
        self.lists = lists


class IvfPqIndex:
    def __init__(self, config: IndexConfig) -> None:
        self.config = config
        self._params = resolve_params(config.dim, config.params)
        self._arena: VectorArena | None = VectorArena(config.dim, directory=config.vector_dir)
        self._lists: LabeledIvf | None = None

    @property
    def _ivf(self) -> faiss.IndexIVFPQ | None:
        return self._lists.ivf if self._lists is not None else None

    @property
    def trained(self) -> bool:
        return self._ivf is not None

    @property
    def exact(self) -> bool:
        return self._ivf is None

    def effective_params(self) -> dict[str, Any]:
        return dict(self._params)

    @property
    def _metric(self) -> int:
        return faiss.METRIC_INNER_PRODUCT if self.config.space == "ip" else faiss.METRIC_L2

    def add(self, labels: np.ndarray, vectors: np.ndarray) -> None:
        if len(labels) == 0:
            return
        if self._arena is not None:
            self._arena.put(labels, vectors)
        if self._lists is not None:
            self._lists.add(labels, vectors)

    @property
    def wants_training(self) -> bool:
        """Enough points are buffered to train; the partition then trains in the background."""
        return self._ivf is None and self._arena is not None and self._arena.count >= self._params["train_size"]

    @property
    def wants_compaction(self) -> bool:
        """Enough was written since the lists were last sized exactly to copy them again (ivf_lists.py)."""
        return self._lists is not None and self._lists.wants_compaction

    def start_compaction(self) -> ListCompaction | None:
        return ListCompaction(self._lists) if self._lists is not None else None

    def finish_compaction(self, job: ListCompaction) -> bool:
        """Install a finished compaction (call under the write lock); False if it went stale meanwhile."""
        return job.owner is self._lists and job.install()

    def remove(self, labels: np.ndarray) -> None:
        if self._arena is not None:
            self._arena.remove(labels)
        if self._lists is not None and len(labels):
            self._lists.remove(labels)

    def vectors(self, labels: np.ndarray) -> np.ndarray:
        if self._arena is not None:
            return self._arena.get(labels)
        assert self._lists is not None
        return self._lists.reconstruct(labels)

    def train(self, sample: np.ndarray | None) -> int:
        """Train and install in one go (recovery, tests). The partition uses the three steps below so
        that neither training nor indexing the buffered points happens under its write lock."""
        build = self.start_build(sample)
        build.run()
        self.install(build)
        return build.trained_on

    def start_build(self, sample: np.ndarray | None) -> "IvfBuild":
        """Snapshot what a build needs (call under the read lock); changes from now on are tracked."""
        if self._ivf is not None and self._arena is None:
            # Retraining would need every point's raw vector, and without refine they were not kept.
            raise FailedPrecondition("ivf_pq: already trained, and without refine the raw vectors needed to retrain are not kept")
        assert self._arena is not None
        labels = self._arena.live_labels()
        vectors = self._arena.get(labels)
        training = np.ascontiguousarray(sample if sample is not None else vectors, dtype=np.float32)
        if len(training) < self._params["nlist"]:
            raise FailedPrecondition(
                f"ivf_pq: training needs at least nlist={self._params['nlist']} vectors, have {len(training)}; "
                "write more points or pass a larger sample"
            )
        self._arena.track_changes()
        return IvfBuild(self.config.dim, self._params, self._metric, training, labels, vectors)

    def install(self, build: "IvfBuild") -> None:
        """Swap in a finished build and catch it up with writes made meanwhile (call under the write lock)."""
        assert build.lists is not None and self._arena is not None
        changed = self._arena.take_changes()
        if len(changed):
            build.lists.remove(changed)
            live = changed[self._arena.is_live(changed)]
            if len(live):
                build.lists.add(live, self._arena.get(live))
        self._lists = build.lists
        if not self._params["refine"]:
            self._arena = None

    def search(self, queries: np.ndarray, k: int, knobs: QueryKnobs, allowed: np.ndarray | None) -> SearchHits:
        if self._ivf is None:
            assert self._arena is not None
            return self._arena.search_exact(queries, k, allowed, self.config.space)
        selector = None
        if allowed is not None:
            bits = np.packbits(allowed, bitorder="little")
            selector = faiss.IDSelectorBitmap(len(bits), faiss.swig_ptr(bits))  # size in bytes
        nprobe = min(knobs.nprobe or self._params["nprobe"], self._params["nlist"])
        return self._search_ivf(queries, k, nprobe, selector)

    def _search_ivf(self, queries: np.ndarray, k: int, nprobe: int, selector: Any) -> SearchHits:
        assert self._ivf is not None
        refine = self._params["refine"]
        fetch = k * refine if refine else k
        params = faiss.SearchParametersIVF(nprobe=nprobe, sel=selector) if selector is not None else faiss.SearchParametersIVF(nprobe=nprobe)
        distances, labels = self._ivf.search(queries, fetch, params=params)
        if refine and self._arena is not None:
            return self._rerank(queries, labels, k)
        hits = SearchHits.empty(len(queries), k)
        hits.labels[:] = labels
        scores = distances if self._metric == faiss.METRIC_INNER_PRODUCT else -distances
        hits.scores[:] = np.where(labels >= 0, scores, -np.inf)
        return hits

    def _rerank(self, queries: np.ndarray, candidates: np.ndarray, k: int) -> SearchHits:
        assert self._arena is not None
        hits = SearchHits.empty(len(queries), k)
        for row, (query, labels) in enumerate(zip(queries, candidates)):
            labels = labels[labels >= 0]
            exact = exact_topk(query[None, :], self._arena.get(labels), labels, k, self.config.space)
            hits.scores[row], hits.labels[row] = exact.scores[0], exact.labels[0]
        return hits

    def search_exact(self, queries: np.ndarray, k: int, mask: np.ndarray) -> SearchHits:
        if self._arena is not None:
            return self._arena.search_exact(queries, k, mask, self.config.space)
        return self.search_subset(queries, k, np.flatnonzero(mask))

    def search_subset(self, queries: np.ndarray, k: int, labels: np.ndarray) -> SearchHits:
        if self._arena is not None:
            return self._arena.search_labels(queries, k, labels, self.config.space)
        # Without raw vectors the best we have is an exhaustive scan of the compressed codes.
        selector = faiss.IDSelectorBatch(labels)
        return self._search_ivf(queries, k, self._params["nlist"], selector)

    def memory_bytes(self) -> int:
        total = self._arena.memory_bytes() if self._arena is not None else 0
        if self._lists is not None:
            total += self._lists.memory_bytes()
        return int(total)

    def to_bytes(self, in_memory: bool = False) -> bytes | memoryview:
        """faiss's own index format and any raw vectors; with a vector directory, through scratch files there
        (faiss writes its index to a file, which is mapped), so a snapshot copies nothing into memory."""
        directory = None if in_memory else self.config.vector_dir
        blobs: dict[str, Any] = {}
        if self._arena is not None:
            blobs["arena"] = self._arena.to_buffer(directory)
        if self._ivf is None:
            return pack({"params": self._params}, blobs, directory)
        if directory is None:
            blobs["faiss"] = faiss.serialize_index(self._ivf)  # a uint8 array, handed over uncopied
            return pack({"params": self._params}, blobs)
        with staging_dir(directory) as tmp:
            path = os.path.join(tmp, "index.faiss")
            faiss.write_index(self._ivf, path)
            blobs["faiss"] = map_file(path)
            return pack({"params": self._params}, blobs, directory)

    @classmethod
    def from_bytes(cls, config: IndexConfig, data: bytes) -> "IvfPqIndex":
        header, blobs = unpack(data)
        index = cls(dataclasses.replace(config, params=header["params"]))
        index._arena = VectorArena.from_bytes(config.dim, blobs["arena"], config.vector_dir) if "arena" in blobs else None
        if "faiss" in blobs:
            index._lists = LabeledIvf(faiss.deserialize_index(np.frombuffer(blobs["faiss"], dtype=np.uint8)))
        return index
