"""Serving-process tuning, in child interpreters: a test process must stay collectable and keep its allocator."""

from __future__ import annotations

import subprocess
import sys

from haimaker.process_tuning import OLDER_THRESHOLDS, YOUNG_THRESHOLD


def test_freezing_moves_the_startup_heap_out_of_the_collectors_reach() -> None:
    script = (
        "import gc\n"
        "from haimaker.process_tuning import freeze_startup_heap\n"
        "startup = [[index] for index in range(50_000)]\n"
        "freeze_startup_heap()\n"
        "print(gc.get_freeze_count(), len(gc.get_objects()), *gc.get_threshold())\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.split()
    frozen, tracked, *thresholds = map(int, out)
    assert frozen > 50_000  # the startup objects, which full collections no longer walk
    assert tracked < 1_000
    assert tuple(thresholds) == (YOUNG_THRESHOLD, *OLDER_THRESHOLDS)


def test_malloc_arenas_can_be_limited_on_glibc() -> None:
    script = "from haimaker.process_tuning import limit_malloc_arenas\nprint(limit_malloc_arenas())\n"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.strip()
    # This project's machines and CI are Debian (glibc); elsewhere the call declines without failing.
    assert out == ("True" if sys.platform.startswith("linux") else "False")
