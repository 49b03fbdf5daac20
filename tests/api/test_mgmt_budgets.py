"""`/budget/*` over real HTTP: raw rows, reset instants, every error in the envelope, tier edits applied at once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from haimaker.periods import next_reset_at
from tests.api.mgmt_support import DEFAULT_TIER, assert_error, chat, new_id

BUDGET_KEYS = {
    "budget_id",
    "max_budget",
    "soft_budget",
    "max_parallel_requests",
    "tpm_limit",
    "rpm_limit",
    "tpd_limit",
    "model_max_budget",
    "budget_duration",
    "budget_reset_at",
    "allowed_models",
    "temp_budget_increase",
    "temp_budget_expiry",
    "created_at",
    "created_by",
    "updated_at",
    "updated_by",
    "organization",
    "keys",
    "end_users",
    "tags",
    "team_membership",
    "organization_membership",
    "projects",
    "model_access_groups",
}


def new_budget(api: httpx.Client, **fields: Any) -> dict[str, Any]:
    response = api.post("/budget/new", json={"budget_id": new_id("tier"), **fields})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def update(api: httpx.Client, **fields: Any) -> dict[str, Any]:
    response = api.post("/budget/update", json=fields)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_new_budget_answers_the_raw_row(api: httpx.Client) -> None:
    before = datetime.now(UTC)
    body = new_budget(
        api,
        max_budget=4,
        soft_budget=3.5,
        tpm_limit=1000,
        rpm_limit=2,
        max_parallel_requests=3,
        tpd_limit=10,
        budget_duration="30d",
        model_max_budget={"gpt-3.5-turbo": {"max_budget": 1}},
    )
    assert set(body) == BUDGET_KEYS
    assert (body["max_budget"], body["soft_budget"], body["tpm_limit"], body["rpm_limit"]) == (4.0, 3.5, 1000, 2)
    assert body["max_parallel_requests"] == 3 and body["tpd_limit"] == 10
    assert body["model_max_budget"] == {"gpt-3.5-turbo": {"max_budget": 1}}
    assert body["allowed_models"] == [] and body["temp_budget_increase"] is None and body["keys"] is None
    assert body["created_by"] == body["updated_by"] == "default_user_id"
    assert parse(body["budget_reset_at"]) in {next_reset_at("30d", before), next_reset_at("30d", datetime.now(UTC))}
    assert parse(body["created_at"]) >= before - timedelta(seconds=1)


def test_new_budget_without_id_gets_a_uuid_and_may_be_empty(api: httpx.Client) -> None:
    response = api.post("/budget/new", json={})
    assert response.status_code == 200
    body = response.json()
    assert len(body["budget_id"]) == 36 and body["max_budget"] is None and body["budget_reset_at"] is None


def test_new_budget_keeps_a_given_reset_instant(api: httpx.Client) -> None:
    body = new_budget(api, budget_duration="1d", budget_reset_at="2030-01-02T03:04:05")
    assert body["budget_reset_at"] == "2030-01-02T03:04:05Z"


def test_new_budget_twice_is_a_duplicate(api: httpx.Client) -> None:
    budget_id = new_budget(api)["budget_id"]
    response = api.post("/budget/new", json={"budget_id": budget_id})
    assert_error(response, 400, "bad_request", f"Budget with id '{budget_id}' already exists.", "budget_id")


@pytest.mark.parametrize(
    ("fields", "status", "param", "message"),
    [
        ({"max_budget": -1}, 400, "max_budget", "max_budget must be a non-negative finite number. Received: -1.0"),
        ({"soft_budget": -3}, 400, "soft_budget", "soft_budget must be a non-negative finite number. Received: -3.0"),
        ({"max_budget": 1e12}, 400, "max_budget", None),
        (
            {"budget_duration": "0d"},
            400,
            "budget_duration",
            "Invalid budget_duration '0d'. Use a format like '1h', '24h', '7d', or '30d'.",
        ),
        ({"model_max_budget": {"m": {"budget_duration": "abc"}}}, 400, "budget_duration", None),
        ({"model_max_budget": {"m": {"colour": "red"}}}, 400, "model_max_budget", None),
        ({"tpm_limit": -1}, 422, "tpm_limit", None),
        ({"rpm_limit": "many"}, 422, "rpm_limit", None),
        ({"budget_reset_at": "soon"}, 422, "budget_reset_at", None),
    ],
)
def test_budget_writes_refuse_invalid_fields(
    api: httpx.Client, fields: dict[str, Any], status: int, param: str, message: str | None
) -> None:
    budget_id = new_id("tier")
    assert_error(
        api.post("/budget/new", json={"budget_id": budget_id, **fields}),
        status,
        "invalid_request_error",
        message,
        param,
    )
    assert_error(api.post("/budget/info", json={"budgets": [budget_id]}), 404, "not_found")
    existing = new_budget(api)["budget_id"]
    response = api.post("/budget/update", json={"budget_id": existing, **fields})
    assert_error(response, status, "invalid_request_error", message, param)


def test_update_writes_only_the_fields_sent(api: httpx.Client) -> None:
    created = new_budget(api, max_budget=4, tpm_limit=100, rpm_limit=10)
    body = update(api, budget_id=created["budget_id"], rpm_limit=20, tpm_limit=None)
    assert (body["max_budget"], body["tpm_limit"], body["rpm_limit"]) == (4.0, None, 20)
    assert body["created_at"] == created["created_at"] and body["budget_reset_at"] is None


def test_update_of_the_duration_moves_or_clears_the_reset_instant(api: httpx.Client) -> None:
    budget_id = new_budget(api)["budget_id"]
    with_duration = update(api, budget_id=budget_id, budget_duration="1h")
    reset_at = parse(with_duration["budget_reset_at"])
    assert reset_at.minute == 0 and timedelta(0) < reset_at - datetime.now(UTC) <= timedelta(hours=1)
    given = update(api, budget_id=budget_id, budget_duration="7d", budget_reset_at="2031-05-06T00:00:00Z")
    assert given["budget_duration"] == "7d" and given["budget_reset_at"] == "2031-05-06T00:00:00Z"
    cleared = update(api, budget_id=budget_id, budget_duration=None)
    assert cleared["budget_duration"] is None and cleared["budget_reset_at"] is None


def test_update_needs_an_existing_budget_id(api: httpx.Client) -> None:
    assert_error(
        api.post("/budget/update", json={"max_budget": 1}),
        400,
        "invalid_request_error",
        "budget_id is required",
        "budget_id",
    )
    response = api.post("/budget/update", json={"budget_id": "no-such-tier", "max_budget": 1})
    assert_error(response, 404, "not_found", "Budget with id 'no-such-tier' does not exist.", "budget_id")


def test_tier_edits_apply_to_its_customers_at_once(api: httpx.Client) -> None:
    budget_id = new_budget(api, rpm_limit=100)["budget_id"]
    user_id = new_id()
    assert api.post("/customer/new", json={"user_id": user_id, "budget_id": budget_id}).status_code == 200
    assert chat(api, user_id).status_code == 200
    update(api, budget_id=budget_id, rpm_limit=1)
    assert_error(chat(api, user_id), 429, "rate_limit_error")
    update(api, budget_id=budget_id, rpm_limit=None, max_budget=0)
    assert_error(chat(api, user_id), 400, "budget_exceeded")


def test_info_answers_the_budgets_named(api: httpx.Client) -> None:
    first, second = new_budget(api, max_budget=1), new_budget(api, max_budget=2)
    response = api.post("/budget/info", json={"budgets": [second["budget_id"], first["budget_id"]]})
    assert response.status_code == 200
    assert [row["max_budget"] for row in response.json()] == [2.0, 1.0]
    assert_error(
        api.post("/budget/info", json={"budgets": []}),
        400,
        "invalid_request_error",
        "Specify list of budget id's to query. Passed in=[]",
        "budgets",
    )
    missing = api.post("/budget/info", json={"budgets": [first["budget_id"], "no-such-tier"]})
    assert_error(missing, 404, "not_found", "Budget id(s)=no-such-tier do not exist in db", "budgets")


def test_list_answers_every_budget(api: httpx.Client) -> None:
    created = new_budget(api, tpm_limit=5)
    response = api.get("/budget/list")
    assert response.status_code == 200
    rows = {row["budget_id"]: row for row in response.json()}
    assert rows[created["budget_id"]] == created and all(set(row) == BUDGET_KEYS for row in rows.values())


def test_settings_list_the_configurable_fields(api: httpx.Client) -> None:
    budget_id = new_budget(api, tpm_limit=1000, budget_duration="7d")["budget_id"]
    response = api.get("/budget/settings", params={"budget_id": budget_id})
    assert response.status_code == 200
    fields = {row["field_name"]: row for row in response.json()}
    assert list(fields) == [
        "max_budget",
        "soft_budget",
        "max_parallel_requests",
        "tpm_limit",
        "rpm_limit",
        "tpd_limit",
        "budget_duration",
        "model_max_budget",
    ]
    assert fields["tpm_limit"] == {
        "field_name": "tpm_limit",
        "field_type": "Integer",
        "field_description": "Max tokens per minute, allowed for this budget id.",
        "field_value": 1000,
        "stored_in_db": True,
        "field_default_value": None,
        "premium_field": False,
        "nested_fields": None,
        "field_options": None,
        "field_tab": None,
        "source": "unset",
        "editable": True,
    }
    assert fields["budget_duration"]["field_value"] == "7d" and fields["max_budget"]["field_value"] is None
    unknown = api.get("/budget/settings", params={"budget_id": "no-such-tier"}).json()
    assert [row["field_value"] for row in unknown] == [None] * 8
    assert_error(api.get("/budget/settings"), 422, "invalid_request_error", param="budget_id")


def test_delete_unlinks_its_customers(api: httpx.Client) -> None:
    created = new_budget(api, max_budget=0)
    user_id = new_id()
    api.post("/customer/new", json={"user_id": user_id, "budget_id": created["budget_id"]})
    assert_error(chat(api, user_id), 400, "budget_exceeded")

    response = api.post("/budget/delete", json={"id": created["budget_id"]})
    assert response.status_code == 200 and response.json() == created
    customer = api.get("/customer/info", params={"end_user_id": user_id}).json()
    assert customer["budget_id"] is None and customer["budget_is_default"] is True  # back on the default budget
    assert customer["litellm_budget_table"]["budget_id"] == DEFAULT_TIER
    assert chat(api, user_id).status_code == 200
    missing = api.post("/budget/delete", json={"id": created["budget_id"]})
    assert_error(missing, 404, "not_found", f"Budget with id '{created['budget_id']}' does not exist.", "id")
