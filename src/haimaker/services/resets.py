"""Budget periods: the job that resets idle customers when their tier's period ends, and idle virtual keys when
theirs does.

Active customers are reset at request time by the counter store (a reset is never late); this job
covers the customers nobody has heard from, advances each tier's `budget_reset_at`, and announces the
reset. Memory counters and the durable store are reset together, through the spend recorder's queue,
so a reset sits exactly between the charges before and after it.

With several instances the job runs under a cluster-wide lock (`state/locks.py`), so one instance resets a
tier once; it re-reads each due tier from the store first (another instance may have just reset it) and
announces the tier's new `budget_reset_at` to the others.

It orchestrates the catalog, the counters, the budget rows, the recorder, the cluster and the alerter, so it
lives with the other use-cases (`services/`), and is given exactly those, not the whole app.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from typing import TYPE_CHECKING

from haimaker.accounting.recorder import BudgetReset
from haimaker.state.counters import SpendReset
from haimaker.state.keys import key_subject

if TYPE_CHECKING:
    from haimaker.accounting.recorder import SpendRecorder
    from haimaker.alerts import Alerter
    from haimaker.clock import Clock
    from haimaker.periods import NextReset
    from haimaker.services.container import ChangeAnnouncer
    from haimaker.state.catalog import Catalog
    from haimaker.state.counters import CounterStore
    from haimaker.state.keys import KeyCatalog
    from haimaker.state.locks import JobLock
    from haimaker.storage.budgets_repo import BudgetRepository
    from haimaker.storage.keys_repo import KeyRepository

logger = logging.getLogger("haimaker.resets")


class ResetJob:
    def __init__(
        self,
        *,
        catalog: Catalog,
        key_catalog: KeyCatalog,
        counters: CounterStore,
        budgets: BudgetRepository,
        keys: KeyRepository,
        recorder: SpendRecorder,
        clock: Clock,
        next_reset: NextReset,
        interval_s: float,
        announcer: ChangeAnnouncer | None = None,
        alerter: Alerter | None = None,
        lock: JobLock | None = None,
    ) -> None:
        self._catalog = catalog
        self._key_catalog = key_catalog
        self._counters = counters
        self._budgets = budgets
        self._keys = keys
        self._recorder = recorder
        self._clock = clock
        self._next_reset = next_reset
        self._interval_s = interval_s
        self._announcer = announcer
        self._alerter = alerter
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
        """Reset every tier, and every key, whose period has ended; return how many customers and keys were reset."""
        return await self._reset_tiers() + await self._reset_keys()

    async def _reset_keys(self) -> int:
        """Keys with a `budget_duration` whose period ended: spend to zero in the counters and (through the recorder,
        after the charges before it) in the store, the key's next `budget_reset_at` into the catalog, announced."""
        now = self._clock.now()
        total = 0
        for key in list(self._key_catalog.keys.values()):
            if key.budget_duration is None or (key.budget_reset_at is not None and key.budget_reset_at > now):
                continue
            if self._lock is not None:
                fresh = await self._keys.get(key.token)
                if fresh is None or (fresh.budget_reset_at is not None and fresh.budget_reset_at > now):
                    continue  # deleted, or reset by another instance since this catalog last heard
            next_at = self._next_reset(key.budget_duration, now)
            subject = key_subject(key.token)
            total += len(self._counters.reset_due(now, [subject], next_at))
            self._recorder.reset_customer(SpendReset(subject, next_at))
            self._key_catalog.put(replace(key, spend=0, budget_reset_at=next_at))
            if self._announcer is not None:
                self._announcer.changed("key", key.token)
        return total

    async def _reset_tiers(self) -> int:
        catalog = self._catalog
        now = self._clock.now()
        total = 0
        for budget in list(catalog.budgets.values()):
            if budget.budget_duration is None:
                continue
            if budget.budget_reset_at is not None and budget.budget_reset_at > now:
                continue
            if self._lock is not None:
                fresh = await self._budgets.get(budget.budget_id)
                if fresh is None or (fresh.budget_reset_at is not None and fresh.budget_reset_at > now):
                    continue  # deleted, or reset by another instance since this catalog last heard
            next_at = self._next_reset(budget.budget_duration, now)
            customer_ids = catalog.customers_of_budget(budget.budget_id)
            reset_ids = self._counters.reset_due(now, customer_ids, next_at)
            self._recorder.reset_budget(
                BudgetReset(
                    budget_id=budget.budget_id,
                    include_unbudgeted=budget.budget_id == catalog.default_budget_id,
                    now=now,
                    next_reset_at=next_at,
                )
            )
            updated = await self._budgets.update(budget.budget_id, {"budget_reset_at": next_at})
            if updated is not None:
                catalog.put_budget(updated)
                if self._announcer is not None:
                    self._announcer.changed("budget", budget.budget_id)
            if self._alerter is not None:
                for customer_id in reset_ids:
                    self._alerter.budget_reset(customer_id, budget)
            total += len(reset_ids)
            logger.info("budget %s reset for %d customers; next reset %s", budget.budget_id, len(reset_ids), next_at)
        return total
