"""`python -m bench.keys --smoke` keeps working: it creates its virtual keys through `/key/generate`, every request
of every key succeeds (exit 0), and it prints the medians of the master key, both virtual keys and a customer with
the same limits for every shape.

Timings are never asserted; this only guards the path against rot.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_bench_keys_smoke_measures_the_master_key_and_both_virtual_keys() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "bench.keys", "--smoke"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )

    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    medians = completed.stdout.split("medians over rounds:")[1].strip().splitlines()
    labels = [line.split(":")[0].strip() for line in medians]
    assert labels == [
        f"{shape} {kind}"
        for shape in ("c=1 json", "c=64 json", "c=64 stream")
        for kind in ("master key", "virtual key", "virtual key + limits", "master key + customer limits")
    ]
    assert all("0 errors" in line for line in medians)
    assert sum("added p50" in line for line in medians) == 9
