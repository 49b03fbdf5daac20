"""The Budgets pages over plain HTTP, on a proxy with a default budget (`max_end_user_budget_id`)."""

from __future__ import annotations

import html
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.proxy import RunningProxy, base_config, running_proxy
from tests.ui.ui_client import UiClient


@pytest.fixture(scope="module")
def default_proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningProxy]:
    """A proxy whose default budget `starter` exists: created through the API first, then configured."""
    path: Path = tmp_path_factory.mktemp("ui-default-budget")
    with running_proxy(path, base_config()) as first, first.client() as api:
        api.post(
            "/budget/new", json={"budget_id": "starter", "max_budget": 1, "budget_duration": "7d"}
        ).raise_for_status()
    with running_proxy(path, base_config(litellm_settings={"max_end_user_budget_id": "starter"})) as proxy:
        yield proxy


@pytest.fixture
def admin_default(default_proxy: RunningProxy) -> Iterator[UiClient]:
    client = UiClient(default_proxy)
    try:
        assert client.sign_in().status_code == 303
        yield client
    finally:
        client.close()


def test_default_budget_is_marked_and_cannot_be_deleted(admin_default: UiClient) -> None:
    page = admin_default.get("/ui/budgets").text
    assert 'data-budget-id="starter"' in page and ">default</span>" in page and "Weekly (7d)" in page

    refused = admin_default.submit("/ui/budgets/delete?id=starter", "/ui/budgets/delete?id=starter", {})
    assert refused.status_code == 400
    assert "is the default budget of every customer without one" in html.unescape(refused.text)
    assert 'data-budget-id="starter"' in admin_default.get("/ui/budgets").text


def test_customers_without_a_budget_show_the_default(default_proxy: RunningProxy, admin_default: UiClient) -> None:
    created = admin_default.submit("/ui/customers/new", "/ui/customers/new", {"user_id": "rides-default"})
    assert created.status_code == 303
    row = admin_default.get("/ui/customers", search="rides-default").text
    assert '<code>starter</code> <span class="badge">default</span>' in row
    assert "of $1.00" in row
    page = admin_default.get("/ui/customers/view", id="rides-default").text
    assert "(default)" in page and "resets every 7d" in page


def test_deleting_a_tier_says_its_customers_fall_back_to_the_default(
    default_proxy: RunningProxy, admin_default: UiClient
) -> None:
    with default_proxy.client() as api:
        api.post("/budget/new", json={"budget_id": "gold"}).raise_for_status()
        for user_id in ("gold-1", "gold-2"):
            api.post("/customer/new", json={"user_id": user_id, "budget_id": "gold"}).raise_for_status()
    confirm = html.unescape(admin_default.get("/ui/budgets/delete", id="gold").text)
    assert "2 customers use this budget: they will fall back to the default budget (starter)." in confirm
    deleted = admin_default.submit("/ui/budgets/delete?id=gold", "/ui/budgets/delete?id=gold", {})
    assert deleted.status_code == 303
    with default_proxy.client() as api:
        assert api.get("/customer/info", params={"end_user_id": "gold-1"}).json()["budget_id"] is None


def test_editing_a_budget_clears_an_emptied_field(default_proxy: RunningProxy, admin_default: UiClient) -> None:
    with default_proxy.client() as api:
        api.post("/budget/new", json={"budget_id": "silver", "max_budget": 3, "rpm_limit": 10}).raise_for_status()
    form = admin_default.get("/ui/budgets/edit", id="silver").text
    assert 'value="3"' in form and "readonly" in form
    data = {"max_budget": "", "soft_budget": "", "tpm_limit": "", "rpm_limit": "10", "budget_duration": "24h"}
    assert admin_default.submit("/ui/budgets/edit?id=silver", "/ui/budgets/edit?id=silver", data).status_code == 303
    with default_proxy.client() as api:
        [silver] = api.post("/budget/info", json={"budgets": ["silver"]}).json()
    assert silver["max_budget"] is None and silver["rpm_limit"] == 10 and silver["budget_duration"] == "24h"
