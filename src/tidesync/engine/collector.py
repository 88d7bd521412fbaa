"""The garbage collector's settings for a process that runs pipelines (``tidesync run``, the benchmarks).

CPython's collector runs its first generation every 700 container
allocations and walks the older ones every 10 of those. A pipeline allocates
several containers per event (decoded rows, events' fields, the Postgres
source's row shadows) and keeps many of them for a while (batches in the
queue, a cache of tens of thousands of shadowed rows), so with the defaults
the collector runs every few hundred events and walks the same live,
non-garbage objects again and again. Very little of what a pipeline drops is
cyclic (reference counting frees it), so collecting rarely costs little
memory.

Measured on the Postgres source's row shadows alone (200,000 changes,
60/30/10 % insert/update/delete, CPU time): 4.9 µs per change with the
defaults, 3.7 µs with :data:`GC_THRESHOLDS`, 3.5 µs with the collector off.
The whole-engine figure is in the README (``bench/pg_source.py``).
"""

from __future__ import annotations

import gc

GC_THRESHOLDS = (50_000, 20, 20)


def tune_gc() -> None:
    """Freeze what start-up made (modules, the config, the engine's parts) and set :data:`GC_THRESHOLDS`."""
    gc.collect()  # what start-up left as garbage goes now, not frozen with the rest
    gc.freeze()  # never garbage: out of every later collection's walk
    gc.set_threshold(*GC_THRESHOLDS)
