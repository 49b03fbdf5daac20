"""Concurrency, for real: simultaneous requests against one budget never overspend it.

Default mode: overshoot at most one request's cost. Fail-closed: never above the budget. The same for
brand-new customers riding the default budget (LiteLLM #40095), and rpm is exact under a burst.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.limits.budget_setup import async_client, chat_body, cost_of, fire, priced_model
from tests.support.proxy import base_config, running_proxy

pytestmark = pytest.mark.slow


def _config(database_url: str, **general: object) -> dict[str, object]:
    return base_config(
        model_list=[priced_model()],
        general_settings={"database_url": database_url, **general},
    )


async def _probe_cost(client: httpx.AsyncClient) -> float:
    response = await client.post("/v1/chat/completions", json=chat_body("probe-customer"))
    assert response.status_code == 200, response.text
    return cost_of(response)


async def _customer_spend(client: httpx.AsyncClient, user: str) -> float:
    info = await client.get("/customer/info", params={"end_user_id": user})
    assert info.status_code == 200, info.text
    return float(info.json()["spend"])


@pytest.mark.parametrize("fail_closed", [False, True], ids=["default-mode", "fail-closed"])
async def test_200_simultaneous_requests_never_overspend_a_budget_of_about_10(
    tmp_path: Path, database_url: str, fail_closed: bool
) -> None:
    config = _config(database_url, fail_closed_budget_enforcement=fail_closed)
    with running_proxy(tmp_path, config) as proxy:
        async with async_client(proxy.url, proxy.master_key) as client:
            cost = await _probe_cost(client)
            budget = round(cost * 10.5, 9)
            created = await client.post("/budget/new", json={"budget_id": "ten-calls", "max_budget": budget})
            assert created.status_code == 200, created.text
            assert (
                await client.post("/customer/new", json={"user_id": "hot", "budget_id": "ten-calls"})
            ).status_code == 200

            responses = await fire(client, "hot", 200)

            admitted = [r for r in responses if r.status_code == 200]
            refused = [r for r in responses if r.status_code != 200]
            assert all(r.status_code == 400 and r.json()["error"]["type"] == "budget_exceeded" for r in refused)
            charged = sum(cost_of(r) for r in admitted)
            spend = await _customer_spend(client, "hot")
            assert spend == pytest.approx(charged, abs=1e-12)
            if fail_closed:
                assert spend <= budget + 1e-12
            else:
                assert spend <= budget + cost + 1e-12
            # Not absurdly conservative either: the budget is used to within one request (fail-closed: within one
            # request's estimate, which is above its actual cost).
            assert spend >= budget - (2 * cost if fail_closed else cost) - 1e-12
            # The next request is refused without calling the upstream.
            late = await client.post("/v1/chat/completions", json=chat_body("hot"))
            assert late.status_code == 400


@pytest.mark.parametrize("fail_closed", [False, True], ids=["default-mode", "fail-closed"])
async def test_50_simultaneous_first_requests_of_a_new_customer_respect_the_default_budget(
    tmp_path: Path, database_url: str, fail_closed: bool
) -> None:
    config = _config(database_url, fail_closed_budget_enforcement=fail_closed)
    with running_proxy(tmp_path, config) as proxy:
        async with async_client(proxy.url, proxy.master_key) as client:
            cost = await _probe_cost(client)
            budget = round(cost * 10.5, 9)
            created = await client.post("/budget/new", json={"budget_id": "default-tier", "max_budget": budget})
            assert created.status_code == 200, created.text
    config["litellm_settings"] = {"max_end_user_budget_id": "default-tier"}
    with running_proxy(tmp_path, config) as proxy:
        async with async_client(proxy.url, proxy.master_key) as client:
            responses = await fire(client, "brand-new", 50)
            admitted = [r for r in responses if r.status_code == 200]
            assert admitted, [r.text for r in responses[:3]]
            spend = await _customer_spend(client, "brand-new")
            assert spend == pytest.approx(sum(cost_of(r) for r in admitted), abs=1e-12)
            assert spend <= budget + (0 if fail_closed else cost) + 1e-12
            assert spend >= budget - (2 * cost if fail_closed else cost) - 1e-12
            # The default budget is not persisted on the customer (reference §6.2).
            info = (await client.get("/customer/info", params={"end_user_id": "brand-new"})).json()
            assert info["budget_id"] is None and info["budget_is_default"] is True


async def test_rpm_30_admits_exactly_30_of_100_simultaneous_requests(tmp_path: Path, database_url: str) -> None:
    with running_proxy(tmp_path, _config(database_url)) as proxy:
        async with async_client(proxy.url, proxy.master_key) as client:
            assert (await client.post("/budget/new", json={"budget_id": "rpm30", "rpm_limit": 30})).status_code == 200
            assert (
                await client.post("/customer/new", json={"user_id": "bursty", "budget_id": "rpm30"})
            ).status_code == 200

            responses = await fire(client, "bursty", 100)

            assert sum(r.status_code == 200 for r in responses) == 30
            limited = [r for r in responses if r.status_code == 429]
            assert len(limited) == 70
            sample = limited[0]
            assert sample.json()["error"]["type"] == "rate_limit_error"
            assert sample.json()["error"]["code"] == "429"
            assert "Limit type: requests" in sample.json()["error"]["message"]
            assert 1 <= int(sample.headers["retry-after"]) <= 60
            assert sample.headers["rate_limit_type"] == "requests"
            ok = next(r for r in responses if r.status_code == 200)
            assert ok.headers["x-ratelimit-end_user-limit-requests"] == "30"
