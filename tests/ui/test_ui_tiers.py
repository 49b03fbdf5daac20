"""Pricing tiers against private budgets in the UI (issue 14): the Budgets page, its snippet, the tier dropdowns,
and a customer's custom limits, on a proxy with a default budget (`starter`)."""

from __future__ import annotations

import html
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from haimaker.storage.budgets_repo import is_private_budget
from haimaker.storage.records import Budget, Customer
from haimaker.ui.tiers import Tier, example_tier
from tests.support.proxy import RunningProxy, base_config, running_proxy
from tests.ui.ui_client import UiClient

_OPTION = re.compile(r'<option value="([^"]*)"\s*(selected)?>([^<]*)</option>')


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningProxy]:
    """A proxy whose default budget `starter` exists, with a tier `gold` (2 customers) and a customer `own-limits`
    created with limits (a private budget)."""
    path: Path = tmp_path_factory.mktemp("ui-tiers")
    with running_proxy(path, base_config()) as first, first.client() as api:
        api.post("/budget/new", json={"budget_id": "starter", "max_budget": 1}).raise_for_status()
    with running_proxy(path, base_config(litellm_settings={"max_end_user_budget_id": "starter"})) as proxy:
        with proxy.client() as api:
            api.post("/budget/new", json={"budget_id": "gold", "max_budget": 50}).raise_for_status()
            for user_id in ("gold-1", "gold-2"):
                api.post("/customer/new", json={"user_id": user_id, "budget_id": "gold"}).raise_for_status()
            api.post(
                "/customer/new", json={"user_id": "own-limits", "max_budget": 5, "rpm_limit": 7}
            ).raise_for_status()
        yield proxy


@pytest.fixture
def admin(proxy: RunningProxy) -> Iterator[UiClient]:
    client = UiClient(proxy)
    try:
        assert client.sign_in().status_code == 303
        yield client
    finally:
        client.close()


def _budget_of(proxy: RunningProxy, user_id: str) -> str | None:
    with proxy.client() as api:
        budget_id: str | None = api.get("/customer/info", params={"end_user_id": user_id}).json()["budget_id"]
    return budget_id


def _options(page: str, name: str) -> list[tuple[str, bool, str]]:
    select = page[page.index(f'name="{name}"') :]
    select = select[: select.index("</select>")]
    return [(value, bool(selected), html.unescape(text)) for value, selected, text in _OPTION.findall(select)]


def test_private_budget_rule() -> None:
    private = str(uuid.uuid4())
    assert is_private_budget(private, 1, "starter")
    assert not is_private_budget(private, 0, "starter")  # a tier just created without a name
    assert not is_private_budget(private, 2, "starter")  # a tier with a generated id, shared
    assert not is_private_budget("pro", 1, "starter")  # a named tier with one customer
    assert not is_private_budget(private, 1, private)  # the default budget is everyone's


def test_a_private_budget_is_not_a_tier_row_but_its_customers_custom_limits(
    proxy: RunningProxy, admin: UiClient
) -> None:
    private = _budget_of(proxy, "own-limits")
    assert private is not None and is_private_budget(private, 1, "starter")
    budgets = admin.get("/ui/budgets").text
    assert 'data-budget-id="gold"' in budgets and 'data-budget-id="starter"' in budgets
    assert private not in budgets

    page = admin.get("/ui/customers/view", id="own-limits").text
    assert '<span id="custom-limits">custom limits</span>' in page
    assert private not in page
    assert "$5.00" in page and "7 RPM" in page
    row = admin.get("/ui/customers", search="own-limits").text
    assert "custom limits" in row and private not in row
    confirm = admin.get("/ui/customers/delete", id="own-limits").text
    assert "<dd>custom limits</dd>" in confirm and private not in confirm
    assert "custom limits" not in admin.get("/ui/customers/view", id="gold-1").text


def test_the_snippet_links_a_real_tier(admin: UiClient) -> None:
    snippet = html.unescape(admin.get("/ui/budgets").text.split('id="how-to-use"', 1)[1])
    assert '"budget_id": "gold"' in snippet


def test_the_snippet_prefers_a_tier_to_the_default() -> None:
    default, gold = Tier(Budget("0-default"), 0, is_default=True), Tier(Budget("gold"), 2, is_default=False)
    assert example_tier([default, gold]) == "gold"
    assert example_tier([default]) == "0-default"
    assert example_tier([]) == "my-free-tier"


def test_tier_counts_come_from_the_store_not_the_in_memory_catalog(proxy: RunningProxy, admin: UiClient) -> None:
    # Written to the store only, as a customer that is not among the active ones the catalog holds.
    proxy.call(proxy.state.services.customers_repo.create(Customer(user_id="gold-stored-only", budget_id="gold")))
    assert "gold-stored-only" not in proxy.state.services.catalog.customers
    row = admin.get("/ui/budgets").text.split('data-budget-id="gold"', 1)[1].split("</tr>", 1)[0]
    assert '<td class="num">3</td>' in row
    confirm = html.unescape(admin.get("/ui/budgets/delete", id="gold").text)
    assert "3 customers use this budget" in confirm
    with proxy.client() as api:
        api.post("/customer/delete", json={"user_ids": ["gold-stored-only"]}).raise_for_status()


def test_the_default_budget_appears_once_in_each_tier_dropdown(admin: UiClient) -> None:
    for page, name in (("/ui/customers/new", "budget_id"), ("/ui/keys/new", "end_user_budget_id")):
        options = _options(admin.get(page).text, name)
        assert [value for value, _, _ in options] == ["", "gold"], page
        assert options[0][2] == "Default budget (starter)"


def test_a_private_budget_is_offered_only_to_its_own_customer(proxy: RunningProxy, admin: UiClient) -> None:
    private = _budget_of(proxy, "own-limits")
    own = _options(admin.get("/ui/customers/edit", id="own-limits").text, "budget_id")
    assert (private, True, "Custom limits (this customer's own)") in own
    other = _options(admin.get("/ui/customers/edit", id="gold-1").text, "budget_id")
    assert [value for value, _, _ in other] == ["", "gold"] and ("gold", True, "gold") in other


def test_a_customer_linked_to_the_default_keeps_it_when_saved_unchanged(proxy: RunningProxy, admin: UiClient) -> None:
    with proxy.client() as api:
        api.post("/customer/new", json={"user_id": "on-starter", "budget_id": "starter"}).raise_for_status()
    form = admin.get("/ui/customers/edit", id="on-starter").text
    assert _options(form, "budget_id")[0] == ("", True, "Default budget (starter)")
    data = {"alias": "renamed", "budget_id": "", "max_budget": "1", "budget_duration": "", "tpm_limit": ""}
    data |= {"rpm_limit": "", "allowed_model_region": "", "default_model": ""}
    saved = admin.submit("/ui/customers/edit?id=on-starter", "/ui/customers/edit?id=on-starter", data)
    assert saved.status_code == 303, saved.text
    assert _budget_of(proxy, "on-starter") == "starter"


def test_a_tier_with_a_generated_id_is_listed_until_it_has_one_customer_and_again_with_two(
    proxy: RunningProxy, admin: UiClient
) -> None:
    with proxy.client() as api:
        tier = api.post("/budget/new", json={"max_budget": 9}).json()["budget_id"]
        assert f'data-budget-id="{tier}"' in admin.get("/ui/budgets").text
        for user_id in ("gen-1", "gen-2"):
            api.post("/customer/new", json={"user_id": user_id, "budget_id": tier}).raise_for_status()
    assert f'data-budget-id="{tier}"' in admin.get("/ui/budgets").text
    assert tier in [value for value, _, _ in _options(admin.get("/ui/customers/new").text, "budget_id")]
