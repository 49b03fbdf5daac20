"""The Lua counter store against a real Redis: atomic admission under concurrency, settle/release exactly once,
rate windows, period resets, seeding, leases, and the same decisions as the memory store."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta

import pytest
from redis.asyncio import Redis

from haimaker.clock import FakeClock
from haimaker.errors import BudgetExceededError, ProxyError, RateLimitError
from haimaker.periods import next_reset_function
from haimaker.state.counters import Reservation
from haimaker.state.memory import MemoryCounterStore
from haimaker.state.redis import RedisCounters, SharedReservation
from tests.state.state_setup import DurableSpend, MakeCounters, RecordedResets, decode_hash, demand, limits

pytestmark = pytest.mark.redis


async def _admit_many(counters: RedisCounters, n: int, **fields: object) -> list[SharedReservation | ProxyError]:
    async def one() -> SharedReservation | ProxyError:
        try:
            return (await counters.admit(limits(**fields), demand(), fail_closed=False)).reservation
        except ProxyError as exc:
            return exc

    return await asyncio.gather(*(one() for _ in range(n)))


async def _hash(client: Redis, counters: RedisCounters, customer_id: str = "alice") -> dict[str, int]:
    raw = await client.hgetall(counters.keys(customer_id)[0])
    return decode_hash(raw)


@pytest.mark.parametrize("fail_closed", [False, True], ids=["default-mode", "fail-closed"])
async def test_200_concurrent_admits_reserve_exactly_the_budget(
    make_counters: MakeCounters, redis_client: Redis, fail_closed: bool
) -> None:
    counters = make_counters()
    budget = 10_500  # ten and a half requests of 1,000

    async def one() -> SharedReservation | ProxyError:
        try:
            admission = await counters.admit(limits(max_budget=budget), demand(cost=1_000), fail_closed=fail_closed)
            return admission.reservation
        except ProxyError as exc:
            return exc

    results = await asyncio.gather(*(one() for _ in range(200)))

    admitted = [r for r in results if isinstance(r, SharedReservation)]
    refused = [r for r in results if not isinstance(r, SharedReservation)]
    assert all(isinstance(r, BudgetExceededError) for r in refused)
    if fail_closed:
        assert len(admitted) == 10
        assert sorted(r.cost for r in admitted) == [1_000] * 10
    else:
        # The eleventh takes what is left: spend can pass the budget by at most one request.
        assert len(admitted) == 11
        assert sorted(r.cost for r in admitted) == [500] + [1_000] * 10
    state = await _hash(redis_client, counters)
    assert state["rsv"] == sum(r.cost for r in admitted)
    for reservation in admitted:
        await counters.settle(reservation, reservation.cost, 10)
    state = await _hash(redis_client, counters)
    assert state["rsv"] == 0 and state["s"] == sum(r.cost for r in admitted)


async def test_only_one_shrunk_reservation_is_in_flight_at_a_time(
    make_counters: MakeCounters, redis_client: Redis
) -> None:
    counters = make_counters()

    async def admit(cost: int) -> SharedReservation:
        return (await counters.admit(limits(max_budget=10_000), demand(cost=cost), fail_closed=False)).reservation

    full = [await admit(3_000) for _ in range(3)]
    shrunk = await admit(3_000)
    assert (shrunk.cost, shrunk.partial) == (1_000, True)
    await counters.settle(full[0], 2_000, 5)  # 1,000 free again, but a shrunk request is still running
    with pytest.raises(BudgetExceededError):
        await admit(3_000)
    fits = await admit(500)
    assert (fits.cost, fits.partial) == (500, False)
    await counters.settle(shrunk, 3_000, 5)  # its excess is the one overshoot allowed
    assert (await _hash(redis_client, counters))["pin"] == 0


async def test_rpm_30_admits_exactly_30_of_100_concurrent_requests(make_counters: MakeCounters) -> None:
    counters = make_counters(use_server_time=True)
    results = await _admit_many(counters, 100, rpm_limit=30)
    admitted = [r for r in results if isinstance(r, SharedReservation)]
    refused = [r for r in results if isinstance(r, RateLimitError)]
    assert len(admitted) == 30 and len(refused) == 70
    assert "Limit type: requests" in refused[0].message
    assert 1 <= int(refused[0].headers["retry-after"]) <= 60
    remaining = sorted(int(dict(r.rate_headers)["x-ratelimit-end_user-remaining-requests"]) for r in admitted)
    assert remaining == list(range(30))


async def test_parallel_limit_holds_slots_until_release(make_counters: MakeCounters, redis_client: Redis) -> None:
    counters = make_counters()
    results = await _admit_many(counters, 20, max_parallel_requests=5)
    admitted = [r for r in results if isinstance(r, SharedReservation)]
    assert len(admitted) == 5
    assert all(isinstance(r, RateLimitError) and "parallel_requests" in r.message for r in results if r not in admitted)
    assert await counters.release(admitted[0])
    assert not await counters.release(admitted[0])  # idempotent
    again = await _admit_many(counters, 3, max_parallel_requests=5)
    assert sum(isinstance(r, SharedReservation) for r in again) == 1
    assert (await _hash(redis_client, counters))["inf"] == 5


async def test_tpm_reserves_what_is_left_and_settles_to_actual_usage(
    make_counters: MakeCounters, redis_client: Redis
) -> None:
    counters = make_counters()
    first = (await counters.admit(limits(tpm_limit=100), demand(tokens=70), fail_closed=False)).reservation
    second = (await counters.admit(limits(tpm_limit=100), demand(tokens=70), fail_closed=False)).reservation
    assert (first.tokens, second.tokens) == (70, 30)
    with pytest.raises(RateLimitError, match="Limit type: tokens"):
        await counters.admit(limits(tpm_limit=100), demand(tokens=70), fail_closed=False)
    await counters.settle(first, 0, 12)
    await counters.release(second)
    assert (await _hash(redis_client, counters))["wt"] == 12


async def test_settle_charges_once_even_when_replayed(make_counters: MakeCounters, redis_client: Redis) -> None:
    counters = make_counters()
    reservation = (await counters.admit(limits(max_budget=10_000), demand(cost=3_000), fail_closed=False)).reservation
    assert await counters.settle(reservation, 2_000, 5) == 2_000
    assert await counters.settle(reservation, 2_000, 5) is None
    assert not await counters.release(reservation)
    state = await _hash(redis_client, counters)
    assert (state["s"], state["rsv"]) == (2_000, 0)


async def test_expired_lease_gives_the_reservation_back_and_a_late_settle_still_charges_once(
    make_counters: MakeCounters, redis_client: Redis, clock: FakeClock
) -> None:
    counters = make_counters(lease_s=5)
    held = (
        await counters.admit(limits(max_budget=2_000, max_parallel_requests=1), demand(cost=2_000), fail_closed=False)
    ).reservation
    with pytest.raises(RateLimitError):
        await counters.admit(limits(max_budget=2_000, max_parallel_requests=1), demand(cost=2_000), fail_closed=False)
    clock.advance(6)  # the holder's instance stopped renewing: its lease ran out
    fresh = (
        await counters.admit(limits(max_budget=2_000, max_parallel_requests=1), demand(cost=500), fail_closed=False)
    ).reservation
    assert fresh.cost == 500
    assert await counters.settle(held, 1_000, 5) == 1_000
    assert await counters.settle(held, 1_000, 5) is None
    await counters.settle(fresh, 500, 5)
    state = await _hash(redis_client, counters)
    assert (state["s"], state["rsv"], state["inf"]) == (1_500, 0, 0)


async def test_renewed_leases_do_not_expire(make_counters: MakeCounters, clock: FakeClock) -> None:
    counters = make_counters(lease_s=5)
    held = (await counters.admit(limits(max_parallel_requests=1), demand(), fail_closed=False)).reservation
    for _ in range(3):
        clock.advance(4)
        assert await counters.renew([held]) == 1
    with pytest.raises(RateLimitError):
        await counters.admit(limits(max_parallel_requests=1), demand(), fail_closed=False)


async def test_rate_window_rolls_after_60_seconds(make_counters: MakeCounters, clock: FakeClock) -> None:
    counters = make_counters()
    for _ in range(2):
        await counters.admit(limits(rpm_limit=2), demand(), fail_closed=False)
    clock.advance(45)
    with pytest.raises(RateLimitError) as refused:
        await counters.admit(limits(rpm_limit=2), demand(), fail_closed=False)
    assert refused.value.headers["retry-after"] == "15"
    clock.advance(15)
    admitted = await counters.admit(limits(rpm_limit=2), demand(), fail_closed=False)
    assert admitted.reservation.window_start == clock.time()


async def test_due_period_resets_at_request_time_once(
    make_counters: MakeCounters, clock: FakeClock, resets: RecordedResets, durable: DurableSpend
) -> None:
    clock.set(datetime(2026, 1, 15, 10, 0, tzinfo=UTC))
    durable.rows["alice"] = (9_000, datetime(2026, 1, 15, 0, 0, tzinfo=UTC))
    counters = make_counters()
    tier = {"budget_id": "daily", "max_budget": 10_000, "budget_duration": "1d", "budget_reset_at": None}
    admission = await counters.admit(limits(**tier), demand(cost=5_000), fail_closed=True)
    assert admission.spend == 0
    assert admission.spend_reset_at == datetime(2026, 1, 16, 0, 0, tzinfo=UTC)
    assert [(r.customer_id, r.next_reset_at) for r in resets.resets] == [("alice", datetime(2026, 1, 16, tzinfo=UTC))]
    await counters.admit(limits(**tier), demand(cost=5_000), fail_closed=True)
    assert len(resets.resets) == 1


async def test_reset_job_zeroes_only_due_customers_and_is_idempotent(
    make_counters: MakeCounters, clock: FakeClock, durable: DurableSpend
) -> None:
    now = datetime(2026, 1, 15, 10, 0, tzinfo=UTC)
    clock.set(now)
    durable.rows = {"due": (7, now - timedelta(hours=1)), "later": (8, now + timedelta(hours=1)), "open": (9, None)}
    counters = make_counters()
    for customer_id in durable.rows:
        await counters.admit(limits(customer_id, rpm_limit=100), demand(), fail_closed=False)
    next_at = now + timedelta(days=1)
    assert sorted(await counters.reset_due(now, ["due", "later", "open", "never-seen"], next_at)) == ["due", "open"]
    assert await counters.reset_due(now, ["due", "later", "open"], next_at) == []
    assert await counters.charge("later", 0) == 8
    assert await counters.charge("due", 0) == 0


async def test_first_requests_seed_from_the_durable_store_once(
    make_counters: MakeCounters, durable: DurableSpend
) -> None:
    durable.rows["alice"] = (9_500, None)
    counters = make_counters()
    results = await _admit_many(counters, 50, max_budget=10_000)
    assert durable.reads == 1
    assert sum(isinstance(r, SharedReservation) for r in results) == 1
    assert await counters.charge("nobody", 100) is None  # unseeded: the durable store will have it


async def test_a_customer_known_to_be_new_is_seeded_by_its_first_admission(
    make_counters: MakeCounters, durable: DurableSpend, redis_client: Redis
) -> None:
    counters = make_counters(is_new=lambda customer_id: customer_id.startswith("new-"))
    durable.rows["old-bob"] = (9_500, None)
    admissions = await asyncio.gather(
        *(counters.admit(limits("new-alice", max_budget=10_000), demand(), fail_closed=False) for _ in range(5))
    )
    assert [a.spend for a in admissions] == [0] * 5
    assert durable.reads == 0  # no store read, no separate seed
    assert (await _hash(redis_client, counters, "new-alice"))["rsv"] == 5_000
    # A customer the store may hold something for is still seeded from it: 9,500 spent, 1,000 more does not fit.
    with pytest.raises(ProxyError):
        await counters.admit(limits("old-bob", max_budget=10_000), demand(), fail_closed=True)
    assert durable.reads == 1


async def test_seed_overwrites_only_when_told(make_counters: MakeCounters) -> None:
    counters = make_counters()
    assert await counters.seed("alice", 100, None, overwrite=False) == 100
    assert await counters.seed("alice", 5, None, overwrite=False) == 100
    assert await counters.seed("alice", 5, None, overwrite=True) == 5
    await counters.forget("alice")
    assert await counters.charge("alice", 1) is None


async def test_epoch_is_created_once(make_counters: MakeCounters) -> None:
    first = make_counters()
    second = make_counters()
    epoch, created = await first.ensure_epoch()
    assert created
    assert await second.ensure_epoch() == (epoch, False)


def _view(result: Reservation | ProxyError) -> object:
    if isinstance(result, ProxyError):
        return (type(result).__name__, result.message, sorted(result.headers.items()))
    return (
        result.cost,
        result.tokens,
        result.window_start,
        result.holds_parallel_slot,
        result.partial,
        result.rate_headers,
    )


@pytest.mark.parametrize("seed", [20260115, 7, 99])
async def test_random_workload_gets_the_same_decisions_as_the_memory_store(
    make_counters: MakeCounters, clock: FakeClock, resets: RecordedResets, seed: int
) -> None:
    """Mirror semantics exactly: one random sequence of admits, settles, releases and clock moves on both stores."""
    clock.set(datetime(2026, 1, 15, 23, 58, tzinfo=UTC))
    counters = make_counters(lease_s=10**6)  # the memory store has no leases: nothing may expire here
    memory_resets = RecordedResets()
    memory = MemoryCounterStore(clock, next_reset_function("UTC", "00:00"), memory_resets, budget_status_code=400)
    tiers: list[dict[str, object]] = [
        {"budget_id": "a", "max_budget": 40_000, "rpm_limit": 12, "max_parallel_requests": 3},
        {"budget_id": "b", "max_budget": 25_000, "tpm_limit": 300, "budget_duration": "1d"},
        {"budget_id": "c", "rpm_limit": 5, "tpm_limit": 120, "max_parallel_requests": 2, "budget_duration": "1h"},
    ]
    # Customers move to another tier now and then (new period key, the tier's own stored boundary).
    other_tier: dict[str, object] = {
        "budget_id": "d",
        "max_budget": 30_000,
        "budget_duration": "30s",
        "budget_reset_at": datetime(2026, 1, 16, 0, 0, 30, tzinfo=UTC),
    }
    rng = random.Random(seed)
    held: list[tuple[SharedReservation, Reservation]] = []
    admitted = refused = 0
    for step in range(600):
        roll = rng.random()
        if roll < 0.55:
            customer = rng.randrange(3)
            tier = other_tier if rng.random() < 0.15 else tiers[customer]
            wanted = limits(f"cust-{customer}", **tier)
            want = demand(cost=rng.choice([500, 2_000, 4_000]), tokens=rng.choice([10, 40, 90]))
            fail_closed = rng.random() < 0.3
            shared: SharedReservation | ProxyError
            local: Reservation | ProxyError
            try:
                shared = (await counters.admit(wanted, want, fail_closed=fail_closed)).reservation
            except ProxyError as exc:
                shared = exc
            try:
                local = memory.admit_now(wanted, want, fail_closed=fail_closed)
            except ProxyError as exc:
                local = exc
            assert _view(shared) == _view(local), f"step {step}: {_view(shared)} != {_view(local)}"
            if isinstance(shared, SharedReservation) and isinstance(local, Reservation):
                held.append((shared, local))
                admitted += 1
            else:
                refused += 1
        elif roll < 0.85 and held:
            shared_held, local_held = held.pop(rng.randrange(len(held)))
            if rng.random() < 0.8:
                cost, tokens = rng.randrange(0, shared_held.cost + 1), rng.randrange(0, 100)
                await counters.settle(shared_held, cost, tokens)
                memory.settle(local_held, cost, tokens)
            else:
                await counters.release(shared_held)
                memory.release(local_held)
        else:
            clock.advance(rng.choice([1, 5, 20, 61, 600]))
    for customer in range(3):
        assert await counters.charge(f"cust-{customer}", 0) == memory.spend(f"cust-{customer}")
    assert [(r.customer_id, r.next_reset_at) for r in resets.resets] == [
        (r.customer_id, r.next_reset_at) for r in memory_resets.resets
    ]
    assert admitted > 50 and refused > 50 and resets.resets
