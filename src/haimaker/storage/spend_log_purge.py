"""Deleting spend logs past their retention, a bounded batch per statement; the daily rollups are never touched.

Why batched deletes and not monthly partitions on PostgreSQL (dropping a month would cost no row work):
- PostgreSQL requires the partition key in every unique index of a partitioned table. The charge write's idempotence
  rests on `request_id` being unique across the whole table (`ON CONFLICT (request_id) DO NOTHING`); a key of
  `(request_id, start_time)` keeps that only while a retried log carries the same `start_time`, and `/spend/logs`
  by `request_id` would probe every partition.
- Partitions must exist before rows arrive (a job creating next month's ahead of time, or a default partition that
  blocks later attaches), the existing table must be rewritten into the partitioned one (a long migration on a big
  store), SQLite has no partitions (two code paths), and the schema drift test cannot describe them.
Batches of `start_time < cutoff` ride `ix_spend_logs_start_time`, cost what they delete, hold each transaction (and
SQLite's write lock) briefly, and PostgreSQL's autovacuum reuses the space for the logs that follow.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import delete, select
from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from haimaker.storage.tables import SpendLogRow


class SpendLogPurge:
    """Deletes old spend logs, one bounded batch at a time."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def delete_before(self, cutoff: datetime, limit: int) -> int:
        """Delete at most `limit` logs that started before `cutoff`, in one statement and transaction; returns how
        many were deleted (fewer than `limit`: none is left)."""
        oldest = select(SpendLogRow.request_id).where(SpendLogRow.start_time < cutoff).limit(limit)
        statement = delete(SpendLogRow).where(SpendLogRow.request_id.in_(oldest.scalar_subquery()))
        async with self._sessions() as session, session.begin():
            result = cast("CursorResult[Any]", await session.execute(statement))  # a DELETE's result has rowcount
            return int(result.rowcount)
