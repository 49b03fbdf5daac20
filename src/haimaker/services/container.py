"""The service layer: use-cases shared by the management API and the admin UI (one implementation of each rule).
Built once per app in the lifespan (`app.py`), from exactly the collaborators the use-cases need.

    services.customers   CustomerService  (customers.py)
    services.budgets     BudgetService    (budgets.py)
    services.spend       SpendService     (spend.py)
    services.keys        KeyService       (keys.py)
    ResetJob             the budget-period job (resets.py)

Invariants:
- Every admin write reaches the hot state (the in-memory catalogs and the spend counters) through `budget_changed`,
  `customer_changed`, `spend_changed`, `key_changed` or `key_spend_changed`, before the write's method returns:
  admission never sees a customer, budget or key older than the last admin response.
- Those methods are the one multi-instance hook: they update this instance, and with several instances announce
  the change (Redis pub/sub, `state/cluster.py`) for the others to read the row back from the store.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final, Protocol

from haimaker.errors import ServiceUnavailableError
from haimaker.money import Nanos
from haimaker.services.budgets import BudgetService
from haimaker.services.customers import CustomerService
from haimaker.services.keys import KeyService
from haimaker.services.spend import SpendService
from haimaker.state.keys import KeyCatalog, key_subject

if TYPE_CHECKING:
    from haimaker.accounting.recorder import SpendRecorder
    from haimaker.clock import Clock
    from haimaker.periods import NextReset
    from haimaker.providers.router import Router
    from haimaker.state.catalog import Catalog
    from haimaker.state.counters import CounterStore
    from haimaker.storage.budgets_repo import BudgetRepository
    from haimaker.storage.customers_repo import CustomerRepository
    from haimaker.storage.keys_repo import KeyRepository
    from haimaker.storage.records import Budget, Customer, VirtualKey
    from haimaker.storage.spend_repo import SpendRepository
    from haimaker.storage.store_health import StoreStatus

# How long an admin call waits for the pending writes of a store the monitor still thinks fine (a healthy writer
# needs one group interval, 100 ms; a writer catching up a backlog, a few groups).
SETTLE_TIMEOUT_S: Final = 3.0
# `retry-after` of the 503 for pending writes: about the store monitor's interval plus its probe.
SETTLE_RETRY_AFTER_S: Final = 3

# A customer's spend as the whole cluster counts it (None: not known there); `ResilientCounterStore.current_spend`.
SharedSpend = Callable[[str], Awaitable[Nanos | None]]


class ChangeAnnouncer(Protocol):
    """Tells the other instances that an admin write changed a row (`state.cluster.Cluster`)."""

    def changed(self, kind: str, key: str) -> None: ...


class Services:
    """The use-cases, bound to one running app's store, hot state and cluster."""

    def __init__(
        self,
        *,
        customers_repo: CustomerRepository,
        budgets_repo: BudgetRepository,
        spend_repo: SpendRepository,
        keys_repo: KeyRepository,
        key_catalog: KeyCatalog,
        catalog: Catalog,
        counters: CounterStore,
        recorder: SpendRecorder,
        clock: Clock,
        router: Router,
        next_reset: NextReset,
        announcer: ChangeAnnouncer | None = None,
        shared_spend: SharedSpend | None = None,
        store_status: Callable[[], StoreStatus] | None = None,
    ) -> None:
        self.customers_repo = customers_repo
        self.budgets_repo = budgets_repo
        self.spend_repo = spend_repo
        self.keys_repo = keys_repo
        self.catalog = catalog
        self.key_catalog = key_catalog
        self.counters = counters
        self.clock = clock
        self.router = router
        self.next_reset = next_reset
        self._recorder = recorder
        self._announcer = announcer
        self._shared_spend = shared_spend
        # The store monitor's last verdict (`storage/store_health.py`; an attribute read); None: not watched.
        self._store_status = store_status
        self.customers = CustomerService(self)
        self.budgets = BudgetService(self)
        self.spend = SpendService(self)
        self.keys = KeyService(self)

    async def settle_pending(self) -> None:
        """Wait until every charge and reset queued so far is written (stored spend exact, traffic customers stored).

        Raises:
            ServiceUnavailableError: the store monitor already knows the store lost or unreachable (at once: pending
                writes cannot complete, and reads would not see them), or the writes do not complete within
                `SETTLE_TIMEOUT_S`. The recorder keeps retrying either way, so nothing is lost.
        """
        status = self._store_status() if self._store_status is not None else None
        if status is not None and status.state != "ok":
            # Refused even with nothing pending: a lost store would answer from an emptied or re-created database.
            raise ServiceUnavailableError(
                f"The spend store is {status.state} (see /health/readiness); try again once it is back.",
                error_type="store_unavailable",
                headers={"retry-after": str(SETTLE_RETRY_AFTER_S)},
            )
        try:
            await asyncio.wait_for(self._recorder.flush(), SETTLE_TIMEOUT_S)
        except TimeoutError:
            raise ServiceUnavailableError(
                f"Spend writes are pending and the database has not accepted them for {SETTLE_TIMEOUT_S:.0f} s "
                "(see /health/readiness); try again shortly.",
                headers={"retry-after": str(SETTLE_RETRY_AFTER_S)},
            ) from None

    async def live_spend(self, customer: Customer) -> Nanos:
        """The customer's spend including charges not yet written (by every instance, when several share Redis)."""
        if self._shared_spend is not None:
            shared = await self._shared_spend(customer.user_id)
            if shared is not None:
                return shared
        spend = self.counters.spend(customer.user_id)
        return customer.spend if spend is None else spend

    def budget_changed(self, budget_id: str, budget: Budget | None) -> None:
        """A budget row was written (`budget`) or deleted (None): into the catalog, and announced."""
        if budget is None:
            self.catalog.drop_budget(budget_id)
        else:
            self.catalog.put_budget(budget)
        self._announce("budget", budget_id)

    def customer_changed(self, user_id: str, customer: Customer | None) -> None:
        """A customer row was written (`customer`) or deleted (None): into the catalog (a deleted customer's
        counters go too), and announced."""
        if customer is None:
            self.catalog.drop_customer(user_id)
            self.counters.forget(user_id)
        else:
            self.catalog.put_customer(customer)
        self._announce("customer", user_id)

    def spend_changed(self, customer: Customer) -> None:
        """An admin set a customer's spend: into this instance's counters. Other instances see it through the
        shared counters (Redis), so nothing is announced."""
        self.counters.seed(customer.user_id, customer.spend, customer.spend_reset_at)

    async def live_key_spend(self, key: VirtualKey) -> Nanos:
        """A key's spend in its period including charges not yet written (by every instance, with shared Redis)."""
        subject = key_subject(key.token)
        if self._shared_spend is not None:
            shared = await self._shared_spend(subject)
            if shared is not None:
                return shared
        spend = self.counters.spend(subject)
        return key.spend if spend is None else spend

    def key_changed(self, token: str, key: VirtualKey | None) -> None:
        """A key row was written (`key`) or deleted (None): into the key catalog (a deleted key's counters go too),
        and announced as kind "key" with its token."""
        if key is None:
            self.key_catalog.drop(token)
            self.counters.forget(key_subject(token))
        else:
            self.key_catalog.put(key)
        self._announce("key", token)

    def key_spend_changed(self, key: VirtualKey) -> None:
        """An admin set a key's spend (or a regenerated key took its old token's): into this instance's counters."""
        self.counters.seed(key_subject(key.token), key.spend, key.budget_reset_at)

    def _announce(self, kind: str, key: str) -> None:
        if self._announcer is not None:
            self._announcer.changed(kind, key)
