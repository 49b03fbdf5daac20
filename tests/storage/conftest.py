"""Fixtures for the storage tests: a migrated database per test on each engine, its engine and the repositories."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

# The shared database helpers live in tests/dbs.py; tests/ is not a package and not on sys.path by default.
_TESTS_DIR = str(Path(__file__).resolve().parents[1])
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)

from dbs import database_kind, database_url, migrated_database_url  # noqa: E402, F401
from haimaker.clock import FakeClock  # noqa: E402
from haimaker.storage import (  # noqa: E402
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
async def engine(migrated_database_url: str) -> AsyncIterator[AsyncEngine]:  # noqa: F811
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
