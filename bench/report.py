"""The benchmark report: one row per scenario, the markdown table, the machine description and the targets.

Latencies are milliseconds; "added" is proxy minus direct at the same concurrency and mode; "ratio" is proxy
requests/s over direct requests/s. The performance targets (listed in bench/README.md, "Targets") are reported next
to a full run's figures, never asserted, and never next to a smoke run's: those figures mean nothing.
"""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.load import LoadResult

COLUMNS = (
    "scenario",
    "direct rps",
    "proxy rps",
    "ratio",
    "direct p50/p99 ms",
    "proxy p50/p99 ms",
    "added p50/p99 ms",
    "errors",
    "proxy CPU ms/req",
    "peak RSS MB",
    "notes",
)


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the table; `proxy` is None for direct-only rows and failed scenarios."""

    scenario: str
    direct: LoadResult | None
    proxy: LoadResult | None
    cpu_ms_per_request: float | None
    peak_rss_mb: float | None
    note: str

    def cells(self) -> list[str]:
        d, p = self.direct, self.proxy
        return [
            self.scenario,
            f"{d.rps:,.0f}" if d else "",
            f"{p.rps:,.0f}" if p else "",
            f"{p.rps / d.rps:.2f}" if d and p and d.rps else "",
            f"{d.p50_ms:.2f} / {d.p99_ms:.2f}" if d else "",
            f"{p.p50_ms:.2f} / {p.p99_ms:.2f}" if p else "",
            f"{p.p50_ms - d.p50_ms:+.2f} / {p.p99_ms - d.p99_ms:+.2f}" if d and p else "",
            _errors(d, p),
            f"{self.cpu_ms_per_request:.3f}" if self.cpu_ms_per_request is not None else "",
            f"{self.peak_rss_mb:.0f}" if self.peak_rss_mb is not None else "",
            self.note,
        ]

    def summary(self) -> str:
        p = self.proxy
        if p is None:
            return f"{self.scenario}: {self.note}"
        return (
            f"{self.scenario}: {p.rps:,.0f} rps p50 {p.p50_ms:.2f} ms p99 {p.p99_ms:.2f} ms "
            f"errors {p.error_count} cpu {self.cpu_ms_per_request or 0:.3f} ms/req"
        )


def _errors(direct: LoadResult | None, proxy: LoadResult | None) -> str:
    if proxy is None and direct is not None:
        return " ".join(f"{k}:{v}" for k, v in direct.errors.items()) or "0"
    parts = []
    if proxy is not None:
        parts.append(" ".join(f"{k}:{v}" for k, v in proxy.errors.items()) or "0")
    if direct is not None and direct.error_count:
        parts.append("direct " + " ".join(f"{k}:{v}" for k, v in direct.errors.items()))
    return "; ".join(parts)


def render_table(rows: list[Row]) -> str:
    """A markdown table, columns padded so it also reads well in a terminal."""
    cells = [list(COLUMNS), *(row.cells() for row in rows)]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]

    def line(values: list[str]) -> str:
        return "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)) + " |"

    return "\n".join([line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, cells[1:])])


def _cpu_model() -> str:
    try:
        for text in Path("/proc/cpuinfo").read_text().splitlines():
            if text.startswith("model name"):
                return text.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_lines(
    command: str,
    load_before: tuple[float, float, float],
    load_after: tuple[float, float, float],
    elapsed_s: float,
    chunks: int,
    upstream_stats: dict[str, Any],
) -> list[str]:
    """The context a reader needs to judge the numbers."""
    ceiling = upstream_stats.get("cpu_us_per_request")
    return [
        f"- command: `{command}`",
        f"- machine: {os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), {_cpu_model()}, "
        f"{platform.system()} {platform.release()}",
        f"- python {sys.version.split()[0]} ({platform.python_implementation()})",
        f"- load average before/after: {load_before[0]:.2f} / {load_after[0]:.2f} (other work on the machine skews "
        "the numbers)",
        f"- streamed replies: {chunks} content chunks; run took {elapsed_s:.0f} s",
        f"- upstream served {upstream_stats.get('requests', '?')} requests at {ceiling} µs CPU each "
        f"(its ceiling, one core: ~{upstream_stats.get('ceiling_rps_per_core', '?')} rps)",
        "- generator, upstream and proxy share the same cores: absolute numbers are lower bounds; compare ratios",
    ]


def _find(rows: list[Row], name: str) -> Row | None:
    return next((row for row in rows if row.scenario == name and row.proxy is not None), None)


def target_lines(rows: list[Row], memory_requests: int, *, budgets: bool) -> list[str]:
    """The targets (bench/README.md) next to what this run measured (SQLite rows)."""
    lines = [f"## Targets (bench/README.md), SQLite rows, budgets {'on' if budgets else 'OFF (not comparable)'}", ""]
    one = _find(rows, "sqlite c=1 json 1 customer")
    if one is not None and one.direct is not None:
        added = one.proxy.p50_ms - one.direct.p50_ms if one.proxy else 0.0
        lines.append(f"- added p50 at concurrency 1: {added:.2f} ms (target < 0.5 ms)")
    for mode, target in (("json", 3000), ("stream", 2000)):
        row = _find(rows, f"sqlite c=64 {mode} 10k customers")
        if row is not None and row.proxy is not None:
            lines.append(
                f"- {mode} at concurrency 64, 10k customers: {row.proxy.rps:,.0f} rps (target ≥ {target:,}), "
                f"p99 {row.proxy.p99_ms:.1f} ms (target < 50 ms)"
            )
    memory = next((r for r in rows if r.scenario.startswith("sqlite memory") and r.proxy is not None), None)
    if memory is not None:
        done = memory.proxy.total_requests if memory.proxy else 0
        rss = memory.note.rsplit("RSS now ", 1)[-1]
        lines.append(
            f"- memory row ({done:,} of {memory_requests:,} requests, 10k customers): RSS {rss} (target < 150 MB after "
            "100k requests)"
        )
    return lines if len(lines) > 2 else []


SMOKE_NOTE = "Smoke run: tiny counts, so its figures mean nothing and are not compared with the targets."


def report_text(machine: list[str], rows: list[Row], memory_requests: int, *, smoke: bool, budgets: bool) -> str:
    """The whole report: machine description, table and, for a full run only, the targets."""
    targets = [SMOKE_NOTE] if smoke else target_lines(rows, memory_requests, budgets=budgets)
    return "\n".join(["# haimaker benchmark", "", *machine, "", render_table(rows), "", *targets]) + "\n"
