"""The Customers pages over plain HTTP: pages by key and id-prefix search with 10,000 customers, the htmx fragment,
and edits that send only what changed (a shared tier is never copied by accident)."""

from __future__ import annotations

import html
import re
import time

import pytest

from haimaker.money import usd_to_nanos
from haimaker.storage.records import Customer
from tests.support.proxy import RunningProxy
from tests.ui.ui_client import UiClient

ROWS = re.compile(r'<tr data-customer-id="([^"]+)"')
N_CUSTOMERS = 10_000


@pytest.fixture(scope="module")
def seeded(ui_proxy: RunningProxy) -> RunningProxy:
    customers = [
        Customer(user_id=f"cust-{i:05d}", alias=f"Company {i}", spend=usd_to_nanos(i % 7)) for i in range(N_CUSTOMERS)
    ]
    ui_proxy.call(ui_proxy.state.sink.write_charges(customers, []))
    return ui_proxy


def test_ten_thousand_customers_page_one_shows_fifty_rows_and_an_estimated_count(
    seeded: RunningProxy, admin: UiClient
) -> None:
    started = time.perf_counter()
    page = admin.get("/ui/customers")
    elapsed = time.perf_counter() - started
    assert page.status_code == 200
    ids = ROWS.findall(page.text)
    assert ids == [f"cust-{i:05d}" for i in range(50)]
    # Past 1,000 customers the page shows the store's estimate (SQLite: the largest rowid) instead of counting.
    assert "About 10,0" in page.text and "page 1 of" not in page.text
    assert 'rel="prev"' not in page.text and 'href="/ui/customers?after=cust-00049" rel="next"' in page.text
    print(f"page 1 of 10,000 customers rendered in {elapsed * 1000:.0f} ms")


def test_next_and_previous_pages_go_by_key(seeded: RunningProxy, admin: UiClient) -> None:
    last = admin.get("/ui/customers", after="cust-09949")
    assert ROWS.findall(last.text) == [f"cust-{i:05d}" for i in range(9950, 10_000)]
    assert 'rel="next"' not in last.text and 'href="/ui/customers?before=cust-09950" rel="prev"' in last.text
    previous = admin.get("/ui/customers", before="cust-09950")
    assert ROWS.findall(previous.text) == [f"cust-{i:05d}" for i in range(9900, 9950)]
    assert 'rel="prev"' in previous.text and 'href="/ui/customers?after=cust-09949" rel="next"' in previous.text
    # Fewer than a page before the key: the first page.
    first = admin.get("/ui/customers", before="cust-00010")
    assert ROWS.findall(first.text)[:2] == ["cust-00000", "cust-00001"] and 'rel="prev"' not in first.text
    beyond = admin.get("/ui/customers", after="zzz")
    assert beyond.status_code == 200 and ROWS.findall(beyond.text) == [] and "No more customers" in beyond.text


def test_search_is_a_server_side_id_prefix(seeded: RunningProxy, admin: UiClient) -> None:
    by_id = admin.get("/ui/customers", search="cust-0099")
    assert ROWS.findall(by_id.text) == [f"cust-0099{i}" for i in range(10)]
    assert "10 customers whose id starts with" in by_id.text
    many = admin.get("/ui/customers", search="cust-0")
    assert "More than 1,000 customers whose id starts with" in many.text
    assert 'href="/ui/customers?after=cust-00049&search=cust-0" rel="next"' in html.unescape(many.text)
    none = admin.get("/ui/customers", search="COMPANY 1234")
    assert "No customer matches" in none.text


def test_htmx_search_returns_only_the_table(seeded: RunningProxy, admin: UiClient) -> None:
    fragment = admin.http.get("/ui/customers", params={"search": "cust-0000"}, headers={"HX-Request": "true"})
    assert "<html" not in fragment.text and '<nav class="pager"' not in fragment.text
    assert len(ROWS.findall(fragment.text)) == 10
    assert fragment.headers["vary"] == "HX-Request"


def test_editing_a_limit_of_a_customer_on_a_shared_tier_leaves_the_tier_alone(
    ui_proxy: RunningProxy, admin: UiClient
) -> None:
    with ui_proxy.client() as api:
        api.post("/budget/new", json={"budget_id": "shared-tier", "max_budget": 10, "rpm_limit": 60}).raise_for_status()
        for user_id in ("tier-a", "tier-b"):
            api.post("/customer/new", json={"user_id": user_id, "budget_id": "shared-tier"}).raise_for_status()

    # Unchanged limits are not sent: saving the alias keeps the tier.
    form = admin.get("/ui/customers/edit", id="tier-a").text
    assert 'value="10"' in form
    edited = {
        "alias": "A",
        "budget_id": "shared-tier",
        "max_budget": "10",
        "rpm_limit": "60",
        "tpm_limit": "",
        "budget_duration": "",
        "allowed_model_region": "",
        "default_model": "",
    }
    assert admin.submit("/ui/customers/edit?id=tier-a", "/ui/customers/edit?id=tier-a", edited).status_code == 303
    with ui_proxy.client() as api:
        assert api.get("/customer/info", params={"end_user_id": "tier-a"}).json()["budget_id"] == "shared-tier"

    # A changed limit gives the customer a private copy; the tier and its other customer keep theirs.
    edited["max_budget"] = "20"
    assert admin.submit("/ui/customers/edit?id=tier-a", "/ui/customers/edit?id=tier-a", edited).status_code == 303
    with ui_proxy.client() as api:
        a = api.get("/customer/info", params={"end_user_id": "tier-a"}).json()
        b = api.get("/customer/info", params={"end_user_id": "tier-b"}).json()
        [tier] = api.post("/budget/info", json={"budgets": ["shared-tier"]}).json()
    assert a["budget_id"] != "shared-tier" and a["litellm_budget_table"]["max_budget"] == 20.0
    assert a["litellm_budget_table"]["rpm_limit"] == 60
    assert b["budget_id"] == "shared-tier" and tier["max_budget"] == 10.0


def test_form_errors_show_the_api_message_next_to_the_field_and_change_nothing(
    ui_proxy: RunningProxy, admin: UiClient
) -> None:
    bad = admin.submit("/ui/customers/new", "/ui/customers/new", {"user_id": "bad-one", "default_model": "gpt-9"})
    assert bad.status_code == 400
    assert re.search(r'data-error-for="default_model">Default Model not on proxy', bad.text)
    missing = admin.submit("/ui/customers/new", "/ui/customers/new", {"alias": "no id"})
    assert 'data-error-for="user_id">Missing required field: user_id' in missing.text
    region = admin.submit(
        "/ui/customers/new", "/ui/customers/new", {"user_id": "bad-one", "allowed_model_region": "asia"}
    )
    assert 'data-error-for="allowed_model_region">allowed_model_region: Input should be' in region.text
    with ui_proxy.client() as api:
        assert api.get("/customer/info", params={"end_user_id": "bad-one"}).status_code == 404

    budget = admin.submit(
        "/ui/budgets/new",
        "/ui/budgets/new",
        {"budget_id": "bad-budget", "budget_duration": "custom", "budget_duration_custom": "fortnight"},
    )
    assert budget.status_code == 400
    expected = "data-error-for=\"budget_duration_custom\">Invalid budget_duration 'fortnight'. Use a format like"
    assert expected in html.unescape(budget.text)
    with ui_proxy.client() as api:
        assert api.post("/budget/info", json={"budgets": ["bad-budget"]}).status_code == 404


def test_unknown_ids_get_a_not_found_page(admin: UiClient) -> None:
    assert admin.get("/ui/customers/view", id="ghost").status_code == 404
    assert admin.get("/ui/budgets/edit", id="ghost").status_code == 404
