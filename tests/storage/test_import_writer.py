"""The import writer on both engines: counts, idempotency, what it keeps, and all-or-nothing.

Guards a rerun that rewrites (or duplicates) rows it already wrote, an import that overwrites what only haimaker
knows (a key bound to a customer), and a failed import that leaves half its rows behind.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from haimaker.storage import BudgetRepository, CustomerRepository
from haimaker.storage.import_writer import WriteCounts, write_import
from haimaker.storage.records import Budget, Customer, VirtualKey
from haimaker.storage.tables import VirtualKeyRow

NOW = datetime(2026, 5, 1, 12, tzinfo=UTC)
LATER = datetime(2026, 5, 2, 12, tzinfo=UTC)
TOKEN = "ab" * 32


def _records(spend: int = 5) -> tuple[list[Budget], list[Customer], list[VirtualKey]]:
    budgets = [Budget(budget_id="tier", max_budget=10, created_at=NOW, updated_at=NOW)]
    customers = [Customer(user_id="alice", spend=spend, budget_id="tier"), Customer(user_id="bob")]
    keys = [VirtualKey(token=TOKEN, key_alias="app", spend=spend, models=("gpt",), metadata={"a": 1})]
    return budgets, customers, keys


async def _keys(sessions: async_sessionmaker[AsyncSession]) -> dict[str, VirtualKey]:
    async with sessions() as session:
        return {row.token: row.to_record() for row in await session.scalars(select(VirtualKeyRow))}


async def test_a_second_write_of_the_same_records_changes_nothing(sessions: async_sessionmaker[AsyncSession]) -> None:
    budgets, customers, keys = _records()

    first = await write_import(sessions, budgets=budgets, customers=customers, keys=keys, now=NOW)
    stored = await _keys(sessions)
    second = await write_import(sessions, budgets=budgets, customers=customers, keys=keys, now=LATER)

    assert (first.budgets, first.customers, first.keys) == (WriteCounts(1), WriteCounts(2), WriteCounts(1))
    assert (second.budgets, second.customers, second.keys) == (
        WriteCounts(unchanged=1),
        WriteCounts(unchanged=2),
        WriteCounts(unchanged=1),
    )
    assert second.is_unchanged and not first.is_unchanged
    assert await _keys(sessions) == stored
    # A timestamp the source lacks is the first write's, not the rerun's.
    assert stored[TOKEN].created_at == NOW and stored[TOKEN].updated_at == NOW
    alice = await CustomerRepository(sessions).get("alice")
    assert alice is not None and alice.created_at == NOW


async def test_a_changed_record_is_updated_and_haimaker_only_fields_are_kept(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    budgets, customers, keys = _records()
    await write_import(sessions, budgets=budgets, customers=customers, keys=keys, now=NOW)
    async with sessions.begin() as session:
        row = await session.get(VirtualKeyRow, TOKEN)
        assert row is not None
        row.customer_id = "alice"

    budgets, customers, keys = _records(spend=9)
    result = await write_import(sessions, budgets=budgets, customers=customers, keys=keys, now=LATER)

    assert result.customers == WriteCounts(updated=1, unchanged=1) and result.keys == WriteCounts(updated=1)
    key = (await _keys(sessions))[TOKEN]
    assert key.spend == 9 and key.customer_id == "alice" and key.created_at == NOW
    alice = await CustomerRepository(sessions).get("alice")
    assert alice is not None and alice.spend == 9


async def test_a_dry_run_counts_and_writes_nothing(sessions: async_sessionmaker[AsyncSession]) -> None:
    budgets, customers, keys = _records()

    result = await write_import(sessions, budgets=budgets, customers=customers, keys=keys, now=NOW, dry_run=True)

    assert result.customers == WriteCounts(inserted=2)
    assert await BudgetRepository(sessions).list_all() == [] and await _keys(sessions) == {}


async def test_a_failing_import_leaves_the_store_as_it_was(sessions: async_sessionmaker[AsyncSession]) -> None:
    budgets, _, keys = _records()
    orphan = [Customer(user_id="carol", budget_id="no-such-budget")]  # the foreign key refuses it

    with pytest.raises(IntegrityError):
        await write_import(sessions, budgets=budgets, customers=orphan, keys=keys, now=NOW)

    assert await BudgetRepository(sessions).list_all() == [] and await _keys(sessions) == {}
