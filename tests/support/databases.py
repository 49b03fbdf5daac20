"""Fresh databases for tests, on both engines: a SQLite file in `tmp_path`, or a PostgreSQL database of its own.

Several test runs share the PostgreSQL server at 127.0.0.1:5432, so each test gets its own database
`haimaker_t_<uuid hex>`, created through the maintenance database `test` and dropped (WITH FORCE) afterwards.
Override the server with `HAIMAKER_TEST_POSTGRES_URL` (a URL naming the maintenance database). When the server
is unreachable, PostgreSQL tests are skipped, or fail when `CI=true`.

Its fixtures (database_kind, database_url, migrated_database_url) reach every test folder through `pytest_plugins` in
tests/conftest.py.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Final, Literal

import pytest
from sqlalchemy import exc
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from haimaker.storage.engine import upgrade

DatabaseKind = Literal["sqlite", "postgres"]

POSTGRES_ADMIN_URL: Final = os.environ.get("HAIMAKER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
DATABASE_PREFIX: Final = "haimaker_t_"

# Parametrize a fixture or test with these to run it on both engines.
DATABASE_KINDS: Final = (
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
)


async def make_database_url(kind: DatabaseKind, tmp_path: Path) -> str:
    """Create an empty database and return its async URL; `drop_database` removes it."""
    if kind == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / f'haimaker-{uuid.uuid4().hex[:12]}.db'}"
    name = f"{DATABASE_PREFIX}{uuid.uuid4().hex}"
    await _run_on_postgres_admin(f'CREATE DATABASE "{name}"')
    admin = make_url(POSTGRES_ADMIN_URL)
    return admin.set(drivername="postgresql+asyncpg", database=name).render_as_string(hide_password=False)


async def drop_database(url: str) -> None:
    """Drop a PostgreSQL database made by `make_database_url` (SQLite files go with `tmp_path`)."""
    sa_url = make_url(url)
    if sa_url.get_backend_name() != "postgresql":
        return
    name = sa_url.database or ""
    if not name.startswith(DATABASE_PREFIX):
        raise ValueError(f"refusing to drop {name!r}: not a test database")
    await _run_on_postgres_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@asynccontextmanager
async def temporary_database(kind: DatabaseKind, tmp_path: Path) -> AsyncIterator[str]:
    """An empty database for the duration of the block."""
    url = await make_database_url(kind, tmp_path)
    try:
        yield url
    finally:
        await drop_database(url)


async def _run_on_postgres_admin(sql: str) -> None:
    engine = create_async_engine(
        make_url(POSTGRES_ADMIN_URL).set(drivername="postgresql+asyncpg"),
        isolation_level="AUTOCOMMIT",
        poolclass=NullPool,
        connect_args={"timeout": 5},
    )
    try:
        try:
            connection = await engine.connect()
        except (OSError, exc.DBAPIError) as error:
            message = f"PostgreSQL is unreachable at {make_url(POSTGRES_ADMIN_URL)!r}: {error}"
            if os.environ.get("CI", "").lower() == "true":
                pytest.fail(message)
            pytest.skip(message)
        try:
            await connection.exec_driver_sql(sql)
        finally:
            await connection.close()
    finally:
        await engine.dispose()


@pytest.fixture(params=DATABASE_KINDS)
def database_kind(request: pytest.FixtureRequest) -> DatabaseKind:
    """Each test using this runs once per engine."""
    kind: DatabaseKind = request.param
    return kind


@pytest.fixture
async def database_url(database_kind: DatabaseKind, tmp_path: Path) -> AsyncIterator[str]:
    """An empty database of the parametrized kind (no schema)."""
    async with temporary_database(database_kind, tmp_path) as url:
        yield url


@pytest.fixture
async def migrated_database_url(database_url: str) -> str:
    """A database of the parametrized kind with the schema from the migrations."""
    await upgrade(database_url)
    return database_url
