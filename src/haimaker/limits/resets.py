"""Budget periods: the job that resets idle customers when their tier's period ends.

Active customers are reset at request time by the counter store (a reset is never late); this job
covers the customers nobody has heard from, advances each tier's `budget_reset_at`, and announces the
reset. Memory counters and the durable store are reset together, through the spend recorder's queue,
so a reset sits exactly between the charges before and after it.

With several instances the job runs under a cluster-wide lock (`state/locks.py`), so one instance resets a
tier once; it re-reads each due tier from the store first (another instance may have just reset it) and
announces the tier's new `budget_reset_at` to the others.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

from haimaker.accounting.recorder import BudgetReset
from haimaker.periods import next_reset_at

if TYPE_CHECKING:
    from haimaker.app_state import AppState
    from haimaker.state.locks import JobLock

logger = logging.getLogger("haimaker.resets")

NextReset = Callable[[str, datetime], datetime]


def next_reset_function(timezone: str, reset_time: str) -> NextReset:
    """Bind the configured timezone and time of day to the period rules of `periods.py`."""

    def compute(duration: str, now: datetime) -> datetime:
        return next_reset_at(duration, now, timezone=timezone, reset_time=reset_time)

    return compute


class ResetJob:
    def __init__(
        self, state: AppState, next_reset: NextReset, *, interval_s: float, lock: JobLock | None = None
    ) -> None:
        self._state = state
        self._next_reset = next_reset
        self._interval_s = interval_s
        self._lock = lock

    async def run(self) -> None:
        while True:
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("budget reset job failed; will retry")
            await asyncio.sleep(self._interval_s)

    async def run_once(self) -> int | None:
        """One round, under the cluster-wide lock if there is one; None when another instance holds it."""
        if self._lock is None:
            return await self.tick()
        async with self._lock.hold("budget-resets") as held:
            return await self.tick() if held else None

    async def tick(self) -> int:
        """Reset every tier whose period has ended; return how many customers were reset."""
        state = self._state
        catalog = state.engine.catalog
        now = state.clock.now()
        total = 0
        for budget in list(catalog.budgets.values()):
            if budget.budget_duration is None:
                continue
            if budget.budget_reset_at is not None and budget.budget_reset_at > now:
                continue
            if self._lock is not None:
                fresh = await state.sink.budgets.get(budget.budget_id)
                if fresh is None or (fresh.budget_reset_at is not None and fresh.budget_reset_at > now):
                    continue  # deleted, or reset by another instance since this catalog last heard
            next_at = self._next_reset(budget.budget_duration, now)
            customer_ids = catalog.customers_of_budget(budget.budget_id)
            reset_ids = state.engine.store.reset_due(now, customer_ids, next_at)
            state.recorder.reset_budget(
                BudgetReset(
                    budget_id=budget.budget_id,
                    include_unbudgeted=budget.budget_id == catalog.default_budget_id,
                    now=now,
                    next_reset_at=next_at,
                )
            )
            updated = await state.sink.budgets.update(budget.budget_id, {"budget_reset_at": next_at})
            if updated is not None:
                catalog.put_budget(updated)
                if state.cluster is not None:
                    state.cluster.changed("budget", budget.budget_id)
            if state.engine.alerter is not None:
                for customer_id in reset_ids:
                    state.engine.alerter.budget_reset(customer_id, budget)
            total += len(reset_ids)
            logger.info("budget %s reset for %d customers; next reset %s", budget.budget_id, len(reset_ids), next_at)
        return total
