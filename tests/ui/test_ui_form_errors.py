"""Forms show every invalid field at once, each with the API's message next to it, keep what was typed, and write
nothing (issue 14): the budget, customer (create and edit) and key forms."""

from __future__ import annotations

import html
import re

from tests.support.proxy import RunningProxy
from tests.ui.ui_client import UiClient


def _errors(page: str) -> dict[str, str]:
    """Field name -> the error shown next to it."""
    found = re.findall(r'data-error-for="([^"]*)">([^<]*)<', page)
    return {name: html.unescape(message) for name, message in found}


def test_a_budget_form_with_two_bad_fields_shows_both_and_creates_nothing(
    ui_proxy: RunningProxy, admin: UiClient
) -> None:
    data = {
        "budget_id": "two-bad",
        "max_budget": "-1",
        "tpm_limit": "lots",
        "budget_duration": "custom",
        "budget_duration_custom": "fortnight",
    }
    page = admin.submit("/ui/budgets/new", "/ui/budgets/new", data)
    assert page.status_code == 400
    errors = _errors(page.text)
    # The API's message, with the value as the API reads it.
    assert errors["max_budget"] == "max_budget must be a non-negative finite number. Received: -1.0"
    assert errors["tpm_limit"].startswith("tpm_limit: Input should be a valid integer")
    assert errors["budget_duration_custom"].startswith("Invalid budget_duration 'fortnight'")
    assert "" not in errors
    for value in ('value="-1"', 'value="lots"', 'value="fortnight"', 'value="two-bad"'):
        assert value in page.text
    with ui_proxy.client() as api:
        assert api.post("/budget/info", json={"budgets": ["two-bad"]}).status_code == 404


def test_a_budget_edit_with_two_bad_fields_shows_both_and_changes_nothing(
    ui_proxy: RunningProxy, admin: UiClient
) -> None:
    with ui_proxy.client() as api:
        api.post("/budget/new", json={"budget_id": "edit-two-bad", "max_budget": 3}).raise_for_status()
    data = {"max_budget": "-2", "soft_budget": "", "tpm_limit": "", "rpm_limit": "-1", "budget_duration": ""}
    page = admin.submit("/ui/budgets/edit?id=edit-two-bad", "/ui/budgets/edit?id=edit-two-bad", data)
    assert page.status_code == 400
    assert set(_errors(page.text)) == {"max_budget", "rpm_limit"}
    with ui_proxy.client() as api:
        [budget] = api.post("/budget/info", json={"budgets": ["edit-two-bad"]}).json()
    assert budget["max_budget"] == 3.0 and budget["rpm_limit"] is None


def test_a_customer_form_with_three_bad_fields_shows_all_and_creates_nothing(
    ui_proxy: RunningProxy, admin: UiClient
) -> None:
    data = {"user_id": "cust-two-bad", "max_budget": "abc", "budget_duration": "fortnight", "rpm_limit": "-3"}
    page = admin.submit("/ui/customers/new", "/ui/customers/new", data)
    assert page.status_code == 400
    errors = _errors(page.text)
    assert set(errors) == {"max_budget", "budget_duration", "rpm_limit"}
    assert errors["max_budget"].startswith("max_budget: Input should be a valid number")
    assert errors["budget_duration"].startswith("Invalid budget_duration 'fortnight'")
    assert errors["rpm_limit"].startswith("rpm_limit: Input should be greater than or equal to 0")
    for value in ('value="abc"', 'value="fortnight"', 'value="-3"', 'value="cust-two-bad"'):
        assert value in page.text
    with ui_proxy.client() as api:
        assert api.get("/customer/info", params={"end_user_id": "cust-two-bad"}).status_code == 404


def test_a_customer_edit_with_two_bad_fields_shows_both_and_changes_nothing(
    ui_proxy: RunningProxy, admin: UiClient
) -> None:
    with ui_proxy.client() as api:
        api.post("/customer/new", json={"user_id": "edit-me", "max_budget": 4}).raise_for_status()
    data = {"alias": "changed", "budget_id": "", "max_budget": "-5", "tpm_limit": "x", "rpm_limit": ""}
    data |= {"budget_duration": "", "allowed_model_region": "", "default_model": ""}
    page = admin.submit("/ui/customers/edit?id=edit-me", "/ui/customers/edit?id=edit-me", data)
    assert page.status_code == 400
    assert set(_errors(page.text)) == {"max_budget", "tpm_limit"}
    assert 'value="changed"' in page.text and 'value="-5"' in page.text
    with ui_proxy.client() as api:
        info = api.get("/customer/info", params={"end_user_id": "edit-me"}).json()
    assert info["alias"] is None and info["litellm_budget_table"]["max_budget"] == 4.0


def test_a_key_form_with_three_bad_fields_shows_all_and_creates_nothing(
    ui_proxy: RunningProxy, admin: UiClient
) -> None:
    data = {"key_alias": "key-two-bad", "max_budget": "-1", "duration": "soon", "tpm_limit": "x", "key_type": "default"}
    page = admin.submit("/ui/keys/new", "/ui/keys/new", data)
    assert page.status_code == 400
    assert set(_errors(page.text)) == {"max_budget", "duration", "tpm_limit"}
    assert 'value="key-two-bad"' in page.text and 'value="soon"' in page.text
    with ui_proxy.client() as api:
        assert api.get("/key/list", params={"key_alias": "key-two-bad"}).json()["keys"] == []


def test_a_rule_about_two_fields_together_is_checked_once_every_field_is_valid(
    ui_proxy: RunningProxy, admin: UiClient
) -> None:
    data = {"user_id": "bad-model-and-limit", "default_model": "gpt-9", "max_budget": "-1"}
    page = admin.submit("/ui/customers/new", "/ui/customers/new", data)
    assert set(_errors(page.text)) == {"default_model", "max_budget"}
    with ui_proxy.client() as api:
        api.post("/budget/new", json={"budget_id": "tier-for-rule"}).raise_for_status()
    data = {"user_id": "tier-and-limits", "budget_id": "tier-for-rule", "max_budget": "-1"}
    assert set(_errors(admin.submit("/ui/customers/new", "/ui/customers/new", data).text)) == {"max_budget"}
    data["max_budget"] = "2"
    page = admin.submit("/ui/customers/new", "/ui/customers/new", data)
    assert _errors(page.text) == {"max_budget": "Set either 'max_budget' or 'budget_id', not both."}


def test_a_missing_customer_id_is_reported_with_the_other_bad_fields(admin: UiClient) -> None:
    page = admin.submit("/ui/customers/new", "/ui/customers/new", {"alias": "no id", "max_budget": "-1"})
    assert _errors(page.text) == {
        "user_id": "Missing required field: user_id",
        "max_budget": "max_budget must be a non-negative finite number. Received: -1.0",
    }
