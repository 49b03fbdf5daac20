"""Customers (end users) in the durable store.

Invariants:
- Returns `Customer` records, never ORM rows; every method is one transaction, so multi-row writes
  (`delete_many`, `set_blocked`, `reset_spend`) are all-or-nothing.
- `spend` is written here only by `reset_spend` and explicit updates; charges add to it in `SpendRepository`.
- Listing orders by `user_id` byte-wise on both engines (see `tables.py`) and pages by key (`after` / `before`), so a
  page costs the same at any depth; search is an id prefix, served by the primary-key index like the pages. Nothing
  here counts or reads every customer except `list_all` and an unbounded `count`.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import fields
from datetime import datetime
from typing import Any, Final

from sqlalchemy import ColumnElement, and_, delete, func, or_, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from haimaker.clock import Clock, SystemClock
from haimaker.errors import DuplicateError, NotFoundError
from haimaker.storage._upsert import chunked, dialect_insert
from haimaker.storage.records import Customer
from haimaker.storage.tables import CustomerRow, customer_values

UPDATABLE_CUSTOMER_FIELDS: Final = frozenset(f.name for f in fields(Customer)) - {"user_id"}
_SURROGATES_START: Final = 0xD800
_SURROGATES_END: Final = 0xE000


class CustomerRepository:
    """Reads and writes `customers` rows as `Customer` records."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], *, clock: Clock | None = None) -> None:
        self._sessions = sessions
        self._clock: Clock = clock or SystemClock()

    async def get(self, user_id: str) -> Customer | None:
        async with self._sessions() as session:
            row = await session.get(CustomerRow, user_id)
            return row.to_record() if row is not None else None

    async def get_many(self, user_ids: Sequence[str]) -> dict[str, Customer]:
        """The customers that exist among `user_ids`, by id, in one query per 500 ids (the catalog's cache misses)."""
        found: dict[str, Customer] = {}
        async with self._sessions() as session:
            for chunk in chunked(sorted(set(user_ids))):
                for row in await session.scalars(select(CustomerRow).where(CustomerRow.user_id.in_(chunk))):
                    found[row.user_id] = row.to_record()
        return found

    async def spend_of_many(self, user_ids: Sequence[str]) -> dict[str, tuple[int, datetime | None]]:
        """(spend, spend_reset_at) of each customer that exists, in one query per 500 ids."""
        found: dict[str, tuple[int, datetime | None]] = {}
        row = CustomerRow
        async with self._sessions() as session:
            for chunk in chunked(sorted(set(user_ids))):
                statement = select(row.user_id, row.spend, row.spend_reset_at).where(row.user_id.in_(chunk))
                for user_id, spend, reset_at in await session.execute(statement):
                    found[user_id] = (int(spend), reset_at)
        return found

    async def list_all(self) -> list[Customer]:
        """Every customer, ordered by id (loads the in-memory catalog at startup)."""
        async with self._sessions() as session:
            rows = await session.scalars(select(CustomerRow).order_by(CustomerRow.user_id))
            return [row.to_record() for row in rows]

    async def list_page(
        self,
        limit: int,
        *,
        after: str | None = None,
        before: str | None = None,
        prefix: str | None = None,
        offset: int = 0,
    ) -> list[Customer]:
        """Up to `limit` customers in id order: the first ones after `after`, or with `before` the last ones before
        it (still returned in ascending order); `prefix` keeps the ids that start with it.

        One range scan of the primary-key index, never a sort: the cost follows `limit + offset`, not the number of
        customers. `offset` skips rows of that scan, so callers bound it (`services.customers.MAX_OFFSET`).
        """
        if limit < 1 or offset < 0:
            raise ValueError("limit starts at 1 and offset at 0")
        if after is not None and before is not None:
            raise ValueError("give after or before, not both")
        user_id = CustomerRow.user_id
        conditions = _prefix_range(prefix)
        if after is not None:
            conditions.append(user_id > after)
        if before is not None:
            conditions.append(user_id < before)
        order = user_id.desc() if before is not None else user_id.asc()
        statement = select(CustomerRow).where(*conditions).order_by(order).offset(offset or None).limit(limit)
        async with self._sessions() as session:
            customers = [row.to_record() for row in await session.scalars(statement)]
        return customers[::-1] if before is not None else customers

    async def count(self, prefix: str | None = None, *, up_to: int | None = None) -> int:
        """Customers whose id starts with `prefix` (all when None). With `up_to`, counting stops there: a bounded
        index range scan, whereas an unbounded count reads every matching index entry."""
        matching = select(CustomerRow.user_id).where(*_prefix_range(prefix))
        if up_to is not None:
            matching = matching.limit(up_to)
        statement = select(func.count()).select_from(matching.subquery())
        async with self._sessions() as session:
            return int(await session.scalar(statement) or 0)

    async def estimated_count(self) -> int | None:
        """The store's own idea of the number of customers, read without counting them (None: it has none yet).

        PostgreSQL: the planner's `pg_class.reltuples` (kept by ANALYZE and autovacuum; -1 before the first one).
        SQLite: the largest rowid, an upper bound that drifts above the count as customers are deleted.
        """
        async with self._sessions() as session:
            if session.get_bind().dialect.name == "postgresql":
                statement = text("SELECT reltuples FROM pg_class WHERE oid = 'customers'::regclass")
            else:
                statement = text("SELECT max(rowid) FROM customers")
            value = await session.scalar(statement)
        return None if value is None or value < 0 else int(value)

    async def count_on_budget(self, budget_id: str, *, up_to: int) -> int:
        """Customers linked to `budget_id`, counted up to `up_to` (a bounded scan of `ix_customers_budget_id`)."""
        linked = select(CustomerRow.user_id).where(CustomerRow.budget_id == budget_id).limit(up_to)
        async with self._sessions() as session:
            return int(await session.scalar(select(func.count()).select_from(linked.subquery())) or 0)

    async def create(self, customer: Customer) -> Customer:
        """Insert a customer; `created_at` defaults to now.

        Raises:
            DuplicateError: a customer with this id exists (including one created by traffic).
            NotFoundError: `budget_id` names no budget.
        """
        values = customer_values(customer)
        values["created_at"] = customer.created_at or self._clock.now()
        async with self._sessions.begin() as session:
            insert = dialect_insert(session, CustomerRow).values(**values)
            statement = insert.on_conflict_do_nothing(index_elements=["user_id"]).returning(CustomerRow)
            row = await _first_or_unknown_budget(session, statement, customer.budget_id)
            if row is None:
                raise DuplicateError(
                    f"Customer already exists, passed user_id={customer.user_id}. Please pass a new user_id.",
                    param="user_id",
                )
            return row.to_record()

    async def update(self, user_id: str, changes: Mapping[str, Any]) -> Customer | None:
        """Write the given fields (a None value clears the field). Returns None when the customer does not exist.

        Raises:
            NotFoundError: `changes["budget_id"]` names no budget.
        """
        unknown = set(changes) - UPDATABLE_CUSTOMER_FIELDS
        if unknown:
            raise ValueError(f"not updatable customer fields: {', '.join(sorted(unknown))}")
        if not changes:
            return await self.get(user_id)
        values = dict(changes)
        if "models" in values:
            values["models"] = list(values["models"] or ())
        statement = update(CustomerRow).where(CustomerRow.user_id == user_id).values(**values).returning(CustomerRow)
        async with self._sessions.begin() as session:
            row = await _first_or_unknown_budget(session, statement, values.get("budget_id"))
            return row.to_record() if row is not None else None

    async def delete_many(self, user_ids: Iterable[str]) -> int:
        """Delete customers, all or none. Their spend logs, daily rows and budgets stay.

        Raises:
            NotFoundError: some ids do not exist; nothing is deleted.
        """
        wanted = list(dict.fromkeys(user_ids))
        if not wanted:
            return 0
        async with self._sessions.begin() as session:
            deleted: set[str] = set()
            for chunk in chunked(wanted):
                statement = delete(CustomerRow).where(CustomerRow.user_id.in_(chunk)).returning(CustomerRow.user_id)
                deleted.update(await session.scalars(statement))
            missing = [user_id for user_id in wanted if user_id not in deleted]
            if missing:
                # Raising inside `begin()` rolls the deletes back.
                raise NotFoundError(f"End User Id(s)={', '.join(missing)} do not exist in db", param="user_ids")
            return len(deleted)

    async def set_blocked(self, user_ids: Iterable[str], blocked: bool) -> list[Customer]:
        """Set `blocked` on each id, creating the customers that do not exist. Returns them in the order given."""
        wanted = list(dict.fromkeys(user_ids))
        if not wanted:
            return []
        now = self._clock.now()
        result: dict[str, Customer] = {}
        async with self._sessions.begin() as session:
            # Sorted, so that concurrent writers lock rows in the same order.
            for chunk in chunked(sorted(wanted)):
                insert = dialect_insert(session, CustomerRow).values(
                    [{"user_id": user_id, "blocked": blocked, "created_at": now} for user_id in chunk]
                )
                statement = insert.on_conflict_do_update(
                    index_elements=["user_id"], set_={"blocked": insert.excluded.blocked}
                ).returning(CustomerRow)
                rows = await session.scalars(statement, execution_options={"populate_existing": True})
                result.update((row.user_id, row.to_record()) for row in rows)
        return [result[user_id] for user_id in wanted]

    async def reset_spend(
        self,
        user_ids: Sequence[str] | None = None,
        *,
        budget_id: str | None = None,
        include_unbudgeted: bool = False,
        next_reset_at: datetime | None,
        due_at: datetime | None = None,
        ending_before: datetime | None = None,
    ) -> int:
        """Zero `spend` and set `spend_reset_at` on the selected customers; returns how many were reset.

        Selected: the `user_ids`, plus every customer linked to `budget_id`, plus (with `include_unbudgeted`) every
        customer without a budget — those ride the default budget. With `due_at`, only those whose period has ended
        (`spend_reset_at` unset or `<= due_at`), so a reset repeated by another instance or a retry is a no-op.
        With `ending_before`, only those whose stored period ends before it (`spend_reset_at` unset or earlier): a
        customer reset to period P, written again (a replayed journal), finds its period already P and is left alone.
        """
        if user_ids is None and budget_id is None and not include_unbudgeted:
            raise ValueError("reset_spend needs user_ids, budget_id or include_unbudgeted")
        selectors: list[ColumnElement[bool]] = []
        if budget_id is not None:
            selectors.append(CustomerRow.budget_id == budget_id)
        if include_unbudgeted:
            selectors.append(CustomerRow.budget_id.is_(None))
        if user_ids:
            selectors.extend(CustomerRow.user_id.in_(chunk) for chunk in chunked(sorted(set(user_ids))))
        if due_at is not None:
            is_due = or_(CustomerRow.spend_reset_at.is_(None), CustomerRow.spend_reset_at <= due_at)
            selectors = [and_(selector, is_due) for selector in selectors]
        if ending_before is not None:
            is_older = or_(CustomerRow.spend_reset_at.is_(None), CustomerRow.spend_reset_at < ending_before)
            selectors = [and_(selector, is_older) for selector in selectors]
        reset: set[str] = set()
        async with self._sessions.begin() as session:
            for selector in selectors:
                statement = (
                    update(CustomerRow)
                    .where(selector)
                    .values(spend=0, spend_reset_at=next_reset_at)
                    .returning(CustomerRow.user_id)
                    .execution_options(synchronize_session=False)
                )
                reset.update(await session.scalars(statement))
        return len(reset)

    async def due_for_reset(
        self, *, budget_id: str | None, due_at: datetime, after: str | None, scan_rows: int
    ) -> tuple[list[str], str | None]:
        """One bounded step of a tier's reset (`services/resets.py`): among the next `scan_rows` customers in id order
        after `after`, those linked to `budget_id` (None: to no budget) whose period has ended at `due_at`. Returns
        them and the last id scanned, where the next step starts (None: no customer after `after`).

        Both queries read the same window of the primary-key index, so a step costs `scan_rows` index entries
        whatever the tier's size; a scan of `ix_customers_budget_id` would sort the whole tier at every step.
        """
        window_query = select(CustomerRow.user_id, CustomerRow.budget_id, CustomerRow.spend_reset_at)
        if after is not None:
            window_query = window_query.where(CustomerRow.user_id > after)
        window = window_query.order_by(CustomerRow.user_id).limit(scan_rows).subquery()
        linked = window.c.budget_id.is_(None) if budget_id is None else window.c.budget_id == budget_id
        is_due = or_(window.c.spend_reset_at.is_(None), window.c.spend_reset_at <= due_at)
        async with self._sessions() as session:
            last = await session.scalar(select(func.max(window.c.user_id)))
            if last is None:
                return [], None
            due = await session.scalars(select(window.c.user_id).where(linked, is_due).order_by(window.c.user_id))
            return list(due), last


def _prefix_range(prefix: str | None) -> list[ColumnElement[bool]]:
    """`user_id` starts with `prefix`, as a range the primary-key index serves on both engines (ids compare
    byte-wise, i.e. by code point: see `tables.py`). LIKE 'p%' would not use it on SQLite."""
    if not prefix:
        return []
    conditions = [CustomerRow.user_id >= prefix]
    upper = _next_prefix(prefix)
    if upper is not None:
        conditions.append(CustomerRow.user_id < upper)
    return conditions


def _next_prefix(prefix: str) -> str | None:
    """The smallest string above every string that starts with `prefix` (None: there is none)."""
    chars = list(prefix)
    while chars:
        code = ord(chars.pop()) + 1
        if code == _SURROGATES_START:  # not storable in UTF-8: the next storable code point follows them
            code = _SURROGATES_END
        if code <= sys.maxunicode:
            return "".join(chars) + chr(code)
    return None


async def _first_or_unknown_budget(session: AsyncSession, statement: Any, budget_id: str | None) -> CustomerRow | None:
    """Run a customer INSERT/UPDATE … RETURNING; turn a foreign-key failure on `budget_id` into NotFoundError."""
    try:
        row: CustomerRow | None = (await session.scalars(statement)).one_or_none()
    except IntegrityError as exc:
        if budget_id is None:
            raise
        raise NotFoundError(f"Budget with id '{budget_id}' does not exist.", param="budget_id") from exc
    return row
