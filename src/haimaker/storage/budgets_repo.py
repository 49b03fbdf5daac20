"""Budgets (pricing tiers) in the durable store.

Invariants:
- Returns `Budget` records, never ORM rows; every method is one short transaction.
- Deleting a budget leaves its customers without one: the `customers.budget_id` foreign key is ON DELETE SET NULL,
  enforced on SQLite too (`PRAGMA foreign_keys=ON` on every connection, see `engine.py`).
- `created_at` / `updated_at` come from the injected clock when the caller leaves them unset.
- A private budget (one customer's own limits, `is_private_budget`) is told from a pricing tier by the same rule in
  Python and in SQL (`list_tiers`), so listing the tiers never loads the private budgets, however many there are.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import fields
from datetime import datetime
from typing import Any, Final

from sqlalchemy import and_, delete, func, not_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from haimaker.clock import Clock, SystemClock
from haimaker.errors import DuplicateError
from haimaker.storage._upsert import chunked, dialect_insert
from haimaker.storage.records import Budget
from haimaker.storage.tables import BudgetRow, CustomerRow, budget_values

UPDATABLE_BUDGET_FIELDS: Final = frozenset(f.name for f in fields(Budget)) - {"budget_id"}
# The text form of a UUID (`str(uuid.uuid4())`, Prisma's `uuid()`): 36 characters, hyphens at these indexes.
_UUID_LENGTH: Final = 36
_UUID_HYPHENS: Final = (8, 13, 18, 23)


def is_private_budget(budget_id: str, linked_customers: int, default_budget_id: str | None) -> bool:
    """Whether a budget is one customer's own limits rather than a pricing tier.

    `/customer/new` with limits, and a limit changed on a customer of a shared tier, give the customer a budget row
    of its own with a uuid4 id; LiteLLM makes the same rows (its budget ids default to a uuid). So, with no schema
    change and for imported budgets too: a budget is private when its id has the form of a UUID, exactly one
    customer is linked to it, and it is not the default budget. A UUID budget with no customer yet (a tier just
    created without a name) or with several is a tier.
    """
    is_uuid_shaped = len(budget_id) == _UUID_LENGTH and all(budget_id[i] == "-" for i in _UUID_HYPHENS)
    return is_uuid_shaped and linked_customers == 1 and budget_id != default_budget_id


class BudgetRepository:
    """Reads and writes `budgets` rows as `Budget` records."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], *, clock: Clock | None = None) -> None:
        self._sessions = sessions
        self._clock: Clock = clock or SystemClock()

    async def get(self, budget_id: str) -> Budget | None:
        async with self._sessions() as session:
            row = await session.get(BudgetRow, budget_id)
            return row.to_record() if row is not None else None

    async def get_many(self, budget_ids: Iterable[str]) -> list[Budget]:
        """The budgets among `budget_ids` that exist, in the order first given; unknown ids are left out."""
        wanted = list(dict.fromkeys(budget_ids))
        found: dict[str, Budget] = {}
        async with self._sessions() as session:
            for chunk in chunked(wanted):
                rows = await session.scalars(select(BudgetRow).where(BudgetRow.budget_id.in_(chunk)))
                found.update((row.budget_id, row.to_record()) for row in rows)
        return [found[budget_id] for budget_id in wanted if budget_id in found]

    async def list_all(self) -> list[Budget]:
        """Every budget, ordered by id."""
        async with self._sessions() as session:
            rows = await session.scalars(select(BudgetRow).order_by(BudgetRow.budget_id))
            return [row.to_record() for row in rows]

    async def create(self, budget: Budget) -> Budget:
        """Insert a budget.

        Raises:
            DuplicateError: a budget with this id already exists.
        """
        now = self._clock.now()
        values = budget_values(budget)
        values["created_at"] = budget.created_at or now
        values["updated_at"] = budget.updated_at or values["created_at"]
        async with self._sessions.begin() as session:
            insert = dialect_insert(session, BudgetRow).values(**values)
            statement = insert.on_conflict_do_nothing(index_elements=["budget_id"]).returning(BudgetRow)
            row = (await session.scalars(statement)).one_or_none()
            if row is None:
                raise DuplicateError(f"Budget with id '{budget.budget_id}' already exists.", param="budget_id")
            return row.to_record()

    async def update(self, budget_id: str, changes: Mapping[str, Any]) -> Budget | None:
        """Write the given fields (a None value clears the field); `updated_at` defaults to now.

        Returns the updated budget, or None when it does not exist.
        """
        values = _checked_changes(changes)
        if not values:
            return await self.get(budget_id)
        values.setdefault("updated_at", self._clock.now())
        async with self._sessions.begin() as session:
            statement = update(BudgetRow).where(BudgetRow.budget_id == budget_id).values(**values).returning(BudgetRow)
            row = (await session.scalars(statement)).one_or_none()
            return row.to_record() if row is not None else None

    async def delete(self, budget_id: str) -> Budget | None:
        """Delete a budget; its customers keep existing with no budget. Returns the deleted budget, if any."""
        async with self._sessions.begin() as session:
            statement = delete(BudgetRow).where(BudgetRow.budget_id == budget_id).returning(BudgetRow)
            row = (await session.scalars(statement)).one_or_none()
            return row.to_record() if row is not None else None

    async def count_customers_by_budget(self, budget_ids: Iterable[str] | None = None) -> dict[str, int]:
        """Number of customers linked to each budget that has any (only the budgets among `budget_ids` if given).

        One `GROUP BY` in the store (indexed on `customers.budget_id`), never a walk over the in-memory catalog.
        """
        chunks = [None] if budget_ids is None else chunked(list(dict.fromkeys(budget_ids)))
        counts: dict[str, int] = {}
        async with self._sessions() as session:
            for chunk in chunks:
                linked = CustomerRow.budget_id.is_not(None) if chunk is None else CustomerRow.budget_id.in_(chunk)
                statement = select(CustomerRow.budget_id, func.count()).where(linked).group_by(CustomerRow.budget_id)
                rows = await session.execute(statement)
                counts.update((budget_id, count) for budget_id, count in rows if budget_id is not None)
        return counts

    async def list_tiers(self, default_budget_id: str | None) -> list[tuple[Budget, int]]:
        """Every budget but the private ones (`is_private_budget`), ordered by id, with its number of customers."""
        linked = (
            select(CustomerRow.budget_id, func.count().label("customers"))
            .where(CustomerRow.budget_id.is_not(None))
            .group_by(CustomerRow.budget_id)
            .subquery()
        )
        customers = func.coalesce(linked.c.customers, 0)
        budget_id = BudgetRow.budget_id
        # SQL's half of `is_private_budget` (SUBSTR counts from 1).
        private = [func.length(budget_id) == _UUID_LENGTH, customers == 1]
        private += [func.substr(budget_id, index + 1, 1) == "-" for index in _UUID_HYPHENS]
        if default_budget_id is not None:
            private.append(budget_id != default_budget_id)
        statement = (
            select(BudgetRow, customers)
            .outerjoin(linked, linked.c.budget_id == budget_id)
            .where(not_(and_(*private)))
            .order_by(budget_id)
        )
        async with self._sessions() as session:
            rows = await session.execute(statement)
            return [(row.to_record(), int(count)) for row, count in rows]

    async def due_for_reset(self, now: datetime) -> list[Budget]:
        """Budgets with a duration whose reset instant is unset or has passed, ordered by id."""
        statement = (
            select(BudgetRow)
            .where(
                BudgetRow.budget_duration.is_not(None),
                or_(BudgetRow.budget_reset_at.is_(None), BudgetRow.budget_reset_at <= now),
            )
            .order_by(BudgetRow.budget_id)
        )
        async with self._sessions() as session:
            rows = await session.scalars(statement)
            return [row.to_record() for row in rows]


def _checked_changes(changes: Mapping[str, Any]) -> dict[str, Any]:
    unknown = set(changes) - UPDATABLE_BUDGET_FIELDS
    if unknown:
        raise ValueError(f"not updatable budget fields: {', '.join(sorted(unknown))}")
    return dict(changes)
