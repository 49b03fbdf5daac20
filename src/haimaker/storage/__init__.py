"""The durable store: SQLAlchemy 2 async on SQLite (aiosqlite, the default) or PostgreSQL (asyncpg).

engine.py         URLs, engines, sessions, `upgrade()` (Alembic, the only way the schema changes)
tables.py         the schema as mapped classes; rows ↔ records
records.py        the domain records repositories return
budgets_repo.py   BudgetRepository
customers_repo.py CustomerRepository
spend_repo.py     SpendRepository and ChargeBatch (the grouped, idempotent charge write)
spend_reports.py  the spend reports SpendRepository inherits (aggregates grouped by the database, from the rollup)
spend_log_purge.py SpendLogPurge: spend-log retention's bounded delete batches
json_rows.py      many rows in one statement, as one JSON parameter (the charge write's statements)
outbox_repo.py    the usage export outbox (filled in the charge transaction) and each sink's cursor and dead letters
outbox_tables.py  the usage export's tables (migration 0004)
dead_letters_repo.py DeadLetterRepository (charges and resets the recorder could not write)
write_errors.py   a failed write: the row's fault (data error) or the store's? and a safe description
store_identity.py the store's id (haimaker_meta), remembered per URL: a deleted/replaced/emptied store is refused
store_health.py   StoreMonitor: is the store still there (file missing/replaced/read-only, schema gone)?
migrations/       Alembic environment and versions (package data)
"""

from __future__ import annotations

from haimaker.storage.budgets_repo import BudgetRepository
from haimaker.storage.customers_repo import CustomerRepository
from haimaker.storage.engine import create_engine, normalize_database_url, session_factory, upgrade
from haimaker.storage.records import Budget, Customer, DailySpend, SpendLog
from haimaker.storage.spend_repo import ChargeBatch, SpendRepository

__all__ = [
    "Budget",
    "BudgetRepository",
    "ChargeBatch",
    "Customer",
    "CustomerRepository",
    "DailySpend",
    "SpendLog",
    "SpendRepository",
    "create_engine",
    "normalize_database_url",
    "session_factory",
    "upgrade",
]
