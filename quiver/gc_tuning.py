"""CPython's cyclic garbage collector, set for a long-running server.

A full collection walks every object the collector tracks, and stops the event loop while it does. Right
after start a router or shard server already holds about 57,000 of them from its imports alone (grpc,
protobuf, numpy, faiss): each full collection then took about 15 ms, and under the overload soak
(`loadtest.bench_soak`) the router ran 22 of them in two minutes; every refusal and answer in flight waited
for each. Nearly all of those objects live as long as the process. `gc.freeze()` moves everything that
exists once the server is up into a permanent generation that collections skip (the fix Instagram
described for its forked Python workers), so a full collection walks only what was allocated since:
request state, raised exceptions' cycles, asyncio tasks. The collector is left on for those.
"""
from __future__ import annotations

import gc

from prometheus_client import Gauge

FROZEN_OBJECTS = Gauge("quiver_gc_frozen_objects", "Objects moved out of the cyclic GC's reach once this process was up (gc.freeze).")


def freeze_startup_heap() -> int:
    """Collect the garbage of start-up, then freeze what is left; returns how many objects are frozen."""
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    FROZEN_OBJECTS.set(frozen)
    return frozen
