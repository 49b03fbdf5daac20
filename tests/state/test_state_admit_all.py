"""One request, several subjects (its virtual key, the key's per-model limits, its customer): `admit_all` checks every
limit of every subject before it takes anything, in process memory and in one Redis script alike. A refusal by any
subject leaves every other subject exactly as it was; an admission reserves in each."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from haimaker.clock import FakeClock
from haimaker.errors import BudgetExceededError, RateLimitError
from haimaker.periods import next_reset_function
from haimaker.state.counters import Limits
from haimaker.state.keys import key_subject
from haimaker.state.memory import MemoryCounterStore
from haimaker.state.redis import RedisCounters
from tests.state.state_setup import DurableSpend, MakeCounters, RecordedResets, decode_hash, demand, limits

KEY = key_subject("0" * 64)


def _key_limits(**fields: object) -> Limits:
    return limits(KEY, kind="api_key", label="app (sk-...abcd)", **fields)


def _memory() -> MemoryCounterStore:
    return MemoryCounterStore(
        FakeClock(), next_reset_function("UTC", "00:00"), RecordedResets(), budget_status_code=400
    )


async def test_memory_a_refusal_by_the_customer_takes_nothing_from_the_key() -> None:
    store = _memory()
    parts = [(_key_limits(rpm_limit=5, max_budget=10_000), demand(cost=1_000)), (limits(rpm_limit=1), demand())]
    await store.admit_all(parts, fail_closed=False)
    with pytest.raises(RateLimitError) as refused:
        await store.admit_all(parts, fail_closed=False)
    assert "end_user: alice" in refused.value.message
    key_counters = store._counters[KEY]
    # Only the first request is on the key: one request in the window, one reservation.
    assert (key_counters.window_requests, key_counters.reserved) == (1, 1_000)


async def test_memory_a_refusal_by_the_key_takes_nothing_from_the_customer() -> None:
    store = _memory()
    parts = [(_key_limits(max_budget=1_500), demand(cost=1_000)), (limits(rpm_limit=10), demand())]
    first = await store.admit_all(parts, fail_closed=True)
    with pytest.raises(BudgetExceededError) as refused:
        await store.admit_all(parts, fail_closed=True)
    assert "Budget has been exceeded! Key=app (sk-...abcd)" in refused.value.message
    assert store._counters["alice"].window_requests == 1
    for reservation in first:
        store.settle(reservation, 700, 10)
    assert store.spend(KEY) == 700 and store.spend("alice") == 700


async def test_memory_rate_headers_name_each_subject() -> None:
    store = _memory()
    key_res, customer_res = await store.admit_all(
        [(_key_limits(rpm_limit=5), demand()), (limits(rpm_limit=3), demand())], fail_closed=False
    )
    assert ("x-ratelimit-api_key-remaining-requests", "4") in key_res.rate_headers
    assert ("x-ratelimit-end_user-remaining-requests", "2") in customer_res.rate_headers


@pytest.mark.redis
async def test_redis_a_refusal_by_either_subject_leaves_both_as_they_were(
    make_counters: MakeCounters, redis_client: Redis
) -> None:
    counters: RedisCounters = make_counters()
    for subject in (KEY, "alice"):
        await counters.seed(subject, 0, None, overwrite=True)
    parts = [(_key_limits(rpm_limit=5, max_budget=10_000), demand(cost=1_000)), (limits(rpm_limit=1), demand())]
    verdict, seen = await counters.decide_all(parts, fail_closed=False)
    assert isinstance(verdict, list) and len(verdict) == 2
    assert [s.subject for s in seen] == [KEY, "alice"]
    before = decode_hash(await redis_client.hgetall(counters.keys(KEY)[0]))

    refused, _ = await counters.decide_all(parts, fail_closed=False)

    assert not isinstance(refused, list)
    assert isinstance(refused.error, RateLimitError) and "end_user: alice" in refused.error.message
    after = decode_hash(await redis_client.hgetall(counters.keys(KEY)[0]))
    assert (after["wr"], after["rsv"]) == (before["wr"], before["rsv"]) == (1, 1_000)
    assert await redis_client.zcard(counters.keys(KEY)[1]) == 1

    # The key refuses now (its budget is reserved): the customer's window is not touched.
    parts = [(_key_limits(max_budget=1_000), demand(cost=500)), (limits(rpm_limit=10), demand())]
    refused, _ = await counters.decide_all(parts, fail_closed=True)
    assert not isinstance(refused, list) and isinstance(refused.error, BudgetExceededError)
    assert decode_hash(await redis_client.hgetall(counters.keys("alice")[0]))["wr"] == 1


@pytest.mark.redis
async def test_redis_an_unseeded_key_is_seeded_from_the_store_before_admission(
    make_counters: MakeCounters, durable: DurableSpend
) -> None:
    counters: RedisCounters = make_counters()
    durable.rows[KEY] = (9_500, None)
    parts = [(_key_limits(max_budget=10_000), demand(cost=1_000)), (limits(), demand())]
    with pytest.raises(BudgetExceededError):
        await counters.admit(*parts[0], fail_closed=True)
    verdict, _ = await counters.decide_all([parts[0]], fail_closed=False)
    assert isinstance(verdict, list) and verdict[0].reservation.cost == 500 and verdict[0].spend == 9_500
