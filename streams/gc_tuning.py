"""Python's cyclic garbage collector, set for a long-running worker.

With CPython's defaults (a young collection every 700 allocations net, a full one every 100 young
ones, subject to the 25 % rule), the worker spent 10-15 % of its CPU collecting while it drained a
backlog, and every 2-3 s a full collection walked its whole heap (370,000-450,000 objects: Faust,
aiokafka, the cached account entries and seen ids) for 130-400 ms, a stop of the event loop longer
than the latency target (measured with ``gc.callbacks`` in a worker draining 100,000 events of
1,200 accounts; BENCHMARKS.md, Pipeline). Nearly all of the worker's garbage is freed by reference
counting the moment it is dropped: the collector only finds cycles, which are rare here.

So, once the worker is built: what exists then (modules, the app, its clients) is frozen out of
every collection (``gc.freeze``: it lives as long as the process), and collections run ~70 times
less often. Reference counting, which frees almost everything, is untouched.
"""

from __future__ import annotations

import gc
import logging

log = logging.getLogger("billing.worker")

# A young collection every 50,000 allocations net; a middle one every 20 of those; a full one
# every 100 middle ones at most (and only when the 25 % rule allows).
THRESHOLDS = (50_000, 20, 100)


def tune_garbage_collector() -> None:
    """Freeze what the process holds now and collect less often (module docstring)."""
    gc.collect()  # what start-up left behind goes before the rest is frozen
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
    log.info("gc_tuned frozen_objects=%d thresholds=%s", gc.get_freeze_count(), THRESHOLDS)
