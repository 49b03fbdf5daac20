"""`python -m bench.run --smoke` keeps working: it exits 0, prints a row for every scenario and no target comparison.

The benchmark's timings are never asserted; this only guards the path (upstream, load generator, haimaker with
SQLite and PostgreSQL, budgets on) against rot.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench.report import SMOKE_NOTE

REPO = Path(__file__).resolve().parents[1]
CUSTOMERS = ("no customer", "1 customer", "10k customers")


def expected_rows() -> list[str]:
    """The scenario names bench/README.md promises, written out independently of bench/run.py."""
    rows = [f"direct c={c} {mode}" for c in (1, 16, 64) for mode in ("json", "stream")]
    rows.append("direct c=64 json, 17k-char chat")
    for store in ("sqlite", "postgres"):
        rows += [
            f"{store} c={c} {mode} {customers}"
            for c in (1, 16, 64)
            for mode in ("json", "stream")
            for customers in CUSTOMERS
        ]
        rows.append(f"{store} c=64 json 10k customers, 17k-char chat")
        rows.append(f"{store} memory: 10k customers c=64")
    return rows


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_bench_smoke_prints_every_scenario(tmp_path: Path) -> None:
    out = tmp_path / "r.md"
    completed = subprocess.run(
        [sys.executable, "-m", "bench.run", "--smoke", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )

    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    table_lines = [line for line in completed.stdout.splitlines() if line.startswith("| ")]
    names = [line.split("|")[1].strip() for line in table_lines[1:]]
    assert names == expected_rows()
    assert out.read_text().count("\n| ") == len(expected_rows()) + 1
    # A smoke run's figures mean nothing: neither its output nor its report compares them with the targets.
    for text in (completed.stdout, out.read_text()):
        assert "## Targets" not in text and "(target " not in text
        assert SMOKE_NOTE in text
