"""The budget reset job (`services/resets.py`) on both engines, with the real store, recorder and memory counters:
a big tier resets in bounded steps while admissions go on, the default tier takes the customers without a budget, and
the job and the request-time reset neither reset a customer twice nor lose a charge that lands between them."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import event

from haimaker.accounting.recorder import SpendRecorder
from haimaker.accounting.store_sink import StoreSink
from haimaker.clock import FakeClock
from haimaker.periods import next_reset_function
from haimaker.services.resets import ResetJob
from haimaker.state.catalog import Catalog, limits_of
from haimaker.state.counters import Demand
from haimaker.state.keys import KeyCatalog
from haimaker.state.memory import MemoryCounterStore
from haimaker.storage import ChargeBatch, create_engine, session_factory
from haimaker.storage.records import Budget, Customer
from tests.support.factories import make_log

BOUNDARY = datetime(2026, 1, 16, tzinfo=UTC)
NEXT = BOUNDARY + timedelta(days=1)
STALE_SPEND = 1_000


@dataclass
class Rig:
    """One instance's reset job and what it works on, over a real store."""

    clock: FakeClock
    sink: StoreSink
    recorder: SpendRecorder
    counters: MemoryCounterStore
    catalog: Catalog
    job: ResetJob
    commits: list[object]

    def budget(self, budget_id: str) -> Budget:
        return self.catalog.budgets[budget_id]

    def request(self, customer_id: str, budget_id: str, cost: int, request_id: str) -> None:
        """One admitted and settled request: the counters first (a due period resets here), then its charge."""
        limits = limits_of(customer_id, self.budget(budget_id))
        reservation = self.counters.admit_now(limits, Demand(cost=cost, tokens=1), fail_closed=False)
        self.counters.settle(reservation, cost, 1)
        self.recorder.record(make_log(request_id=request_id, end_user=customer_id, spend=cost))

    async def stored(self, user_ids: list[str]) -> dict[str, tuple[int, datetime | None]]:
        await self.recorder.flush()
        return await self.sink.customers.spend_of_many(user_ids)


@pytest.fixture
async def rig(migrated_database_url: str) -> AsyncIterator[Rig]:
    engine = create_engine(migrated_database_url)
    clock = FakeClock(BOUNDARY - timedelta(hours=1))
    sink = StoreSink(session_factory(engine), clock)
    # A group closes only when full or flushed: what is queued stays queued unless someone waits for it.
    recorder = SpendRecorder(sink, max_delay_s=5.0)
    next_reset = next_reset_function("UTC", "00:00")
    counters = MemoryCounterStore(clock, next_reset, recorder, budget_status_code=400)
    catalog = Catalog(default_budget_id="free")
    for budget_id in ("daily", "free", "other"):
        budget = Budget(budget_id=budget_id, max_budget=10**9, budget_duration="1d", budget_reset_at=BOUNDARY)
        catalog.put_budget(await sink.budgets.create(budget))
    job = ResetJob(
        catalog=catalog,
        key_catalog=KeyCatalog(),
        counters=counters,
        budgets=sink.budgets,
        customers=sink.customers,
        keys=sink.keys,
        recorder=recorder,
        clock=clock,
        next_reset=next_reset,
        interval_s=60.0,
    )
    commits: list[object] = []

    def count_commit(connection: object) -> None:
        commits.append(connection)

    event.listen(engine.sync_engine, "commit", count_commit)
    recorder.start()
    yield Rig(clock, sink, recorder, counters, catalog, job, commits)
    await recorder.aclose()
    event.remove(engine.sync_engine, "commit", count_commit)
    await engine.dispose()


async def _store_customers(rig: Rig, ids: list[str], budget_id: str | None) -> None:
    customers = [
        Customer(user_id=user_id, budget_id=budget_id, spend=STALE_SPEND, spend_reset_at=BOUNDARY) for user_id in ids
    ]
    await rig.sink.spend.write_batch(ChargeBatch(new_customers=customers))


@pytest.mark.slow
async def test_a_tier_of_100k_due_customers_resets_in_bounded_steps_while_admissions_go_on(rig: Rig) -> None:
    tier = [f"d{index:06d}" for index in range(100_000)]
    await _store_customers(rig, tier, "daily")
    await _store_customers(rig, [f"o{index:03d}" for index in range(300)], "other")
    # Customers active in this process, with charges before the boundary still to be written (the recorder is slow
    # to close a group: they are queued when the job starts).
    active = tier[::2_000]
    for user_id in active:
        rig.counters.seed(user_id, STALE_SPEND, BOUNDARY)
        rig.request(user_id, "daily", 7, f"before-{user_id}")
    rig.clock.set(BOUNDARY + timedelta(minutes=1))
    rig.catalog.budgets.pop("other")  # only the big tier is due in this test
    rig.commits.clear()

    lags: list[float] = []
    pending: list[int] = []
    admitted = 0
    stop = asyncio.Event()

    async def traffic() -> None:
        """Admissions every millisecond, the way the pipeline makes them, measuring the event loop's lag."""
        nonlocal admitted
        while not stop.is_set():
            started = time.perf_counter()
            await asyncio.sleep(0.001)
            lags.append(time.perf_counter() - started - 0.001)
            pending.append(rig.recorder.pending)
            user_id = active[admitted % len(active)]
            rig.request(user_id, "daily", 1, f"after-{admitted}")
            admitted += 1

    # The app freezes its start-up heap (process_tuning.freeze_startup_heap); here the heap is a whole test
    # session's, and a full collection over it (0.5 s seen in CI) would be measured as the job's stall.
    gc.collect()
    gc.freeze()
    try:
        load = asyncio.create_task(traffic())
        started = time.perf_counter()
        reset = await rig.job.tick()
        elapsed = time.perf_counter() - started
        stop.set()
        await load
    finally:
        gc.unfreeze()

    # Active customers the traffic reset first are no longer due in the store when the job reaches them.
    assert len(tier) - len(active) <= reset <= len(tier)
    # Steps of 5,000: each step's resets are written in a few groups; nothing is one transaction per customer.
    assert len(tier) // 5_000 <= len(rig.commits) <= 6 * len(tier) // 5_000 + admitted // 50 + 10
    assert max(pending) <= 5_000 + 1_000  # at most one step of resets waits, with the traffic's charges
    assert max(lags) < 0.5, f"event loop stalled {max(lags):.3f}s"
    assert admitted > 100
    stored = await rig.stored([*tier, "o000"])
    assert stored["o000"] == (STALE_SPEND, BOUNDARY)
    assert rig.catalog.budgets["daily"].budget_reset_at == NEXT
    # Each active customer: the store agrees with its counters (the charges after the reset, never those before).
    for user_id in active:
        assert stored[user_id] == (rig.counters.spend(user_id), NEXT)
        assert stored.pop(user_id)[0] == sum(1 for n in range(admitted) if active[n % len(active)] == user_id)
    assert set(stored.values()) == {(STALE_SPEND, BOUNDARY), (0, NEXT)}
    assert sum(1 for value in stored.values() if value == (0, NEXT)) == len(tier) - len(active)
    assert elapsed < 60


async def test_the_default_tier_resets_the_customers_without_a_budget_and_another_tier_does_not(rig: Rig) -> None:
    await _store_customers(rig, ["u1", "u2"], None)
    await _store_customers(rig, ["f1"], "free")
    await _store_customers(rig, ["d1"], "daily")
    rig.clock.set(BOUNDARY + timedelta(minutes=1))
    rig.catalog.default_budget_id = "daily"
    rig.catalog.budgets.pop("free")  # not due in this round
    rig.catalog.budgets.pop("other")
    assert await rig.job.tick() == 3
    assert await rig.stored(["u1", "u2", "f1", "d1"]) == {
        "u1": (0, NEXT),
        "u2": (0, NEXT),
        "f1": (STALE_SPEND, BOUNDARY),
        "d1": (0, NEXT),
    }


async def test_a_second_round_finds_nothing_due(rig: Rig) -> None:
    await _store_customers(rig, [f"c{index}" for index in range(30)], "daily")
    rig.clock.set(BOUNDARY + timedelta(minutes=1))
    assert await rig.job.tick() == 30
    assert await rig.job.tick() == 0


async def test_the_job_and_the_request_time_reset_never_reset_twice_nor_lose_a_charge(rig: Rig) -> None:
    names = ["lazy-first", "job-first", "in-flight"]
    await _store_customers(rig, names, "daily")
    for user_id in names:
        rig.counters.seed(user_id, STALE_SPEND, BOUNDARY)
    # Admitted before the boundary, settled after the job: its charge counts in the new period, in both places.
    limits = limits_of("in-flight", rig.budget("daily"))
    in_flight = rig.counters.admit_now(limits, Demand(cost=50, tokens=1), fail_closed=False)
    rig.clock.set(BOUNDARY + timedelta(minutes=1))

    # Reset at request time before the job: the job finds the period current, in the counters and in the store.
    rig.request("lazy-first", "daily", 11, "l1")
    await rig.job.tick()
    rig.request("lazy-first", "daily", 13, "l2")
    rig.request("job-first", "daily", 17, "j1")
    rig.counters.settle(in_flight, 50, 1)
    rig.recorder.record(make_log(request_id="f1", end_user="in-flight", spend=50))

    stored = await rig.stored(names)
    assert stored == {"lazy-first": (24, NEXT), "job-first": (17, NEXT), "in-flight": (50, NEXT)}
    for user_id in names:
        assert rig.counters.spend(user_id) == stored[user_id][0]


async def test_the_job_queues_its_resets_behind_the_charges_queued_before_it(rig: Rig) -> None:
    """A charge made before the boundary and still queued when the job runs is wiped with the old period, even when
    the store is slower than the job."""
    await _store_customers(rig, ["slow"], "daily")
    rig.counters.seed("slow", STALE_SPEND, BOUNDARY)
    rig.request("slow", "daily", 5, "old-period")
    rig.clock.set(BOUNDARY + timedelta(minutes=1))
    await rig.job.tick()
    rig.request("slow", "daily", 3, "new-period")
    assert await rig.stored(["slow"]) == {"slow": (3, NEXT)}
    assert rig.counters.spend("slow") == 3


async def test_a_customer_whose_first_charge_is_still_queued_is_reset_too(rig: Rig) -> None:
    rig.request("newcomer", "free", 9, "first")  # a new customer of the default tier: created by its charge
    rig.clock.set(BOUNDARY + timedelta(minutes=1))
    assert await rig.job.tick() == 1
    assert await rig.stored(["newcomer"]) == {"newcomer": (0, NEXT)}
    assert rig.counters.spend("newcomer") == 0
