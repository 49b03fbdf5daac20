"""Reading a LiteLLM proxy database: the three tables the import takes, as plain rows.

LiteLLM's schema (`litellm/proxy/schema.prisma`) is created by Prisma on PostgreSQL: quoted CamelCase table names,
`timestamp(3)` without time zone holding UTC, `double precision` dollars, `text[]` lists and `jsonb` documents.

Invariants:
- Read only: one read-only, repeatable-read transaction, so the three tables are one consistent snapshot of a proxy
  that may still be running.
- `SELECT *`: columns are looked up by name and a missing one reads as absent, so databases of older or newer
  LiteLLM versions (which add columns such as `key_type` or `tpd_limit`) import alike.
- An unusable `--from` URL, an unreachable server or a database without LiteLLM's tables is one
  `LiteLLMSourceError` whose message never contains the password.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

BUDGET_TABLE: Final = "LiteLLM_BudgetTable"
END_USER_TABLE: Final = "LiteLLM_EndUserTable"
KEY_TABLE: Final = "LiteLLM_VerificationToken"
CONNECT_TIMEOUT_S: Final = 10.0

Row = Mapping[str, Any]


class LiteLLMSourceError(Exception):
    """The LiteLLM database cannot be read: a bad URL, an unreachable server, or not LiteLLM's schema."""


@dataclass(frozen=True, slots=True)
class LiteLLMSnapshot:
    """The rows of LiteLLM's budget, end user and key tables, ordered by their ids."""

    budgets: list[Row]
    end_users: list[Row]
    keys: list[Row]


def source_url(url: str) -> URL:
    """The asyncpg URL of a `postgresql://` (or `postgres://`) LiteLLM `DATABASE_URL`.

    Raises:
        LiteLLMSourceError: not a PostgreSQL URL (LiteLLM's proxy database is PostgreSQL only).
    """
    hint = "--from must be LiteLLM's DATABASE_URL, like postgresql://user:password@host:5432/litellm"
    try:
        parsed = make_url(url.strip())
    except ArgumentError:
        raise LiteLLMSourceError(f"{hint} (it is not a database URL)") from None
    if parsed.get_backend_name() not in ("postgresql", "postgres"):
        raise LiteLLMSourceError(f"{hint} (got a {parsed.get_backend_name()!r} URL)")
    if not parsed.database:
        raise LiteLLMSourceError(f"{hint} (it names no database)")
    # Prisma's URL options (`?schema=public&connection_limit=5`) mean nothing to asyncpg.
    return parsed.set(drivername="postgresql+asyncpg", query={})


def describe(url: URL) -> str:
    """The URL for messages: the password hidden."""
    return url.set(drivername="postgresql").render_as_string(hide_password=True)


async def read_snapshot(url: URL) -> LiteLLMSnapshot:
    """Read the three tables in one read-only snapshot.

    Raises:
        LiteLLMSourceError: the server is unreachable, refuses us, or the database has no LiteLLM tables.
    """
    engine = create_async_engine(
        url,
        poolclass=NullPool,
        connect_args={"timeout": CONNECT_TIMEOUT_S, "server_settings": {"application_name": "haimaker-import"}},
    )
    try:
        async with engine.connect() as connection:
            await connection.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY"))
            budgets = await _rows(connection, BUDGET_TABLE, "budget_id")
            end_users = await _rows(connection, END_USER_TABLE, "user_id")
            keys = await _rows(connection, KEY_TABLE, "token")
            await connection.rollback()
    except DBAPIError as exc:
        raise LiteLLMSourceError(f"cannot read the LiteLLM database {describe(url)}: {_reason(exc)}") from None
    except OSError as exc:
        raise LiteLLMSourceError(f"cannot reach the LiteLLM database {describe(url)}: {exc}") from None
    except TimeoutError:
        raise LiteLLMSourceError(
            f"cannot reach the LiteLLM database {describe(url)}: no answer within {CONNECT_TIMEOUT_S:g} s"
        ) from None
    finally:
        await engine.dispose()
    return LiteLLMSnapshot(budgets=budgets, end_users=end_users, keys=keys)


async def _rows(connection: Any, table: str, id_column: str) -> list[Row]:
    result = await connection.execute(text(f'SELECT * FROM "{table}" ORDER BY "{id_column}"'))
    return [dict(row) for row in result.mappings()]


def _reason(exc: DBAPIError) -> str:
    original = exc.orig
    name = type(getattr(original, "__cause__", None) or original).__name__
    if name == "UndefinedTableError":
        return f"it has no {BUDGET_TABLE} / {END_USER_TABLE} / {KEY_TABLE} tables: is it LiteLLM's proxy database?"
    # The driver's own first line (e.g. 'password authentication failed for user "x"'): never the URL.
    first_line = str(original).strip().splitlines()[0] if str(original).strip() else name
    return first_line.split(": ", 1)[-1] if first_line.startswith("<class") else first_line
