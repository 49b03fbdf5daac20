"""A reset boundary under load, end to end: thousands of customers of a daily tier cross the reset instant (a
controlled clock) while requests keep coming. Each customer's first request after it resets its period; those resets
ride in the charge groups, so the writes pending stay at the level of a group, and the shutdown drains at once.

The regression: one transaction per reset split every group, 260k-450k writes were pending after 90 s of load, and a
SIGTERM gave up after 30 s with 143,919 charges not written."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from haimaker.clock import FakeClock
from haimaker.storage import create_engine, session_factory
from haimaker.storage.customers_repo import CustomerRepository
from haimaker.storage.spend_repo import SpendRepository
from tests.limits.budget_setup import async_client, chat_body, cost_of, priced_model
from tests.support.proxy import base_config, running_proxy

# SQLite only: the group write's SQL is checked on both engines by tests/storage/test_storage_spend_resets.py; this
# end-to-end run (6,000 requests through an in-process proxy) is about the recorder's grouping, the same on both.
pytestmark = pytest.mark.slow

START = datetime(2026, 1, 15, 22, 0, tzinfo=UTC)
BOUNDARY = datetime(2026, 1, 16, tzinfo=UTC)
CUSTOMERS = 2_000
CONCURRENCY = 48


def _config(database_url: str, default_budget: str | None = None) -> dict[str, object]:
    config = base_config(model_list=[priced_model(latency_ms=0)], general_settings={"database_url": database_url})
    if default_budget:
        config["litellm_settings"] = {"max_end_user_budget_id": default_budget}
    return config


async def _send(client: httpx.AsyncClient, users: list[str], costs: dict[str, float]) -> int:
    """Requests for `users`, `CONCURRENCY` at a time; adds each success's cost to its customer; returns the count."""
    queue = list(reversed(users))
    done = 0

    async def worker() -> None:
        nonlocal done
        while queue:
            user = queue.pop()
            response = await client.post("/v1/chat/completions", json=chat_body(user))
            assert response.status_code == 200, response.text
            costs[user] = costs.get(user, 0.0) + cost_of(response)
            done += 1

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return done


async def test_a_reset_boundary_under_load_leaves_no_backlog(tmp_path: Path) -> None:
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'boundary.db'}"
    clock = FakeClock(START)
    with running_proxy(tmp_path, _config(database_url), clock=clock) as proxy:
        async with async_client(proxy.url, proxy.master_key) as client:
            tier = {"budget_id": "daily", "max_budget": 1_000.0, "budget_duration": "1d"}
            assert (await client.post("/budget/new", json=tier)).status_code == 200
    users = [f"user-{index:05d}" for index in range(CUSTOMERS)]
    before: dict[str, float] = {}
    after: dict[str, float] = {}
    with running_proxy(tmp_path, _config(database_url, default_budget="daily"), clock=clock) as proxy:
        recorder = proxy.state.recorder
        async with async_client(proxy.url, proxy.master_key) as client:
            await _send(client, users, before)  # every customer exists, with spend in the old period
            proxy.call(recorder.flush())

            clock.set(BOUNDARY + timedelta(seconds=1))
            samples: list[int] = []
            sampling = threading.Event()

            def sample() -> None:
                while not sampling.wait(0.02):
                    samples.append(recorder.pending)

            sampler = threading.Thread(target=sample)
            sampler.start()
            started = time.perf_counter()
            # Every customer's first request after the boundary, twice over: 2 x CUSTOMERS requests, CUSTOMERS resets.
            sent = await _send(client, users + users, after)
            load_s = time.perf_counter() - started
            sampling.set()
            sampler.join()
            pending_at_end = recorder.pending
        stopping = time.perf_counter()
    drain_s = time.perf_counter() - stopping

    assert sent == 2 * CUSTOMERS
    # The writer keeps up: what waits is at most a few groups' worth, never a backlog of resets.
    assert max(samples) <= 1_000, f"{max(samples)} writes pending (load {load_s:.1f}s)"
    assert pending_at_end <= 1_000
    assert drain_s < 10.0

    engine = create_engine(database_url)
    try:
        sessions = session_factory(engine)
        stored = await CustomerRepository(sessions).spend_of_many(users)
        logs = await SpendRepository(sessions).list_logs(limit=10 * CUSTOMERS)
    finally:
        await engine.dispose()
    assert len(logs) == 3 * CUSTOMERS  # every charge written, before and after the boundary
    next_reset = BOUNDARY + timedelta(days=1)
    for user in users:
        spend, period = stored[user]
        assert period == next_reset
        # Only the charges after the boundary (in nano-dollars: the response header rounds to 1e-9 USD or finer).
        assert spend == pytest.approx(after[user] * 1e9, abs=2)
