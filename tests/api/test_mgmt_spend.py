"""Spend reports over real HTTP: `/spend/logs`, `/customer/daily/activity`, `/global/spend/end_users`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.api.mgmt_support import assert_error, chat, new_id

LOG_KEYS = {
    "request_id",
    "call_type",
    "api_key",
    "spend",
    "total_tokens",
    "prompt_tokens",
    "completion_tokens",
    "startTime",
    "endTime",
    "model",
    "model_id",
    "model_group",
    "custom_llm_provider",
    "user",
    "end_user",
    "status",
    "metadata",
}


def charged(api: httpx.Client, user_id: str, times: int = 1) -> list[tuple[str, float]]:
    """Make `times` calls for a customer; return their (call id, cost)."""
    calls = []
    for _ in range(times):
        response = chat(api, user_id)
        assert response.status_code == 200, response.text
        calls.append((response.headers["x-litellm-call-id"], float(response.headers["x-litellm-response-cost"])))
    return calls


def test_spend_logs_filter_by_customer_and_request(api: httpx.Client) -> None:
    first, second = new_id(), new_id()
    calls = charged(api, first, 2)
    charged(api, second)
    rows = api.get("/spend/logs", params={"end_user": first}).json()
    assert [row["request_id"] for row in rows] == [call_id for call_id, _ in reversed(calls)]
    row = rows[-1]
    assert LOG_KEYS <= set(row)
    assert row["end_user"] == first and row["user"] == "default_user_id" and row["status"] == "success"
    assert row["spend"] == pytest.approx(calls[0][1]) and row["model_group"] == "gpt-3.5-turbo"
    assert row["total_tokens"] == row["prompt_tokens"] + row["completion_tokens"] > 0
    assert row["metadata"]["user_api_key_end_user_id"] == first

    by_request = api.get("/spend/logs", params={"request_id": calls[0][0]}).json()
    assert [r["request_id"] for r in by_request] == [calls[0][0]]
    owner = api.get("/spend/logs", params={"end_user": first, "user_id": "default_user_id"}).json()
    assert len(owner) == 2
    assert api.get("/spend/logs", params={"end_user": first, "user_id": "someone-else"}).json() == []
    assert api.get("/spend/logs", params={"end_user": first, "api_key": "sk-unknown"}).json() == []


def test_spend_logs_by_date_as_rows_or_per_day(api: httpx.Client) -> None:
    user_id = new_id()
    ((_, cost),) = charged(api, user_id)
    today = datetime.now(UTC).date()
    params = {"end_user": user_id, "start_date": str(today), "end_date": str(today)}
    rows = api.get("/spend/logs", params={**params, "summarize": "false"}).json()
    assert [row["end_user"] for row in rows] == [user_id]

    start = today - timedelta(days=2)
    days = api.get("/spend/logs", params={**params, "start_date": str(start)}).json()
    assert [day["startTime"] for day in days] == [str(start + timedelta(days=n)) for n in range(3)]
    assert days[0] == {"startTime": str(start), "spend": 0.0, "users": {}, "models": {}}
    assert days[2]["spend"] == pytest.approx(cost)
    assert days[2]["users"] == {"default_user_id": pytest.approx(cost)}
    assert days[2]["models"] == {"gpt-3.5-turbo": pytest.approx(cost)}

    backwards = api.get("/spend/logs", params={"start_date": str(today), "end_date": str(start)})
    assert_error(backwards, 400, "invalid_request_error", param="end_date")
    assert_error(
        api.get("/spend/logs", params={"start_date": "01/02/2026"}), 422, "invalid_request_error", param="start_date"
    )


def test_daily_activity_reports_customers_per_day(api: httpx.Client) -> None:
    first, second = new_id(), new_id()
    api.post("/customer/new", json={"user_id": first, "alias": "First Co"})
    first_costs = [cost for _, cost in charged(api, first, 2)]
    charged(api, second)
    today = str(datetime.now(UTC).date())

    response = api.get("/customer/daily/activity", params={"end_user_ids": f"{first},{second}", "start_date": today})
    assert response.status_code == 200
    body = response.json()
    assert [day["date"] for day in body["results"]] == [today]
    day = body["results"][0]
    assert day["metrics"]["api_requests"] == 3 and day["metrics"]["successful_requests"] == 3
    entities = day["breakdown"]["entities"]
    assert set(entities) == {first, second}
    assert entities[first]["metadata"] == {"alias": "First Co"}
    assert entities[first]["metrics"]["spend"] == pytest.approx(sum(first_costs))
    assert set(day["breakdown"]) == {
        "mcp_servers",
        "models",
        "model_groups",
        "providers",
        "endpoints",
        "api_keys",
        "entities",
    }
    assert list(day["breakdown"]["providers"]) == ["mock"]
    metadata = body["metadata"]
    assert metadata["total_api_requests"] == 3 and metadata["total_spend"] == pytest.approx(day["metrics"]["spend"])
    assert (metadata["page"], metadata["total_pages"], metadata["has_more"]) == (1, 1, False)

    excluded = api.get(
        "/end_user/daily/activity", params={"end_user_ids": f"{first},{second}", "exclude_end_user_ids": second}
    ).json()
    assert set(excluded["results"][0]["breakdown"]["entities"]) == {first}
    beyond = api.get("/customer/daily/activity", params={"end_user_ids": first, "page": 2}).json()
    assert beyond["results"] == [] and beyond["metadata"]["has_more"] is False
    assert_error(
        api.get("/customer/daily/activity", params={"page_size": 0}), 422, "invalid_request_error", param="page_size"
    )


def test_daily_activity_of_all_customers_sums_each_day_without_listing_them(api: httpx.Client) -> None:
    user_id = new_id()
    ((_, cost),) = charged(api, user_id)
    today = str(datetime.now(UTC).date())
    everyone = api.get("/customer/daily/activity", params={"start_date": today, "end_date": today}).json()
    [day] = everyone["results"]
    # Every customer of the day is summed in; listing them would make the answer as big as the customer base.
    assert day["breakdown"]["entities"] == {}
    assert day["metrics"]["api_requests"] >= 1 and day["metrics"]["spend"] >= cost
    assert (
        sum(m["metrics"]["api_requests"] for m in day["breakdown"]["models"].values()) == day["metrics"]["api_requests"]
    )
    assert everyone["metadata"]["total_api_requests"] == day["metrics"]["api_requests"]

    too_big = api.get(
        "/customer/daily/activity",
        params={"end_user_ids": ",".join(new_id() for _ in range(200)), "page_size": 1000},
    )
    assert_error(too_big, 400, "invalid_request_error", param="page_size")


def test_global_spend_end_users_lists_top_spenders(api: httpx.Client) -> None:
    small, big = new_id(), new_id()
    charged(api, small)
    big_costs = [cost for _, cost in charged(api, big, 3)]
    rows = api.post("/global/spend/end_users").json()
    by_user = {row["end_user"]: row for row in rows}
    assert by_user[big] == {"end_user": big, "total_count": 3, "total_spend": pytest.approx(sum(big_costs))}
    assert by_user[small]["total_count"] == 1
    spends = [row["total_spend"] for row in rows]
    assert spends == sorted(spends, reverse=True) and len(rows) <= 100

    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    later = api.post("/global/spend/end_users", json={"startTime": future}).json()
    assert big not in {row["end_user"] for row in later}
    assert big in {row["end_user"] for row in api.post("/global/spend/end_users", json={}).json()}
