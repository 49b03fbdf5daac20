"""Fixtures for the shared-state tests: a Redis key prefix of the test's own, counters on it, a fake clock."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
from redis.asyncio import Redis

from haimaker.clock import FakeClock
from haimaker.periods import next_reset_function
from haimaker.state.redis import LEASE_S, RedisCounters, connect
from tests.state.state_setup import DurableSpend, MakeCounters, RecordedResets


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def resets() -> RecordedResets:
    return RecordedResets()


@pytest.fixture
def durable() -> DurableSpend:
    return DurableSpend()


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[Redis]:
    client = connect(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def make_counters(
    redis_client: Redis,
    redis_prefix: str,
    clock: FakeClock,
    resets: RecordedResets,
    durable: DurableSpend,
) -> AsyncIterator[MakeCounters]:
    """A factory: `make_counters(...)` builds `RedisCounters` on the test's prefix and the fake clock."""
    made: list[RedisCounters] = []

    def make(
        *,
        use_server_time: bool = False,
        lease_s: float = LEASE_S,
        client: Redis | None = None,
        is_new: Callable[[str], bool] | None = None,
    ) -> RedisCounters:
        counters = RedisCounters(
            client or redis_client,
            redis_prefix,
            clock,
            next_reset_function("UTC", "00:00"),
            resets,
            durable,
            budget_status_code=400,
            use_server_time=use_server_time,
            lease_s=lease_s,
            is_new=is_new,
        )
        made.append(counters)
        return counters

    yield make
    for counters in made:
        counters.close()
