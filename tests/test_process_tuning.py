"""Serving-process tuning, in child interpreters: a test process must stay collectable and keep its allocator."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from haimaker.process_tuning import OLDER_THRESHOLDS, YOUNG_THRESHOLD, start_heap_trims


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


async def test_heap_trims_run_on_the_loop_until_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    trims: list[int] = []
    monkeypatch.setattr("haimaker.process_tuning._glibc_function", lambda name: trims.append)
    stop = start_heap_trims(asyncio.get_running_loop(), interval_s=0.01)
    await asyncio.sleep(0.1)
    stop()
    seen = len(trims)
    await asyncio.sleep(0.05)
    assert seen >= 3 and len(trims) == seen and set(trims) == {0}
