"""Keep the cyclic garbage collector off the latency tail of a serving process.

After startup the heap holds a few hundred thousand long-lived objects (FastAPI, SQLAlchemy, pydantic models, the
price table, the catalog). Every full collection walks all of them: ~100 ms on the benchmark machine, which is the
whole p99 at concurrency 64. `gc.freeze()` moves what exists once startup is done into the permanent generation, so
later collections only walk what requests allocate. The hot path makes few reference cycles, so a larger young
generation costs a little memory and saves most of the young collections.

Only the serving process does this (`haimaker serve`): a test process builds many apps and must be able to free them.
"""

from __future__ import annotations

import gc

# CPython's default is (700, 10, 10). One request allocates a few hundred tracked objects, nearly all freed by
# reference counting; a young collection every ~50k allocations instead of every 700 is still cheap (it walks only
# the survivors) and rarely promotes per-request garbage into the older generations.
YOUNG_THRESHOLD = 50_000
OLDER_THRESHOLDS = (20, 20)


def freeze_startup_heap() -> None:
    """Call once startup is complete: collect what startup threw away, then freeze the rest."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, *OLDER_THRESHOLDS)
