"""One money format in the admin UI (issue 14): the formatter's rule, and every page showing the same amount with
the same digits (a sub-cent request cost, and a budget of $1,234.50)."""

from __future__ import annotations

import html
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from haimaker.money import usd_to_nanos
from haimaker.ui.amounts import format_usd
from haimaker.ui.charts import budget_bar, daily_spend_chart, ranked_bars_chart
from haimaker.ui.rendering import usd_form_value
from tests.support.proxy import RunningProxy, base_config, running_proxy
from tests.ui.ui_client import UiClient

_PRICED = {
    "model_name": "house-chat",
    "litellm_params": {
        "model": "mock/upstream-chat-v1",
        "input_cost_per_token": 0.0000001,
        "output_cost_per_token": 0.0000002,
    },
}


@pytest.mark.parametrize(
    ("usd", "shown"),
    [
        ("0", "$0.00"),
        ("1234.5", "$1,234.50"),
        ("1000000", "$1,000,000.00"),
        ("0.01", "$0.01"),
        ("0.125", "$0.13"),
        ("0.0153", "$0.02"),
        ("0.00999", "$0.01"),
        ("0.0099", "$0.0099"),
        ("0.005", "$0.005"),
        ("0.000125", "$0.00013"),
        ("0.0000012345", "$0.0000012"),
        ("0.000000001", "$0.000000001"),
    ],
)
def test_cents_from_a_cent_up_and_two_significant_digits_under_a_cent(usd: str, shown: str) -> None:
    assert format_usd(usd_to_nanos(usd)) == shown


def test_a_non_zero_amount_never_reads_as_zero() -> None:
    for nanos in (1, 9, 10, 999, 4_999_999, 5_000_000):
        assert format_usd(nanos) not in {"$0.00", "$0"}
        assert format_usd(-nanos).startswith("-$")


def test_a_form_gives_back_the_stored_amount_exactly() -> None:
    assert [usd_form_value(usd_to_nanos(usd)) for usd in ("4", "0.25", "1234.5", "0.000000001")] == [
        "4",
        "0.25",
        "1234.5",
        "0.000000001",
    ]
    assert (usd_form_value(0), usd_form_value(None)) == ("0", "")


def test_charts_use_the_same_format() -> None:
    nanos = usd_to_nanos("0.000125")
    assert "2026-01-02: $0.00013</title>" in daily_spend_chart([("2026-01-02", nanos)], title="t")
    assert ">$0.00013</text>" in ranked_bars_chart([("alice", nanos)], title="t")
    assert "$0.00013 of $1,234.50" in budget_bar(nanos, usd_to_nanos("1234.5"))


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningProxy]:
    path: Path = tmp_path_factory.mktemp("ui-amounts")
    with running_proxy(path, base_config(model_list=[_PRICED])) as proxy:
        yield proxy


@pytest.fixture
def admin(proxy: RunningProxy) -> Iterator[UiClient]:
    client = UiClient(proxy)
    try:
        assert client.sign_in().status_code == 303
        yield client
    finally:
        client.close()


def _pages(admin: UiClient, *paths: str) -> dict[str, str]:
    pages = {}
    for path in paths:
        response = admin.get(path)
        assert response.status_code == 200, path
        pages[path] = html.unescape(response.text)
    return pages


def test_every_page_shows_a_request_cost_and_a_budget_with_the_same_digits(
    proxy: RunningProxy, admin: UiClient
) -> None:
    with proxy.client() as api:
        api.post("/budget/new", json={"budget_id": "money-tier", "max_budget": 1234.5}).raise_for_status()
        api.post("/customer/new", json={"user_id": "money-cust", "max_budget": 1234.5}).raise_for_status()
        key = api.post("/key/generate", json={"key_alias": "money-key", "max_budget": 1234.5}).json()
    with openai.OpenAI(base_url=proxy.url + "/v1", api_key=key["key"], max_retries=0) as client:
        client.chat.completions.create(
            model="house-chat", messages=[{"role": "user", "content": "Price this"}], user="money-cust"
        )
    with proxy.client() as api:
        spend = api.get("/customer/info", params={"end_user_id": "money-cust"}).json()["spend"]
        [log] = api.get("/spend/logs", params={"end_user": "money-cust"}).json()
    assert 0 < spend < 0.01 and log["spend"] == spend  # one request: its cost is the customer's spend
    cost = format_usd(usd_to_nanos(str(spend)))
    assert cost != "$0.00" and len(cost.rstrip("0").split(".")[1]) > 2

    token = key["token"]
    spent = _pages(
        admin,
        "/ui/customers?search=money-cust",
        "/ui/customers/view?id=money-cust",
        "/ui/customers/delete?id=money-cust",
        "/ui/spend",
        "/ui/keys",
        f"/ui/keys/delete?token={token}",
    )
    for path, page in spent.items():
        assert cost in page, path
    spend_page = spent["/ui/spend"]
    assert spend_page.count(cost) >= 5  # total, per-model chart and table, top-customers chart and table

    budgeted = _pages(
        admin,
        "/ui/budgets",
        "/ui/budgets/delete?id=money-tier",
        "/ui/customers?search=money-cust",
        "/ui/customers/view?id=money-cust",
        "/ui/keys",
    )
    for path, page in budgeted.items():
        assert "$1,234.50" in page, path
        assert "$1,234.5000" not in page and "$1234.5" not in page, path
