"""`python -m bench.apis --smoke` keeps working: `/v1/messages` and the translated `/v1/responses` answer every
request (exit 0) and their medians print beside chat's. Timings are never asserted; this only guards the path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_bench_apis_smoke_measures_chat_messages_and_responses() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "bench.apis", "--smoke"], cwd=REPO, capture_output=True, text=True, timeout=110
    )

    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    medians = completed.stdout.split("medians over rounds:")[1].strip().splitlines()
    labels = [line.split(":")[0].strip() for line in medians]
    assert labels == [f"c={c} {route}" for c in (1, 64) for route in ("chat", "messages", "responses")]
    assert sum("added p50" in line for line in medians) == 4
