"""Fixtures of the management API tests, on SQLite and on PostgreSQL.

A proxy takes over a second to start, so most tests share one proxy per engine (session scope; tests use ids of
their own, `new_id()`), configured with a default budget so that both kinds of customers are at hand. Tests that
need a config of their own (the document's fixed ids and restarts, no master key) start one on a fresh database.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from haimaker.money import usd_to_nanos
from haimaker.storage import Budget, BudgetRepository, create_engine, session_factory, upgrade
from tests.api.mgmt_support import DEFAULT_TIER, mgmt_config, proxy_on, run
from tests.support.databases import DATABASE_KINDS, DatabaseKind, drop_database, make_database_url
from tests.support.proxy import RunningProxy


@pytest.fixture(scope="session", params=DATABASE_KINDS)
def engine_kind(request: pytest.FixtureRequest) -> DatabaseKind:
    kind: DatabaseKind = request.param
    return kind


@contextlib.contextmanager
def _database(kind: DatabaseKind, tmp_path: Path) -> Iterator[str]:
    url = run(make_database_url(kind, tmp_path))
    try:
        yield url
    finally:
        run(drop_database(url))


@pytest.fixture
def fresh_db(engine_kind: DatabaseKind, tmp_path: Path) -> Iterator[str]:
    """An empty database of the session's engine, dropped after the test."""
    with _database(engine_kind, tmp_path) as url:
        yield url


async def _with_default_tier(url: str) -> None:
    await upgrade(url)
    engine = create_engine(url)
    try:
        budgets = BudgetRepository(session_factory(engine))
        await budgets.create(Budget(budget_id=DEFAULT_TIER, rpm_limit=1000, max_budget=usd_to_nanos(1000)))
    finally:
        await engine.dispose()


@pytest.fixture(scope="session")
def shared_proxy(engine_kind: DatabaseKind, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningProxy]:
    """The proxy most tests share. Customers without a budget ride `default-tier` (rpm_limit 1000, $1000)."""
    path = tmp_path_factory.mktemp(f"mgmt-{engine_kind}")
    with _database(engine_kind, path) as url:
        run(_with_default_tier(url))
        config = mgmt_config(url, litellm_settings={"max_end_user_budget_id": DEFAULT_TIER})
        with proxy_on(path, config) as proxy:
            yield proxy


@pytest.fixture
def api(shared_proxy: RunningProxy) -> Iterator[httpx.Client]:
    """An admin client of the shared proxy."""
    with shared_proxy.client() as client:
        yield client
