"""Customers and budgets held in memory, so that admission never waits on the database.

The catalog is loaded whole at startup and kept current by the service layer after every admin write
(and, with several instances, by invalidation messages). Customers seen for the first time in LLM
traffic are added here at once and written to the store by the spend recorder.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from haimaker.state.counters import Limits
from haimaker.storage.records import Budget, Customer


class Catalog:
    def __init__(self, default_budget_id: str | None = None) -> None:
        self.customers: dict[str, Customer] = {}
        self.budgets: dict[str, Budget] = {}
        self.default_budget_id = default_budget_id
        self._limits_cache: dict[str, Limits] = {}

    def load(self, customers: Iterable[Customer], budgets: Iterable[Budget]) -> None:
        self.customers = {c.user_id: c for c in customers}
        self.budgets = {b.budget_id: b for b in budgets}
        self._limits_cache.clear()

    def put_customer(self, customer: Customer) -> None:
        self.customers[customer.user_id] = customer
        self._limits_cache.pop(customer.user_id, None)

    def drop_customer(self, user_id: str) -> None:
        self.customers.pop(user_id, None)
        self._limits_cache.pop(user_id, None)

    def put_budget(self, budget: Budget) -> None:
        self.budgets[budget.budget_id] = budget
        self._limits_cache.clear()

    def drop_budget(self, budget_id: str) -> None:
        self.budgets.pop(budget_id, None)
        for user_id, customer in list(self.customers.items()):
            if customer.budget_id == budget_id:
                self.customers[user_id] = replace(customer, budget_id=None)
        self._limits_cache.clear()

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
        """The limits admission applies to a customer (cached until the next admin write)."""
        limits = self._limits_cache.get(customer_id)
        if limits is None:
            budget = self.effective_budget(self.customers.get(customer_id))
            limits = limits_of(customer_id, budget)
            self._limits_cache[customer_id] = limits
        return limits

    def customers_of_budget(self, budget_id: str) -> list[str]:
        """Every customer whose effective budget is `budget_id` (the default's included)."""
        is_default = budget_id == self.default_budget_id
        ids = []
        for customer in self.customers.values():
            own = customer.budget_id if customer.budget_id in self.budgets else None
            if own == budget_id or (own is None and is_default):
                ids.append(customer.user_id)
        return ids

    def shared_count(self, budget_id: str) -> int:
        return sum(1 for c in self.customers.values() if c.budget_id == budget_id)


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
