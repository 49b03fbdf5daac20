"""Server-side SVG charts for the admin UI: spend per day, ranked bars, and a spend-against-budget bar.

Every chart is a self-contained `<svg>` string (no script, no external asset) returned as `Markup`, so templates
embed it as is. Every text that can come from a user (customer ids, model names) is escaped here; amounts arrive
in nano-dollars and are rendered as USD.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import date, timedelta
from decimal import Decimal
from html import escape

from markupsafe import Markup

from haimaker.money import Nanos, nanos_to_usd

_FONT = 'font-family="system-ui, sans-serif" font-size="12"'


def format_usd(nanos: Nanos, *, digits: int | None = None) -> str:
    """USD with `digits` decimals; by default 4, or 6 under a cent (LLM spend is often fractions of a cent)."""
    usd = nanos_to_usd(nanos)
    if digits is None:
        digits = 6 if 0 < abs(usd) < 0.01 else 4
    return f"${usd:,.{digits}f}"


def fill_days(points: Sequence[tuple[str, Nanos]], start: date, end: date) -> list[tuple[str, Nanos]]:
    """Every day from `start` to `end` inclusive, with 0 for the days without spend."""
    by_day = dict(points)
    days = (end - start).days + 1
    return [
        ((start + timedelta(days=i)).isoformat(), by_day.get((start + timedelta(days=i)).isoformat(), 0))
        for i in range(max(days, 0))
    ]


def _nice_ceiling(value: float) -> float:
    """The smallest 1/2/5 x 10^n at or above `value` (axis maximum)."""
    if value <= 0:
        return 1e-4
    exponent = math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        candidate = step * 10.0**exponent
        if candidate >= value * 0.999999:
            return candidate
    return 10.0 ** (exponent + 1)  # pragma: no cover - the loop always returns


def _axis_decimals(step: float) -> int:
    """Decimals that show every multiple of `step` exactly (at least 2), so all labels of an axis line up."""
    text = f"{Decimal(repr(step)).normalize():f}"
    return max(2, len(text.partition(".")[2]))


def _axis_label(usd: float, decimals: int) -> str:
    return "$0" if usd == 0 else f"${usd:,.{decimals}f}"


def daily_spend_chart(
    points: Sequence[tuple[str, Nanos]], *, title: str, width: int = 1040, height: int = 260
) -> Markup:
    """A column chart of spend per day (`points` already filled, oldest first)."""
    left, right, top, bottom = 84, 12, 12, 36
    plot_w, plot_h = width - left - right, height - top - bottom
    top_usd = _nice_ceiling(max((nanos_to_usd(v) for _, v in points), default=0.0))
    parts = [
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(title)}"><title>{escape(title)}</title>'
    ]
    decimals = _axis_decimals(top_usd / 4)
    for i in range(5):
        value = top_usd * i / 4
        y = top + plot_h - plot_h * i / 4
        label = _axis_label(value, decimals)
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" {_FONT}>{label}</text>')
    if points:
        slot = plot_w / len(points)
        bar_w = max(1.0, slot * 0.7)
        label_every = max(1, math.ceil(len(points) / 10))
        for i, (day, nanos) in enumerate(points):
            x = left + i * slot + (slot - bar_w) / 2
            bar_h = plot_h * nanos_to_usd(nanos) / top_usd
            y = top + plot_h - bar_h
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{bar_h:.1f}" class="bar">'
                f"<title>{escape(day)}: {format_usd(nanos, digits=6)}</title></rect>"
            )
            if i % label_every == 0:
                parts.append(
                    f'<text x="{left + i * slot + slot / 2:.1f}" y="{height - bottom + 16}" text-anchor="middle" '
                    f"{_FONT}>{escape(day[5:])}</text>"
                )
    parts.append(f'<line x1="{left}" x2="{width - right}" y1="{top + plot_h}" y2="{top + plot_h}" class="axis"/></svg>')
    return Markup("".join(parts))


def ranked_bars_chart(rows: Sequence[tuple[str, Nanos]], *, title: str, width: int = 500) -> Markup:
    """Horizontal bars, one per labelled amount, in the order given (highest first)."""
    label_w, value_w, row_h, pad = 150, 90, 24, 6
    height = max(1, len(rows)) * row_h + 2 * pad
    bar_space = width - label_w - value_w
    top_usd = max((nanos_to_usd(v) for _, v in rows), default=0.0) or 1.0
    parts = [
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(title)}"><title>{escape(title)}</title>'
    ]
    for i, (label, nanos) in enumerate(rows):
        y = pad + i * row_h
        shown = label if len(label) <= 22 else label[:21] + "…"
        bar_w = max(1.0, bar_space * nanos_to_usd(nanos) / top_usd) if nanos > 0 else 0.0
        parts.append(
            f'<text x="{label_w - 8}" y="{y + 17}" text-anchor="end" {_FONT}><title>{escape(label)}</title>'
            f"{escape(shown)}</text>"
        )
        parts.append(f'<rect x="{label_w}" y="{y + 5}" width="{bar_w:.1f}" height="{row_h - 10}" class="bar"/>')
        parts.append(f'<text x="{label_w + bar_w + 6:.1f}" y="{y + 17}" {_FONT}>{format_usd(nanos)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def budget_bar(spend: Nanos, max_budget: Nanos | None, *, width: int = 120) -> Markup:
    """A small bar of spend against the budget: green under 80 %, amber under 100 %, red at or over it."""
    if max_budget is None:
        return Markup(f'<span class="muted">{format_usd(spend)} · no limit</span>')
    ratio = 1.0 if max_budget <= 0 else min(1.0, spend / max_budget)
    level = "over" if spend >= max_budget else "near" if ratio >= 0.8 else "ok"
    fill_w = max(width * ratio, 3.0) if spend > 0 else 0.0  # any spend stays visible
    label = f"{format_usd(spend)} of {format_usd(max_budget, digits=2)}"
    return Markup(
        f'<span class="budget-bar {level}" title="{escape(label)}">'
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="8" viewBox="0 0 {width} 8" '
        'aria-hidden="true">'
        f'<rect width="{width}" height="8" rx="4" class="track"/>'
        f'<rect width="{fill_w:.1f}" height="8" rx="4" class="fill"/></svg>'
        f"<small>{escape(label)}</small></span>"
    )
