"""Index adapters: one per index kind (hnsw, ivf_pq, flat) behind the `VectorIndex` protocol."""
from shard.indexes.base import IndexConfig, QueryKnobs, SearchHits, VectorIndex
from shard.indexes.factory import create_index, load_index

__all__ = ["IndexConfig", "QueryKnobs", "SearchHits", "VectorIndex", "create_index", "load_index"]
