"""Customers and budgets held in memory, so that admission never waits on the database once a customer is active.

Budgets (the tiers, a few hundred at most) are held whole. Customers are a cache of the working set: a store may hold
millions of customers, most of them idle on any given day, so the catalog holds the ones sending requests and reads
the others on their first request (`lookup`). Concurrent misses are coalesced into one store read per batch
(`state/batching.py`), and an id the store does not know is remembered as absent for a while, so a request of a new
customer costs one read and a flood of requests of the same unknown id costs one. `state/working_set.py` evicts idle
customers when the cache is over its bound, once everything they were charged is durable, so a customer read back
from the store is read with its exact spend.

The catalog is kept current by the service layer after every admin write (and, with several instances, by
invalidation messages). Customers seen for the first time in LLM traffic are added here at once and written to the
store by the spend recorder.

Races with the store: a read that started before an admin write (or an admission of a new customer) on this instance
must not overwrite the newer record, so a batch read is applied only where the catalog has no record yet, and read
again when a customer was dropped while it ran (an admin delete in between must not resurrect the row).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Final

from haimaker.state.batching import BatchedLookup
from haimaker.state.counters import Limits
from haimaker.storage.records import Budget, Customer

# How long a store read saying "no such customer" is trusted: a customer created by another instance's traffic
# reaches this one at the latest then (admin writes arrive at once, as invalidation messages).
ABSENT_TTL_S: Final = 30.0
# Bound of the absent set: a flood of random ids must not grow it without limit.
ABSENT_MAX: Final = 100_000
# A batch read is repeated when the catalog changed while it ran; after this many tries it is applied where the
# catalog still has no record (admin writes faster than a read: theirs win, as they are applied first).
_READ_ATTEMPTS: Final = 3

ReadCustomers = Callable[[Sequence[str]], Awaitable[Mapping[str, Customer]]]


def _ignore(customer: Customer) -> None:
    return None


class Catalog:
    def __init__(self, default_budget_id: str | None = None) -> None:
        # Least recently used first: `lookup` and `put_customer` move a customer to the end.
        self.customers: OrderedDict[str, Customer] = OrderedDict()
        self.budgets: dict[str, Budget] = {}
        self.default_budget_id = default_budget_id
        self._limits_cache: dict[str, Limits] = {}
        self._absent: dict[str, float] = {}
        # Bumped by every removal from `customers`, so a store read can tell whether one raced with it (an added
        # record needs no such care: a read is applied only where the catalog holds none).
        self.drops = 0
        self._loader: BatchedLookup[str, Customer | None] | None = None
        self._read: ReadCustomers | None = None
        self._on_loaded: Callable[[Customer], None] = _ignore
        # Admitted and not yet settled requests per customer, and the working set's eviction marks
        # (`state/working_set.py`): a customer with a request in flight is never evicted.
        self.active: dict[str, int] = {}
        self.eviction_marks: dict[str, int] = {}

    def attach_store(self, read: ReadCustomers, on_loaded: Callable[[Customer], None] = _ignore) -> None:
        """Read missing customers from the store (`CustomerRepository.get_many`); `on_loaded` is told of each one
        read back (the counters take its stored spend)."""
        self._read = read
        self._on_loaded = on_loaded
        self._loader = BatchedLookup(self._load_many, missing=None)

    def load(self, customers: Iterable[Customer], budgets: Iterable[Budget]) -> None:
        self.customers = OrderedDict((c.user_id, c) for c in customers)
        self.budgets = {b.budget_id: b for b in budgets}
        self._limits_cache.clear()
        self._absent.clear()
        self.drops += 1

    def load_budgets(self, budgets: Iterable[Budget]) -> None:
        self.budgets = {b.budget_id: b for b in budgets}
        self._limits_cache.clear()

    async def lookup(self, user_id: str) -> Customer | None:
        """The customer, from the cache or else from the store; None when the store does not know it either."""
        customer = self.customers.get(user_id)
        if customer is not None:
            self.customers.move_to_end(user_id)
            return customer
        if self._loader is None:
            return None
        absent_at = self._absent.get(user_id)
        if absent_at is not None and time.monotonic() - absent_at < ABSENT_TTL_S:
            return None
        return await self._loader(user_id)

    async def _load_many(self, user_ids: Sequence[str]) -> dict[str, Customer | None]:
        assert self._read is not None
        for _ in range(_READ_ATTEMPTS):
            drops = self.drops
            found = await self._read(user_ids)
            if drops == self.drops:
                break
        now = time.monotonic()
        answer: dict[str, Customer | None] = {}
        for user_id in user_ids:
            cached = self.customers.get(user_id)
            if cached is not None:  # written or admitted while the read ran: newer than the row read
                answer[user_id] = cached
                continue
            stored = found.get(user_id)
            if stored is None:
                self._mark_absent(user_id, now)
            else:
                self.customers[user_id] = stored
                self._absent.pop(user_id, None)
                self._on_loaded(stored)
            answer[user_id] = stored
        return answer

    def _mark_absent(self, user_id: str, now: float) -> None:
        if len(self._absent) >= ABSENT_MAX:
            # The oldest half goes (insertion order): still bounded, and recent answers are kept.
            for stale in list(self._absent)[: ABSENT_MAX // 2]:
                del self._absent[stale]
        self._absent[user_id] = now

    def began(self, user_id: str) -> None:
        """A request of this customer was admitted (it stays in memory until `ended`)."""
        self.active[user_id] = self.active.get(user_id, 0) + 1
        self.eviction_marks.pop(user_id, None)

    def ended(self, user_id: str) -> None:
        """An admitted request was settled or released (its charge, if any, already queued)."""
        left = self.active.get(user_id, 0) - 1
        if left > 0:
            self.active[user_id] = left
        else:
            self.active.pop(user_id, None)

    def forget_absent(self, user_id: str | None = None) -> None:
        """The store may now have this customer (every customer, with None): the next lookup reads it."""
        if user_id is None:
            self._absent.clear()
        else:
            self._absent.pop(user_id, None)

    def is_absent(self, user_id: str) -> bool:
        """The last store read (recent) did not find this customer, and nothing created it here since."""
        absent_at = self._absent.get(user_id)
        return absent_at is not None and time.monotonic() - absent_at < ABSENT_TTL_S

    def put_customer(self, customer: Customer) -> None:
        self.customers[customer.user_id] = customer
        self.customers.move_to_end(customer.user_id)
        self._limits_cache.pop(customer.user_id, None)
        self._absent.pop(customer.user_id, None)

    def put_new_customer(self, customer: Customer) -> Customer:
        """A customer first seen in traffic; a record written meanwhile (an admin write racing the request) wins."""
        current = self.customers.get(customer.user_id)
        if current is not None:
            return current
        self.put_customer(customer)
        return customer

    def drop_customer(self, user_id: str) -> None:
        self.customers.pop(user_id, None)
        self._limits_cache.pop(user_id, None)
        self.drops += 1

    def refresh(self, stored: Customer, seen: Customer) -> None:
        """The resync's newer row of a cached customer, applied only if the record is still `seen` (no admin write
        in between) and without making it recently used."""
        if self.customers.get(stored.user_id) is seen and stored != seen:
            self.customers[stored.user_id] = stored
            self._limits_cache.pop(stored.user_id, None)

    def evict(self, user_id: str) -> None:
        """Forget an idle customer (the store has it, with its exact spend): read back on its next request."""
        self.customers.pop(user_id, None)
        self._limits_cache.pop(user_id, None)
        self.eviction_marks.pop(user_id, None)

    def put_budget(self, budget: Budget) -> None:
        self.budgets[budget.budget_id] = budget
        self._limits_cache.clear()

    def drop_budget(self, budget_id: str) -> None:
        """A deleted budget: the store set its customers' `budget_id` to NULL; the cached ones follow (bounded)."""
        self.budgets.pop(budget_id, None)
        for user_id, customer in self.customers.items():
            if customer.budget_id == budget_id:
                self.customers[user_id] = replace(customer, budget_id=None)
        self._limits_cache.clear()
        self.drops += 1

    def effective_budget(self, customer: Customer | None) -> Budget | None:
        """The customer's own budget row, else the default budget, else None."""
        if customer is not None and customer.budget_id is not None:
            own = self.budgets.get(customer.budget_id)
            if own is not None:
                return own
        if self.default_budget_id is not None:
            return self.budgets.get(self.default_budget_id)
        return None

    def limits_for(self, customer_id: str) -> Limits:
        """The limits admission applies to a cached customer (cached until the next admin write); a customer not in
        the cache gets the default budget's (`lookup` first: an evicted customer's own budget is in the store)."""
        limits = self._limits_cache.get(customer_id)
        if limits is None:
            customer = self.customers.get(customer_id)
            limits = limits_of(customer_id, self.effective_budget(customer))
            if customer is not None:  # bounded with the cache: a flood of unknown ids must not grow it
                self._limits_cache[customer_id] = limits
        return limits

    def cached_ids_of_budget(self, budget_id: str) -> list[str]:
        """The cached customers whose effective budget is `budget_id` (the default's included): bounded by the cache;
        every customer of a budget is a SQL question (`CustomerRepository`)."""
        is_default = budget_id == self.default_budget_id
        ids = []
        for customer in self.customers.values():
            own = customer.budget_id if customer.budget_id in self.budgets else None
            if own == budget_id or (own is None and is_default):
                ids.append(customer.user_id)
        return ids


def limits_of(customer_id: str, budget: Budget | None) -> Limits:
    if budget is None:
        return Limits(customer_id, None, None, None, None, None, None, None, None)
    return Limits(
        customer_id=customer_id,
        budget_id=budget.budget_id,
        max_budget=budget.max_budget,
        soft_budget=budget.soft_budget,
        rpm_limit=budget.rpm_limit,
        tpm_limit=budget.tpm_limit,
        max_parallel_requests=budget.max_parallel_requests,
        budget_duration=budget.budget_duration,
        budget_reset_at=budget.budget_reset_at,
    )
