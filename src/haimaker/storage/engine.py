"""Engines, sessions and schema upgrades for the durable store.

Owns turning a configured database URL into an async SQLAlchemy engine — SQLite through aiosqlite (the default:
a file beside the config) or PostgreSQL through asyncpg — the session factory every repository shares, and running
the Alembic migrations, which are the only way the schema is created or changed.

Invariants:
- SQLite connections run with WAL journaling, `synchronous=NORMAL`, a busy timeout and foreign keys enforced, and
  SQLAlchemy (not the sqlite3 driver) emits `BEGIN`, so every statement of a transaction, reads included, is inside
  it (the driver's legacy mode leaves SELECTs and DDL outside transactions).
- Sessions never expire attributes on commit: repositories read rows after the transaction ends, without lazy loads.
- `upgrade()` migrates in one transaction under a lock (a PostgreSQL advisory lock, or SQLite's write lock taken by
  `BEGIN IMMEDIATE`), so processes that start together migrate one after the other and the later ones find nothing
  to do.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import orjson
from sqlalchemy import Connection, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from haimaker.storage.migrations import HEAD_REVISION

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR: Final = Path(__file__).with_name("migrations")
DEFAULT_SQLITE_FILENAME: Final = "haimaker.db"
SQLITE_BUSY_TIMEOUT_MS: Final = 15_000
POSTGRES_POOL_SIZE: Final = 10
# An arbitrary constant naming haimaker's migration lock among the server's advisory locks ("haimaker" in ASCII).
MIGRATION_LOCK_KEY: Final = 0x6861696D616B6572

# Execution option read by the SQLite BEGIN hook: take the write lock up front (`BEGIN IMMEDIATE`).
_SQLITE_BEGIN_IMMEDIATE: Final = "haimaker_sqlite_begin_immediate"
# Execution options for a transaction that reads before it writes: on SQLite it takes the write lock at BEGIN, so a
# concurrent writer waits on the busy timeout instead of failing to upgrade a stale read snapshot. No-op elsewhere.
WRITE_TRANSACTION: Final = {_SQLITE_BEGIN_IMMEDIATE: True}
_ASYNC_DRIVERS: Final = {
    "sqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
}


def normalize_database_url(url: str | None, *, config_dir: Path) -> str:
    """Return the async SQLAlchemy URL for a configured `database_url`.

    None (or blank) means the embedded default, `<config_dir>/haimaker.db`. Bare `sqlite://`, `postgresql://` and
    `postgres://` get the async drivers; a URL that names its driver (`scheme+driver://`) is kept as it is.
    """
    if url is None or not url.strip():
        return f"sqlite+aiosqlite:///{(config_dir / DEFAULT_SQLITE_FILENAME).absolute()}"
    scheme, separator, rest = url.strip().partition("://")
    if not separator:
        # Never echo the URL itself: it may carry a password.
        raise ValueError("database_url must look like 'sqlite:///path' or 'postgresql://user@host/db'")
    driver = _ASYNC_DRIVERS.get(scheme.lower())
    return f"{driver}://{rest}" if driver else url.strip()


def _json_dumps(value: Any) -> str:
    # Every spend log carries a JSON column: orjson instead of the stdlib encoder on the write path.
    return orjson.dumps(value).decode()


def create_engine(url: str) -> AsyncEngine:
    """Create the async engine for a normalized URL (see `normalize_database_url`). The caller disposes it."""
    sa_url = make_url(url)
    backend = sa_url.get_backend_name()
    if backend == "sqlite":
        is_memory = sa_url.database in (None, "", ":memory:")
        # SQLite has one writer at a time: a few connections serve readers and queue writers on the busy timeout.
        pool_args: dict[str, Any] = {} if is_memory else {"pool_size": 5, "max_overflow": 5}
        engine = create_async_engine(sa_url, json_serializer=_json_dumps, **pool_args)
        event.listen(engine.sync_engine, "connect", _on_sqlite_connect)
        event.listen(engine.sync_engine, "begin", _on_sqlite_begin)
        return engine
    if backend == "postgresql":
        return create_async_engine(
            sa_url,
            json_serializer=_json_dumps,
            pool_size=POSTGRES_POOL_SIZE,
            max_overflow=POSTGRES_POOL_SIZE,
            pool_pre_ping=True,
            pool_recycle=1800,
            connect_args={"server_settings": {"application_name": "haimaker"}},
        )
    raise ValueError(f"unsupported database backend {backend!r}: use SQLite or PostgreSQL")


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """The session factory the repositories share."""
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


async def upgrade(url: str, revision: str = "head") -> None:
    """Apply the Alembic migrations up to `revision` (default: the newest), in one transaction.

    Safe to call from a running event loop. Processes starting together serialize on a database lock taken before
    Alembic runs, so each finds the schema either untouched or complete. Alembic keeps its context in a module
    global, so calls within one process must not overlap unless they target the same database.
    """
    engine = create_engine(url)
    try:
        if revision == "head" and await _at_revision(engine, HEAD_REVISION):
            return  # the usual start: nothing to migrate, and Alembic (~10 MB of modules) is never imported
        async with engine.connect() as connection:
            if connection.dialect.name == "sqlite":
                # Take SQLite's write lock up front: a concurrent upgrader then waits on the busy timeout instead of
                # failing to upgrade the read snapshot it took when Alembic first read the version table.
                await connection.execution_options(**{_SQLITE_BEGIN_IMMEDIATE: True})
            # Alembic joins a transaction that is already open (and leaves committing it to us).
            async with connection.begin():
                if connection.dialect.name == "postgresql":
                    # Released when the transaction ends, committed or not.
                    await connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
                await connection.run_sync(_run_alembic_upgrade, revision)
    finally:
        await engine.dispose()


async def _at_revision(engine: AsyncEngine, revision: str) -> bool:
    try:
        async with engine.connect() as connection:
            versions = (await connection.execute(text("SELECT version_num FROM alembic_version"))).scalars().all()
    except DBAPIError:
        return False  # a new database: no version table yet
    return list(versions) == [revision]


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic config for the packaged migrations (no alembic.ini), bound to `connection` when given."""
    quiet_alembic()
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def _run_alembic_upgrade(connection: Connection, revision: str) -> None:
    quiet_alembic()
    from alembic import command

    command.upgrade(alembic_config(connection), revision)


def quiet_alembic() -> None:
    """Alembic narrates its import and every step at INFO ("setup plugin ...", "Running upgrade ..."): kept for
    --detailed_debug (DEBUG), out of a normal start's output. Called before alembic is first imported."""
    migration_log = logging.getLogger("alembic")
    if not migration_log.isEnabledFor(logging.DEBUG) and migration_log.getEffectiveLevel() < logging.WARNING:
        migration_log.setLevel(logging.WARNING)


def _on_sqlite_connect(dbapi_connection: Any, _connection_record: Any) -> None:
    # Stop the driver from issuing its own BEGINs; `_on_sqlite_begin` issues them for every transaction.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        _enable_wal(cursor)
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
    finally:
        cursor.close()


def _enable_wal(cursor: Any) -> None:
    """Switch the file to WAL once (the mode is stored in the file, so later connections only read it).

    Converting takes an exclusive lock and SQLite does not wait on the busy handler for it: two processes creating
    the same new database at once can see "database is locked". That happens only in the first instants of a new
    file, so a short bounded retry settles it (this runs at connection creation only, never per request).
    """
    cursor.execute("PRAGMA journal_mode")
    row = cursor.fetchone()
    if row is not None and str(row[0]).lower() == "wal":
        return
    for attempt in range(50):
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except Exception as exc:
            if "locked" not in str(exc) or attempt == 49:
                raise
            time.sleep(0.02)


def _on_sqlite_begin(connection: Connection) -> None:
    immediate = connection.get_execution_options().get(_SQLITE_BEGIN_IMMEDIATE, False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")
