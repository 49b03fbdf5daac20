"""A ledger that isolates poison: one charge the store cannot hold never stops the others (issue 10, finding 1).

A real recorder on a real store (SQLite and PostgreSQL), fed one bad charge among many good ones from several
customers: the good ones are written promptly, the bad one is filed as a dead letter with its error, and closing
returns at once. The triggers are the ones found in review: a customer id with a NUL (PostgreSQL refuses it in
text) and token counts past 64 bits (no store holds them).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import text

from haimaker.accounting.dead_letters import DEAD_LETTER_FILENAME, DeadLetterBox, encode_item
from haimaker.accounting.journal import SpendJournal
from haimaker.accounting.recorder import GroupItem, SpendRecorder
from haimaker.accounting.store_sink import StoreSink
from haimaker.clock import SystemClock
from haimaker.state.counters import SpendReset
from haimaker.storage.dead_letters_repo import DeadLetterRepository
from haimaker.storage.engine import create_engine, session_factory
from haimaker.storage.records import Customer, SpendLog
from tests.support.databases import DatabaseKind
from tests.support.factories import make_log

NUL_CUSTOMER = "pg-nul\u0000x"


@dataclass
class Ledger:
    recorder: SpendRecorder
    sink: StoreSink
    letters: DeadLetterRepository
    box: DeadLetterBox


@pytest.fixture
async def ledger(migrated_database_url: str, tmp_path: Path) -> AsyncIterator[Ledger]:
    engine = create_engine(migrated_database_url)
    sessions = session_factory(engine)
    sink = StoreSink(sessions, SystemClock())
    letters = DeadLetterRepository(sessions)
    box = DeadLetterBox(letters, tmp_path / DEAD_LETTER_FILENAME)
    recorder = SpendRecorder(sink, max_delay_s=0.01, max_rows=500, dead_letters=box)
    recorder.start()
    try:
        yield Ledger(recorder, sink, letters, box)
    finally:
        await recorder.aclose(timeout_s=1)
        await engine.dispose()


def _poisons(kind: DatabaseKind) -> list[SpendLog]:
    past_64_bits = [make_log(end_user="c1", prompt_tokens=2**64), make_log(end_user="c2", total_tokens=10**30)]
    if kind == "sqlite":
        return past_64_bits  # SQLite stores 2**63 as a REAL: not an error there
    return [*past_64_bits, make_log(end_user=NUL_CUSTOMER), make_log(end_user="c3", prompt_tokens=2**63)]


async def _stored_ids(sink: StoreSink) -> set[str]:
    return {log.request_id for log in await sink.spend.list_logs(limit=100_000)}


async def _customer_spend(sink: StoreSink) -> dict[str, int]:
    return {c.user_id: c.spend for c in await sink.customers.list_all()}


async def test_one_bad_charge_among_many_never_stops_the_others(
    ledger: Ledger,
    database_kind: DatabaseKind,
) -> None:
    for poison in _poisons(database_kind):
        good = [make_log(end_user=f"c{index % 5}", spend=1_000) for index in range(60)]
        for log in good[:30]:
            ledger.recorder.record(log)
        ledger.recorder.record(poison)
        for log in good[30:]:
            ledger.recorder.record(log)
        # Today's recorder retried the whole group forever: flush never returned.
        await asyncio.wait_for(ledger.recorder.flush(), timeout=5)
        stored = await _stored_ids(ledger.sink)
        assert {log.request_id for log in good} <= stored
        assert poison.request_id not in stored
    assert ledger.recorder.pending == 0
    spend = await _customer_spend(ledger.sink)
    assert sum(spend.get(f"c{index}", 0) for index in range(5)) == 60 * 1_000 * len(_poisons(database_kind))


async def test_the_bad_charge_is_filed_as_a_dead_letter_with_its_error(
    ledger: Ledger,
    database_kind: DatabaseKind,
) -> None:
    poisons = _poisons(database_kind)
    for index, poison in enumerate(poisons):
        ledger.recorder.record(make_log(end_user=f"ok{index}"))
        ledger.recorder.record(poison)
    await asyncio.wait_for(ledger.recorder.flush(), timeout=5)
    letters = await ledger.letters.list()
    assert len(letters) == len(poisons) == ledger.box.in_table == ledger.box.total
    by_request = {json.loads(letter.payload)["request_id"]: letter for letter in letters}
    assert set(by_request) == {poison.request_id for poison in poisons}
    assert all(letter.kind == "charge" and letter.error for letter in letters)
    assert "64-bit" in by_request[poisons[0].request_id].error
    if database_kind == "postgres":
        nul = next(p for p in poisons if p.end_user == NUL_CUSTOMER)
        assert json.loads(by_request[nul.request_id].payload)["end_user"] == NUL_CUSTOMER  # kept, escaped
        assert "Unicode" in by_request[nul.request_id].error
    # Filed once, even when filed again (a replay after a restart).
    await ledger.box.put(poisons[0], ValueError("again"))
    assert await ledger.letters.count() == len(poisons)


async def test_close_returns_at_once_with_a_bad_charge_queued(
    ledger: Ledger,
    database_kind: DatabaseKind,
) -> None:
    for index in range(100):
        ledger.recorder.record(make_log(end_user=f"c{index % 7}"))
    ledger.recorder.record(_poisons(database_kind)[0])
    started = time.monotonic()
    await ledger.recorder.aclose(timeout_s=30)
    assert time.monotonic() - started < 5  # today: the 30 s drain timeout, then every charge lost
    assert ledger.recorder.pending == 0
    assert len(await _stored_ids(ledger.sink)) == 100


@pytest.mark.postgres
@pytest.mark.parametrize("database_kind", ["postgres"], indirect=True)
async def test_a_reset_the_store_refuses_is_filed_and_the_charges_after_it_written(ledger: Ledger) -> None:
    ledger.recorder.reset_customer(SpendReset(NUL_CUSTOMER, datetime(2027, 1, 1, tzinfo=UTC)))
    after = make_log(end_user="bob")
    ledger.recorder.record(after)
    await asyncio.wait_for(ledger.recorder.flush(), timeout=5)
    assert after.request_id in await _stored_ids(ledger.sink)
    [letter] = await ledger.letters.list()
    assert letter.kind == "customer_reset"
    assert json.loads(letter.payload)["customer_id"] == NUL_CUSTOMER


async def test_a_dead_letter_goes_to_the_file_when_the_table_cannot_take_it(
    migrated_database_url: str,
    tmp_path: Path,
) -> None:
    engine = create_engine(migrated_database_url)
    try:
        sessions = session_factory(engine)
        async with engine.begin() as connection:
            await connection.execute(text("DROP TABLE dead_letters"))
        box = DeadLetterBox(DeadLetterRepository(sessions), tmp_path / DEAD_LETTER_FILENAME)
        recorder = SpendRecorder(StoreSink(sessions, SystemClock()), max_delay_s=0.01, dead_letters=box)
        recorder.start()
        poison = make_log(end_user="c1", prompt_tokens=2**64)
        recorder.record(poison)
        recorder.record(make_log(end_user="c2"))
        await asyncio.wait_for(recorder.flush(), timeout=5)
        await recorder.aclose()
    finally:
        await engine.dispose()
    [line] = (tmp_path / DEAD_LETTER_FILENAME).read_text().splitlines()
    filed = json.loads(line)
    assert filed["kind"] == "charge" and "64-bit" in filed["error"]
    assert filed["payload"] == encode_item(poison)
    assert (box.in_table, box.in_file) == (0, 1)
    assert DeadLetterBox(None, tmp_path / DEAD_LETTER_FILENAME).in_file == 1  # counted again at the next start


def test_a_dead_letter_payload_is_ascii_whatever_the_values() -> None:
    log = make_log(end_user="nul\u0000 \ud800 naïve", prompt_tokens=2**70)
    payload = encode_item(log)
    assert payload.isascii() and "\x00" not in payload
    decoded = json.loads(payload)
    assert decoded["end_user"] == log.end_user and decoded["prompt_tokens"] == 2**70


class FlakySink(StoreSink):
    """A real store whose next writes fail as an unreachable store does (outside the machine's control)."""

    def __init__(self, sink: StoreSink, failures: int) -> None:
        super().__init__(sink.sessions, SystemClock())
        self.failures = failures

    async def write_charges(self, new_customers: list[Customer], items: list[GroupItem]) -> int:
        if self.failures:
            self.failures -= 1
            raise ConnectionRefusedError("connection refused")
        return await super().write_charges(new_customers, items)


async def test_store_trouble_is_retried_whole_and_never_dead_lettered(ledger: Ledger, tmp_path: Path) -> None:
    sink = FlakySink(ledger.sink, failures=3)
    box = DeadLetterBox(ledger.letters, tmp_path / "other-dead-letters.jsonl")
    recorder = SpendRecorder(sink, max_delay_s=0.01, dead_letters=box)
    recorder.start()
    logs = [make_log(end_user=f"c{index % 3}") for index in range(20)]
    for log in logs:
        recorder.record(log)
    await asyncio.wait_for(recorder.flush(), timeout=5)
    await recorder.aclose()
    assert {log.request_id for log in logs} <= await _stored_ids(ledger.sink)
    assert box.total == 0 and await ledger.letters.count() == 0


async def test_nothing_is_written_while_the_store_is_lost(ledger: Ledger, tmp_path: Path) -> None:
    lost = True
    recorder = SpendRecorder(ledger.sink, max_delay_s=0.01, is_store_lost=lambda: lost)
    recorder.start()
    log = make_log(end_user="held")
    recorder.record(log)
    await asyncio.sleep(0.3)
    assert log.request_id not in await _stored_ids(ledger.sink)
    assert recorder.failing_for_s > 0 and recorder.last_error is not None and "lost" in recorder.last_error
    lost = False
    await asyncio.wait_for(recorder.flush(), timeout=5)
    assert log.request_id in await _stored_ids(ledger.sink)
    assert recorder.failing_for_s == 0
    await recorder.aclose()


async def test_a_charge_the_journal_cannot_encode_is_still_isolated(ledger: Ledger, tmp_path: Path) -> None:
    # With the journal on, 2**64 tokens failed to encode inside record(): the exception reached the request's
    # `finally`, the item was counted but never queued, and flush() (admin reads, shutdown) waited forever.
    journal = SpendJournal.open(tmp_path / "journal", "store")
    box = DeadLetterBox(ledger.letters, tmp_path / "journal-dead-letters.jsonl")
    recorder = SpendRecorder(ledger.sink, max_delay_s=0.01, journal=journal, dead_letters=box)
    recorder.start()
    good = [make_log(end_user=f"j{index % 3}") for index in range(10)]
    poison = make_log(end_user="j9", prompt_tokens=2**64)
    for log in good[:5]:
        recorder.record(log)
    recorder.record(poison)
    for log in good[5:]:
        recorder.record(log)
    await asyncio.wait_for(recorder.flush(), timeout=5)
    await recorder.aclose()
    assert {log.request_id for log in good} <= await _stored_ids(ledger.sink)
    assert box.in_table == 1 and recorder.pending == 0
