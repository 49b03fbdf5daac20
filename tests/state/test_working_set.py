"""The customer working set: misses read from the store in batches, absent ids remembered, idle customers evicted only
once their charges are durable, and a customer read back is admitted with its exact stored spend."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from haimaker.accounting.pricing import ModelPrice, Usage
from haimaker.accounting.recorder import SpendRecorder
from haimaker.accounting.store_sink import StoreSink
from haimaker.clock import FakeClock
from haimaker.errors import BudgetExceededError
from haimaker.limits.engine import BudgetEngine, GroupPrice, Ticket
from haimaker.periods import next_reset_function
from haimaker.state.catalog import Catalog
from haimaker.state.memory import MemoryCounterStore
from haimaker.state.working_set import WorkingSet
from haimaker.storage.engine import create_engine, session_factory
from haimaker.storage.records import Budget, Customer, SpendLog
from tests.state.state_setup import RecordedResets

PRICE = ModelPrice(Decimal("0.000001"), Decimal("0.000002"))
GROUP = GroupPrice(PRICE, 100)
NOW = datetime(2026, 1, 15, tzinfo=UTC)


class CountingReads:
    """`CustomerRepository.get_many` with a count of the queries, and a gate to hold a read mid-flight."""

    def __init__(self, sink: StoreSink) -> None:
        self._sink = sink
        self.calls: list[list[str]] = []
        self.gate: asyncio.Event | None = None
        self.started = asyncio.Event()

    async def __call__(self, user_ids: Sequence[str]) -> Mapping[str, Customer]:
        self.calls.append(list(user_ids))
        found = await self._sink.customers.get_many(user_ids)
        self.started.set()
        if self.gate is not None:
            gate, self.gate = self.gate, None  # only the first read is held, with what it read
            await gate.wait()
        return found


@pytest.fixture
async def sink(migrated_database_url: str) -> AsyncIterator[StoreSink]:
    engine = create_engine(migrated_database_url)
    yield StoreSink(session_factory(engine), FakeClock(NOW))
    await engine.dispose()


async def test_concurrent_misses_share_one_store_read(sink: StoreSink) -> None:
    ids = [f"c{i:03}" for i in range(50)]
    for user_id in ids:
        await sink.customers.create(Customer(user_id=user_id, created_at=NOW))
    reads = CountingReads(sink)
    catalog = Catalog()
    catalog.attach_store(reads)

    found = await asyncio.gather(*(catalog.lookup(user_id) for user_id in [*ids, "never-seen"]))

    assert [c.user_id if c else None for c in found] == [*ids, None]
    assert len(reads.calls) == 1 and len(reads.calls[0]) == 51
    assert len(catalog.customers) == 50


async def test_an_unknown_id_is_read_once_until_it_exists(sink: StoreSink) -> None:
    reads = CountingReads(sink)
    catalog = Catalog()
    catalog.attach_store(reads)

    assert await catalog.lookup("ghost") is None
    assert await catalog.lookup("ghost") is None
    assert len(reads.calls) == 1
    assert catalog.is_absent("ghost")

    catalog.put_new_customer(Customer(user_id="ghost", created_at=NOW))  # its first admitted request
    assert (await catalog.lookup("ghost")) is not None
    assert not catalog.is_absent("ghost") and len(reads.calls) == 1


async def test_a_customer_deleted_while_its_row_was_read_is_not_brought_back(sink: StoreSink) -> None:
    await sink.customers.create(Customer(user_id="gone", created_at=NOW))
    reads = CountingReads(sink)
    gate = reads.gate = asyncio.Event()
    catalog = Catalog()
    catalog.attach_store(reads)

    lookup = asyncio.create_task(catalog.lookup("gone"))
    await reads.started.wait()
    await sink.customers.delete_many(["gone"])  # an admin delete lands while the row read is in flight
    catalog.drop_customer("gone")
    gate.set()
    assert await lookup is None
    assert "gone" not in catalog.customers
    assert len(reads.calls) == 2  # read again, since a customer was dropped meanwhile


async def test_an_admin_write_during_a_read_wins_over_the_row_read(sink: StoreSink) -> None:
    await sink.customers.create(Customer(user_id="edited", created_at=NOW))
    reads = CountingReads(sink)
    gate = reads.gate = asyncio.Event()
    catalog = Catalog()
    catalog.attach_store(reads)

    lookup = asyncio.create_task(catalog.lookup("edited"))
    await reads.started.wait()
    newer = Customer(user_id="edited", created_at=NOW, blocked=True)
    catalog.put_customer(newer)
    gate.set()
    assert await lookup is newer
    assert catalog.customers["edited"] is newer


class GatedSink:
    """The real store sink, whose charge writes wait while `open` is clear (a slow or unreachable store)."""

    def __init__(self, sink: StoreSink) -> None:
        self._sink = sink
        self.open = asyncio.Event()

    async def write_charges(self, *args: Any, **kwargs: Any) -> Any:
        await self.open.wait()
        return await self._sink.write_charges(*args, **kwargs)

    def __getattr__(self, name: str) -> object:
        return getattr(self._sink, name)


@dataclass
class Proxy:
    """The pieces of one instance that the working set touches, on a real store."""

    catalog: Catalog
    counters: MemoryCounterStore
    engine: BudgetEngine
    recorder: SpendRecorder
    working_set: WorkingSet
    clock: FakeClock

    async def charge(self, user_id: str, usage: Usage) -> int:
        """One admitted, settled and recorded request (as `pipeline.py` does it); returns its cost."""
        ticket = await self.engine.admit(user_id, "m", GROUP, prompt_tokens=10, max_output_tokens=10, n=1)
        return self.settle(ticket, usage)

    def settle(self, ticket: Ticket, usage: Usage) -> int:
        assert ticket.customer_id is not None
        cost = self.engine.settle(ticket, PRICE, usage).cost
        self.recorder.record(_log(ticket.customer_id, cost, self.clock.now(), ticket.new_customer_budget_id))
        return cost


def _log(user_id: str, cost: int, at: datetime, budget_id: str | None) -> SpendLog:
    return SpendLog(
        request_id=str(uuid.uuid4()),
        end_user=user_id,
        model="m",
        model_id="m-1",
        model_group="m",
        custom_llm_provider="openai",
        call_type="acompletion",
        prompt_tokens=10,
        completion_tokens=5,
        total_tokens=15,
        spend=cost,
        start_time=at,
        end_time=at,
        metadata={},
    )


@pytest.fixture
async def proxy(sink: StoreSink) -> AsyncIterator[Proxy]:
    clock = FakeClock(NOW)
    await sink.budgets.create(Budget(budget_id="tier", max_budget=100_000))  # 100 µ$: five 20 µ$ calls
    catalog = Catalog(default_budget_id="tier")
    catalog.load_budgets(await sink.budgets.list_all())
    counters = MemoryCounterStore(clock, next_reset_function("UTC", "00:00"), RecordedResets(), budget_status_code=400)
    catalog.attach_store(sink.customers.get_many, lambda c: counters.adopt(c.user_id, c.spend, c.spend_reset_at))
    recorder = SpendRecorder(GatedSink(sink), max_delay_s=0.01)  # type: ignore[arg-type]
    recorder.start()
    engine = BudgetEngine(
        catalog,
        counters,
        clock,
        fail_closed=False,
        reservation_enabled=True,
        block_unpriced=False,
        default_max_output_tokens=100,
    )
    working_set = WorkingSet(
        catalog, counters, max_customers=2, queued=lambda: recorder.queued, written=lambda: recorder.written
    )
    yield Proxy(catalog, counters, engine, recorder, working_set, clock)
    await recorder.aclose(timeout_s=5)


def _gate(proxy: Proxy) -> asyncio.Event:
    sink = proxy.recorder._sink
    assert isinstance(sink, GatedSink)
    return sink.open


async def test_customers_with_unwritten_charges_are_never_evicted(proxy: Proxy) -> None:
    usage = Usage(prompt_tokens=10, completion_tokens=5)
    for user_id in ("a", "b", "c", "d", "e"):
        await proxy.charge(user_id, usage)
    assert proxy.recorder.pending == 5

    for _ in range(5):  # the store is not taking writes: every customer has a charge only in memory
        assert proxy.working_set.sweep() == 0
    assert len(proxy.catalog.customers) == 5

    _gate(proxy).set()
    await proxy.recorder.flush()
    # Marked at the queue's position while the store was down: written past it now, so evicted at once.
    assert proxy.working_set.sweep() == 3  # down to the bound, least recently used first
    assert list(proxy.catalog.customers) == ["d", "e"]
    assert proxy.counters.spend("a") is None  # its counters went with it


async def test_a_customer_read_back_after_eviction_is_admitted_with_its_exact_spend(proxy: Proxy) -> None:
    _gate(proxy).set()
    usage = Usage(prompt_tokens=10, completion_tokens=5)  # 20 µ$
    spent = sum([await proxy.charge("heavy", usage) for _ in range(4)])  # 80 of its 100 µ$
    for user_id in ("x", "y"):
        await proxy.charge(user_id, usage)
    await proxy.recorder.flush()
    proxy.working_set.sweep()
    proxy.working_set.sweep()
    assert "heavy" not in proxy.catalog.customers

    spent += await proxy.charge("heavy", usage)  # read back: 80 µ$ spent, one more call fits

    assert proxy.counters.spend("heavy") == spent == 100_000
    with pytest.raises(BudgetExceededError):
        await proxy.charge("heavy", usage)


async def test_a_customer_with_a_request_in_flight_or_admitted_again_is_kept(proxy: Proxy) -> None:
    _gate(proxy).set()
    usage = Usage(prompt_tokens=10, completion_tokens=5)
    in_flight = await proxy.engine.admit("streaming", "m", GROUP, prompt_tokens=10, max_output_tokens=10, n=1)
    for user_id in ("p", "q", "r"):
        await proxy.charge(user_id, usage)
    await proxy.recorder.flush()
    proxy.working_set.sweep()  # marks p, q (streaming is pinned)
    await proxy.charge("p", usage)  # p is admitted again: its mark is gone, and its new charge is not written
    proxy.working_set.sweep()

    assert "streaming" in proxy.catalog.customers and "p" in proxy.catalog.customers
    proxy.settle(in_flight, usage)
    await proxy.recorder.flush()
    proxy.working_set.sweep()
    proxy.working_set.sweep()
    assert len(proxy.catalog.customers) == 2


async def test_rate_windows_pin_rate_limited_customers_only(sink: StoreSink) -> None:
    clock = FakeClock(NOW)
    counters = MemoryCounterStore(clock, next_reset_function("UTC", "00:00"), RecordedResets(), budget_status_code=400)
    counters.add_spend("plain", 5)
    counters._get("plain").window_start = clock.time()
    counters._get("limited").window_start = clock.time()
    assert counters.evict("plain", rate_limited=False)
    assert not counters.evict("limited", rate_limited=True)
    clock.advance(61)
    assert counters.evict("limited", rate_limited=True)
