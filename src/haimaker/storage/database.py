"""`Database`: one engine, its session factory and the repositories built on it, opened and closed together.

The app's lifespan opens one (`await Database.open(url)`, which migrates first by default) and closes it
(`await database.aclose()`, which disposes the engine's pool).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from haimaker.clock import Clock
from haimaker.storage.budgets_repo import BudgetRepository
from haimaker.storage.customers_repo import CustomerRepository
from haimaker.storage.engine import create_engine, session_factory, upgrade
from haimaker.storage.spend_repo import SpendRepository


@dataclass(frozen=True, slots=True)
class Database:
    """The durable store of one process."""

    url: str
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    budgets: BudgetRepository
    customers: CustomerRepository
    spend: SpendRepository

    @classmethod
    async def open(cls, url: str, *, migrate: bool = True, clock: Clock | None = None) -> Database:
        """Connect to a normalized URL (see `normalize_database_url`), after applying migrations when `migrate`."""
        if migrate:
            await upgrade(url)
        engine = create_engine(url)
        sessions = session_factory(engine)
        return cls(
            url=url,
            engine=engine,
            sessions=sessions,
            budgets=BudgetRepository(sessions, clock=clock),
            customers=CustomerRepository(sessions, clock=clock),
            spend=SpendRepository(sessions, clock=clock),
        )

    async def aclose(self) -> None:
        """Close every pooled connection."""
        await self.engine.dispose()
