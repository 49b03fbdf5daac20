"""The serving process freezes its startup heap (in a child interpreter: a test process must stay collectable)."""

from __future__ import annotations

import subprocess
import sys

from haimaker.gc_tuning import OLDER_THRESHOLDS, YOUNG_THRESHOLD


def test_freezing_moves_the_startup_heap_out_of_the_collectors_reach() -> None:
    script = (
        "import gc\n"
        "from haimaker.gc_tuning import freeze_startup_heap\n"
        "startup = [[index] for index in range(50_000)]\n"
        "freeze_startup_heap()\n"
        "print(gc.get_freeze_count(), len(gc.get_objects()), *gc.get_threshold())\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.split()
    frozen, tracked, *thresholds = map(int, out)
    assert frozen > 50_000  # the startup objects, which full collections no longer walk
    assert tracked < 1_000
    assert tuple(thresholds) == (YOUNG_THRESHOLD, *OLDER_THRESHOLDS)
