"""The outbox on both engines: filled with the charge, exactly once, only while exporting; read in an order no commit
can fall behind; cursors that never move back; pruning behind every sink."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from haimaker.clock import FakeClock
from haimaker.storage import SpendRepository, create_engine, session_factory
from haimaker.storage.outbox_repo import OutboxPosition, OutboxRepository, Rejection, UsageEvent, add_to_outbox
from haimaker.storage.outbox_tables import failures_table, usage_outbox_table
from haimaker.storage.spend_repo import ChargeBatch
from tests.support.factories import make_log


@pytest.fixture
async def engine(migrated_database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(migrated_database_url)
    yield engine
    await engine.dispose()


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return session_factory(engine)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


async def _read(outbox: OutboxRepository, after: OutboxPosition, limit: int, expected: int) -> list[UsageEvent]:
    """`read_after`, waiting (a few seconds at most) for `expected` rows: on PostgreSQL a writing transaction of any
    database on the server (other test runs share it) holds back every row committed after it began."""
    for _ in range(200):
        events = await outbox.read_after(after, limit)
        if len(events) >= expected:
            return events
        await asyncio.sleep(0.05)
    return events


async def _outbox_ids(sessions: async_sessionmaker[AsyncSession]) -> list[str]:
    async with sessions() as session:
        table = usage_outbox_table
        return list((await session.execute(select(table.c.request_id).order_by(table.c.id))).scalars())


async def test_charges_enter_the_outbox_once_with_their_batch(
    sessions: async_sessionmaker[AsyncSession], clock: FakeClock
) -> None:
    spend = SpendRepository(sessions, clock=clock, export_usage=True)
    charged = [make_log(end_user=f"c{i}", spend=1_000 + i) for i in range(5)]
    failed = make_log(status="failure", spend=0)
    anonymous = make_log(end_user="")
    batch = ChargeBatch(logs=[*charged, failed, anonymous])
    assert await spend.write_batch(batch) == 7
    assert await spend.write_batch(batch) == 0  # a retried batch: nothing new in the ledger, nothing in the outbox
    assert sorted(await _outbox_ids(sessions)) == sorted(log.request_id for log in charged)
    events = await _read(OutboxRepository(sessions, clock=clock), OutboxPosition(), 100, 5)
    assert [(e.end_user, e.spend, e.model, e.total_tokens) for e in events] == [
        (log.end_user, log.spend, log.model_group, log.total_tokens)
        for log in sorted(charged, key=lambda x: x.request_id)
    ]


async def test_without_export_the_outbox_stays_empty(sessions: async_sessionmaker[AsyncSession]) -> None:
    await SpendRepository(sessions).write_batch(ChargeBatch(logs=[make_log()]))
    assert await _outbox_ids(sessions) == []


async def test_cursor_reads_pages_and_never_moves_back(
    sessions: async_sessionmaker[AsyncSession], clock: FakeClock
) -> None:
    spend = SpendRepository(sessions, clock=clock, export_usage=True)
    await spend.write_batch(ChargeBatch(logs=[make_log() for _ in range(5)]))
    outbox = OutboxRepository(sessions, clock=clock)
    first = await _read(outbox, OutboxPosition(), 2, 2)
    rest = await _read(outbox, first[-1].position, 10, 3)
    assert len(first) == 2 and len(rest) == 3
    assert [e.position for e in first + rest] == sorted(e.position for e in first + rest)
    rejection = Rejection(rest[0].request_id, 400, "bad")
    await outbox.advance("s", rest[0].position, exported=3, rejections=[rejection])
    await outbox.advance("s", first[0].position, exported=1)  # a stale exporter: ignored
    assert await outbox.cursor("s") == rest[0].position
    clock.advance(30)
    await outbox.record_error("s", "HTTP 500")
    [progress] = await outbox.progress(["s"])
    assert (progress.exported, progress.failed, progress.pending, progress.last_error) == (3, 1, 2, "HTTP 500")
    assert progress.oldest_pending_at is not None and progress.last_error_at == clock.now()
    async with sessions() as session:
        assert (await session.execute(select(func.count()).select_from(failures_table))).scalar_one() == 1


async def test_prune_keeps_what_any_sink_still_needs(
    sessions: async_sessionmaker[AsyncSession], clock: FakeClock
) -> None:
    spend = SpendRepository(sessions, clock=clock, export_usage=True)
    await spend.write_batch(ChargeBatch(logs=[make_log() for _ in range(4)]))
    outbox = OutboxRepository(sessions, clock=clock)
    events = await _read(outbox, OutboxPosition(), 10, 4)
    await outbox.advance("a", events[3].position, exported=4)
    assert await outbox.prune(["a", "b"]) == 0  # b never advanced
    await outbox.advance("b", events[1].position, exported=2)
    assert await outbox.prune(["a", "b"]) == 2
    assert await _outbox_ids(sessions) == [events[2].request_id, events[3].request_id]
    assert [e.request_id for e in await _read(outbox, await outbox.cursor("b"), 10, 2)] == [
        events[2].request_id,
        events[3].request_id,
    ]


@pytest.mark.postgres
@pytest.mark.parametrize("database_kind", ["postgres"], indirect=True)
async def test_rows_of_a_running_transaction_hold_back_later_ones(
    sessions: async_sessionmaker[AsyncSession], clock: FakeClock
) -> None:
    # A takes its outbox id first but commits last: reading by id alone would pass B's row, move the cursor beyond
    # A's, and never export A. Reads stop at the oldest running transaction instead.
    outbox = OutboxRepository(sessions, clock=clock)
    early, late = make_log(request_id="req-a"), make_log(request_id="req-b")
    async with sessions() as a, a.begin():
        await add_to_outbox(a, [early], clock.now())
        async with sessions() as b, b.begin():
            await add_to_outbox(b, [late], clock.now())
        assert await outbox.read_after(OutboxPosition(), 10) == []
    events = await _read(outbox, OutboxPosition(), 10, 2)
    assert [e.request_id for e in events] == ["req-a", "req-b"]
    # An older transaction whose row comes last in id order is read first (transaction order), never skipped.
    async with sessions() as c, c.begin():
        await c.execute(text("SELECT pg_current_xact_id()"))  # c's transaction id is taken now
        async with sessions() as d, d.begin():
            await add_to_outbox(d, [make_log(request_id="req-d")], clock.now())
        assert await outbox.read_after(events[-1].position, 10) == []
        await add_to_outbox(c, [make_log(request_id="req-c")], clock.now())
    after = await _read(outbox, events[-1].position, 10, 2)
    assert [e.request_id for e in after] == ["req-c", "req-d"]
    assert after[0].position.id > after[1].position.id
