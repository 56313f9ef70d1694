"""The replica's garbage-collector policy, applied once its startup is done.

Startup objects (modules, the app, clients, the first snapshot) never become garbage, yet
every full collection walks them all: frozen, they are out of the collector's sight and
full collections stay short, which is what cuts the p99 tail of requests and applies.
Young-generation collections run every 20k allocations instead of 700: most request and
apply garbage is freed by reference counting anyway. Cyclic garbage made later is still
collected. `bench/propagation.py` gives its watcher processes the same policy, so what it
measures is what a replica runs.
"""

from __future__ import annotations

import gc

GC_THRESHOLD0 = 20_000


def freeze_startup_heap() -> None:
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD0, *gc.get_threshold()[1:])
