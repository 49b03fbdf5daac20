"""Server-side SVG charts: well-formed, escaped, and scaled to the data."""

from __future__ import annotations

from datetime import date, timedelta
from xml.etree import ElementTree

from haimaker.money import usd_to_nanos
from haimaker.ui.charts import (
    NARROWEST_CHART_PX,
    WIDE_CHART_PX,
    budget_bar,
    daily_spend_chart,
    fill_days,
    ranked_bars_chart,
)

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
    assert "2026-01-03: $2.00" in [bar.findtext(f"{SVG}title") for bar in bars]


def test_daily_chart_of_no_spend_still_renders_an_axis() -> None:
    root = ElementTree.fromstring(str(daily_spend_chart(fill_days([], date(2026, 1, 1), date(2026, 1, 2)), title="t")))
    assert root.findall(f"{SVG}line")


# ---- issue 14: charts fill their card at any width, and no label is clipped ------------------------------------------

CHAR_PX = 7.2  # what a 12 px system-ui character is given at most (the browser test measures the real boxes)


def percent(value: str | None) -> float:
    assert value is not None and value.endswith("%"), value
    return float(value[:-1])


def shown_text(text: ElementTree.Element) -> str:
    """What a chart label shows: its text, or what follows its <title> tooltip."""
    title = text.find(f"{SVG}title")
    return (text.text if title is None else title.tail) or ""


def label_extent_px(text: ElementTree.Element, width_px: float) -> tuple[float, float]:
    """The left and right edges of a chart label in a chart `width_px` wide, from its anchor and its length."""
    x = percent(text.get("x")) / 100 * width_px
    size = len(shown_text(text)) * CHAR_PX
    anchor = text.get("text-anchor", "start")
    left = x if anchor == "start" else x - size if anchor == "end" else x - size / 2
    return left, left + size


def test_charts_are_as_wide_as_their_card_with_12px_text_whatever_the_width() -> None:
    # A viewBox would scale a 1040-unit chart into a 330 px phone card, and its labels down to 4 px.
    points = fill_days([("2026-01-05", usd_to_nanos(3))], date(2026, 1, 1), date(2026, 1, 30))
    for svg in (
        daily_spend_chart(points, title="Spend per day"),
        ranked_bars_chart([("gpt-4o", usd_to_nanos(2))], title="Per model"),
    ):
        root = ElementTree.fromstring(str(svg))
        assert root.get("width") == "100%" and root.get("viewBox") is None
        assert {text.get("font-size") for text in root.iter(f"{SVG}text")} == {"12"}
        for shape in root.iter():
            for name in ("x", "width", "x1", "x2"):
                if shape.get(name) not in (None, "0"):
                    assert 0 <= percent(shape.get(name)) <= 100, (shape.tag, name, shape.get(name))


def test_day_labels_stay_inside_the_chart_from_the_narrowest_width_up() -> None:
    for days in (1, 2, 7, 8, 10, 14, 30, 31, 90):
        points = fill_days([], date(2026, 1, 1), date(2026, 1, 1) + timedelta(days=days - 1))
        root = ElementTree.fromstring(str(daily_spend_chart(points, title="t")))
        labels = [t for t in root.iter(f"{SVG}text") if "x" in (t.get("class") or "").split()]
        assert labels and labels[0].text == "01-01"
        for width_px in (NARROWEST_CHART_PX, 700, 1100):
            for label in labels:
                left, right = label_extent_px(label, width_px)
                assert 0 <= left and right <= width_px, (days, width_px, label.text, label.get("text-anchor"))


def test_every_other_day_label_is_minor_so_a_narrow_screen_can_hide_it() -> None:
    root = ElementTree.fromstring(str(daily_spend_chart(fill_days([], date(2026, 1, 1), date(2026, 1, 30)), title="t")))
    kinds = [t.get("class", "").split()[0] for t in root.iter(f"{SVG}text") if "x" in t.get("class", "").split()]
    assert kinds == ["tick", "tick-minor"] * 5


def test_amount_axis_is_written_on_its_grid_lines_without_a_label_at_zero() -> None:
    points = fill_days([("2026-01-02", usd_to_nanos(2))], date(2026, 1, 1), date(2026, 1, 3))
    root = ElementTree.fromstring(str(daily_spend_chart(points, title="t")))
    amounts = [t.text for t in root.iter(f"{SVG}text") if "y" in t.get("class", "").split()]
    assert amounts == ["$0.50", "$1.00", "$1.50", "$2.00"]
    assert all(float(t.get("y", "-1")) > 0 for t in root.iter(f"{SVG}text"))


def test_ranked_bars_cut_a_long_label_to_the_chart_and_keep_it_whole_in_a_tooltip() -> None:
    long_id = "globex-international-enterprise-customer-7788-production-eu-west-1"
    root = ElementTree.fromstring(
        str(ranked_bars_chart([(long_id, usd_to_nanos("1234.5")), ("initech", usd_to_nanos(1))], title="Top"))
    )
    labels = {t.get("class"): t for t in root.iter(f"{SVG}text") if "label" in t.get("class", "").split()}
    values = [t for t in root.iter(f"{SVG}text") if t.get("class") == "value"]
    assert [v.text for v in values] == ["$1,234.50", "$1.00"]
    amount_px = len(values[0].text or "") * CHAR_PX
    # Two cuts of the long id, each leaving room for its amount on the row of the chart it is shown in.
    for kind, chart_px in (("label narrow-only", NARROWEST_CHART_PX), ("label wide-only", WIDE_CHART_PX)):
        assert labels[kind].findtext(f"{SVG}title") == long_id
        shown = shown_text(labels[kind])
        assert shown.endswith("…") and long_id.startswith(shown[:-1])
        assert chart_px - 3 * CHAR_PX < len(shown) * CHAR_PX + amount_px + 12 <= chart_px
    # A label that fits the narrowest chart is shown whole, once.
    assert shown_text(labels["label"]) == "initech"
    assert [v.get("text-anchor") for v in values] == ["end", "end"]


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
