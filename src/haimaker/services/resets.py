"""Budget periods: the job that resets idle customers when their tier's period ends, and idle virtual keys when
theirs does.

Active customers are reset at request time by the counter store (a reset is never late); this job
covers the customers nobody has heard from, advances each tier's `budget_reset_at`, and announces the
reset. Memory counters and the durable store are reset together, through the spend recorder's queue,
so a reset sits exactly between the charges before and after it.

A tier may hold millions of customers, so the job never holds them all: it walks the customers table in
primary-key steps of `scan_rows` (`CustomerRepository.due_for_reset`: those of the tier whose stored period ended),
and for each chunk of a step resets the counters this process holds and queues one `SpendReset` per customer, with
no await in between, then yields. The recorder writes those resets set-based, inside the charge groups (one
statement per group, `SpendRepository.write_batch`); the job waits until a step is durable before reading the next,
so at most one step of resets is ever pending, and no transaction or lock outlives a group's. The tier's
`budget_reset_at` moves on only once every step is done: a job stopped half-way resumes with the customers still
due.

The job and the request-time reset never reset a customer twice nor lose a charge between them: in the counters,
each resets only a period that has ended (`reset_due`, the admission scripts), so whichever comes second finds the
new period; in the store, each reset applies only to a row whose period ends before the reset's, so the second is a
no-op there too, and a charge queued after the first reset is added after it whichever order they are written in.

With several instances the job runs under a cluster-wide lock (`state/locks.py`), so one instance resets a
tier once; it re-reads each due tier from the store first (another instance may have just reset it) and
announces the tier's new `budget_reset_at` to the others. Should a lock expire under a long tier reset, a second
runner is harmless for the reasons above.

It orchestrates the catalog, the counters, the budget rows, the recorder, the cluster and the alerter, so it
lives with the other use-cases (`services/`), and is given exactly those, not the whole app.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Final

from haimaker.periodic import repeat
from haimaker.state.counters import SpendReset
from haimaker.state.keys import key_subject
from haimaker.state.locks import run_locked

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
    from haimaker.storage.customers_repo import CustomerRepository
    from haimaker.storage.keys_repo import KeyRepository
    from haimaker.storage.records import Budget

logger = logging.getLogger("haimaker.resets")

# Customers read per step of a tier's reset: a step's resets are written within a few charge groups.
SCAN_ROWS: Final = 5_000
# Resets queued between two yields to the event loop (each is journaled on the loop: a few microseconds).
_QUEUE_CHUNK: Final = 500


class ResetJob:
    def __init__(
        self,
        *,
        catalog: Catalog,
        key_catalog: KeyCatalog,
        counters: CounterStore,
        budgets: BudgetRepository,
        customers: CustomerRepository,
        keys: KeyRepository,
        recorder: SpendRecorder,
        clock: Clock,
        next_reset: NextReset,
        interval_s: float,
        announcer: ChangeAnnouncer | None = None,
        alerter: Alerter | None = None,
        lock: JobLock | None = None,
        scan_rows: int = SCAN_ROWS,
    ) -> None:
        self._catalog = catalog
        self._key_catalog = key_catalog
        self._counters = counters
        self._budgets = budgets
        self._customers = customers
        self._keys = keys
        self._recorder = recorder
        self._clock = clock
        self._next_reset = next_reset
        self._interval_s = interval_s
        self._announcer = announcer
        self._alerter = alerter
        self._lock = lock
        self._scan_rows = scan_rows

    async def run(self) -> None:
        await repeat(self.run_once, self._interval_s, what="budget reset job")

    async def run_once(self) -> int | None:
        """One round, under the cluster-wide lock if there is one; None when another instance holds it."""
        return await run_locked(self._lock, "budget-resets", self.tick)

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
            self._counters.reset_due(now, [subject], next_at)
            self._recorder.reset_customer(SpendReset(subject, next_at))
            total += 1
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
            reset = await self._reset_customers_of(budget, now, next_at)
            updated = await self._budgets.update(budget.budget_id, {"budget_reset_at": next_at})
            if updated is not None:
                catalog.put_budget(updated)
                if self._announcer is not None:
                    self._announcer.changed("budget", budget.budget_id)
            total += reset
            logger.info("budget %s reset for %d customers; next reset %s", budget.budget_id, reset, next_at)
        return total

    async def _reset_customers_of(self, budget: Budget, now: datetime, next_at: datetime) -> int:
        """Reset every customer of the tier whose period ended, step by step (see the module docstring); return how
        many were due in the store."""
        linked: list[str | None] = [budget.budget_id]
        if budget.budget_id == self._catalog.default_budget_id:
            linked.append(None)  # customers without a budget ride the default one
        # Customers first seen in traffic exist in the store once their first charge is written: wait for the charges
        # queued so far, so that the scan sees every customer this process has admitted.
        await self._recorder.flush()
        total = 0
        for budget_id in linked:
            after: str | None = None
            while True:
                due, after = await self._customers.due_for_reset(
                    budget_id=budget_id, due_at=now, after=after, scan_rows=self._scan_rows
                )
                if after is None:
                    break
                for start in range(0, len(due), _QUEUE_CHUNK):
                    chunk = due[start : start + _QUEUE_CHUNK]
                    # No await between the counters and the queue: the store applies each reset at the place among
                    # the charges where the counters applied it.
                    self._counters.reset_due(now, chunk, next_at)
                    for customer_id in chunk:
                        self._recorder.reset_customer(SpendReset(customer_id, next_at))
                    await asyncio.sleep(0)
                if due:
                    await self._recorder.flush()  # one step pending at most
                if self._alerter is not None:
                    for customer_id in due:
                        self._alerter.budget_reset(customer_id, budget)
                total += len(due)
        return total
