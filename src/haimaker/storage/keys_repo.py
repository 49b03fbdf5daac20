"""Virtual keys in the durable store, by token (the SHA-256 hex of the key; the key itself is never stored).

Invariants:
- Returns `VirtualKey` records, never ORM rows; every method is one transaction, so multi-row writes
  (`delete_many`, `reset_spend`) are all-or-nothing.
- A key alias names at most one key: `create`, `update` and `replace_token` refuse an alias another key holds. The
  check and the write share one transaction that first serialises writers of that alias (SQLite: the write lock
  taken at BEGIN; PostgreSQL: a transaction-scoped advisory lock on the alias), so two concurrent writers cannot
  both take it. The column itself is not UNIQUE: keys imported from LiteLLM databases that predate its uniqueness
  rule may share one, and `get_by_alias` returns them all.
- `spend` is the key's spend in its current budget period. Charges add to it in `SpendRepository.write_batch`;
  here it is written only by `reset_spend` and by explicit updates. `replace_token` keeps the stored spend.
- Listing orders by `created_at` descending, then `token` descending (LiteLLM's `/key/list` order).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import fields
from datetime import datetime
from typing import Any, Final

from sqlalchemy import ColumnElement, delete, func, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from haimaker.clock import Clock, SystemClock
from haimaker.errors import DuplicateError, NotFoundError
from haimaker.storage._upsert import chunked, dialect_insert
from haimaker.storage.engine import WRITE_TRANSACTION
from haimaker.storage.records import VirtualKey
from haimaker.storage.tables import VirtualKeyRow, virtual_key_values

# Fields `update` may write: everything but the identity (`token`) and the creation stamp.
UPDATABLE_KEY_FIELDS: Final = frozenset(f.name for f in fields(VirtualKey)) - {"token", "created_at", "created_by"}
# Fields `replace_token` never takes from the new record: the row keeps its spend and its creation stamp.
_KEPT_ON_REPLACE: Final = frozenset({"spend", "created_at", "created_by"})
_LIST_COLUMNS: Final = frozenset({"models", "allowed_routes"})


def duplicate_alias(alias: str) -> DuplicateError:
    """LiteLLM's refusal of an alias another key holds."""
    return DuplicateError(
        f"Key with alias '{alias}' already exists. Unique key aliases across all keys are required.",
        param="key_alias",
    )


class KeyRepository:
    """Reads and writes `virtual_keys` rows as `VirtualKey` records."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], *, clock: Clock | None = None) -> None:
        self._sessions = sessions
        self._clock: Clock = clock or SystemClock()

    # -- reads -------------------------------------------------------------------------------------------------

    async def get(self, token: str) -> VirtualKey | None:
        async with self._sessions() as session:
            row = await session.get(VirtualKeyRow, token)
            return row.to_record() if row is not None else None

    async def get_by_alias(self, alias: str) -> list[VirtualKey]:
        """The keys with this alias (normally one; imported data may hold more), ordered by token."""
        statement = select(VirtualKeyRow).where(VirtualKeyRow.key_alias == alias).order_by(VirtualKeyRow.token)
        async with self._sessions() as session:
            return [row.to_record() for row in await session.scalars(statement)]

    async def list_all(self) -> list[VirtualKey]:
        """Every key (loads the in-memory `KeyCatalog` at start-up)."""
        async with self._sessions() as session:
            rows = await session.scalars(select(VirtualKeyRow).order_by(VirtualKeyRow.token))
            return [row.to_record() for row in rows]

    async def list_page(self, page: int, size: int, key_alias: str | None = None) -> list[VirtualKey]:
        """One page (1-based) of keys, newest first, optionally only those with exactly `key_alias`."""
        if page < 1 or size < 1:
            raise ValueError("page and size start at 1")
        statement = (
            select(VirtualKeyRow)
            .where(*_alias_filter(key_alias))
            .order_by(VirtualKeyRow.created_at.desc(), VirtualKeyRow.token.desc())
            .offset((page - 1) * size)
            .limit(size)
        )
        async with self._sessions() as session:
            return [row.to_record() for row in await session.scalars(statement)]

    async def count(self, key_alias: str | None = None) -> int:
        """Number of keys (with exactly `key_alias`, when given)."""
        statement = select(func.count()).select_from(VirtualKeyRow).where(*_alias_filter(key_alias))
        async with self._sessions() as session:
            return int(await session.scalar(statement) or 0)

    async def spend_of_many(self, tokens: Sequence[str]) -> dict[str, tuple[int, datetime | None]]:
        """(spend, budget_reset_at) of each key that exists, in one query per 500 tokens (seeds the counters)."""
        found: dict[str, tuple[int, datetime | None]] = {}
        row = VirtualKeyRow
        async with self._sessions() as session:
            for chunk in chunked(sorted(set(tokens))):
                statement = select(row.token, row.spend, row.budget_reset_at).where(row.token.in_(chunk))
                for token, spend, reset_at in await session.execute(statement):
                    found[token] = (int(spend), reset_at)
        return found

    # -- writes ------------------------------------------------------------------------------------------------

    async def create(self, key: VirtualKey) -> VirtualKey:
        """Insert a key; `created_at` / `updated_at` default to now.

        Raises:
            DuplicateError: a key with this token exists (param `key`), or another key holds its alias.
        """
        values = virtual_key_values(key)
        values["created_at"] = key.created_at or self._clock.now()
        values["updated_at"] = key.updated_at or values["created_at"]
        async with self._sessions() as session, session.begin():
            await _lock_alias(session, key.key_alias)
            if key.key_alias is not None and await _alias_holder(session, key.key_alias) is not None:
                raise duplicate_alias(key.key_alias)
            insert = dialect_insert(session, VirtualKeyRow).values(**values)
            statement = insert.on_conflict_do_nothing(index_elements=["token"]).returning(VirtualKeyRow)
            row = (await session.scalars(statement)).one_or_none()
            if row is None:
                raise DuplicateError("A key with this value already exists. Pass a different key.", param="key")
            return row.to_record()

    async def update(self, token: str, changes: Mapping[str, Any]) -> VirtualKey | None:
        """Write the given fields (a None value clears the field); `updated_at` defaults to now.

        Returns None when the key does not exist.

        Raises:
            DuplicateError: `changes["key_alias"]` is held by another key.
        """
        unknown = set(changes) - UPDATABLE_KEY_FIELDS
        if unknown:
            raise ValueError(f"not updatable key fields: {', '.join(sorted(unknown))}")
        values = _column_values(changes)
        values.setdefault("updated_at", self._clock.now())
        alias = values.get("key_alias")
        async with self._sessions() as session, session.begin():
            await _lock_alias(session, alias)
            if alias is not None and await _alias_holder(session, alias, other_than=token) is not None:
                raise duplicate_alias(alias)
            statement = update(VirtualKeyRow).where(VirtualKeyRow.token == token).values(**values)
            row = (await session.scalars(statement.returning(VirtualKeyRow))).one_or_none()
            return row.to_record() if row is not None else None

    async def set_blocked(self, token: str, blocked: bool) -> VirtualKey | None:
        """Set or clear `blocked`; None when the key does not exist."""
        return await self.update(token, {"blocked": blocked})

    async def replace_token(self, old_token: str, new_key: VirtualKey) -> VirtualKey | None:
        """Regenerate: the row of `old_token` takes `new_key`'s token, name and fields; its spend and creation stamp
        stay, `updated_at` is now. Returns None when `old_token` does not exist.

        Raises:
            DuplicateError: the new token exists already (param `new_key`), or another key holds the new alias.
        """
        values = {name: value for name, value in virtual_key_values(new_key).items() if name not in _KEPT_ON_REPLACE}
        values["metadata_"] = values.pop("metadata")
        values["updated_at"] = self._clock.now()
        async with self._sessions() as session, session.begin():
            await _lock_alias(session, new_key.key_alias)
            if new_key.key_alias is not None:
                holder = await _alias_holder(session, new_key.key_alias, other_than=old_token)
                if holder is not None:
                    raise duplicate_alias(new_key.key_alias)
            if new_key.token != old_token and await session.get(VirtualKeyRow, new_key.token) is not None:
                raise DuplicateError("A key with this value already exists. Pass a different new_key.", param="new_key")
            statement = update(VirtualKeyRow).where(VirtualKeyRow.token == old_token).values(**values)
            row = (
                await session.scalars(statement.returning(VirtualKeyRow), execution_options={"populate_existing": True})
            ).one_or_none()
            return row.to_record() if row is not None else None

    async def delete_many(self, tokens: Iterable[str]) -> int:
        """Delete keys, all or none. Their spend logs stay.

        Raises:
            NotFoundError: some tokens do not exist; nothing is deleted.
        """
        wanted = list(dict.fromkeys(tokens))
        if not wanted:
            return 0
        async with self._sessions() as session, session.begin():
            deleted: set[str] = set()
            for chunk in chunked(wanted):
                statement = delete(VirtualKeyRow).where(VirtualKeyRow.token.in_(chunk)).returning(VirtualKeyRow.token)
                deleted.update(await session.scalars(statement))
            missing = [token for token in wanted if token not in deleted]
            if missing:
                # Raising inside the transaction rolls the deletes back.
                raise NotFoundError(f"Key(s) not found: {', '.join(missing)}", param="keys")
            return len(deleted)

    async def reset_spend(
        self, tokens: Sequence[str], *, next_reset_at: datetime | None, ending_before: datetime
    ) -> int:
        """Zero `spend` and set `budget_reset_at` on the given keys whose stored period ends before `ending_before`
        (`budget_reset_at` unset or earlier): a reset written twice (a replayed journal) finds the period already
        moved on and is a no-op. Returns how many keys were reset."""
        reset: set[str] = set()
        is_older = or_(VirtualKeyRow.budget_reset_at.is_(None), VirtualKeyRow.budget_reset_at < ending_before)
        async with self._sessions() as session, session.begin():
            for chunk in chunked(sorted(set(tokens))):
                statement = (
                    update(VirtualKeyRow)
                    .where(VirtualKeyRow.token.in_(chunk), is_older)
                    .values(spend=0, budget_reset_at=next_reset_at)
                    .returning(VirtualKeyRow.token)
                    .execution_options(synchronize_session=False)
                )
                reset.update(await session.scalars(statement))
        return len(reset)


def _alias_filter(key_alias: str | None) -> list[ColumnElement[bool]]:
    return [] if key_alias is None else [VirtualKeyRow.key_alias == key_alias]


def _column_values(changes: Mapping[str, Any]) -> dict[str, Any]:
    """Record field names and values as the mapped class takes them (tuples as lists, `metadata_`)."""
    values: dict[str, Any] = {}
    for name, value in changes.items():
        if name in _LIST_COLUMNS:
            value = list(value or ())
        elif name == "metadata":
            name, value = "metadata_", dict(value or {})
        values[name] = value
    return values


async def _lock_alias(session: AsyncSession, alias: str | None) -> None:
    """Serialise the writers of one alias for the rest of the transaction (see the module docstring)."""
    if session.get_bind().dialect.name == "postgresql":
        if alias is not None:
            await session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:alias))"), {"alias": alias})
    else:
        # SQLite: BEGIN IMMEDIATE, so the alias check below already holds the one write lock.
        await session.connection(execution_options=WRITE_TRANSACTION)


async def _alias_holder(session: AsyncSession, alias: str, *, other_than: str | None = None) -> str | None:
    statement = select(VirtualKeyRow.token).where(VirtualKeyRow.key_alias == alias)
    if other_than is not None:
        statement = statement.where(VirtualKeyRow.token != other_than)
    token: str | None = (await session.scalars(statement.limit(1))).first()
    return token
