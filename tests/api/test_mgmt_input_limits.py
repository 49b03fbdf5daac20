"""Hostile admin input gets a 400/422 in our envelope on both stores, never a 500 (issue 10, findings 8 and ids).

Text that one store cannot hold (NUL: PostgreSQL refuses it in text and jsonb; a lone surrogate, which JSON can
carry as `"\\ud800"`, encodes on no driver), ids over the length limit, and values that overflow Python's date and
time types or the stores' 64-bit integers all used to reach the database or the arithmetic and end as 500s.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.api.mgmt_support import assert_error, new_id

NUL = "bad\x00id"
LONG = "x" * 257
HUGE = "y" * 1_000_000

# (method, path, request kwargs) with one hostile value each; every one must be refused by the edge.
_CASES: list[tuple[str, str, dict[str, Any]]] = []


def _case(method: str, path: str, **kwargs: Any) -> None:
    _CASES.append((method, path, kwargs))


for _bad in (NUL, LONG, HUGE):
    _case("POST", "/customer/new", json={"user_id": _bad})
    _case("POST", "/customer/update", json={"user_id": _bad})
    _case("POST", "/customer/block", json={"user_ids": [_bad]})
    _case("POST", "/customer/unblock", json={"user_ids": [_bad]})
    _case("POST", "/customer/delete", json={"user_ids": [_bad]})
    _case("POST", "/end_user/block", json={"user_ids": [_bad]})
    _case("POST", "/budget/new", json={"budget_id": _bad})
    _case("POST", "/budget/update", json={"budget_id": _bad, "max_budget": 1})
    _case("POST", "/budget/info", json={"budgets": [_bad]})
    _case("POST", "/budget/delete", json={"id": _bad})
    _case("POST", "/global/spend/end_users", json={"api_key": _bad})
# Query strings: a URL cannot carry a megabyte, so the long case is just over the limit.
for _bad in (NUL, LONG):
    _case("GET", "/customer/info", params={"end_user_id": _bad})
    _case("GET", "/budget/settings", params={"budget_id": _bad})
    _case("GET", "/spend/logs", params={"end_user": _bad})
    _case("GET", "/spend/logs", params={"request_id": _bad})
    _case("GET", "/spend/logs", params={"api_key": _bad})
    _case("GET", "/customer/daily/activity", params={"end_user_ids": _bad})
    _case("GET", "/customer/daily/activity", params={"end_user_ids": f"ok-id,{_bad}"})
    _case("GET", "/customer/daily/activity", params={"model": _bad})
for _field in ("alias", "default_model", "budget_id"):
    _case("POST", "/customer/new", json={"user_id": "ok-id", _field: NUL})
_case("POST", "/customer/new", json={"user_id": "ok-id", "models": [NUL]})
_case("POST", "/customer/update", json={"user_id": "ok-id", "alias": NUL})
_case("POST", "/customer/new", json={"user_id": "ok-id", "alias": HUGE})
_case("POST", "/budget/new", json={"budget_duration": "1d\x00"})
_case("POST", "/budget/new", json={"model_max_budget": {NUL: {"max_budget": 1}}})
_case("POST", "/budget/new", json={"model_max_budget": {"gpt-4o": {"budget_duration": "1d\x00"}}})
_case("GET", "/customer/list", params={"search": NUL})
_case("GET", "/spend/logs", params={"user_id": NUL})
# Finding 8: values that overflow dates, durations and 64-bit offsets.
for _duration in ("999999999d", "99999999999999999999s", "999999999w"):
    _case("POST", "/budget/new", json={"budget_duration": _duration})
    _case("POST", "/customer/new", json={"user_id": "ok-id", "budget_duration": _duration})
    _case("POST", "/customer/update", json={"user_id": "ok-id", "budget_duration": _duration})
for _instant in ("0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00Z", "9999-12-31T23:00Z"):
    _case("POST", "/budget/new", json={"budget_duration": "1d", "budget_reset_at": _instant})
    _case("POST", "/customer/new", json={"user_id": "ok-id", "budget_reset_at": _instant})
_case("POST", "/global/spend/end_users", json={"endTime": "0001-01-01T00:00:00+01:00"})
_case("POST", "/global/spend/end_users", json={"startTime": "9999-12-31T23:59:59-01:00"})
for _page in (2**62, 2**63, 10**30):
    _case("GET", "/customer/list", params={"page": _page})
    _case("GET", "/customer/daily/activity", params={"page": _page})
_case("GET", "/customer/list", params={"search": "s" * 50_000})


def _case_id(case: tuple[str, str, dict[str, Any]]) -> str:
    method, path, kwargs = case
    shown = repr(kwargs)
    return f"{method} {path} {shown[:60]}"


@pytest.mark.parametrize("case", _CASES, ids=[_case_id(case) for case in _CASES])
def test_hostile_admin_input_is_a_client_error(api: httpx.Client, case: tuple[str, str, dict[str, Any]]) -> None:
    method, path, kwargs = case
    response = api.request(method, path, **kwargs)
    assert response.status_code in (400, 422), response.text[:500]
    assert_error(response, response.status_code, "invalid_request_error")


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/customer/new", '{"user_id": "\\ud800"}'),
        ("/customer/new", '{"user_id": "ok-id", "alias": "a\\udfffb"}'),
        ("/customer/block", '{"user_ids": ["x\\ud800"]}'),
        ("/budget/new", '{"budget_id": "\\udc00"}'),
        ("/budget/info", '{"budgets": ["\\ud800"]}'),
        ("/budget/delete", '{"id": "\\ud800"}'),
        ("/global/spend/end_users", '{"api_key": "\\ud800"}'),
    ],
)
def test_a_lone_surrogate_in_a_body_is_a_client_error(api: httpx.Client, path: str, body: str) -> None:
    response = api.post(path, content=body.encode(), headers={"content-type": "application/json"})
    assert response.status_code in (400, 422), response.text[:500]
    assert_error(response, response.status_code, "invalid_request_error")


def test_an_id_at_the_limit_is_accepted_and_one_over_is_refused(api: httpx.Client) -> None:
    at_limit = new_id() + "z" * (256 - len(new_id()))
    assert len(at_limit) == 256
    assert api.post("/customer/block", json={"user_ids": [at_limit]}).status_code == 200
    error = assert_error(api.post("/customer/block", json={"user_ids": [at_limit + "z"]}), 422, "invalid_request_error")
    assert error["param"] == "user_ids.0"


@pytest.mark.parametrize("params", [{"end_date": "9999-12-31"}, {"start_date": "9999-12-01", "end_date": "9999-12-31"}])
def test_spend_reports_up_to_the_last_representable_day_answer(api: httpx.Client, params: dict[str, str]) -> None:
    for summarize in ("true", "false"):
        response = api.get("/spend/logs", params={**params, "summarize": summarize})
        assert response.status_code == 200, response.text[:500]
    assert api.get("/customer/daily/activity", params=params).status_code == 200


def test_a_budget_reset_instant_within_range_keeps_its_offset_normalised(api: httpx.Client) -> None:
    response = api.post("/budget/new", json={"budget_duration": "1d", "budget_reset_at": "2030-01-01T00:30:00+01:00"})
    assert response.status_code == 200, response.text
    assert response.json()["budget_reset_at"].startswith("2029-12-31T23:30:00")


@pytest.mark.parametrize(
    "body",
    [
        '{"model_max_budget": {"gpt-4o": {"tpm_limit": 1e999}}}',
        '{"model_max_budget": {"gpt-4o": {"rpm_limit": NaN}}}',
        '{"model_max_budget": {"gpt-4o": {"tpm_limit": -5}}}',
        '{"model_max_budget": {"gpt-4o": {"rpm_limit": "lots"}}}',
        '{"model_max_budget": {"gpt-4o": {"max_budget": Infinity}}}',
    ],
)
def test_a_model_budget_that_is_not_a_real_limit_is_a_client_error(api: httpx.Client, body: str) -> None:
    response = api.post("/budget/new", content=body.encode(), headers={"content-type": "application/json"})
    assert response.status_code in (400, 422), response.text[:500]
    assert_error(response, response.status_code, "invalid_request_error")


def test_budget_new_with_an_empty_budget_id_generates_one(api: httpx.Client) -> None:
    response = api.post("/budget/new", json={"budget_id": "", "max_budget": 1})
    assert response.status_code == 200, response.text
    assert len(response.json()["budget_id"]) == 36


def test_too_many_ids_in_one_filter_or_request_are_a_client_error(api: httpx.Client) -> None:
    many = ",".join(f"{n:x}" for n in range(1_001))  # every id is a bound parameter: past ~32k a store refuses
    response = api.get("/customer/daily/activity", params={"end_user_ids": many})
    assert_error(response, 400, "invalid_request_error", param="end_user_ids")
    response = api.post("/customer/block", json={"user_ids": [f"c{n}" for n in range(10_001)]})
    assert_error(response, 422, "invalid_request_error", param="user_ids")
