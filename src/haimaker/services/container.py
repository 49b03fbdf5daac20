"""The service layer: use-cases shared by the management API and the admin UI (one implementation of each rule).
Built once per app in the lifespan.

    services.customers   CustomerService  (customers.py)
    services.budgets     BudgetService    (budgets.py)
    services.spend       SpendService     (spend.py)

Invariants:
- Every admin write reaches the hot state (the in-memory catalog and the spend counters) through `changed`, before
  the write's method returns: admission never sees a customer or budget older than the last admin response.
- `changed` is the one multi-instance hook: it updates this instance, and with several instances publishes the
  change (Redis pub/sub, `state/cluster.py`) for the others to read `key` back from the store.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Final, Literal

from haimaker.errors import ServiceUnavailableError
from haimaker.limits.resets import NextReset, next_reset_function
from haimaker.money import Nanos
from haimaker.services.budgets import BudgetService
from haimaker.services.customers import CustomerService
from haimaker.services.spend import SpendService
from haimaker.storage.records import Budget, Customer

if TYPE_CHECKING:
    from haimaker.accounting.store_sink import StoreSink
    from haimaker.app_state import AppState
    from haimaker.state.catalog import Catalog
    from haimaker.state.counters import CounterStore

# What an admin write changed: a customer row, a customer's spend (set by an admin), or a budget row.
ChangeKind = Literal["customer", "customer_spend", "budget"]
SETTLE_TIMEOUT_S: Final = 10.0


class Services:
    """The use-cases, bound to one running app's state and store."""

    def __init__(self, state: AppState, sink: StoreSink) -> None:
        self.state = state
        self.sink = sink
        litellm = state.settings.config.litellm_settings
        self.next_reset: NextReset = next_reset_function(litellm.timezone, litellm.budget_reset_time)
        self.customers = CustomerService(self)
        self.budgets = BudgetService(self)
        self.spend = SpendService(self)

    @property
    def catalog(self) -> Catalog:
        return self.state.engine.catalog

    @property
    def counters(self) -> CounterStore:
        return self.state.engine.store

    async def settle_pending(self) -> None:
        """Wait until every charge and reset queued so far is written (stored spend exact, traffic customers stored).

        Raises:
            ServiceUnavailableError: the writes do not complete within `SETTLE_TIMEOUT_S` (the store is failing; the
                recorder keeps retrying, so nothing is lost).
        """
        try:
            await asyncio.wait_for(self.state.recorder.flush(), SETTLE_TIMEOUT_S)
        except TimeoutError:
            raise ServiceUnavailableError(
                f"Spend writes are pending and the database has not accepted them for {SETTLE_TIMEOUT_S:.0f} s; "
                "try again shortly.",
            ) from None

    async def live_spend(self, customer: Customer) -> Nanos:
        """The customer's spend including charges not yet written (by every instance, when several share Redis)."""
        cluster = self.state.cluster
        if cluster is not None:
            shared = await cluster.store.current_spend(customer.user_id)
            if shared is not None:
                return shared
        spend = self.counters.spend(customer.user_id)
        return customer.spend if spend is None else spend

    async def changed(self, kind: ChangeKind, key: str, record: Customer | Budget | None) -> None:
        """Apply one admin write to the hot state and announce it to the other instances.

        `record` is the row as written, None when deleted. Other instances (Redis pub/sub, `state/cluster.py`) read
        the row back from the store; a spend set by an admin reaches them through the shared counters.
        """
        if kind == "budget":
            if record is None:
                self.catalog.drop_budget(key)
            else:
                assert isinstance(record, Budget)
                self.catalog.put_budget(record)
        elif kind == "customer":
            if record is None:
                self.state.engine.forget_customer(key)
            else:
                assert isinstance(record, Customer)
                self.catalog.put_customer(record)
        else:
            assert isinstance(record, Customer)
            self.counters.seed(key, record.spend, record.spend_reset_at)
            return
        cluster = self.state.cluster
        if cluster is not None:
            cluster.changed(kind, key)
