"""The budget reset job with two instances on one store and one Redis: the tier is reset once, by whichever instance
takes the lock, and the other instance learns the tier's next boundary within a second."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from haimaker.clock import FakeClock
from tests.support.proxy import RunningProxy, base_config, running_proxy

pytestmark = [pytest.mark.slow, pytest.mark.redis]

START = datetime(2026, 1, 15, 10, 0, tzinfo=UTC)
BOUNDARY = datetime(2026, 1, 16, 0, 0, tzinfo=UTC)


def _config(database: Path, redis_url: str, prefix: str) -> dict[str, Any]:
    model = {
        "model_name": "priced",
        "litellm_params": {"model": "mock/gpt-3.5-turbo", "input_cost_per_token": 1e-6, "output_cost_per_token": 1e-5},
    }
    return base_config(
        model_list=[model],
        general_settings={"database_url": f"sqlite:///{database}", "redis_url": redis_url, "redis_key_prefix": prefix},
    )


async def _chat(proxy: RunningProxy, user: str) -> None:
    async with httpx.AsyncClient(base_url=proxy.url, headers=proxy.headers(), timeout=30) as client:
        body = {"model": "priced", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5, "user": user}
        response = await client.post("/v1/chat/completions", json=body)
        assert response.status_code == 200, response.text


async def test_two_instances_reset_a_tier_once(tmp_path: Path, redis_url: str, redis_prefix: str) -> None:
    clock = FakeClock(START)
    config = _config(tmp_path / "shared.db", redis_url, redis_prefix)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with (
        running_proxy(tmp_path / "a", config, clock=clock) as first,
        running_proxy(tmp_path / "b", config, clock=clock) as second,
    ):
        async with httpx.AsyncClient(base_url=first.url, headers=first.headers(), timeout=30) as admin:
            tier = {"budget_id": "daily", "max_budget": 1.0, "budget_duration": "1d"}
            assert (await admin.post("/budget/new", json=tier)).status_code == 200
            for user in ("idle-1", "idle-2"):
                created = await admin.post("/customer/new", json={"user_id": user, "budget_id": "daily"})
                assert created.status_code == 200
        await asyncio.sleep(1.0)  # both catalogs know the tier and its customers
        await _chat(first, "idle-1")
        await _chat(second, "idle-2")
        for proxy in (first, second):
            proxy.call(proxy.state.recorder.flush())

        clock.set(BOUNDARY + timedelta(minutes=1))

        def run_once(proxy: RunningProxy) -> int | None:
            job = proxy.state.reset_job
            assert job is not None
            result: int | None = proxy.call(job.run_once())
            return result

        rounds = await asyncio.gather(*(asyncio.to_thread(run_once, proxy) for proxy in (first, second)))

        # One instance held the lock and reset both customers; the other skipped the round or found nothing due.
        assert sorted(rounds, key=lambda n: -1 if n is None else n) in ([None, 2], [0, 2])
        for proxy in (first, second):
            proxy.call(proxy.state.recorder.flush())
        stored = first.call(first.state.sink.customers.list_all())
        assert {c.user_id: c.spend for c in stored} == {"idle-1": 0, "idle-2": 0}
        next_reset = BOUNDARY + timedelta(days=1)
        assert first.call(first.state.sink.budgets.get("daily")).budget_reset_at == next_reset
        started = time.monotonic()
        while second.state.engine.catalog.budgets["daily"].budget_reset_at != next_reset:
            assert time.monotonic() - started < 1.0, "the other instance did not hear of the reset"
            await asyncio.sleep(0.01)
        cluster = second.state.cluster
        assert cluster is not None
        assert second.call(cluster.store.redis.charge("idle-1", 0)) == 0
