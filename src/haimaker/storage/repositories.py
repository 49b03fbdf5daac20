"""The repositories, in one import: each takes the shared `async_sessionmaker` and returns domain records."""

from __future__ import annotations

from haimaker.storage.budgets_repo import BudgetRepository
from haimaker.storage.customers_repo import CustomerRepository
from haimaker.storage.spend_repo import ChargeBatch, SpendRepository

__all__ = ["BudgetRepository", "ChargeBatch", "CustomerRepository", "SpendRepository"]
