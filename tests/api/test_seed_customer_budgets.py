"""The user's document (`shared/seeds/customer-budgets.txt`), request by request, on both engines.

Bodies are the document's, byte for byte, without its `# 👈` annotations; `-D` is read as `-d`. The Quick Start body
ends with a trailing comma: LiteLLM answers that with 422, and so do we (in our envelope); the test sends it as
written and then fixed. Sections run on a database of their own, as a reader following them would (Quick Start and
Pricing Tiers share one, with the Quick Start's customer deleted in between).
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.api.mgmt_support import SEED_KEY, assert_error, mgmt_config, proxy_on
from tests.support.proxy import RunningProxy

# The keys of the document's expected /customer/info response.
SEED_RESPONSE_KEYS = {
    "user_id",
    "blocked",
    "alias",
    "spend",
    "allowed_model_region",
    "default_model",
    "litellm_budget_table",
}
JSON_HEADERS = {"Content-Type": "application/json", "Authorization": f"Bearer {SEED_KEY}"}

TRACKING_CALL = """ {
"model": "azure-gpt-3.5",
"user": "ishaan3",
"messages": [
{
"role": "user",
"content": "what time is it"
}
]
}"""
DEFAULT_BUDGET = """{
"max_budget": 10,
"rpm_limit": 2,
"tpm_limit": 1000
}"""
DEFAULT_BUDGET_CALL = """{
"model": "gpt-3.5-turbo",
"messages": [{"role": "user", "content": "Hello"}],
"user": "my-customer-id"
}"""
QUICK_START_CUSTOMER = """{
"user_id" : "my-customer-id",
"max_budget": "0",
}"""
QUICK_START_CALL = """{
"model": "mistral",
"messages": [
{
"role": "user",
"content": "What's the weather like in Boston today?"
}
],
"user": "ishaan-jaff-48"
}"""
TIER_CUSTOMER = """{
"user_id": "my-customer-id",
"budget_id": "my-free-tier"
}"""


def post(proxy: RunningProxy, path: str, body: str) -> httpx.Response:
    return httpx.post(proxy.url + path, content=body.encode(), headers=JSON_HEADERS, timeout=30)


def test_tracking_customer_spend(tmp_path: Path, fresh_db: str) -> None:
    # As the document runs it: no default budget yet, so the customer shows no budget (`litellm_budget_table` null).
    with proxy_on(tmp_path, mgmt_config(fresh_db)) as shared_proxy:
        _track(shared_proxy)


def _track(shared_proxy: RunningProxy) -> None:
    assert post(shared_proxy, "/chat/completions", TRACKING_CALL).status_code == 200
    response = httpx.get(
        shared_proxy.url + "/customer/info?end_user_id=ishaan3", headers={"Authorization": f"Bearer {SEED_KEY}"}
    )
    assert response.status_code == 200
    body = response.json()
    seed_keys = {
        "user_id",
        "blocked",
        "alias",
        "spend",
        "allowed_model_region",
        "default_model",
        "litellm_budget_table",
    }
    assert seed_keys <= set(body)
    assert body["user_id"] == "ishaan3" and body["blocked"] is False and body["alias"] is None
    assert body["spend"] > 0 and body["litellm_budget_table"] is None
    assert body["allowed_model_region"] is None and body["default_model"] is None
    again = post(shared_proxy, "/chat/completions", TRACKING_CALL)
    cost = float(again.headers["x-litellm-response-cost"])
    assert customer_spend(shared_proxy, "ishaan3") == pytest.approx(body["spend"] + cost)  # incremented


def customer_spend(proxy: RunningProxy, user_id: str) -> float:
    with proxy.client() as client:
        spend: float = client.get("/customer/info", params={"end_user_id": user_id}).json()["spend"]
    return spend


def test_default_budget_for_all_customers(tmp_path: Path, fresh_db: str) -> None:
    # Step 1: create the default budget; its id comes back in the response.
    with proxy_on(tmp_path, mgmt_config(fresh_db)) as proxy:
        created = post(proxy, "/budget/new", DEFAULT_BUDGET)
        assert created.status_code == 200
        budget_id = created.json()["budget_id"]
        assert (created.json()["max_budget"], created.json()["rpm_limit"], created.json()["tpm_limit"]) == (
            10.0,
            2,
            1000,
        )
    # Step 2: name it in config.yaml and restart.
    config = mgmt_config(fresh_db, litellm_settings={"max_end_user_budget_id": budget_id})
    with proxy_on(tmp_path, config) as proxy:
        # Step 3: the customer is held to the default budget's limits (rpm_limit 2).
        assert [post(proxy, "/chat/completions", DEFAULT_BUDGET_CALL).status_code for _ in range(2)] == [200, 200]
        error = assert_error(post(proxy, "/chat/completions", DEFAULT_BUDGET_CALL), 429, "rate_limit_error")
        assert error["message"].startswith("Rate limit exceeded for end_user: my-customer-id. Limit type: requests.")
        with proxy.client() as client:
            customer = client.get("/customer/info", params={"end_user_id": "my-customer-id"}).json()
        # The budget in force reads through the API: the default budget's row, said to be the default.
        assert customer["budget_id"] is None and customer["budget_is_default"] is True
        assert customer["litellm_budget_table"]["budget_id"] == budget_id
        assert customer["litellm_budget_table"]["rpm_limit"] == 2


def test_quick_start_and_pricing_tiers(tmp_path: Path, fresh_db: str) -> None:
    with proxy_on(tmp_path, mgmt_config(fresh_db)) as proxy:
        # Quick Start: create a customer with a budget.
        broken = post(proxy, "/customer/new", QUICK_START_CUSTOMER)
        assert_error(broken, 422, "invalid_request_error", "Invalid JSON in request body.", None)
        fixed = post(proxy, "/customer/new", QUICK_START_CUSTOMER.replace('"0",\n}', '"0"\n}'))
        assert fixed.status_code == 200
        assert fixed.json()["user_id"] == "my-customer-id"
        assert fixed.json()["litellm_budget_table"]["max_budget"] == 0.0
        # "Test it!" as written: ishaan-jaff-48 has no budget, so the call works.
        assert post(proxy, "/chat/completions", QUICK_START_CALL).status_code == 200
        # What the section means to show: the $0 customer is refused.
        refused = post(proxy, "/chat/completions", QUICK_START_CALL.replace("ishaan-jaff-48", "my-customer-id"))
        error = assert_error(refused, 400, "budget_exceeded", param=None)
        assert error["message"] == "Budget has been exceeded! EndUser=my-customer-id Current cost: 0.0, Max budget: 0.0"

        # Assign Pricing Tiers starts from scratch: a reader who followed the Quick Start removes that customer.
        with proxy.client() as client:
            assert client.post("/customer/delete", json={"user_ids": ["my-customer-id"]}).status_code == 200
        # 1. What the UI's "+ Create Budget" sends for 'my-free-tier' with $4.
        assert post(proxy, "/budget/new", '{"budget_id": "my-free-tier", "max_budget": 4}').status_code == 200
        # 2. Assign it when creating the customer.
        assigned = post(proxy, "/customer/new", TIER_CUSTOMER)
        assert assigned.status_code == 200
        assert assigned.json()["budget_id"] == "my-free-tier"
        assert assigned.json()["litellm_budget_table"]["max_budget"] == 4.0
        # 3. "Test it!" repeats the same request: the customer exists now (LiteLLM answers the same).
        again = post(proxy, "/customer/new", TIER_CUSTOMER)
        message = "Customer already exists, passed user_id=my-customer-id. Please pass a new user_id."
        assert_error(again, 400, "bad_request", message, "user_id")
        # The customer now runs on the $4 tier.
        assert post(proxy, "/chat/completions", DEFAULT_BUDGET_CALL).status_code == 200
