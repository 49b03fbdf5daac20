"""Server-side SVG charts: well-formed, escaped, and scaled to the data."""

from __future__ import annotations

from datetime import date
from xml.etree import ElementTree

from haimaker.money import usd_to_nanos
from haimaker.ui.charts import budget_bar, daily_spend_chart, fill_days, format_usd, ranked_bars_chart

SVG = "{http://www.w3.org/2000/svg}"


def test_fill_days_adds_zero_days_inside_the_range() -> None:
    filled = fill_days([("2026-01-02", 5)], date(2026, 1, 1), date(2026, 1, 3))
    assert filled == [("2026-01-01", 0), ("2026-01-02", 5), ("2026-01-03", 0)]


def test_daily_chart_is_valid_svg_with_one_bar_per_day_and_the_tallest_fills_the_plot() -> None:
    points = fill_days(
        [("2026-01-01", usd_to_nanos("0.5")), ("2026-01-03", usd_to_nanos("2"))], date(2026, 1, 1), date(2026, 1, 4)
    )
    root = ElementTree.fromstring(str(daily_spend_chart(points, title="Spend per day")))
    bars = root.findall(f"{SVG}rect")
    assert len(bars) == 4
    heights = [float(bar.get("height", "0")) for bar in bars]
    assert heights[0] == heights[2] / 4 and heights[1] == 0 == heights[3]
    assert "2026-01-03: $2.000000" in [bar.findtext(f"{SVG}title") for bar in bars]


def test_daily_chart_of_no_spend_still_renders_an_axis() -> None:
    root = ElementTree.fromstring(str(daily_spend_chart(fill_days([], date(2026, 1, 1), date(2026, 1, 2)), title="t")))
    assert root.findall(f"{SVG}line")


def test_ranked_bars_escape_labels_from_users() -> None:
    svg = str(ranked_bars_chart([('<script>alert("x")</script>', usd_to_nanos(1))], title="Top customers"))
    assert "<script>" not in svg
    ElementTree.fromstring(svg)


def test_budget_bar_levels() -> None:
    assert "ok" in budget_bar(usd_to_nanos(1), usd_to_nanos(10))
    assert "near" in budget_bar(usd_to_nanos(9), usd_to_nanos(10))
    assert "over" in budget_bar(usd_to_nanos(10), usd_to_nanos(10))
    assert "over" in budget_bar(0, 0)  # a zero budget admits nothing
    assert "no limit" in budget_bar(usd_to_nanos(3), None)


def test_format_usd_keeps_small_amounts_visible() -> None:
    assert format_usd(usd_to_nanos("0.000125")) == "$0.000125"
    assert format_usd(usd_to_nanos("0.000125"), digits=4) == "$0.0001"
    assert format_usd(usd_to_nanos("1234.5")) == "$1,234.5000"
    assert format_usd(0) == "$0.0000"
