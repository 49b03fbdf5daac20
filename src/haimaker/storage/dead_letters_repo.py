"""Dead letters in the durable store: the charges and resets the recorder could not write.

Invariants:
- A dead letter is keyed by a hash of its kind and payload, so an item filed again (a journal replayed after a
  restart, a retried group) is stored once.
- Every stored text is ASCII (`payload` is JSON with escapes, `error` is sanitised by the caller), so the row that
  records a bad value can never fail for that value: a NUL becomes `\\u0000`, an out-of-range number plain digits.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from haimaker.clock import Clock, SystemClock
from haimaker.storage.tables import DeadLetterRow


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One item that could not be written: `kind` is "charge", "customer_reset" or "budget_reset"."""

    id: str
    kind: str
    error: str
    payload: str  # the item as ASCII JSON
    created_at: datetime


def dead_letter_id(kind: str, payload: str) -> str:
    """The key of a dead letter: the same item always gets the same one."""
    return hashlib.sha256(f"{kind}\n{payload}".encode()).hexdigest()


class DeadLetterRepository:
    """Files, counts, lists and removes dead letters."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], *, clock: Clock | None = None) -> None:
        self._sessions = sessions
        self._clock: Clock = clock or SystemClock()

    async def add(self, kind: str, payload: str, error: str) -> str:
        """File one item (idempotent); returns its id."""
        letter_id = dead_letter_id(kind, payload)
        values = {"id": letter_id, "kind": kind, "error": error, "payload": payload, "created_at": self._clock.now()}
        async with self._sessions() as session, session.begin():
            insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
            await session.execute(insert(DeadLetterRow).values(values).on_conflict_do_nothing(index_elements=["id"]))
        return letter_id

    async def count(self) -> int:
        async with self._sessions() as session:
            return int(await session.scalar(select(func.count()).select_from(DeadLetterRow)) or 0)

    async def list(self, limit: int = 100) -> list[DeadLetter]:
        """The newest dead letters first, at most `limit`."""
        statement = select(DeadLetterRow).order_by(DeadLetterRow.created_at.desc(), DeadLetterRow.id).limit(limit)
        async with self._sessions() as session:
            rows = await session.scalars(statement)
            return [
                DeadLetter(id=row.id, kind=row.kind, error=row.error, payload=row.payload, created_at=row.created_at)
                for row in rows
            ]

    async def remove(self, letter_id: str) -> bool:
        """Delete one dead letter (the operator has dealt with it); False when there was none."""
        async with self._sessions() as session, session.begin():
            result = await session.execute(delete(DeadLetterRow).where(DeadLetterRow.id == letter_id))
        return bool(getattr(result, "rowcount", 0))
