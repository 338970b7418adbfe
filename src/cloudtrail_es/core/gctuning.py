"""The garbage collector tuned for loading: collections rare, and never over the imported code.

The loader allocates millions of short-lived containers (decoded events, documents), nearly all
freed by reference counting the moment their chunk is answered; with the default thresholds
(700, 10, 10) the cyclic collector still runs every 700 allocations and regularly walks every
live object (two chunks' events and documents at a time), for nothing: see
``docs/performance.md`` for what it cost. ``tune()`` freezes what is alive
after the imports (moved out of every later collection) and raises the thresholds, so the few
cycles made (tracebacks, the HTTP client's) are still collected, just far less often.
"""
from __future__ import annotations

import gc

#: Allocations (net) before a young collection; young collections before a middle one; middle
#: ones before a full one. Measured with ``benchmarks/bench_cpu.py --instructions`` against the
#: defaults and other settings (``docs/performance.md``).
THRESHOLDS = (100_000, 50, 1000)


def tune() -> None:
    """Collect once, freeze what survives (the imported modules), and raise the thresholds."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
