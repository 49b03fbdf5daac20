"""The spend journal on real files: what a crash leaves is read back exactly, live journals are never touched,
written segments go away, and a replay into a real store is idempotent."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from haimaker.accounting.dead_letters import DeadLetterBox
from haimaker.accounting.journal import Item, SpendJournal, claim_dead, replay_dead, store_key
from haimaker.accounting.recorder import BudgetReset, GroupItem, SpendRecorder
from haimaker.accounting.store_sink import StoreSink
from haimaker.clock import SystemClock
from haimaker.state.counters import SpendReset
from haimaker.storage.engine import create_engine, session_factory, upgrade
from haimaker.storage.records import Customer, SpendLog
from tests.support.databases import drop_database, make_database_url
from tests.support.factories import make_log

STORE = store_key("sqlite+aiosqlite:///tests.db")
T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def _charges(n: int, customer: str = "alice", start: int = 0) -> list[SpendLog]:
    return [
        make_log(request_id=f"r{start + i:06d}", end_user=customer, metadata={"i": i}, spend=1_000 + i)
        for i in range(n)
    ]


def _dead_items(directory: Path, store: str = STORE) -> list[Item]:
    owners = claim_dead(directory, store)
    try:
        return [item for owner in owners for chunk in owner.chunks(size=7) for item in chunk]
    finally:
        for owner in owners:
            owner.release()


def _write(directory: Path, items: list[Item], **options: int) -> SpendJournal:
    journal = SpendJournal.open(directory, STORE, **options)  # type: ignore[arg-type]
    for seq, item in enumerate(items, start=1):
        journal.append(seq, item)
    return journal


def _segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.seg"))


def test_records_of_a_stopped_process_read_back_exactly(tmp_path: Path) -> None:
    reset = SpendReset("alice", T0 + timedelta(days=1))
    budget_reset = BudgetReset("tier", True, T0, T0 + timedelta(days=30))
    items: list[Item] = [*_charges(3), reset, *_charges(2, "bob", 3), budget_reset]
    _write(tmp_path, items).close(clean=False)  # what kill -9 leaves: files, no lock
    assert _dead_items(tmp_path) == items


def test_a_torn_last_record_is_skipped_and_the_rest_replayed(tmp_path: Path) -> None:
    items: list[Item] = list(_charges(3))
    _write(tmp_path, items).close(clean=False)
    [segment] = _segments(tmp_path)
    data = segment.read_bytes()
    segment.write_bytes(data[:-7])  # the crash cut the last write short
    assert _dead_items(tmp_path) == items[:2]


def test_a_record_whose_crc_does_not_match_is_skipped(tmp_path: Path) -> None:
    items: list[Item] = list(_charges(3))
    _write(tmp_path, items).close(clean=False)
    [segment] = _segments(tmp_path)
    lines = segment.read_bytes().split(b"\n")
    assert b",1001," in lines[2]  # lines[0] is the segment's header
    lines[2] = lines[2].replace(b",1001,", b",9001,")
    segment.write_bytes(b"\n".join(lines))
    assert _dead_items(tmp_path) == [items[0], items[2]]


def test_a_live_journal_is_never_claimed_and_a_clean_close_leaves_nothing(tmp_path: Path) -> None:
    live = _write(tmp_path, list(_charges(2)))
    assert claim_dead(tmp_path, STORE) == []
    live.close(clean=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_journal_is_replayed_only_into_its_own_store(tmp_path: Path) -> None:
    _write(tmp_path, list(_charges(2))).close(clean=False)
    assert _dead_items(tmp_path, store_key("postgresql+asyncpg://elsewhere/db")) == []
    assert len(_dead_items(tmp_path)) == 2


async def test_segments_rotate_and_written_ones_are_deleted(tmp_path: Path) -> None:
    journal = _write(tmp_path, list(_charges(40)), rotate_bytes=2_000)
    assert len(_segments(tmp_path)) > 3
    await journal.mark_written(20)
    remaining = _segments(tmp_path)
    assert 1 < len(remaining) < 8
    # Only the records not written yet remain to be replayed (plus the ones sharing their segment).
    await journal.mark_written(40)
    assert len(_segments(tmp_path)) == 1
    journal.close(clean=False)
    assert _dead_items(tmp_path) == []


async def test_replay_skips_what_a_written_mark_covers(tmp_path: Path) -> None:
    items: list[Item] = list(_charges(12))
    journal = _write(tmp_path, items[:10])
    await journal.mark_written(6)
    journal.append(11, items[10])
    journal.append(12, items[11])
    journal.close(clean=False)
    assert _dead_items(tmp_path) == items[6:]


async def test_read_back_crosses_segments_in_order_and_stops_at_the_limit(tmp_path: Path) -> None:
    journal = SpendJournal.open(tmp_path, STORE, rotate_bytes=3_000)
    start = journal.tell()
    items: list[Item] = list(_charges(30))
    for seq, item in enumerate(items, start=1):
        journal.append(seq, item)
        if seq == 10:
            await journal.mark_written(3)  # a written mark between spilled records is not an item
    end = journal.tell()
    first, reached = journal.read(start, end, 12)
    rest, done = journal.read(reached, end, 100)
    assert first + rest == items
    assert done == end
    journal.close(clean=True)


class _GatedSink:
    """A store that refuses every write until opened (PostgreSQL down), then records the order of what it got."""

    def __init__(self) -> None:
        self.is_up = False
        self.written: list[str] = []

    async def write_charges(self, new_customers: list[Customer], items: list[GroupItem]) -> int:
        if not self.is_up:
            raise OSError("connection refused")
        self.written.extend(
            item.request_id if isinstance(item, SpendLog) else f"reset:{item.customer_id}" for item in items
        )
        return sum(isinstance(item, SpendLog) for item in items)

    async def reset_budget(self, reset: BudgetReset) -> None:
        raise AssertionError("not used")


async def test_a_full_queue_spills_to_the_journal_and_drains_in_order_when_the_store_returns(tmp_path: Path) -> None:
    sink = _GatedSink()
    journal = SpendJournal.open(tmp_path, STORE, rotate_bytes=20_000)
    recorder = SpendRecorder(sink, max_delay_s=0.01, max_rows=50, journal=journal, max_queued=100)
    recorder.start()
    logs = _charges(1_000)
    for log in logs[:500]:
        recorder.record(log)
    recorder.reset_customer(SpendReset("alice", T0))
    for log in logs[500:]:
        recorder.record(log)
    await asyncio.sleep(0.05)
    assert recorder.spilled
    assert len(recorder._queue) <= 100  # memory stays bounded while the store is down
    assert recorder.pending == 1_001
    sink.is_up = True
    await asyncio.wait_for(recorder.flush(), timeout=10)
    expected = [log.request_id for log in logs[:500]] + ["reset:alice"] + [log.request_id for log in logs[500:]]
    assert sink.written == expected
    assert not recorder.spilled
    await recorder.aclose()
    assert list(tmp_path.iterdir()) == []  # everything written: the journal is gone


async def test_the_charges_held_only_in_the_journal_and_its_bytes_are_counted(tmp_path: Path) -> None:
    sink = _GatedSink()
    journal = SpendJournal.open(tmp_path, STORE)
    recorder = SpendRecorder(sink, max_delay_s=0.01, max_rows=50, journal=journal, max_queued=100)
    recorder.start()
    assert recorder.journal_only == 0
    for log in _charges(250):
        recorder.record(log)
    await asyncio.sleep(0.05)
    assert recorder.pending == 250
    assert recorder.journal_only == 150  # the queue holds 100; the rest is on disk only
    assert recorder.journal_bytes == sum(path.stat().st_size for path in _segments(tmp_path))
    sink.is_up = True
    await asyncio.wait_for(recorder.flush(), timeout=10)
    assert recorder.journal_only == 0
    await recorder.aclose()
    assert recorder.journal_bytes == 0  # closed clean: the files are gone


async def test_replay_into_a_real_store_is_idempotent(
    tmp_path: Path,
    migrated_database_url: str,
) -> None:
    db = create_engine(migrated_database_url)
    sink = StoreSink(session_factory(db), SystemClock())
    try:
        before = _charges(3, "alice")
        after = [replace(log, request_id=f"late-{i}") for i, log in enumerate(_charges(2, "alice"))]
        reset = SpendReset("alice", T0 + timedelta(days=30))
        journal_dir = tmp_path / "journal"
        _write(journal_dir, [*before, reset, *after]).close(clean=False)
        copy = tmp_path / "copy"
        shutil.copytree(journal_dir, copy)

        report = await replay_dead(journal_dir, STORE, sink)
        assert (report.journals, report.charges, report.resets) == (1, 5, 1)
        assert list(journal_dir.glob("*.seg")) == []
        # The same journal again (a replay that crashed before deleting it): nothing changes.
        shutil.rmtree(journal_dir)
        shutil.copytree(copy, journal_dir)
        await replay_dead(journal_dir, STORE, sink)

        async with db.connect() as conn:
            spend = (await conn.execute(text("SELECT spend FROM customers WHERE user_id = 'alice'"))).scalar_one()
            logs = (await conn.execute(text("SELECT count(*) FROM spend_logs"))).scalar_one()
        assert logs == 5
        assert spend == sum(log.spend for log in after)  # reset once, between the two groups
    finally:
        await db.dispose()


async def test_a_shutdown_that_cannot_write_keeps_the_journal_for_the_next_start(tmp_path: Path) -> None:
    sink = _GatedSink()  # the store stays down through the shutdown
    recorder = SpendRecorder(sink, max_delay_s=0.01, journal=SpendJournal.open(tmp_path, STORE))
    recorder.start()
    logs = _charges(5)
    for log in logs:
        recorder.record(log)
    await recorder.aclose(timeout_s=0.2)
    assert _dead_items(tmp_path) == logs


def _open_fds() -> int:
    return len(list(Path("/proc/self/fd").iterdir()))


async def test_group_fsync_syncs_rotated_segments_and_leaks_no_descriptor(tmp_path: Path) -> None:
    before = _open_fds()
    journal = SpendJournal.open(tmp_path, STORE, fsync="group", rotate_bytes=2_000)
    items: list[Item] = list(_charges(30))
    for seq, item in enumerate(items, start=1):
        journal.append(seq, item)
        if seq % 10 == 0:
            await journal.sync()  # rotated descriptors are synced, then closed
    await journal.sync()
    journal.close(clean=False)
    assert _open_fds() == before
    assert _dead_items(tmp_path) == items


def test_another_live_process_journal_is_left_alone_until_it_is_killed(tmp_path: Path) -> None:
    holder = f"""
import sys, time
sys.path.insert(0, {str(Path(__file__).parents[2])!r})  # the checkout, for tests.support
from pathlib import Path
from haimaker.accounting.dead_letters import DeadLetterBox
from haimaker.accounting.journal import SpendJournal
from tests.support.factories import make_log
journal = SpendJournal.open(Path({str(tmp_path)!r}), {STORE!r})
journal.append(1, make_log(request_id="from-the-other-process"))
print("ready", flush=True)
time.sleep(60)
"""
    with subprocess.Popen([sys.executable, "-c", holder], stdout=subprocess.PIPE, text=True) as other:
        try:
            assert other.stdout is not None and other.stdout.readline() == "ready\n"
            assert claim_dead(tmp_path, STORE) == []  # a live worker sharing the directory
        finally:
            other.kill()  # kill -9
    [item] = _dead_items(tmp_path)
    assert isinstance(item, SpendLog) and item.request_id == "from-the-other-process"


@pytest.mark.postgres
async def test_a_replayed_charge_the_store_cannot_hold_is_a_dead_letter_and_the_rest_are_written(
    tmp_path: Path,
) -> None:
    url = await make_database_url("postgres", tmp_path)
    await upgrade(url)
    db = create_engine(url)
    sink = StoreSink(session_factory(db), SystemClock())
    try:
        good = _charges(2)
        poison = make_log(request_id="poison", end_user="pg-nul\u0000x")  # PostgreSQL text cannot hold a NUL
        _write(tmp_path / "journal", [good[0], poison, good[1]]).close(clean=False)
        dead_letters = DeadLetterBox(path=tmp_path / "dead-letters.jsonl")
        report = await replay_dead(tmp_path / "journal", STORE, sink, dead_letters=dead_letters)
        assert report.charges == 3
        assert dead_letters.total == 1 and "poison" in (tmp_path / "dead-letters.jsonl").read_text()
        async with db.connect() as conn:
            stored = set((await conn.execute(text("SELECT request_id FROM spend_logs"))).scalars())
        assert stored == {log.request_id for log in good}
        assert list((tmp_path / "journal").glob("*.seg")) == []
    finally:
        await db.dispose()
        await drop_database(url)


async def test_a_charge_json_cannot_carry_is_kept_in_memory_and_never_refuses_the_request(tmp_path: Path) -> None:
    sink = _GatedSink()
    sink.is_up = True
    recorder = SpendRecorder(sink, max_delay_s=0.01, journal=SpendJournal.open(tmp_path, STORE))
    recorder.start()
    recorder.record(make_log(request_id="huge", spend=2**70))  # orjson refuses integers beyond 64 bits
    recorder.record(make_log(request_id="normal"))
    await asyncio.wait_for(recorder.flush(), timeout=5)
    assert sink.written == ["huge", "normal"]
    await recorder.aclose()


def test_a_starting_owners_hidden_lock_file_is_not_taken_for_dead(tmp_path: Path) -> None:
    """Two processes starting together: one has created its hidden lock file and not yet locked it when the other's
    replay looks. The young file is left alone (deleting it failed the first one's start); an old one goes."""
    young = tmp_path / ".0123456789abcdef.tmp"
    young.write_bytes(b"")
    old = tmp_path / ".fedcba9876543210.tmp"
    old.write_bytes(b"")
    an_hour_ago = datetime.now(UTC).timestamp() - 3600
    os.utime(old, (an_hour_ago, an_hour_ago))

    assert claim_dead(tmp_path, "store") == []

    assert young.exists()
    assert not old.exists()
