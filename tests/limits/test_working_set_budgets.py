"""Budgets stay exact when the customers outnumber the working set: 1,000 active customers through a proxy that holds
10 in memory, evicted between their requests and read back from the store with their spend."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx
import pytest

from tests.limits.budget_setup import async_client, chat_body, cost_of, priced_model
from tests.support.proxy import base_config, running_proxy

pytestmark = pytest.mark.slow

CUSTOMERS = 1_000
CACHE = 10


def _gauge(metrics: str, name: str) -> float:
    match = re.search(rf"^{name} (\S+)$", metrics, re.MULTILINE)
    assert match, name
    return float(match.group(1))


async def _wait_for_evictions(client: httpx.AsyncClient) -> float:
    """Wait until the working set is back at its bound; return the evictions so far."""
    for _ in range(100):
        metrics = (await client.get("/metrics")).text
        if _gauge(metrics, "haimaker_cached_customers") <= CACHE:
            return _gauge(metrics, "haimaker_evicted_customers")
        await asyncio.sleep(0.1)
    raise AssertionError("the working set did not shrink back to its bound")


async def test_budgets_hold_exactly_for_1000_customers_through_a_working_set_of_10(
    tmp_path: Path, database_url: str
) -> None:
    config = base_config(model_list=[priced_model(latency_ms=0)], general_settings={"database_url": database_url})
    with running_proxy(tmp_path, config) as proxy:
        async with async_client(proxy.url, proxy.master_key) as client:
            probe = await client.post("/v1/chat/completions", json=chat_body("probe"))
            cost = cost_of(probe)
    budget = round(cost * 3.5, 9)
    config["general_settings"]["customer_cache_max"] = CACHE
    config["litellm_settings"] = {
        "max_end_user_budget_id": "three-and-a-half",
        "default_end_user_budget": {"max_budget": budget},
    }
    users = [f"user-{i:04}" for i in range(CUSTOMERS)]
    charged = dict.fromkeys(users, 0.0)
    with running_proxy(tmp_path, config) as proxy:
        async with async_client(proxy.url, proxy.master_key) as client:
            gate = asyncio.Semaphore(100)

            async def call(user: str) -> None:
                async with gate:
                    response = await client.post("/v1/chat/completions", json=chat_body(user))
                if response.status_code == 200:
                    charged[user] += cost_of(response)
                else:
                    assert response.status_code == 400, response.text
                    assert response.json()["error"]["type"] == "budget_exceeded"

            async def wave(per_customer: int) -> None:
                await asyncio.gather(*(call(user) for user in users for _ in range(per_customer)))

            await wave(2)  # new customers, on the default budget
            first = await _wait_for_evictions(client)
            assert first >= CUSTOMERS - CACHE
            await wave(2)  # every customer read back from the store: 2 of its 3.5 calls spent
            second = await _wait_for_evictions(client)
            assert second - first >= CUSTOMERS - CACHE
            await wave(1)  # and again: refused at the limit, or the last partial call

            for user in users:
                info = await client.get("/customer/info", params={"end_user_id": user})
                assert info.status_code == 200, info.text
                spend = float(info.json()["spend"])
                assert spend == pytest.approx(charged[user], abs=1e-12), user
                assert budget - cost - 1e-12 <= spend <= budget + cost + 1e-12, user
