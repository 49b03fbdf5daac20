"""The benchmark report: a full run sets its figures next to the targets; a smoke run never does (its tiny counts
mean nothing, and a "target met" there would be read as a result)."""

from __future__ import annotations

import pytest

from bench.load import LoadResult
from bench.report import SMOKE_NOTE, Row, report_text
from tests.test_bench_docs import REPO, missing_citations


def result(rps: float, p50_ms: float, p99_ms: float) -> LoadResult:
    return LoadResult(100, 100, 100, {}, 1.0, rps, p50_ms, 1.0, p99_ms, 2.0, 0.1)


def sample_rows() -> list[Row]:
    """The SQLite rows the targets are read from, figures that meet every target."""
    direct = result(10_000, 0.1, 0.2)
    return [
        Row("sqlite c=1 json 1 customer", direct, result(2_000, 0.4, 1.0), 0.3, 120, ""),
        Row("sqlite c=64 json 10k customers", direct, result(4_000, 14, 30), 0.3, 130, ""),
        Row("sqlite c=64 stream 10k customers", direct, result(3_000, 19, 40), 0.4, 140, ""),
        Row("sqlite memory: 10k customers c=64", direct, result(3_800, 15, 35), 0.3, 145, "RSS now 144 MB"),
    ]


@pytest.mark.parametrize("smoke", [False, True], ids=["full", "smoke"])
def test_every_file_the_report_cites_exists(smoke: bool) -> None:
    text = report_text(["- command: `python -m bench.run`"], sample_rows(), 100_000, smoke=smoke, budgets=True)
    assert missing_citations(text, REPO / "bench") == []


def test_a_full_run_reports_its_figures_against_the_targets() -> None:
    text = report_text([], sample_rows(), 100_000, smoke=False, budgets=True)
    assert "## Targets (bench/README.md), SQLite rows, budgets on" in text
    assert "- added p50 at concurrency 1: 0.30 ms (target < 0.5 ms)" in text
    assert "4,000 rps (target ≥ 3,000)" in text
    assert SMOKE_NOTE not in text


def test_a_smoke_run_prints_no_target_comparison() -> None:
    text = report_text([], sample_rows(), 300, smoke=True, budgets=True)
    assert "target" not in text.lower().replace(SMOKE_NOTE.lower(), "")
    assert text.rstrip().endswith(SMOKE_NOTE)
    assert "| sqlite c=64 json 10k customers " in text  # the table itself is still printed
