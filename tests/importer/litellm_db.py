"""A LiteLLM proxy database for the import tests: LiteLLM's three tables, as Prisma creates them, with known rows.

The DDL follows `litellm/proxy/schema.prisma` (LiteLLM 1.110.2) as Prisma renders it on PostgreSQL: quoted names,
`TIMESTAMP(3)` UTC without zone, `DOUBLE PRECISION` dollars, `TEXT[]`, `JSONB`. Prisma also adds foreign keys from
end users and keys to budgets; they are left out here so that a row naming a budget that is gone (a database
restored in part, rows edited by hand) can be held, and its report tested.

The rows are a pure function of their index, so tests compute what each one must become. Every key's plaintext is
`plaintext_key(i)`, stored (as LiteLLM does) only as its SHA-256 hex `token`.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final

import asyncpg  # type: ignore[import-untyped]  # no stubs; the test writes rows as LiteLLM's Prisma would
import orjson
from sqlalchemy.engine import make_url

from tests.support.databases import drop_database, make_database_url

BUDGETS: Final = 40
END_USERS: Final = 200
KEYS: Final = 150
# The instants the rows carry, naive UTC as Prisma stores them.
CREATED: Final = datetime(2025, 3, 1, 9, 30, 15, 123000)
RESET_AT: Final = datetime(2030, 1, 1)
PAST: Final = datetime(2024, 1, 1)

# Rows with something to report (indexes).
EXPIRED_KEY: Final = 0
TEAM_KEY: Final = 1
USER_KEY: Final = 2
BUDGET_LINKED_KEY: Final = 3
MODEL_LIMITS_KEY: Final = 4
UI_SESSION_KEY: Final = 5
MANAGEMENT_KEY: Final = 6
BLOCKED_KEY: Final = 7
SAME_ALIAS_KEY: Final = 9  # holds key 8's alias: LiteLLM's table does not enforce unique aliases
PLAIN_KEY: Final = 42  # an ordinary key, used end to end
ORPHAN_END_USER: Final = END_USERS - 1  # its budget row is gone
EU_END_USER: Final = 7
MARS_END_USER: Final = 8
BLOCKED_END_USER: Final = 10
TEMP_INCREASE_BUDGET: Final = 5

SCHEMA: Final = (
    """
    CREATE TABLE "LiteLLM_BudgetTable" (
        "budget_id" TEXT NOT NULL,
        "max_budget" DOUBLE PRECISION,
        "soft_budget" DOUBLE PRECISION,
        "max_parallel_requests" INTEGER,
        "tpm_limit" BIGINT,
        "rpm_limit" BIGINT,
        "tpd_limit" BIGINT,
        "model_max_budget" JSONB,
        "budget_duration" TEXT,
        "budget_reset_at" TIMESTAMP(3),
        "allowed_models" TEXT[] DEFAULT ARRAY[]::TEXT[],
        "temp_budget_increase" DOUBLE PRECISION,
        "temp_budget_expiry" TIMESTAMP(3),
        "created_at" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
        "created_by" TEXT NOT NULL,
        "updated_at" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
        "updated_by" TEXT NOT NULL,
        CONSTRAINT "LiteLLM_BudgetTable_pkey" PRIMARY KEY ("budget_id")
    )
    """,
    """
    CREATE TABLE "LiteLLM_EndUserTable" (
        "user_id" TEXT NOT NULL,
        "alias" TEXT,
        "spend" DOUBLE PRECISION NOT NULL DEFAULT 0.0,
        "allowed_model_region" TEXT,
        "default_model" TEXT,
        "models" TEXT[] DEFAULT ARRAY[]::TEXT[],
        "budget_id" TEXT,
        "object_permission_id" TEXT,
        "blocked" BOOLEAN NOT NULL DEFAULT false,
        CONSTRAINT "LiteLLM_EndUserTable_pkey" PRIMARY KEY ("user_id")
    )
    """,
    """
    CREATE TABLE "LiteLLM_VerificationToken" (
        "token" TEXT NOT NULL,
        "key_name" TEXT,
        "key_alias" TEXT,
        "soft_budget_cooldown" BOOLEAN NOT NULL DEFAULT false,
        "spend" DOUBLE PRECISION NOT NULL DEFAULT 0.0,
        "total_spend" DOUBLE PRECISION NOT NULL DEFAULT 0.0,
        "expires" TIMESTAMP(3),
        "models" TEXT[],
        "aliases" JSONB NOT NULL DEFAULT '{}',
        "config" JSONB NOT NULL DEFAULT '{}',
        "router_settings" JSONB DEFAULT '{}',
        "user_id" TEXT,
        "team_id" TEXT,
        "agent_id" TEXT,
        "project_id" TEXT,
        "permissions" JSONB NOT NULL DEFAULT '{}',
        "max_parallel_requests" INTEGER,
        "metadata" JSONB NOT NULL DEFAULT '{}',
        "blocked" BOOLEAN,
        "tpm_limit" BIGINT,
        "rpm_limit" BIGINT,
        "tpd_limit" BIGINT,
        "max_budget" DOUBLE PRECISION,
        "budget_duration" TEXT,
        "budget_reset_at" TIMESTAMP(3),
        "allowed_cache_controls" TEXT[] DEFAULT ARRAY[]::TEXT[],
        "allowed_routes" TEXT[] DEFAULT ARRAY[]::TEXT[],
        "key_type" TEXT,
        "policies" TEXT[] DEFAULT ARRAY[]::TEXT[],
        "access_group_ids" TEXT[] DEFAULT ARRAY[]::TEXT[],
        "model_spend" JSONB NOT NULL DEFAULT '{}',
        "model_max_budget" JSONB NOT NULL DEFAULT '{}',
        "budget_fallbacks" JSONB NOT NULL DEFAULT '{}',
        "budget_id" TEXT,
        "organization_id" TEXT,
        "object_permission_id" TEXT,
        "created_at" TIMESTAMP(3) DEFAULT CURRENT_TIMESTAMP,
        "created_by" TEXT,
        "updated_at" TIMESTAMP(3) DEFAULT CURRENT_TIMESTAMP,
        "updated_by" TEXT,
        "settings_updated_at" TIMESTAMP(3),
        "last_active" TIMESTAMP(3),
        "rotation_count" INTEGER DEFAULT 0,
        "auto_rotate" BOOLEAN DEFAULT false,
        "rotation_interval" TEXT,
        "last_rotation_at" TIMESTAMP(3),
        "key_rotation_at" TIMESTAMP(3),
        "budget_limits" JSONB,
        CONSTRAINT "LiteLLM_VerificationToken_pkey" PRIMARY KEY ("token")
    )
    """,
)


def plaintext_key(i: int) -> str:
    return f"sk-litellm-import-{i:04d}"


def token_of(i: int) -> str:
    return hashlib.sha256(plaintext_key(i).encode()).hexdigest()


def budget_row(i: int) -> dict[str, Any]:
    return {
        "budget_id": f"tier-{i:02d}",
        "max_budget": 1.25 * i,
        "soft_budget": 0.75 * i if i % 3 == 0 else None,
        "max_parallel_requests": 4 if i % 4 == 0 else None,
        "tpm_limit": 10_000 + i,
        "rpm_limit": 100 + i,
        "tpd_limit": None,
        "model_max_budget": None,
        "budget_duration": "30d" if i % 2 == 0 else None,
        "budget_reset_at": RESET_AT + timedelta(hours=i) if i % 2 == 0 else None,
        "temp_budget_increase": 5.0 if i == TEMP_INCREASE_BUDGET else None,
        "created_at": CREATED,
        "created_by": "admin",
        "updated_at": CREATED,
        "updated_by": "admin",
    }


# A budget row LiteLLM made for a key's soft budget (`/key/generate` with soft_budget), linked by the key's budget_id.
KEY_BUDGET: Final = {
    **budget_row(0),
    "budget_id": "key-budget-3",
    "max_budget": None,
    "soft_budget": 7.5,
    "rpm_limit": 99,
    "tpm_limit": None,
    "budget_duration": None,
    "budget_reset_at": None,
}


def end_user_row(i: int) -> dict[str, Any]:
    return {
        "user_id": f"user-{i:03d}",
        "alias": f"Customer {i}" if i % 5 == 0 else None,
        "spend": 0.123456789 * i,
        "allowed_model_region": {EU_END_USER: "eu", MARS_END_USER: "mars"}.get(i),
        "default_model": "gpt-3.5-turbo" if i == EU_END_USER else None,
        "models": ["gpt-3.5-turbo"] if i % 10 == 1 else [],
        "budget_id": "tier-gone" if i == ORPHAN_END_USER else f"tier-{i % BUDGETS:02d}",
        "blocked": i == BLOCKED_END_USER,
    }


def key_row(i: int) -> dict[str, Any]:
    row: dict[str, Any] = {
        "token": token_of(i),
        "key_name": f"sk-...{plaintext_key(i)[-4:]}",
        "key_alias": f"app-{i - 1 if i == SAME_ALIAS_KEY else i:03d}",
        "spend": 0.01 * i + 0.000000001,
        "total_spend": 0.02 * i,
        "expires": PAST if i == EXPIRED_KEY else None,
        "models": ["gpt-3.5-turbo"] if i % 2 == 0 else [],
        "user_id": "internal-user-1" if i == USER_KEY else None,
        "team_id": {TEAM_KEY: "team-a", UI_SESSION_KEY: "litellm-dashboard"}.get(i),
        "max_parallel_requests": None,
        "metadata": {"model_rpm_limit": {"gpt-3.5-turbo": 5}, "note": "x"} if i == MODEL_LIMITS_KEY else {},
        "blocked": True if i == BLOCKED_KEY else None,
        "tpm_limit": 50_000 if i % 3 == 0 else None,
        "rpm_limit": None if i == BUDGET_LINKED_KEY else 60 + i,
        "max_budget": 10.0 + i if i % 2 == 0 else None,
        "budget_duration": "1d" if i % 4 == 0 else None,
        "budget_reset_at": RESET_AT if i % 4 == 0 else None,
        "key_type": "management" if i == MANAGEMENT_KEY else ("llm_api" if i % 2 else None),
        "budget_id": KEY_BUDGET["budget_id"] if i == BUDGET_LINKED_KEY else None,
        "created_at": CREATED,
        "created_by": "admin",
        "updated_at": CREATED,
        "updated_by": "admin",
    }
    return row


async def _insert(connection: asyncpg.Connection, table: str, rows: list[dict[str, Any]]) -> None:
    columns = list(rows[0])
    placeholders = ", ".join(f"${n}" for n in range(1, len(columns) + 1))
    names = ", ".join(f'"{c}"' for c in columns)
    values = [tuple(_db_value(row[c]) for c in columns) for row in rows]
    await connection.executemany(f'INSERT INTO "{table}" ({names}) VALUES ({placeholders})', values)


def _db_value(value: Any) -> Any:
    # asyncpg takes JSONB parameters as JSON text.
    return orjson.dumps(value).decode() if isinstance(value, dict) else value


def plain_url(url: str) -> str:
    """A `postgresql://` URL (as LiteLLM's DATABASE_URL is written) for an async SQLAlchemy URL."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def execute(url: str, sql: str, *args: Any) -> None:
    """Run one statement on the LiteLLM database (tests change rows between imports)."""
    connection = await asyncpg.connect(plain_url(url))
    try:
        await connection.execute(sql, *args)
    finally:
        await connection.close()


@asynccontextmanager
async def litellm_database(tmp_path: Path, *, with_rows: bool = True) -> AsyncIterator[str]:
    """A fresh PostgreSQL database with LiteLLM's tables (and the rows above); yields its `postgresql://` URL."""
    url = await make_database_url("postgres", tmp_path)
    try:
        connection = await asyncpg.connect(plain_url(url))
        try:
            for statement in SCHEMA:
                await connection.execute(statement)
            if with_rows:
                await _insert(connection, "LiteLLM_BudgetTable", [budget_row(i) for i in range(BUDGETS)])
                await _insert(connection, "LiteLLM_BudgetTable", [KEY_BUDGET])
                await _insert(connection, "LiteLLM_EndUserTable", [end_user_row(i) for i in range(END_USERS)])
                await _insert(connection, "LiteLLM_VerificationToken", [key_row(i) for i in range(KEYS)])
        finally:
            await connection.close()
        yield plain_url(url)
    finally:
        await drop_database(url)
