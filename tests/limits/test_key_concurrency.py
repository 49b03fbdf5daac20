"""Concurrency on a virtual key, for real: simultaneous requests never overspend a key's budget (the same bounds as a
customer's, tests/limits/test_budget_concurrency.py), and a key's limits and its customer's are admitted together,
all or nothing: a request one refuses takes nothing from the other. With counters in memory and in Redis.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.limits.budget_setup import async_client, chat_body, cost_of, priced_model
from tests.support.proxy import RunningProxy, base_config, running_proxy

pytestmark = pytest.mark.slow

STORES = ("memory", pytest.param("redis", marks=pytest.mark.redis))


@pytest.fixture(params=STORES)
def counters(request: pytest.FixtureRequest) -> dict[str, str]:
    """The general_settings that put the counters in memory (none) or in Redis (under a prefix of the test's own)."""
    if request.param == "memory":
        return {}
    prefix: str = request.getfixturevalue("redis_prefix")
    return {"redis_url": request.getfixturevalue("redis_url"), "redis_key_prefix": prefix}


@asynccontextmanager
async def proxy_and_admin(
    tmp_path: Path, database_url: str, counters: dict[str, str], **general: Any
) -> AsyncIterator[tuple[RunningProxy, httpx.AsyncClient]]:
    config = base_config(
        model_list=[priced_model()], general_settings={"database_url": database_url, **counters, **general}
    )
    with running_proxy(tmp_path, config) as proxy:
        async with async_client(proxy.url, proxy.master_key) as admin:
            yield proxy, admin


async def generate(admin: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    response = await admin.post("/key/generate", json=fields)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def key_spend(admin: httpx.AsyncClient, token: str) -> float:
    response = await admin.get("/key/info", params={"key": token})
    assert response.status_code == 200, response.text
    return float(response.json()["info"]["spend"])


async def customer_spend(admin: httpx.AsyncClient, user: str) -> float:
    response = await admin.get("/customer/info", params={"end_user_id": user})
    assert response.status_code == 200, response.text
    return float(response.json()["spend"])


async def burst(proxy: RunningProxy, key: str, count: int, user: str | None = None) -> list[httpx.Response]:
    """`count` simultaneous chat requests with `key` (as `user` when given)."""
    async with async_client(proxy.url, key) as client:
        return await asyncio.gather(*(client.post("/v1/chat/completions", json=chat_body(user)) for _ in range(count)))


async def one(proxy: RunningProxy, key: str, user: str | None = None) -> httpx.Response:
    return (await burst(proxy, key, 1, user))[0]


@pytest.mark.parametrize("fail_closed", [False, True], ids=["default-mode", "fail-closed"])
async def test_200_simultaneous_requests_never_overspend_a_key_budget_of_about_10(
    tmp_path: Path, database_url: str, counters: dict[str, str], fail_closed: bool
) -> None:
    async with proxy_and_admin(tmp_path, database_url, counters, fail_closed_budget_enforcement=fail_closed) as (
        proxy,
        admin,
    ):
        probe = await admin.post("/v1/chat/completions", json=chat_body("probe"))
        assert probe.status_code == 200, probe.text
        cost = cost_of(probe)
        budget = round(cost * 10.5, 9)
        created = await generate(admin, max_budget=budget)

        responses = await burst(proxy, created["key"], 200)

        admitted = [r for r in responses if r.status_code == 200]
        refused = [r for r in responses if r.status_code != 200]
        assert all(r.status_code == 400 and r.json()["error"]["type"] == "budget_exceeded" for r in refused), {
            r.status_code for r in refused
        }
        charged = sum(cost_of(r) for r in admitted)
        spend = await key_spend(admin, created["token"])
        assert spend == pytest.approx(charged, abs=1e-12)
        if fail_closed:
            assert spend <= budget + 1e-12
        else:
            assert spend <= budget + cost + 1e-12
        assert spend >= budget - (2 * cost if fail_closed else cost) - 1e-12
        # Sequential requests after the burst fill the budget to within one request and are then refused, still
        # within the same bounds.
        for _ in range(3):
            late = await one(proxy, created["key"])
            if late.status_code != 200:
                break
            admitted.append(late)
        assert late.status_code == 400 and late.json()["error"]["type"] == "budget_exceeded", late.text
        spend = await key_spend(admin, created["token"])
        assert spend == pytest.approx(sum(cost_of(r) for r in admitted), abs=1e-12)
        assert spend <= budget + (0 if fail_closed else cost) + 1e-12
        # Written to the store exactly as charged (the spend logs carry the key's hash).
        proxy.call(proxy.state.recorder.flush())
        logs = (await admin.get("/spend/logs", params={"api_key": created["token"]})).json()
        assert len(logs) == len(admitted)


async def test_a_burst_admits_the_tighter_of_key_and_customer_rpm_and_takes_nothing_for_the_refused(
    tmp_path: Path, database_url: str, counters: dict[str, str]
) -> None:
    async with proxy_and_admin(tmp_path, database_url, counters) as (proxy, admin):
        assert (await admin.post("/budget/new", json={"budget_id": "rpm20", "rpm_limit": 20})).status_code == 200
        assert (await admin.post("/customer/new", json={"user_id": "tenant", "budget_id": "rpm20"})).status_code == 200
        created = await generate(admin, rpm_limit=30)

        responses = await burst(proxy, created["key"], 100, user="tenant")

        assert sum(r.status_code == 200 for r in responses) == 20
        limited = [r for r in responses if r.status_code == 429]
        assert len(limited) == 80
        assert all("end_user" in r.json()["error"]["message"] for r in limited)
        # The 80 refused by the customer took no slot of the key: 10 of its 30 are left.
        rest = await burst(proxy, created["key"], 20)
        assert sum(r.status_code == 200 for r in rest) == 10
        assert all("api_key" in r.json()["error"]["message"] for r in rest if r.status_code == 429)


async def test_a_request_refused_by_the_customers_limit_leaves_the_keys_counters_untouched(
    tmp_path: Path, database_url: str, counters: dict[str, str]
) -> None:
    async with proxy_and_admin(tmp_path, database_url, counters) as (proxy, admin):
        assert (await admin.post("/budget/new", json={"budget_id": "rpm1", "rpm_limit": 1})).status_code == 200
        assert (
            await admin.post("/customer/new", json={"user_id": "one-a-minute", "budget_id": "rpm1"})
        ).status_code == 200
        assert (await admin.post("/customer/new", json={"user_id": "broke", "max_budget": 0})).status_code == 200
        created = await generate(admin, rpm_limit=5, max_budget=1)
        key = created["key"]

        first = await one(proxy, key, "one-a-minute")
        assert first.headers["x-ratelimit-api_key-remaining-requests"] == "4"
        for _ in range(3):
            refused = await one(proxy, key, "one-a-minute")
            assert refused.status_code == 429 and "end_user" in refused.json()["error"]["message"], refused.text
        for _ in range(2):
            broke = await one(proxy, key, "broke")
            assert broke.status_code == 400 and broke.json()["error"]["type"] == "budget_exceeded", broke.text
        # Neither the rpm refusals nor the budget refusals took a request slot or spend from the key.
        second = await one(proxy, key)
        assert second.status_code == 200, second.text
        assert second.headers["x-ratelimit-api_key-remaining-requests"] == "3"
        assert await key_spend(admin, created["token"]) == pytest.approx(cost_of(first) + cost_of(second), abs=1e-12)
        assert await customer_spend(admin, "broke") == 0


async def test_a_request_refused_by_the_keys_limit_leaves_the_customers_counters_untouched(
    tmp_path: Path, database_url: str, counters: dict[str, str]
) -> None:
    async with proxy_and_admin(tmp_path, database_url, counters) as (proxy, admin):
        assert (await admin.post("/budget/new", json={"budget_id": "rpm5", "rpm_limit": 5})).status_code == 200
        assert (await admin.post("/customer/new", json={"user_id": "shared", "budget_id": "rpm5"})).status_code == 200
        narrow = (await generate(admin, rpm_limit=1))["key"]
        broke = (await generate(admin, max_budget=0))["key"]
        wide = (await generate(admin))["key"]

        first = await one(proxy, narrow, "shared")
        assert first.headers["x-ratelimit-end_user-remaining-requests"] == "4"
        for _ in range(3):
            refused = await one(proxy, narrow, "shared")
            assert refused.status_code == 429 and "api_key" in refused.json()["error"]["message"], refused.text
        for _ in range(2):
            over = await one(proxy, broke, "shared")
            assert over.status_code == 400 and over.json()["error"]["type"] == "budget_exceeded", over.text
        # The customer still has 4 of its 5 requests, and was charged only the one call that went through.
        rest = await burst(proxy, wide, 6, "shared")
        assert sum(r.status_code == 200 for r in rest) == 4
        charged = cost_of(first) + sum(cost_of(r) for r in rest if r.status_code == 200)
        assert await customer_spend(admin, "shared") == pytest.approx(charged, abs=1e-12)
