"""Spend-log retention: the job that deletes spend logs older than `maximum_spend_logs_retention_period`, every
`maximum_spend_logs_retention_interval` (LiteLLM's `general_settings` keys and meaning; its default interval, 1d).

Invariants:
- Only `spend_logs` rows that started before `now - retention` are deleted; the daily rollups are never touched, so
  every report but the per-request `/spend/logs` still covers the days whose logs are gone.
- Off the hot path: the job is its own task, each batch is one short statement in the database (at most
  `batch_size` rows, `storage/spend_log_purge.py`), and it pauses between batches so the charge writer (on SQLite,
  the one writer) waits for one batch at most.
- With several instances it runs under the cluster-wide job lock (`state/locks.py`): one instance deletes at a time,
  the others skip that round. Deleting is idempotent, so a lock lease that runs out mid-run costs no-op statements.
- A charge replayed (journal, dead letters) after retention deleted its log would be stored again, since the charge
  write recognises a repeat by its stored log: keep the retention far longer than any outage.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import TYPE_CHECKING, Final

from haimaker.periodic import repeat
from haimaker.periods import parse_age
from haimaker.state.locks import PostgresJobLock, run_locked
from haimaker.storage.spend_log_purge import SpendLogPurge

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

    from haimaker.clock import Clock
    from haimaker.config.schema import GeneralSettings
    from haimaker.state.locks import JobLock

logger = logging.getLogger("haimaker.retention")

LOCK_NAME: Final = "spend-log-retention"
BATCH_SIZE: Final = 10_000
PAUSE_S: Final = 0.05
# The first run soon after start-up, not an interval later: a proxy restarted more often than the interval (1d by
# default) would otherwise never delete anything.
FIRST_RUN_DELAY_S: Final = 60.0


class RetentionJob:
    """Deletes old spend logs every `interval_s`, in batches."""

    def __init__(
        self,
        *,
        purge: SpendLogPurge,
        clock: Clock,
        retention: timedelta,
        interval_s: float,
        lock: JobLock | None = None,
        batch_size: int = BATCH_SIZE,
        pause_s: float = PAUSE_S,
        first_run_delay_s: float = FIRST_RUN_DELAY_S,
    ) -> None:
        self._purge = purge
        self._clock = clock
        self._retention = retention
        self._interval_s = interval_s
        self._lock = lock
        self._batch_size = batch_size
        self._pause_s = pause_s
        self._first_run_delay_s = first_run_delay_s

    async def run(self) -> None:
        await repeat(self.run_once, self._interval_s, what="spend-log retention", first_delay_s=self._first_run_delay_s)

    async def run_once(self) -> int | None:
        """One round, under the cluster-wide lock if there is one: the logs deleted, None when another instance
        holds the lock."""
        return await run_locked(self._lock, LOCK_NAME, self.delete_expired)

    async def delete_expired(self) -> int:
        """Delete every log older than the retention, `batch_size` at a time; returns how many were deleted."""
        cutoff = self._clock.now() - self._retention
        total = 0
        while True:
            deleted = await self._purge.delete_before(cutoff, self._batch_size)
            total += deleted
            if deleted < self._batch_size:
                break
            await asyncio.sleep(self._pause_s)
        if total:
            logger.info("spend-log retention deleted %d logs that started before %s", total, cutoff.isoformat())
        return total


def retention_job(
    general: GeneralSettings,
    *,
    sessions: async_sessionmaker[AsyncSession],
    db: AsyncEngine,
    clock: Clock,
    lock: JobLock | None,
) -> RetentionJob | None:
    """The job `general_settings` asks for, or None when no retention period is set.

    Without a cluster lock (no Redis), a PostgreSQL store still gets its advisory lock: instances sharing the store
    take turns.
    """
    period = general.maximum_spend_logs_retention_period
    if period is None:
        return None
    if lock is None and db.dialect.name == "postgresql":
        lock = PostgresJobLock(db)
    return RetentionJob(
        purge=SpendLogPurge(sessions),
        clock=clock,
        retention=parse_age(period),
        interval_s=parse_age(general.maximum_spend_logs_retention_interval).total_seconds(),
        lock=lock,
    )
