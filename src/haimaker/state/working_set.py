"""The bound on the customers held in memory: idle customers are evicted once their charges are durable.

A customer may be evicted (from the catalog and from this process's counters) only when reading it back from the store
gives the same answer as keeping it:
- no request of it is admitted and unsettled (`Catalog.began`/`ended`, called by the budget engine);
- every charge and reset queued for it is written: the sweep marks an idle customer with the recorder's current
  queue position, and evicts it at a later sweep once the recorder has written past that mark, provided it was not
  admitted again in between (an admission clears the mark). The recorder writes in queue order, so every charge of
  the customer, all queued before its last request ended, is then in the store;
- its counters hold nothing the store lacks: no reservation, nothing owed to Redis, and for a customer with rpm/tpm
  limits no request in the current rate window (`CounterStore.evict`).
A customer held back by any of these stays (the bound is soft: memory over the bound, never a wrong budget) and is
tried again at the next sweep. Eviction walks from the least recently used end and stops after a bounded number of
entries, so a sweep costs O(excess), never O(customers).
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import islice
from typing import Final

from haimaker.periodic import repeat
from haimaker.state.catalog import Catalog
from haimaker.state.counters import CounterStore

SWEEP_INTERVAL_S: Final = 1.0
# Entries examined per sweep beyond the excess: idle ones are usually at the old end, but a few may be pinned there.
_SCAN_SLACK: Final = 1024


class WorkingSet:
    """Keeps `catalog.customers` near `max_customers` by evicting idle, fully written customers."""

    def __init__(
        self,
        catalog: Catalog,
        counters: CounterStore,
        *,
        max_customers: int,
        queued: Callable[[], int],
        written: Callable[[], int],
        interval_s: float = SWEEP_INTERVAL_S,
    ) -> None:
        self._catalog = catalog
        self._counters = counters
        self.max_customers = max_customers
        self._queued = queued
        self._written = written
        self._interval_s = interval_s
        self.evicted = 0

    async def run(self) -> None:
        """Sweep every `interval_s` (the app's background task)."""
        await repeat(self.sweep, self._interval_s, what="working-set sweep", first_delay_s=self._interval_s)

    def sweep(self) -> int:
        """One pass over the least recently used customers; returns how many were evicted."""
        catalog = self._catalog
        excess = len(catalog.customers) - self.max_customers
        if excess <= 0:
            catalog.eviction_marks.clear()
            return 0
        queued, written = self._queued(), self._written()
        marks = catalog.eviction_marks
        victims: list[str] = []
        for user_id in islice(catalog.customers, excess + _SCAN_SLACK):
            if user_id in catalog.active:
                continue
            mark = marks.get(user_id)
            if mark is None:
                marks[user_id] = queued
            elif written >= mark:
                victims.append(user_id)
                if len(victims) >= excess:
                    break
        evicted = 0
        for user_id in victims:
            limits = catalog.limits_for(user_id)
            if self._counters.evict(user_id, rate_limited=limits.rpm_limit is not None or limits.tpm_limit is not None):
                catalog.evict(user_id)
                evicted += 1
            marks.pop(user_id, None)
        self.evicted += evicted
        return evicted
