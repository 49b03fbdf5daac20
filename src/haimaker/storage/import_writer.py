"""Writing an import (budgets, customers, virtual keys taken from another proxy's database) into the store.

Invariants:
- One transaction for the whole import, in foreign-key order (budgets, then customers, then keys): a failure leaves
  the store as it was, and a dry run is the same transaction rolled back.
- Idempotent: each row is compared with the stored one first; only missing rows are inserted and only rows that
  differ are updated, so a second run of the same import writes nothing and counts every row as unchanged.
- The source wins for the fields it carries; fields that only haimaker has are never overwritten on a row that
  exists (a key's `customer_id`), and a timestamp the source lacks is `now` on insert and kept on an existing row
  (a customer's `created_at`). Rows the import does not name are left alone.
- Reads before writes on SQLite take the write lock at BEGIN (`WRITE_TRANSACTION`), so a concurrent writer waits
  instead of invalidating the comparison.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import Table, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from haimaker.storage._upsert import chunked, dialect_insert
from haimaker.storage.engine import WRITE_TRANSACTION
from haimaker.storage.records import Budget, Customer, VirtualKey
from haimaker.storage.tables import (
    budget_values,
    budgets_table,
    customer_values,
    customers_table,
    virtual_key_values,
    virtual_keys_table,
)

# Columns that only haimaker sets: kept as stored when the row exists (the import has no value for them).
_KEPT_ON_EXISTING: Final[dict[str, frozenset[str]]] = {
    "budgets": frozenset(),
    "customers": frozenset(),
    "virtual_keys": frozenset({"customer_id"}),
}
# Timestamps the source may lack: `now` on a new row, the stored value on an existing one (so a rerun is a no-op).
_FILLED_TIMESTAMPS: Final = frozenset({"created_at", "updated_at"})


@dataclass(frozen=True, slots=True)
class WriteCounts:
    """What happened to the rows of one kind: inserted, updated (they differed), or already identical."""

    inserted: int = 0
    updated: int = 0
    unchanged: int = 0

    @property
    def is_unchanged(self) -> bool:
        return self.inserted == 0 and self.updated == 0


@dataclass(frozen=True, slots=True)
class ImportWriteResult:
    """Counts per kind of row."""

    budgets: WriteCounts
    customers: WriteCounts
    keys: WriteCounts

    @property
    def is_unchanged(self) -> bool:
        return self.budgets.is_unchanged and self.customers.is_unchanged and self.keys.is_unchanged


async def write_import(
    sessions: async_sessionmaker[AsyncSession],
    *,
    budgets: Sequence[Budget],
    customers: Sequence[Customer],
    keys: Sequence[VirtualKey],
    now: datetime,
    dry_run: bool = False,
) -> ImportWriteResult:
    """Upsert the records in one transaction (rolled back when `dry_run`); returns what changed.

    Ids are unique within each sequence; a missing `created_at` / `updated_at` becomes `now` on a new row.
    """
    async with sessions() as session:
        transaction = await session.begin()
        try:
            await session.connection(execution_options=WRITE_TRANSACTION)
            result = ImportWriteResult(
                budgets=await _upsert(session, budgets_table, "budget_id", [budget_values(b) for b in budgets], now),
                customers=await _upsert(
                    session, customers_table, "user_id", [customer_values(c) for c in customers], now
                ),
                keys=await _upsert(session, virtual_keys_table, "token", [virtual_key_values(k) for k in keys], now),
            )
        except BaseException:
            await transaction.rollback()
            raise
        if dry_run:
            await transaction.rollback()
        else:
            await transaction.commit()
        return result


async def _upsert(
    session: AsyncSession, table: Table, id_column: str, rows: list[dict[str, Any]], now: datetime
) -> WriteCounts:
    stored = await _stored_rows(session, table, id_column, [row[id_column] for row in rows])
    kept = _KEPT_ON_EXISTING[table.name]
    inserts: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    for row in rows:
        current = stored.get(row[id_column])
        if current is None:
            inserts.append(
                {name: now if value is None and name in _FILLED_TIMESTAMPS else value for name, value in row.items()}
            )
            continue
        wanted = {name: (current[name] if _is_kept(name, value, kept) else value) for name, value in row.items()}
        if not _is_same_row(wanted, current):
            updates.append(wanted)
    for chunk in chunked(inserts):
        await session.execute(dialect_insert(session, table).values(list(chunk)))
    for chunk in chunked(updates):
        insert = dialect_insert(session, table).values(list(chunk))
        changed = {name: insert.excluded[name] for name in chunk[0] if name != id_column}
        await session.execute(insert.on_conflict_do_update(index_elements=[id_column], set_=changed))
    return WriteCounts(inserted=len(inserts), updated=len(updates), unchanged=len(rows) - len(inserts) - len(updates))


async def _stored_rows(
    session: AsyncSession, table: Table, id_column: str, ids: Sequence[str]
) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    key = table.c[id_column]
    for chunk in chunked(ids):
        for row in (await session.execute(select(table).where(key.in_(chunk)))).mappings():
            found[row[id_column]] = dict(row)
    return found


def _is_kept(name: str, value: Any, kept: frozenset[str]) -> bool:
    return name in kept or (value is None and name in _FILLED_TIMESTAMPS)


def _is_same_row(wanted: dict[str, Any], current: dict[str, Any]) -> bool:
    # Column values on both sides: JSON columns as lists and dicts, datetimes timezone-aware UTC (`UTCDateTime`).
    return all(value == current.get(name) for name, value in wanted.items())
