"""`python -m bench.export --smoke` keeps working: every request succeeds with and without a sink, every charge
reaches the webhook receiver, and the medians name each config. Timings are never asserted."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_bench_export_smoke_measures_each_config_and_exports_every_charge() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "bench.export", "--smoke"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    [(exported, sent)] = re.findall(r"exported ([\d,]+) of ([\d,]+) charges", completed.stdout)
    assert exported == sent and int(sent.replace(",", "")) > 0
    medians = completed.stdout.split("medians over rounds:")[1].strip().splitlines()
    assert [line.split(":")[0].strip() for line in medians[:6]] == [
        f"{shape} {kind}" for shape in ("c=1 json", "c=64 json") for kind in ("no sink", "outbox only", "webhook sink")
    ]
