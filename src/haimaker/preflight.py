"""What must work before the proxy serves, checked by the CLI before any server starts, and how a start-up failure
is told: one line naming what failed and where (a host, a database, a file), never a password or a traceback.

`check_dependencies` runs in the `haimaker` process itself, so its refusal is the same under uvicorn, its workers
and granian: `error: ...` on stderr and exit code 1. What it cannot foresee (a migration the database user may not
run, a store lost between the check and the start) fails the lifespan instead, which `describe_failure` turns into
one line as well (`app.py`). Redis is not checked: an unreachable Redis is an outage the proxy serves through
(docs/multi-instance.md), at start-up as later.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import traceback
from pathlib import Path
from typing import Final
from urllib.parse import unquote, urlsplit

from sqlalchemy import text
from sqlalchemy.engine import make_url

from haimaker.config.loader import ConfigError, Settings
from haimaker.startup import describe_redis, describe_store
from haimaker.storage.engine import create_engine, normalize_database_url

STORE_TIMEOUT_S: Final = 10.0


class StartupError(Exception):
    """The proxy cannot start; the message is one line saying what failed, where, and why."""


async def check_dependencies(settings: Settings) -> None:
    """Refuse to start on a store that cannot be opened or a journal directory that cannot be written.

    Raises:
        StartupError: the first thing that does not work.
    """
    await _check_store(settings)
    _check_journal_dir(settings)


async def _check_store(settings: Settings) -> None:
    try:
        url = normalize_database_url(settings.database_url, config_dir=settings.config_dir)
    except ValueError as exc:
        raise StartupError(f"database_url: {exc}") from None
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        _check_sqlite_file(parsed.database)
        if not parsed.database or not Path(parsed.database).exists():
            return  # connecting would create it: left to start-up, after the store's identity check
    engine = create_engine(url)
    try:
        async with asyncio.timeout(STORE_TIMEOUT_S), engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    except Exception as exc:
        why = f"no answer within {STORE_TIMEOUT_S:g} s" if isinstance(exc, TimeoutError) else _reason(_innermost(exc))
        raise StartupError(_scrubbed(f"cannot open the store ({_store(settings)}): {why}", settings)) from None
    finally:
        await engine.dispose()


def _check_sqlite_file(database: str | None) -> None:
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    file = Path(database)
    directory = file.parent
    if not directory.is_dir():
        raise StartupError(f"database_url: the directory of the SQLite store {file} does not exist")
    if file.exists() and not os.access(file, os.R_OK | os.W_OK):
        raise StartupError(f"database_url: the SQLite store {file} is not writable by this user")
    # SQLite writes its -wal and -shm files beside the store.
    if not os.access(directory, os.W_OK | os.X_OK):
        raise StartupError(f"database_url: the directory of the SQLite store {file} is not writable by this user")


def _check_journal_dir(settings: Settings) -> None:
    """A spend journal directory set in the config must be usable (the default place may not be: the lifespan then
    serves without a journal and says so)."""
    general = settings.config.general_settings
    if not general.spend_journal or not general.spend_journal_dir:
        return
    directory = Path(general.spend_journal_dir)
    if not directory.is_absolute():
        directory = settings.config_dir / directory
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StartupError(f"general_settings.spend_journal_dir: cannot create {directory}: {exc.strerror}") from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise StartupError(f"general_settings.spend_journal_dir: {directory} is not writable by this user")


def describe_failure(exc: BaseException, settings: Settings) -> str:
    """One line for an exception that stopped the start: what failed, where, why; no password, no traceback."""
    return _scrubbed(_description(exc, settings), settings)


def _scrubbed(line: str, settings: Settings) -> str:
    """`line` without the store's or Redis' password, whatever a driver put in its words (of any length: the
    log redaction leaves passwords under 6 characters alone, this line is about their very URLs)."""
    for url in (settings.database_url, settings.redis_url):
        try:
            password = urlsplit(url).password if url else None
        except ValueError:
            password = None
        if password:
            line = line.replace(password, "***").replace(unquote(password), "***")
    return line


def _description(exc: BaseException, settings: Settings) -> str:
    if isinstance(exc, StartupError):
        return str(exc)
    if isinstance(exc, ConfigError):
        return "; ".join(exc.problems)
    if isinstance(exc, TimeoutError) and not str(exc):
        return f"store ({_store(settings)}): no answer within {STORE_TIMEOUT_S:g} s"
    cause = _innermost(exc)
    modules = _modules_of(exc)
    if "redis" in modules and "asyncpg" not in modules and "aiosqlite" not in modules:
        return f"Redis at {describe_redis(settings.redis_url)}: {_reason(cause)}"
    if isinstance(cause, sqlite3.Error) or "aiosqlite" in modules or "asyncpg" in modules or "sqlalchemy" in modules:
        return f"store ({_store(settings)}): {_reason(cause)}"
    return f"{type(cause).__name__}: {_reason(cause)}"


def _store(settings: Settings) -> str:
    try:
        return describe_store(settings.database_url, settings.config_dir)
    except ValueError:
        return "database_url"


def _innermost(exc: BaseException) -> BaseException:
    """The driver's own exception under SQLAlchemy's wrappers (`orig`, then causes)."""
    seen: set[int] = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        inner = getattr(exc, "orig", None) or exc.__cause__
        if not isinstance(inner, BaseException):
            break
        exc = inner
    return exc


def _modules_of(exc: BaseException) -> set[str]:
    """The top-level packages an exception passed through (which driver failed, for a bare OSError)."""
    modules = set()
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        modules.add(type(current).__module__.split(".")[0])
        for frame in traceback.extract_tb(current.__traceback__):
            parts = Path(frame.filename).parts
            if "site-packages" in parts:
                index = parts.index("site-packages")
                if index + 1 < len(parts):
                    modules.add(parts[index + 1].split(".")[0])
        current = current.__cause__ or current.__context__
    return modules


def _reason(exc: BaseException) -> str:
    """The exception's own words on one line: a driver's message names a user or a database, never a password."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    words = " ".join(str(exc).split())
    return words or type(exc).__name__
