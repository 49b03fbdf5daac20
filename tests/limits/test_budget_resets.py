"""Budget periods with a controlled clock: a due reset is applied at request time (never late), the
background job resets idle customers, and customers on the default budget reset with it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from haimaker.clock import FakeClock
from tests.limits.budget_setup import async_client, chat_body, cost_of, priced_model
from tests.support.proxy import base_config, running_proxy

START = datetime(2026, 1, 15, 10, 0, 0, tzinfo=UTC)  # a Thursday

EXPECTED_RESET = {
    "30s": datetime(2026, 1, 15, 10, 0, 30, tzinfo=UTC),
    "1h": datetime(2026, 1, 15, 11, 0, 0, tzinfo=UTC),
    "1d": datetime(2026, 1, 16, 0, 0, 0, tzinfo=UTC),
    "7d": datetime(2026, 1, 19, 0, 0, 0, tzinfo=UTC),
    "30d": datetime(2026, 2, 1, 0, 0, 0, tzinfo=UTC),
    "1mo": datetime(2026, 2, 1, 0, 0, 0, tzinfo=UTC),
}


def _config(database_url: str, default_budget: str | None = None) -> dict[str, object]:
    config = base_config(model_list=[priced_model(latency_ms=0)], general_settings={"database_url": database_url})
    if default_budget:
        config["litellm_settings"] = {"max_end_user_budget_id": default_budget}
    return config


async def _chat(client: httpx.AsyncClient, user: str) -> httpx.Response:
    return await client.post("/v1/chat/completions", json=chat_body(user))


async def _exhaust(client: httpx.AsyncClient, user: str) -> float:
    """Spend until refused; return one request's cost."""
    first = await _chat(client, user)
    assert first.status_code == 200, first.text
    for _ in range(5):
        if (await _chat(client, user)).status_code == 400:
            return cost_of(first)
    raise AssertionError("budget never ran out")


async def _spend(client: httpx.AsyncClient, user: str) -> float:
    return float((await client.get("/customer/info", params={"end_user_id": user})).json()["spend"])


@pytest.mark.parametrize("duration", list(EXPECTED_RESET))
async def test_spend_resets_at_the_period_boundary_at_request_time(
    tmp_path: Path, database_url: str, duration: str
) -> None:
    clock = FakeClock(START)
    with running_proxy(tmp_path, _config(database_url), clock=clock) as proxy:
        async with async_client(proxy.url, proxy.master_key) as client:
            budget = await client.post(
                "/budget/new", json={"budget_id": "tier", "max_budget": 0.0001, "budget_duration": duration}
            )
            assert budget.status_code == 200, budget.text
            reset_at = datetime.fromisoformat(budget.json()["budget_reset_at"].replace("Z", "+00:00"))
            assert reset_at == EXPECTED_RESET[duration]
            assert (await client.post("/customer/new", json={"user_id": "c", "budget_id": "tier"})).status_code == 200
            cost = await _exhaust(client, "c")

            clock.set(EXPECTED_RESET[duration] - timedelta(seconds=1))
            assert (await _chat(client, "c")).status_code == 400  # not yet

            clock.set(EXPECTED_RESET[duration] + timedelta(seconds=1))
            again = await _chat(client, "c")
            assert again.status_code == 200, again.text
            assert await _spend(client, "c") == pytest.approx(cost, abs=1e-12)


@pytest.mark.parametrize("duration", ["1h", "1mo"])
async def test_default_budget_customers_reset_at_request_time_and_by_the_job(
    tmp_path: Path, database_url: str, duration: str
) -> None:
    clock = FakeClock(START)
    with running_proxy(tmp_path, _config(database_url), clock=clock) as proxy:
        async with async_client(proxy.url, proxy.master_key) as client:
            created = await client.post(
                "/budget/new", json={"budget_id": "free", "max_budget": 0.0001, "budget_duration": duration}
            )
            assert created.status_code == 200, created.text
    with running_proxy(tmp_path, _config(database_url, default_budget="free"), clock=clock) as proxy:
        async with async_client(proxy.url, proxy.master_key) as client:
            await _exhaust(client, "active")
            await _exhaust(client, "idle")
            clock.set(EXPECTED_RESET[duration] + timedelta(seconds=1))

            # The background job resets the idle customer without any request from it.
            job = proxy.state.reset_job
            assert job is not None
            reset = proxy.call(job.tick())
            assert reset >= 2
            assert await _spend(client, "idle") == 0
            assert (await _chat(client, "active")).status_code == 200
            # The tier's next reset moved on.
            info = await client.post("/budget/info", json={"budgets": ["free"]})
            next_reset = datetime.fromisoformat(info.json()[0]["budget_reset_at"].replace("Z", "+00:00"))
            assert next_reset > EXPECTED_RESET[duration]


async def test_reset_survives_a_restart_across_the_boundary(tmp_path: Path, database_url: str) -> None:
    """Spend from a period that ended while the proxy was down is reset, not carried over."""
    clock = FakeClock(START)
    with running_proxy(tmp_path, _config(database_url), clock=clock) as proxy:
        async with async_client(proxy.url, proxy.master_key) as client:
            await client.post("/budget/new", json={"budget_id": "d", "max_budget": 0.0001, "budget_duration": "1d"})
            await client.post("/customer/new", json={"user_id": "sleeper", "budget_id": "d"})
            await _exhaust(client, "sleeper")
    clock.set(EXPECTED_RESET["1d"] + timedelta(hours=3))
    with running_proxy(tmp_path, _config(database_url), clock=clock) as proxy:
        async with async_client(proxy.url, proxy.master_key) as client:
            assert (await _chat(client, "sleeper")).status_code == 200


async def test_a_key_budget_resets_at_request_time_and_an_idle_key_by_the_job(
    tmp_path: Path, database_url: str
) -> None:
    clock = FakeClock(START)
    with running_proxy(tmp_path, _config(database_url), clock=clock) as proxy:
        async with async_client(proxy.url, proxy.master_key) as admin:
            keys = {}
            for alias in ("active", "idle"):
                made = await admin.post(
                    "/key/generate", json={"key_alias": alias, "max_budget": 0.0001, "budget_duration": "1d"}
                )
                assert made.status_code == 200, made.text
                keys[alias] = made.json()["key"]
            for alias, key in keys.items():
                async with async_client(proxy.url, key) as client:
                    await _exhaust(client, f"customer-of-{alias}")
                info = (await admin.get("/key/info", params={"key": key})).json()["info"]
                assert info["spend"] > 0
            clock.set(EXPECTED_RESET["1d"] + timedelta(seconds=1))

            # An active key: its next request starts a new period.
            async with async_client(proxy.url, keys["active"]) as client:
                again = await _chat(client, "customer-of-active")
                assert again.status_code == 200, again.text
            # An idle key: the job resets it without a request, in the counters, the store and /key/info.
            job = proxy.state.reset_job
            assert job is not None
            assert proxy.call(job.tick()) >= 1
            info = (await admin.get("/key/info", params={"key": keys["idle"]})).json()["info"]
            assert info["spend"] == 0
            assert datetime.fromisoformat(info["budget_reset_at"].replace("Z", "+00:00")) > EXPECTED_RESET["1d"]
            async with async_client(proxy.url, keys["idle"]) as client:
                assert (await _chat(client, "customer-of-idle")).status_code == 200
