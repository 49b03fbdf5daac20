"""The databases a benchmark run measures against: an SQLite file, or a fresh PostgreSQL database.

A PostgreSQL database is created as `haimaker_bench_<hex>` through the admin DSN (trust auth on 127.0.0.1 by
default) and dropped with `WITH (FORCE)` when the run ends, whatever happened. When PostgreSQL cannot be reached
the store carries a `skip_reason` instead, so the run still reports its other rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import asyncpg  # type: ignore[import-untyped]

_SAFE_NAME = re.compile(r"^[a-z0-9_]+$")


@dataclass(frozen=True, slots=True)
class Store:
    """A database URL for haimaker's `general_settings.database_url`."""

    name: str
    database_url: str
    skip_reason: str | None = None


async def _execute(dsn: str, statement: str) -> None:
    connection = await asyncpg.connect(dsn, timeout=5)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def _with_database(dsn: str, database: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


@contextlib.contextmanager
def postgres_database(admin_dsn: str, database: str) -> Iterator[Store]:
    """Create `database` for the duration of the block and drop it afterwards."""
    if not _SAFE_NAME.match(database):
        raise ValueError(f"unsafe database name {database!r}")
    try:
        asyncio.run(_execute(admin_dsn, f'CREATE DATABASE "{database}"'))
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        yield Store("postgres", "", skip_reason=f"PostgreSQL unavailable: {exc}")
        return
    try:
        yield Store("postgres", _with_database(admin_dsn, database))
    finally:
        asyncio.run(_execute(admin_dsn, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
