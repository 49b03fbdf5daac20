"""Redis outages: fail closed answers 503, fail open enforces limits per instance, both recover by themselves,
and nothing is lost or counted twice (a partition replays what Redis missed; lost data reseeds from the store)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from redis.asyncio import Redis

from haimaker.clock import FakeClock
from haimaker.errors import RateLimitError, ServiceUnavailableError
from haimaker.periods import next_reset_function
from haimaker.state.counters import Reservation
from haimaker.state.redis import RedisCounters, SharedReservation, connect
from haimaker.state.resilient import Health, ResilientCounterStore
from tests.state.state_setup import CuttableLink, DurableSpend, RecordedResets, decode_hash, demand, limits
from tests.support.redis_servers import PrivateRedis, private_redis

pytestmark = pytest.mark.redis

PREFIX = "haimaker-t-resilient"


class Flushes:
    def __init__(self) -> None:
        self.count = 0

    async def __call__(self) -> None:
        self.count += 1


@asynccontextmanager
async def resilient_store(
    url: str, durable: DurableSpend, *, fail_closed: bool, flush: Flushes | None = None
) -> AsyncIterator[ResilientCounterStore]:
    client = connect(url)
    next_reset = next_reset_function("UTC", "00:00")
    counters = RedisCounters(client, PREFIX, FakeClock(), next_reset, RecordedResets(), durable, budget_status_code=400)
    store = ResilientCounterStore(
        counters,
        FakeClock(),
        next_reset,
        RecordedResets(),
        budget_status_code=400,
        fail_closed=fail_closed,
        flush=flush or Flushes(),
        probe_interval_s=0.05,
    )
    await store.start()
    try:
        yield store
    finally:
        await store.aclose()
        counters.close()
        await client.aclose()


async def _until(predicate: Callable[[], bool], timeout_s: float = 3.0) -> float:
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout_s:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)
    return time.monotonic() - started


async def _spend_in_redis(url: str, customer_id: str) -> dict[str, int]:
    client = Redis.from_url(url)
    try:
        raw = await client.hgetall(f"{PREFIX}:{{{customer_id}}}:c")
    finally:
        await client.aclose()
    return decode_hash(raw)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[PrivateRedis]:
    with private_redis(tmp_path) as server:
        yield server


async def test_fail_closed_answers_503_while_redis_is_down_and_recovers_by_itself(
    redis_server: PrivateRedis, durable: DurableSpend
) -> None:
    durable.rows["alice"] = (1_000, None)
    flushes = Flushes()
    async with resilient_store(redis_server.url, durable, fail_closed=True, flush=flushes) as store:
        held = await store.admit(limits(max_budget=100_000), demand(cost=5_000), fail_closed=True)
        redis_server.stop()

        with pytest.raises(ServiceUnavailableError) as refused:
            await store.admit(limits(max_budget=100_000), demand(), fail_closed=True)
        assert refused.value.status_code == 503
        assert refused.value.message.startswith("Budget enforcement unavailable: ")
        assert refused.value.headers["retry-after"] == "1"
        assert store.health is Health.DOWN
        # Customers without limits are not enforced, so they are still charged (the ledger keeps it).
        store.add_spend("bob", 7)
        # Settling never awaits, even with Redis gone.
        assert store.settle(held, 4_000, 10) == 5_000

        redis_server.start()  # empty: Redis lost its data
        recovered_in = await _until(lambda: store.health is Health.UP)
        assert recovered_in < 1.5  # the reseed fence is half a second ahead
        assert flushes.count == 2  # pending charges written before the grace second, and again after it
        durable.rows["alice"] = (5_000, None)  # ... so the store now has the 4,000 charged during the outage
        again = await store.admit(limits(max_budget=100_000), demand(cost=5_000), fail_closed=True)
        assert isinstance(again, SharedReservation)
        store.settle(again, 1_000, 10)
    assert (await _spend_in_redis(redis_server.url, "alice"))["s"] == 6_000


async def test_fail_open_enforces_limits_per_instance_while_redis_is_down(
    redis_server: PrivateRedis, durable: DurableSpend
) -> None:
    async with resilient_store(redis_server.url, durable, fail_closed=False) as store:
        for _ in range(3):
            await store.admit(limits(rpm_limit=5), demand(), fail_closed=False)
        redis_server.stop()
        local: list[Reservation] = []
        for _ in range(5):
            local.append(await store.admit(limits(rpm_limit=5), demand(), fail_closed=False))
        with pytest.raises(RateLimitError):
            await store.admit(limits(rpm_limit=5), demand(), fail_closed=False)
        assert not any(isinstance(r, SharedReservation) for r in local)
        assert store.served_locally == 6 and store.refused == 0
        redis_server.start()
        await _until(lambda: store.health is Health.UP)
        shared = await store.admit(limits(rpm_limit=5), demand(), fail_closed=False)
        assert isinstance(shared, SharedReservation)
        for reservation in local:
            store.settle(reservation, 10, 1)


async def test_a_partition_replays_what_redis_missed_exactly_once(redis_server: PrivateRedis) -> None:
    durable = DurableSpend()
    link = CuttableLink(redis_server.port)
    await link.open()
    async with resilient_store(link.url, durable, fail_closed=False) as store:
        tier = {"max_budget": 1_000_000, "max_parallel_requests": 10, "rpm_limit": 1000}
        shared = [await store.admit(limits(**tier), demand(cost=10_000), fail_closed=False) for _ in range(4)]
        store.settle(shared[0], 3_000, 5)
        await _until(lambda: store.pending == 0)

        await link.cut()
        store.settle(shared[1], 2_000, 5)  # the call fails: kept in the ledger
        await _until(lambda: store.health is Health.DOWN)
        store.settle(shared[2], 1_000, 5)  # made while down: straight to the ledger
        store.release(shared[3])
        store.release(shared[3])
        during = await store.admit(limits(**tier), demand(cost=10_000), fail_closed=False)
        assert not isinstance(during, SharedReservation)
        store.settle(during, 500, 5)
        store.add_spend("alice", 25)

        await link.restore()
        await _until(lambda: store.health is Health.UP)
        state = await _spend_in_redis(redis_server.url, "alice")
        assert state["s"] == 3_000 + 2_000 + 1_000 + 500 + 25
        assert await store.current_spend("alice") == state["s"]
        assert (state["rsv"], state["inf"]) == (0, 0)
    await link.cut()
