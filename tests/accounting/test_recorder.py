"""SpendRecorder: how charges are grouped, ordered with resets, retried and drained (the sink is an in-memory list).

The sink here stands in for the storage layer only to observe grouping; what a group does in a real database is
tested in tests/storage/test_storage_spend.py, and end to end in tests/accounting/test_durability.py.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from haimaker.accounting.recorder import BudgetReset, GroupItem, SpendRecorder
from haimaker.state.counters import SpendReset
from haimaker.storage.records import Customer, SpendLog
from tests.support.factories import make_log

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)  # for the resets


def _log(index: int, customer: str = "alice") -> SpendLog:
    return make_log(request_id=f"r{index:06d}", end_user=customer)


class ListSink:
    """Records every write as it arrives; `fail_next` makes the next writes raise."""

    def __init__(self) -> None:
        self.groups: list[list[str]] = []
        self.new_customers: list[list[str]] = []
        self.events: list[str] = []
        self.fail_next = 0
        self.gate: asyncio.Event | None = None

    async def write_charges(self, new_customers: list[Customer], items: list[GroupItem]) -> int:
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_next:
            self.fail_next -= 1
            raise OSError("database unreachable")
        self.groups.append(
            [item.request_id if isinstance(item, SpendLog) else f"reset:{item.customer_id}" for item in items]
        )
        self.new_customers.append(sorted(c.user_id for c in new_customers))
        self.events.append("group:" + ",".join(self.groups[-1]))
        return sum(isinstance(item, SpendLog) for item in items)

    async def reset_budget(self, reset: BudgetReset) -> None:
        self.events.append(f"reset-budget:{reset.budget_id}")


async def test_a_quiet_group_closes_after_the_delay_and_creates_its_customers() -> None:
    sink = ListSink()
    recorder = SpendRecorder(sink, max_delay_s=0.05, max_rows=100)
    recorder.start()
    recorder.record(_log(1, "alice"))
    recorder.record(_log(2, "bob"))
    recorder.record(_log(3, "alice"))
    await asyncio.sleep(0.2)
    assert sink.groups == [["r000001", "r000002", "r000003"]]
    assert sink.new_customers == [["alice", "bob"]]
    assert recorder.pending == 0
    await recorder.aclose()


async def test_a_backlog_is_written_in_catch_up_groups() -> None:
    sink = ListSink()
    sink.gate = asyncio.Event()  # the store is slow: charges pile up behind the first write
    recorder = SpendRecorder(sink, max_delay_s=0.01, max_rows=10, max_catch_up_rows=40)
    recorder.start()
    for index in range(100):
        recorder.record(_log(index))
    await asyncio.sleep(0.05)
    sink.gate.set()
    await recorder.flush()
    # Groups never exceed the catch-up size, and a backlog is not written 10 rows at a time.
    assert [len(group) for group in sink.groups] == [40, 40, 20]
    assert [rid for group in sink.groups for rid in group] == [f"r{index:06d}" for index in range(100)]
    await recorder.aclose()


async def test_customer_resets_join_the_group_in_their_place_and_a_tier_reset_is_written_alone() -> None:
    sink = ListSink()
    recorder = SpendRecorder(sink, max_delay_s=0.01, max_rows=100)
    recorder.start()
    recorder.record(_log(1))
    recorder.record(_log(2))
    recorder.reset_customer(SpendReset("alice", NOW))
    recorder.record(_log(3))
    recorder.reset_budget(BudgetReset("tier", include_unbudgeted=False, now=NOW, next_reset_at=NOW))
    recorder.record(_log(4))
    await recorder.flush()
    assert sink.events == ["group:r000001,r000002,reset:alice,r000003", "reset-budget:tier", "group:r000004"]
    await recorder.aclose()


async def test_a_reset_boundary_under_load_adds_no_transactions() -> None:
    """Every customer's first request after the boundary resets its period: those resets ride in the groups the
    charges make anyway (the regression: one transaction per reset split the groups, 260k-450k writes pending)."""
    sink = ListSink()
    sink.gate = asyncio.Event()  # a busy store: the boundary's traffic piles up behind one write
    recorder = SpendRecorder(sink, max_delay_s=0.01, max_rows=500, max_catch_up_rows=5_000)
    recorder.start()
    recorder.record(_log(0, "warm-up"))
    await asyncio.sleep(0.03)
    for index in range(1, 3_001):
        customer = f"c{index}"
        recorder.reset_customer(SpendReset(customer, NOW))
        recorder.record(_log(index, customer))
    sink.gate.set()
    await recorder.flush()
    assert [len(group) for group in sink.groups] == [1, 5_000, 1_000]
    assert recorder.pending == 0
    await recorder.aclose()


async def test_a_failed_write_is_retried_and_nothing_is_dropped() -> None:
    sink = ListSink()
    sink.fail_next = 2
    recorder = SpendRecorder(sink, max_delay_s=0.01, max_rows=100)
    recorder.start()
    for index in range(5):
        recorder.record(_log(index))
    await asyncio.wait_for(recorder.flush(), timeout=5)
    assert sink.groups == [[f"r{index:06d}" for index in range(5)]]
    await recorder.aclose()


async def test_close_drains_everything_queued() -> None:
    sink = ListSink()
    recorder = SpendRecorder(sink, max_delay_s=10.0, max_rows=1_000)  # nothing would close a group on its own
    recorder.start()
    for index in range(7):
        recorder.record(_log(index))
    await recorder.aclose()
    assert sum(len(group) for group in sink.groups) == 7
    assert recorder.pending == 0
