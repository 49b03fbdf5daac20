"""Server-side SVG charts for the admin UI: spend per day, ranked bars, and a spend-against-budget bar.

Every chart is a self-contained `<svg>` string (no script, no external asset) returned as `Markup`, so templates
embed it as is. Every text that can come from a user (customer ids, model names) is escaped here; amounts arrive
in nano-dollars and read as everywhere else in the UI (`amounts.format_usd`).

The spend charts are as wide as their card at any screen width, with 12 px text that is never clipped (issue 14):
see the layout notes above `daily_spend_chart`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import date, timedelta
from decimal import Decimal
from html import escape

from markupsafe import Markup

from haimaker.money import Nanos, nanos_to_usd
from haimaker.ui.amounts import format_usd


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


# The layout every chart is drawn for: x positions are percentages of the chart's own width (no viewBox), so the
# chart fills its card at any width while its text stays 12 px; a viewBox would scale the labels down to ~4 px on a
# phone. Labels are fitted to the narrowest plot the stylesheet gives a chart (a 390 px viewport), and truncated with
# the full text in a <title> tooltip, so no label is clipped at any width from there up. A ranked chart also carries
# a longer cut of each label for a card at least `WIDE_CHART_PX` wide, which the stylesheet shows instead (a
# container query on the card), so a desktop does not lose the text a phone has no room for.
_FONT_PX = 12
_FONT = f'font-family="system-ui, sans-serif" font-size="{_FONT_PX}"'
_CHAR_PX = 7.2  # an upper bound of the mean advance of a 12 px system-ui label (ids and amounts)
NARROWEST_CHART_PX = 300
WIDE_CHART_PX = 440


def _text_px(text: str) -> float:
    """An upper estimate of the rendered width of `text` at the chart font."""
    return len(text) * _CHAR_PX


def _fit_label(label: str, width_px: float) -> str:
    """`label` as is if it fits in `width_px`, else cut with an ellipsis (the caller adds the full text as a title)."""
    max_chars = max(4, int(width_px // _CHAR_PX))
    return label if len(label) <= max_chars else label[: max_chars - 1] + "…"


def _svg_open(title: str, height: int, kind: str) -> str:
    return (
        f'<svg class="chart {kind}" xmlns="http://www.w3.org/2000/svg" width="100%" height="{height}" role="img" '
        f'aria-label="{escape(title)}"><title>{escape(title)}</title>'
    )


def _day_tick(index: int, count: int, label: str) -> tuple[float, str]:
    """Where a day's label goes (percent of the width) and its anchor: centred under its bar, or pinned to the
    chart's edge when centring would push it past the edge at the narrowest width."""
    slot = 100 / count
    half_px = _text_px(label) / 2
    if (index + 0.5) / count * NARROWEST_CHART_PX < half_px:
        return index * slot, "start"
    if (count - index - 0.5) / count * NARROWEST_CHART_PX < half_px:
        return (index + 1) * slot, "end"
    return (index + 0.5) * slot, "middle"


def daily_spend_chart(points: Sequence[tuple[str, Nanos]], *, title: str, height: int = 240) -> Markup:
    """A column chart of spend per day (`points` already filled, oldest first), as wide as its container.

    The amount axis is written on its grid lines (no left margin to reserve in pixels); day labels are spaced for a
    wide chart, and every other one is a `tick-minor` the stylesheet hides in a narrow card.
    """
    top, bottom = 18, 24
    plot_h = height - top - bottom
    top_usd = _nice_ceiling(max((nanos_to_usd(v) for _, v in points), default=0.0))
    parts = [_svg_open(title, height, "daily")]
    decimals = _axis_decimals(top_usd / 4)
    for i in range(5):
        y = top + plot_h - plot_h * i / 4
        parts.append(f'<line x1="0" x2="100%" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
        if i:  # the axis line is $0: a label there would sit on the first bars
            label = _axis_label(top_usd * i / 4, decimals)
            parts.append(f'<text x="0" y="{y - 4:.1f}" class="tick y" {_FONT}>{label}</text>')
    if points:
        slot = 100 / len(points)
        label_every = max(1, math.ceil(len(points) / 10))
        for i, (day, nanos) in enumerate(points):
            bar_h = plot_h * nanos_to_usd(nanos) / top_usd
            parts.append(
                f'<rect x="{(i + 0.15) * slot:.3f}%" y="{top + plot_h - bar_h:.1f}" width="{slot * 0.7:.3f}%" '
                f'height="{bar_h:.1f}" class="bar"><title>{escape(day)}: {format_usd(nanos)}</title></rect>'
            )
            if i % label_every == 0:
                label = day[5:]
                x, anchor = _day_tick(i, len(points), label)
                kind = "tick-minor" if (i // label_every) % 2 else "tick"
                parts.append(
                    f'<text x="{x:.3f}%" y="{height - 6}" text-anchor="{anchor}" class="{kind} x" {_FONT}>'
                    f"{escape(label)}</text>"
                )
    parts.append(f'<line x1="0" x2="100%" y1="{top + plot_h}" y2="{top + plot_h}" class="axis"/></svg>')
    return Markup("".join(parts))


def ranked_bars_chart(rows: Sequence[tuple[str, Nanos]], *, title: str) -> Markup:
    """Horizontal bars, one per labelled amount, in the order given (highest first), as wide as their container.

    Each row is the label and its amount on one line, the bar under them: a long customer id or model name gets the
    whole width left of its amount, and is truncated (full text in a tooltip) to what the chart fits: a `narrow-only`
    cut for the narrowest chart and, when the label is longer than that, a `wide-only` one for a wide chart.
    """
    row_h, label_y, bar_y, bar_h = 34, 14, 20, 9
    height = max(1, len(rows)) * row_h
    top_usd = max((nanos_to_usd(v) for _, v in rows), default=0.0) or 1.0
    parts = [_svg_open(title, height, "ranked")]
    for i, (label, nanos) in enumerate(rows):
        y = i * row_h
        amount = format_usd(nanos)
        narrow = _fit_label(label, NARROWEST_CHART_PX - _text_px(amount) - 12)
        share = 100 * nanos_to_usd(nanos) / top_usd if nanos > 0 else 0.0
        cuts = [(narrow, "label")]
        if narrow != label:
            cuts = [
                (narrow, "label narrow-only"),
                (_fit_label(label, WIDE_CHART_PX - _text_px(amount) - 12), "label wide-only"),
            ]
        for shown, kind in cuts:
            parts.append(
                f'<text x="0" y="{y + label_y}" class="{kind}" {_FONT}><title>{escape(label)}</title>'
                f"{escape(shown)}</text>"
            )
        parts.append(f'<text x="100%" y="{y + label_y}" text-anchor="end" class="value" {_FONT}>{amount}</text>')
        parts.append(
            f'<rect x="0" y="{y + bar_y}" width="100%" height="{bar_h}" rx="2" class="track"/>'
            f'<rect x="0" y="{y + bar_y}" width="{max(share, 0.5) if nanos > 0 else 0:.2f}%" height="{bar_h}" rx="2" '
            'class="bar"/>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def budget_bar(spend: Nanos, max_budget: Nanos | None, *, width: int = 120) -> Markup:
    """A small bar of spend against the budget: green under 80 %, amber under 100 %, red at or over it."""
    if max_budget is None:
        return Markup(f'<span class="muted">{format_usd(spend)} · no limit</span>')
    ratio = 1.0 if max_budget <= 0 else min(1.0, spend / max_budget)
    level = "over" if spend >= max_budget else "near" if ratio >= 0.8 else "ok"
    fill_w = max(width * ratio, 3.0) if spend > 0 else 0.0  # any spend stays visible
    label = f"{format_usd(spend)} of {format_usd(max_budget)}"
    return Markup(
        f'<span class="budget-bar {level}" title="{escape(label)}">'
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="8" viewBox="0 0 {width} 8" '
        'aria-hidden="true">'
        f'<rect width="{width}" height="8" rx="4" class="track"/>'
        f'<rect width="{fill_w:.1f}" height="8" rx="4" class="fill"/></svg>'
        f"<small>{escape(label)}</small></span>"
    )
