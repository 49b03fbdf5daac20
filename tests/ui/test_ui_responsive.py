"""Every admin UI page at a phone's width (390 px) and a desktop's (1280 px), in Debian chromium (issue 14).

The page itself never scrolls sideways; every navigation link is on screen and navigates; a table wider than the
screen scrolls inside its own box; chart labels are drawn inside their chart at a readable size. Data that stresses
the layout: a long model name, a long customer id, spend from real calls. A screenshot of each page at each width
goes to `$HAIMAKER_SCREENSHOTS_DIR` (else pytest's tmp dir) to be looked at.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.support.proxy import RunningProxy, base_config, running_proxy
from tests.ui.test_ui_browser import CHROMIUM, CHROMIUM_ARGS, sign_in

pytestmark = pytest.mark.browser

WIDTHS = {390: 844, 1280: 800}
LONG_MODEL = "anthropic-claude-3-5-sonnet-20241022-eu-west"
LONG_CUSTOMER = "globex-international-enterprise-customer-7788"
CUSTOMERS = ["acme-corp-42", LONG_CUSTOMER, "initech"]
PAGES = {
    "customers": "/ui/customers",
    "customer": f"/ui/customers/view?id={LONG_CUSTOMER}",
    "budgets": "/ui/budgets",
    "budget-form": "/ui/budgets/new",
    "customer-form": "/ui/customers/new",
    "key-form": "/ui/keys/new",
    "keys": "/ui/keys",
    "models": "/ui/models",
    "spend": "/ui/spend",
}
NAV = ["Customers", "Budgets", "Keys", "Spend", "Models"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium is not installed (apt-get install -y chromium)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningProxy]:
    prices = {"input_cost_per_token": 0.000003, "output_cost_per_token": 0.000015}
    models = [
        {"model_name": "gpt-3.5-turbo", "litellm_params": {"model": "mock/gpt-3.5-turbo", **prices}},
        {"model_name": LONG_MODEL, "litellm_params": {"model": f"mock/{LONG_MODEL}", **prices}},
    ]
    with running_proxy(tmp_path_factory.mktemp("ui-responsive"), base_config(model_list=models)) as running:
        with running.client() as api:
            tier = {"budget_id": "pro-tier-monthly", "max_budget": 5, "tpm_limit": 100_000, "rpm_limit": 100}
            api.post("/budget/new", json={**tier, "budget_duration": "30d"}).raise_for_status()
            for user in CUSTOMERS:
                api.post("/customer/new", json={"user_id": user, "budget_id": "pro-tier-monthly"}).raise_for_status()
            key = {"key_alias": "billing-app-production", "max_budget": 2, "customer_id": LONG_CUSTOMER}
            api.post("/key/generate", json=key).raise_for_status()
        with openai.OpenAI(base_url=running.url + "/v1", api_key=running.master_key, max_retries=0) as client:
            for user in CUSTOMERS:
                for model in ("gpt-3.5-turbo", LONG_MODEL):
                    client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}], user=user)
        running.call(running.state.recorder.flush())
        yield running


@pytest.fixture(scope="module")
def shots_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    configured = os.environ.get("HAIMAKER_SCREENSHOTS_DIR")
    path = Path(configured) if configured else tmp_path_factory.mktemp("screens")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module", params=sorted(WIDTHS), ids=lambda width: f"{width}px")
def page(request: pytest.FixtureRequest, browser: Browser, proxy: RunningProxy, shots_dir: Path) -> Iterator[Page]:
    """A signed-in tab `request.param` px wide, shared by the tests of that width."""
    width: int = request.param
    context = browser.new_context(viewport={"width": width, "height": WIDTHS[width]})
    context.set_default_timeout(10_000)
    opened = context.new_page()
    try:
        opened.goto(proxy.url + "/ui/login")
        assert_no_page_scroll(opened)
        opened.screenshot(path=str(shots_dir / f"login-{width}.png"), full_page=True)
        sign_in(opened, proxy, proxy.master_key)
        opened.wait_for_url("**/ui/customers")
        yield opened
    finally:
        context.close()


def assert_no_page_scroll(page: Page) -> None:
    scroll_width, inner_width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert scroll_width <= inner_width, f"{page.url} scrolls sideways: {scroll_width} > {inner_width}"


# The boxes of the page's tables and chart labels, measured in the browser.
MEASURE = """() => {
  const box = (el) => { const r = el.getBoundingClientRect(); return {left: r.left, right: r.right, top: r.top,
                                                                      bottom: r.bottom, height: r.height}; };
  return {
    unboxed: [...document.querySelectorAll("table.data")].filter((t) => !t.parentElement.matches(".table-scroll"))
      .map((t) => t.id),
    tables: [...document.querySelectorAll(".table-scroll")].map((s) => ({
      id: s.querySelector("table").id, box: box(s), scrollWidth: s.scrollWidth, clientWidth: s.clientWidth,
      overflowX: getComputedStyle(s).overflowX})),
    labels: [...document.querySelectorAll("svg.chart")].flatMap((svg) =>
      [...svg.querySelectorAll("text")].filter((t) => getComputedStyle(t).display !== "none")
        .map((t) => ({text: t.textContent, box: box(t), svg: box(svg)}))),
  };
}"""


@pytest.mark.parametrize("name", list(PAGES))
def test_page_fits_the_screen_tables_scroll_in_their_box_and_chart_labels_are_whole(
    page: Page, proxy: RunningProxy, shots_dir: Path, name: str
) -> None:
    width = page.viewport_size["width"] if page.viewport_size else 0
    page.goto(proxy.url + PAGES[name])
    page.locator("h1").first.wait_for()
    page.screenshot(path=str(shots_dir / f"{name}-{width}.png"), full_page=True)
    assert_no_page_scroll(page)
    measured: dict[str, Any] = page.evaluate(MEASURE)

    assert measured["unboxed"] == [], "a table outside a .table-scroll box widens the page on a phone"
    for table in measured["tables"]:
        assert table["box"]["right"] <= width, table
        if table["scrollWidth"] > table["clientWidth"]:
            assert table["overflowX"] == "auto", table  # the box scrolls, not the page

    for label in measured["labels"]:
        text, svg = label["box"], label["svg"]
        inside = svg["left"] - 0.5 <= text["left"] and text["right"] <= svg["right"] + 0.5
        assert inside and svg["top"] - 0.5 <= text["top"] and text["bottom"] <= svg["bottom"] + 0.5, label
        assert text["height"] >= 12, f"chart text {label['text']!r} is drawn {text['height']:.1f} px high"
    if name in ("customer", "spend"):
        assert measured["labels"], "the page has no chart labels"


def test_wide_tables_scroll_inside_their_box_on_a_phone(page: Page, proxy: RunningProxy) -> None:
    page.goto(proxy.url + "/ui/keys")
    [keys] = [t for t in page.evaluate(MEASURE)["tables"] if t["id"] == "keys-table"]
    if page.viewport_size and page.viewport_size["width"] < 600:
        assert keys["scrollWidth"] > keys["clientWidth"]  # 12 columns do not fit 390 px: the box scrolls
        page.locator(".table-scroll").first.evaluate("(el) => { el.scrollLeft = el.scrollWidth; }")
        # Scrolled to its end, the box shows the last column (the row's actions) on screen.
        delete = page.locator("#keys-table td.actions a.danger").first
        box = delete.bounding_box()
        assert delete.is_visible() and box is not None and box["x"] + box["width"] <= page.viewport_size["width"]
    else:
        assert keys["scrollWidth"] <= keys["clientWidth"]  # a desktop shows the whole table
    assert_no_page_scroll(page)


def test_every_navigation_link_is_on_screen_and_navigates(page: Page, proxy: RunningProxy) -> None:
    width = page.viewport_size["width"] if page.viewport_size else 0
    page.goto(proxy.url + "/ui/customers")
    for text in NAV:
        link = page.locator("nav[aria-label=Main] a", has_text=text)
        assert link.is_visible(), text
        box = link.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width, (text, box)
    sign_out = page.locator("button:has-text('Sign out')")
    assert sign_out.is_visible()
    page.locator("nav[aria-label=Main] a", has_text="Models").click()
    page.wait_for_url("**/ui/models")
    assert page.locator("nav[aria-label=Main] a[aria-current=page]").inner_text() == "Models"
