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

# One store: the working set is the same code on both (the store reads are covered on both by
# tests/state/test_working_set.py); 4,000 requests through an in-process proxy take a while on a shared machine.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

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


async def test_budgets_hold_exactly_for_1000_customers_through_a_working_set_of_10(tmp_path: Path) -> None:
    config = base_config(model_list=[priced_model(latency_ms=0)])
    with running_proxy(tmp_path, config) as proxy:
        async with async_client(proxy.url, proxy.master_key) as client:
            probe = await client.post("/v1/chat/completions", json=chat_body("probe"))
            cost = cost_of(probe)
    budget = round(cost * 2.5, 9)
    config["general_settings"]["customer_cache_max"] = CACHE
    config["litellm_settings"] = {
        "max_end_user_budget_id": "two-and-a-half",
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

            await wave(1)  # new customers, on the default budget
            first = await _wait_for_evictions(client)
            assert first >= CUSTOMERS - CACHE
            await wave(2)  # every customer read back from the store (1 of its 2.5 calls spent), 2 calls at once
            second = await _wait_for_evictions(client)
            assert second - first >= CUSTOMERS - CACHE
            await wave(1)  # and again: refused at the limit, or the last partial call

            # /customer/info waits for every charge to be written; the list then reads the stored spends by pages.
            assert (await client.get("/customer/info", params={"end_user_id": users[0]})).status_code == 200
            stored: dict[str, float] = {}
            page = await client.get("/customer/list", params={"page_size": 100, "search": "user-"})
            while True:
                assert page.status_code == 200, page.text
                stored.update({row["user_id"]: float(row["spend"]) for row in page.json()})
                if "next" not in page.links:
                    break
                page = await client.get(page.links["next"]["url"])
            assert sorted(stored) == users
            for user in users:
                spend = stored[user]
                assert spend == pytest.approx(charged[user], abs=1e-12), user
                assert budget - cost - 1e-12 <= spend <= budget + cost + 1e-12, user
