"""`/customer/*` over real HTTP: shapes, every error in the envelope, and the hot path seeing each write at once."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from haimaker.services.customers import COUNTED_UP_TO, MAX_OFFSET
from tests.api.mgmt_support import DEFAULT_TIER, assert_error, chat, new_id

CUSTOMER_KEYS = {
    "user_id",
    "blocked",
    "alias",
    "spend",
    "allowed_model_region",
    "default_model",
    "models",
    "budget_id",
    "litellm_budget_table",
    "budget_is_default",
    "object_permission_id",
    "object_permission",
}


def new_customer(api: httpx.Client, **fields: Any) -> dict[str, Any]:
    response = api.post("/customer/new", json={"user_id": new_id(), **fields})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def info(api: httpx.Client, user_id: str) -> dict[str, Any]:
    response = api.get("/customer/info", params={"end_user_id": user_id})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def new_tier(api: httpx.Client, **fields: Any) -> str:
    response = api.post("/budget/new", json={"budget_id": new_id("tier"), **fields})
    assert response.status_code == 200, response.text
    budget_id: str = response.json()["budget_id"]
    return budget_id


def test_new_customer_answers_the_customer_response_shape(api: httpx.Client) -> None:
    body = new_customer(api, alias="Acme", models=["gpt-3.5-turbo"], allowed_model_region="eu", default_model="mistral")
    assert set(body) == CUSTOMER_KEYS
    assert body["alias"] == "Acme" and body["models"] == ["gpt-3.5-turbo"]
    assert body["allowed_model_region"] == "eu" and body["default_model"] == "mistral"
    assert body["spend"] == 0.0 and body["blocked"] is False
    assert body["budget_id"] is None and body["budget_is_default"] is True
    assert body["litellm_budget_table"]["budget_id"] == DEFAULT_TIER
    assert info(api, body["user_id"]) == body


def test_new_customer_with_budget_fields_gets_a_private_budget_enforced_at_once(api: httpx.Client) -> None:
    body = new_customer(api, max_budget="0", tpm_limit=10, budget_duration="30d")
    table = body["litellm_budget_table"]
    assert table["budget_id"] == body["budget_id"] and len(body["budget_id"]) == 36  # a uuid4
    assert table["max_budget"] == 0.0 and table["tpm_limit"] == 10 and table["budget_duration"] == "30d"
    assert table["budget_reset_at"].endswith("T00:00:00Z") and table["budget_reset_at"][8:10] == "01"
    assert {"keys", "end_users", "organization", "allowed_models"} <= set(table)
    error = assert_error(chat(api, body["user_id"]), 400, "budget_exceeded")
    assert error["message"].startswith(f"Budget has been exceeded! EndUser={body['user_id']}")


def test_new_customer_spend_sets_the_starting_spend(api: httpx.Client) -> None:
    body = new_customer(api, spend=1.5, max_budget=1)
    assert body["spend"] == 1.5
    assert info(api, body["user_id"])["spend"] == 1.5
    assert_error(chat(api, body["user_id"]), 400, "budget_exceeded")


def test_new_customer_links_a_pricing_tier(api: httpx.Client) -> None:
    tier = new_tier(api, max_budget=4)
    body = new_customer(api, budget_id=tier)
    assert body["budget_id"] == tier and body["litellm_budget_table"]["max_budget"] == 4.0
    assert chat(api, body["user_id"]).status_code == 200


def test_new_customer_twice_is_a_duplicate(api: httpx.Client) -> None:
    user_id = new_customer(api)["user_id"]
    response = api.post("/customer/new", json={"user_id": user_id})
    message = f"Customer already exists, passed user_id={user_id}. Please pass a new user_id."
    assert_error(response, 400, "bad_request", message, "user_id")


def test_new_customer_created_by_traffic_is_a_duplicate(api: httpx.Client) -> None:
    user_id = new_id()
    assert chat(api, user_id).status_code == 200
    assert_error(api.post("/customer/new", json={"user_id": user_id}), 400, "bad_request", param="user_id")


def test_new_customer_naming_a_missing_budget_is_not_found(api: httpx.Client) -> None:
    response = api.post("/customer/new", json={"user_id": new_id(), "budget_id": "no-such-tier"})
    assert_error(response, 404, "not_found", "Budget with id 'no-such-tier' does not exist.", "budget_id")


def test_new_customer_with_max_budget_and_budget_id_is_refused(api: httpx.Client) -> None:
    tier = new_tier(api)
    response = api.post("/customer/new", json={"user_id": new_id(), "max_budget": 1, "budget_id": tier})
    assert_error(response, 422, "invalid_request_error", "Set either 'max_budget' or 'budget_id', not both.")


@pytest.mark.parametrize(
    ("fields", "status", "param", "message"),
    [
        ({"tpm_limit": -1}, 422, "tpm_limit", None),
        ({"rpm_limit": -5}, 422, "rpm_limit", None),
        ({"allowed_model_region": "asia"}, 422, "allowed_model_region", None),
        ({"max_budget": "lots"}, 422, "max_budget", None),
        ({"max_budget": -1}, 400, "max_budget", "max_budget must be a non-negative finite number. Received: -1.0"),
        ({"soft_budget": -0.5}, 400, "soft_budget", "soft_budget must be a non-negative finite number. Received: -0.5"),
        ({"spend": -2}, 400, "spend", "spend must be a non-negative finite number. Received: -2.0"),
        (
            {"budget_duration": "2mo"},
            400,
            "budget_duration",
            "Invalid budget_duration '2mo'. Use a format like '1h', '24h', '7d', or '30d'.",
        ),
        (
            {"default_model": "gpt-4"},
            422,
            "default_model",
            "Default Model not on proxy. Configure via /model/new or config.yaml. Default_model=gpt-4, "
            "proxy_model_names={'azure-gpt-3.5', 'gpt-3.5-turbo', 'mistral'}",
        ),
    ],
)
def test_new_customer_refuses_invalid_fields(
    api: httpx.Client, fields: dict[str, Any], status: int, param: str, message: str | None
) -> None:
    user_id = new_id()
    response = api.post("/customer/new", json={"user_id": user_id, **fields})
    error_type = "invalid_request_error"
    assert_error(response, status, error_type, message, param)
    assert_error(api.get("/customer/info", params={"end_user_id": user_id}), 404, "not_found")


@pytest.mark.parametrize("literal", ["Infinity", "NaN", "1e999"])
def test_new_customer_refuses_a_non_finite_max_budget(api: httpx.Client, literal: str) -> None:
    raw = f'{{"user_id": "{new_id()}", "max_budget": {literal}}}'
    response = api.post("/customer/new", content=raw, headers={"content-type": "application/json"})
    error = assert_error(response, 400, "invalid_request_error", param="max_budget")
    assert error["message"].startswith("max_budget must be a non-negative finite number. Received: ")


def test_new_customer_body_errors_are_422_in_the_envelope(api: httpx.Client) -> None:
    assert_error(api.post("/customer/new", json={"alias": "x"}), 422, "invalid_request_error", param="user_id")
    broken = api.post("/customer/new", content=b'{"user_id": "x",}', headers={"content-type": "application/json"})
    assert_error(broken, 422, "invalid_request_error", "Invalid JSON in request body.", None)


def test_info_of_an_unknown_customer_is_not_found(api: httpx.Client) -> None:
    response = api.get("/customer/info", params={"end_user_id": "nobody-here"})
    assert_error(response, 404, "not_found", "End User Id=nobody-here does not exist in db", "end_user_id")
    assert_error(api.get("/customer/info"), 422, "invalid_request_error", param="end_user_id")


def test_spend_shows_in_info_right_after_an_llm_call(api: httpx.Client) -> None:
    user_id = new_id()
    response = chat(api, user_id)
    assert response.status_code == 200
    cost = float(response.headers["x-litellm-response-cost"])
    assert cost > 0
    assert info(api, user_id)["spend"] == pytest.approx(cost)
    second = float(chat(api, user_id).headers["x-litellm-response-cost"])
    assert info(api, user_id)["spend"] == pytest.approx(cost + second)
    listed = api.get("/customer/list", params={"search": user_id}).json()
    assert [row["spend"] for row in listed] == [pytest.approx(cost + second)]


def test_update_applies_only_the_fields_sent(api: httpx.Client) -> None:
    user_id = new_customer(api, alias="Before", allowed_model_region="us")["user_id"]
    body = api.post("/customer/update", json={"user_id": user_id, "blocked": True}).json()
    assert body["blocked"] is True and body["alias"] == "Before" and body["allowed_model_region"] == "us"
    blocked = chat(api, user_id)
    assert_error(blocked, 403, "customer_blocked", f"User blocked from making LLM API Calls. User={user_id}", None)

    body = api.post("/customer/update", json={"user_id": user_id, "blocked": False, "alias": None}).json()
    assert body["blocked"] is False and body["alias"] is None and body["allowed_model_region"] == "us"
    # Unblocked, and pinned to a region where the model has no deployment: refused for that, before any upstream.
    assert_error(chat(api, user_id), 400, "invalid_request_error", param="model")
    body = api.post("/customer/update", json={"user_id": user_id, "allowed_model_region": None}).json()
    assert body["allowed_model_region"] is None and body["alias"] is None
    assert chat(api, user_id).status_code == 200

    body = api.post("/customer/update", json={"user_id": user_id, "models": ["mistral"]}).json()
    assert body["models"] == ["mistral"]
    assert_error(chat(api, user_id), 403, "customer_model_access_denied")
    assert chat(api, user_id, model="mistral").status_code == 200


def test_update_of_an_unknown_customer_is_not_found(api: httpx.Client) -> None:
    response = api.post("/customer/update", json={"user_id": "nobody-here", "alias": "x"})
    assert_error(response, 404, "not_found", "End User Id=nobody-here does not exist in db", "user_id")


def test_update_changes_a_private_budget_in_place(api: httpx.Client) -> None:
    created = new_customer(api, max_budget=5)
    body = api.post("/customer/update", json={"user_id": created["user_id"], "max_budget": 0, "rpm_limit": 7}).json()
    assert body["budget_id"] == created["budget_id"]
    assert body["litellm_budget_table"]["max_budget"] == 0.0 and body["litellm_budget_table"]["rpm_limit"] == 7
    assert_error(chat(api, created["user_id"]), 400, "budget_exceeded")


def test_update_of_a_shared_tier_customer_makes_a_private_copy(api: httpx.Client) -> None:
    tier = new_tier(api, max_budget=4, rpm_limit=100, budget_duration="7d")
    first, second = new_customer(api, budget_id=tier), new_customer(api, budget_id=tier)
    body = api.post("/customer/update", json={"user_id": first["user_id"], "max_budget": 0}).json()

    copy = body["litellm_budget_table"]
    assert body["budget_id"] != tier and copy["budget_id"] == body["budget_id"]
    assert copy["max_budget"] == 0.0 and copy["rpm_limit"] == 100 and copy["budget_duration"] == "7d"
    original = api.post("/budget/info", json={"budgets": [tier]}).json()[0]
    assert original["max_budget"] == 4.0
    assert copy["budget_reset_at"] == original["budget_reset_at"]
    assert info(api, second["user_id"])["budget_id"] == tier
    assert_error(chat(api, first["user_id"]), 400, "budget_exceeded")
    assert chat(api, second["user_id"]).status_code == 200


def test_update_of_a_customer_without_budget_gives_it_one(api: httpx.Client) -> None:
    user_id = new_customer(api)["user_id"]
    body = api.post("/customer/update", json={"user_id": user_id, "rpm_limit": 1}).json()
    # A copy of the default budget (max_budget $1000) with the change.
    assert body["litellm_budget_table"]["rpm_limit"] == 1 and body["litellm_budget_table"]["max_budget"] == 1000.0
    assert chat(api, user_id).status_code == 200
    assert_error(chat(api, user_id), 429, "rate_limit_error")


def test_update_links_and_unlinks_budgets(api: httpx.Client) -> None:
    tier = new_tier(api, max_budget=0)
    user_id = new_customer(api)["user_id"]
    assert api.post("/customer/update", json={"user_id": user_id, "budget_id": tier}).json()["budget_id"] == tier
    assert_error(chat(api, user_id), 400, "budget_exceeded")
    body = api.post("/customer/update", json={"user_id": user_id, "budget_id": None}).json()
    assert body["budget_id"] is None and body["litellm_budget_table"]["budget_id"] == DEFAULT_TIER
    assert chat(api, user_id).status_code == 200
    response = api.post("/customer/update", json={"user_id": user_id, "budget_id": "no-such-tier"})
    assert_error(response, 404, "not_found", param="budget_id")


def test_update_refuses_limits_with_budget_id(api: httpx.Client) -> None:
    tier = new_tier(api)
    user_id = new_customer(api)["user_id"]
    response = api.post("/customer/update", json={"user_id": user_id, "budget_id": tier, "tpm_limit": 5})
    assert_error(response, 422, "invalid_request_error", param="tpm_limit")
    response = api.post("/customer/update", json={"user_id": user_id, "budget_duration": "fortnight"})
    assert_error(response, 400, "invalid_request_error", param="budget_duration")
    assert_error(api.post("/customer/update", json={"user_id": user_id, "tpm_limit": -1}), 422, "invalid_request_error")


def test_delete_removes_customers_all_or_none(api: httpx.Client) -> None:
    first, second = new_customer(api)["user_id"], new_customer(api)["user_id"]
    response = api.post("/customer/delete", json={"user_ids": [first, "nobody-here"]})
    assert_error(response, 404, "not_found", "End User Id(s)=nobody-here do not exist in db", "user_ids")
    assert info(api, first)["user_id"] == first

    response = api.post("/customer/delete", json={"user_ids": [first, second]})
    assert response.status_code == 200
    assert response.json() == {
        "deleted_customers": 2,
        "message": f"Successfully deleted customers with ids: ['{first}', '{second}']",
    }
    assert_error(api.get("/customer/info", params={"end_user_id": first}), 404, "not_found")
    assert_error(api.post("/customer/delete", json={"user_ids": []}), 422, "invalid_request_error", param="user_ids")


def test_list_pages_by_number_and_by_the_next_link_with_a_prefix_search(api: httpx.Client) -> None:
    prefix = new_id("list")
    ids = [f"{prefix}-{n}" for n in range(5)]
    for user_id in reversed(ids):
        api.post("/customer/new", json={"user_id": user_id, "alias": f"Alias {user_id.upper()}"})
    listed = api.get("/customer/list", params={"search": prefix})
    assert [row["user_id"] for row in listed.json()] == ids and all(set(row) == CUSTOMER_KEYS for row in listed.json())
    assert "link" not in listed.headers  # one page holds them all
    assert listed.headers["x-total-count"] == "5"  # few matches: counted exactly, for free
    page = api.get("/customer/list", params={"search": prefix, "page": 3, "page_size": 2}).json()
    assert [row["user_id"] for row in page] == ids[4:]

    # Following rel="next" walks every match once, in order; the link keeps the other parameters.
    walked: list[str] = []
    response = api.get("/customer/list", params={"search": prefix, "page_size": 2})
    while True:
        assert response.status_code == 200, response.text
        walked.extend(row["user_id"] for row in response.json())
        if "next" not in response.links:
            break
        assert "search=" in response.links["next"]["url"] and "page_size=2" in response.links["next"]["url"]
        response = api.get(response.links["next"]["url"])
    assert walked == ids
    after = api.get("/customer/list", params={"search": prefix, "after": ids[1]}).json()
    assert [row["user_id"] for row in after] == ids[2:]

    # The prefix is case-sensitive, and the alias is not searched (neither has an index to serve it).
    assert api.get("/customer/list", params={"search": prefix.upper()}).json() == []
    assert api.get("/customer/list", params={"search": f"Alias {prefix.upper()}"}).json() == []
    assert_error(api.get("/customer/list", params={"page_size": 101}), 422, "invalid_request_error", param="page_size")
    assert_error(api.get("/customer/list", params={"page": 0}), 422, "invalid_request_error", param="page")


def test_list_totals_are_exact_on_request_and_never_count_every_customer_otherwise(api: httpx.Client) -> None:
    new_customer(api)
    everyone = api.get("/customer/list", params={"include_total": "true", "page_size": 1})
    exact = int(everyone.headers["x-total-count"])
    assert exact >= 1 and "x-total-estimate" not in everyone.headers
    # Without include_total: exact when few (at most COUNTED_UP_TO), else the store's estimate (absent before it
    # has one); the shared proxy holds a few hundred customers.
    cheap = api.get("/customer/list", params={"page_size": 1}).headers
    assert "x-total-count" in cheap or "x-total-estimate" in cheap or exact > COUNTED_UP_TO
    if exact <= COUNTED_UP_TO:
        assert int(cheap["x-total-count"]) >= exact
    none = api.get("/customer/list", params={"search": new_id("nobody"), "include_total": "true"})
    assert none.json() == [] and none.headers["x-total-count"] == "0"


def test_numbered_pages_stop_where_offset_would_read_too_many_rows(api: httpx.Client) -> None:
    deepest = MAX_OFFSET // 100 + 1
    assert api.get("/customer/list", params={"page": deepest, "page_size": 100}).status_code == 200
    response = api.get("/customer/list", params={"page": deepest + 1, "page_size": 100})
    body = assert_error(response, 400, "invalid_request_error", param="page")
    assert "after=" in body["message"]
    both = api.get("/customer/list", params={"page": 2, "after": "x"})
    assert_error(both, 400, "invalid_request_error", param="after")


def test_block_and_unblock(api: httpx.Client) -> None:
    known, unknown = new_customer(api)["user_id"], new_id()
    response = api.post("/customer/block", json={"user_ids": [known, unknown]})
    assert response.status_code == 200
    rows = response.json()["blocked_users"]
    assert [(row["user_id"], row["blocked"]) for row in rows] == [(known, True), (unknown, True)]
    assert set(rows[0]) == CUSTOMER_KEYS
    assert_error(chat(api, unknown), 403, "customer_blocked")

    response = api.post("/customer/unblock", json={"user_ids": [known, unknown]})
    assert response.status_code == 200
    assert [(row["user_id"], row["blocked"]) for row in response.json()["unblocked_users"]] == [
        (known, False),
        (unknown, False),
    ]
    assert chat(api, unknown).status_code == 200
    missing = api.post("/customer/unblock", json={"user_ids": [known, "nobody-here"]})
    assert_error(missing, 404, "not_found", "End User Id(s)=nobody-here do not exist in db", "user_ids")


def test_end_user_aliases_behave_as_customer_routes(api: httpx.Client) -> None:
    user_id = new_id()
    assert api.post("/end_user/new", json={"user_id": user_id, "alias": "a"}).status_code == 200
    assert api.get("/end_user/info", params={"end_user_id": user_id}).json()["alias"] == "a"
    assert api.post("/end_user/update", json={"user_id": user_id, "alias": "b"}).json()["alias"] == "b"
    assert [row["user_id"] for row in api.get("/end_user/list", params={"search": user_id}).json()] == [user_id]
    assert api.post("/end_user/block", json={"user_ids": [user_id]}).json()["blocked_users"][0]["blocked"] is True
    unblocked = api.post("/end_user/unblock", json={"user_ids": [user_id]}).json()
    assert unblocked["unblocked_users"][0]["blocked"] is False
    assert api.post("/end_user/delete", json={"user_ids": [user_id]}).json()["deleted_customers"] == 1
    assert_error(api.get("/end_user/info", params={"end_user_id": user_id}), 404, "not_found")
