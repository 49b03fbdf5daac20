"""Fixtures for the storage tests: a migrated database per test on each engine, its engine and the repositories."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from haimaker.clock import FakeClock
from haimaker.storage import (
    BudgetRepository,
    CustomerRepository,
    SpendRepository,
    create_engine,
    session_factory,
)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def engine(migrated_database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(migrated_database_url)
    yield engine
    await engine.dispose()


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return session_factory(engine)


@pytest.fixture
def budgets(sessions: async_sessionmaker[AsyncSession], clock: FakeClock) -> BudgetRepository:
    return BudgetRepository(sessions, clock=clock)


@pytest.fixture
def customers(sessions: async_sessionmaker[AsyncSession], clock: FakeClock) -> CustomerRepository:
    return CustomerRepository(sessions, clock=clock)


@pytest.fixture
def spend(sessions: async_sessionmaker[AsyncSession], clock: FakeClock) -> SpendRepository:
    return SpendRepository(sessions, clock=clock)
