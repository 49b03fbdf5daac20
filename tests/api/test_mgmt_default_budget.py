"""The default budget (`litellm_settings.max_end_user_budget_id`) as the management API shows and protects it.

The shared proxy's default tier has rpm_limit 1000 and max_budget $1000; which budget a customer rides shows in the
`x-ratelimit-end_user-limit-requests` header of its calls.
"""

from __future__ import annotations

import httpx

from tests.api.mgmt_support import DEFAULT_TIER, assert_error, chat, new_id

RPM_HEADER = "x-ratelimit-end_user-limit-requests"


def test_customer_on_the_default_budget_shows_the_default_budget_in_force(api: httpx.Client) -> None:
    user_id = new_id()
    assert chat(api, user_id).headers[RPM_HEADER] == "1000"
    body = api.get("/customer/info", params={"end_user_id": user_id}).json()
    # No budget of its own (`budget_id`), and the limits that apply readable through the API.
    assert body["budget_id"] is None and body["spend"] > 0
    assert body["budget_is_default"] is True
    assert body["litellm_budget_table"]["budget_id"] == DEFAULT_TIER
    assert (body["litellm_budget_table"]["rpm_limit"], body["litellm_budget_table"]["max_budget"]) == (1000, 1000.0)


def test_the_default_budget_cannot_be_deleted(api: httpx.Client) -> None:
    response = api.post("/budget/delete", json={"id": DEFAULT_TIER})
    error = assert_error(response, 400, "invalid_request_error", param="id")
    assert "max_end_user_budget_id" in error["message"]
    assert api.post("/budget/info", json={"budgets": [DEFAULT_TIER]}).status_code == 200


def test_deleting_a_tier_moves_its_customers_to_the_default_budget(api: httpx.Client) -> None:
    tier = api.post("/budget/new", json={"budget_id": new_id("tier"), "rpm_limit": 5}).json()["budget_id"]
    user_id = new_id()
    api.post("/customer/new", json={"user_id": user_id, "budget_id": tier})
    assert chat(api, user_id).headers[RPM_HEADER] == "5"

    assert api.post("/budget/delete", json={"id": tier}).status_code == 200
    assert chat(api, user_id).headers[RPM_HEADER] == "1000"
    assert api.get("/customer/info", params={"end_user_id": user_id}).json()["budget_id"] is None


def test_update_of_a_default_budget_customer_copies_the_default(api: httpx.Client) -> None:
    user_id = new_id()
    api.post("/customer/new", json={"user_id": user_id})
    body = api.post("/customer/update", json={"user_id": user_id, "tpm_limit": 5000}).json()
    own = body["litellm_budget_table"]
    assert body["budget_id"] not in (None, DEFAULT_TIER)
    assert (own["tpm_limit"], own["rpm_limit"], own["max_budget"]) == (5000, 1000, 1000.0)
    default = api.post("/budget/info", json={"budgets": [DEFAULT_TIER]}).json()[0]
    assert default["tpm_limit"] is None
    assert chat(api, user_id).headers["x-ratelimit-end_user-limit-tokens"] == "5000"
