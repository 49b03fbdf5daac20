"""Bulk SQL that fills a migrated haimaker store with N customers, for the scale benchmark and its CI-sized test.

One statement per table, generated in the database (a recursive CTE on SQLite, `generate_series` on PostgreSQL), so
10 million customers take a minute, not hours of inserts. What it writes:
- budgets `bench-tier` (limits far beyond what a run spends, `budget_duration` 1d) and `doomed` (deleted by the
  benchmark; a tenth of the customers are on it);
- customers `cust-0` ... `cust-<N-1>`, spend 1 µ$ each;
- one rollup row (`daily_customer_spend`) per customer, on one of the last 7 days (`cust-i` on day i % 7).

`due=True` puts every customer and `bench-tier` at a period boundary already passed (an hour ago): the next reset
job, and every customer's next request, must reset them.
"""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime, timedelta
from typing import Final

import asyncpg  # type: ignore[import-untyped]

TIER: Final = "bench-tier"
DOOMED: Final = "doomed"
PREFIX: Final = "cust-"
_TIER_MAX_BUDGET: Final = 10**15  # nano-dollars: a million dollars, never reached
_SQLITE_TIME: Final = "%Y-%m-%d %H:%M:%S.%f"


def _instants(due: bool) -> tuple[datetime, datetime, list[str]]:
    now = datetime.now(UTC).replace(microsecond=0)
    reset_at = now - timedelta(hours=1) if due else now + timedelta(days=1)
    days = [(now.date() - timedelta(days=d)).isoformat() for d in range(7)]
    return now, reset_at, days


def fill_sqlite(path: str, count: int, *, due: bool = False) -> None:
    now, reset_at, days = _instants(due)
    stamp, reset = now.replace(tzinfo=None).strftime(_SQLITE_TIME), reset_at.replace(tzinfo=None).strftime(_SQLITE_TIME)
    connection = sqlite3.connect(path)
    try:
        with connection:
            connection.executemany(
                "INSERT INTO budgets (budget_id, max_budget, budget_duration, budget_reset_at, created_at, created_by, "
                "updated_at, updated_by) VALUES (?, ?, ?, ?, ?, 'bench', ?, 'bench')",
                [
                    (TIER, _TIER_MAX_BUDGET, "1d", reset, stamp, stamp),
                    (DOOMED, _TIER_MAX_BUDGET, None, None, stamp, stamp),
                ],
            )
            connection.execute(
                "WITH RECURSIVE seq(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM seq WHERE n < ?) "
                "INSERT INTO customers (user_id, spend, blocked, models, budget_id, spend_reset_at, created_at) "
                f"SELECT '{PREFIX}' || n, 1000, 0, '[]', CASE WHEN n % 10 = 0 THEN '{DOOMED}' ELSE '{TIER}' END, ?, ? "
                "FROM seq",
                (count - 1, reset, stamp),
            )
            day_of = " ".join(f"WHEN {i} THEN '{day}'" for i, day in enumerate(days))
            connection.execute(
                "INSERT INTO daily_customer_spend (end_user_id, date, model, custom_llm_provider, prompt_tokens, "
                "completion_tokens, spend, api_requests, successful_requests) "
                f"SELECT user_id, CASE CAST(substr(user_id, {len(PREFIX) + 1}) AS INTEGER) % 7 {day_of} END, "
                "'fake-gpt', 'openai', 10, 5, 1000, 1, 1 FROM customers"
            )
    finally:
        connection.close()


def fill_postgres(dsn: str, count: int, *, due: bool = False) -> None:
    asyncio.run(fill_postgres_async(dsn, count, due=due))


async def fill_postgres_async(dsn: str, count: int, *, due: bool = False) -> None:
    now, reset_at, days = _instants(due)
    connection = await asyncpg.connect(dsn)
    try:
        async with connection.transaction():
            await _budgets_pg(connection, now, reset_at)
            await connection.execute(
                "INSERT INTO customers (user_id, spend, blocked, models, budget_id, spend_reset_at, created_at) "
                f"SELECT '{PREFIX}' || n, 1000, false, '[]'::jsonb, "
                f"CASE WHEN n % 10 = 0 THEN '{DOOMED}' ELSE '{TIER}' END, $2, $3 "
                "FROM generate_series(0, $1 - 1) AS n",
                count,
                reset_at,
                now,
            )
            await connection.execute(
                "INSERT INTO daily_customer_spend (end_user_id, date, model, custom_llm_provider, prompt_tokens, "
                "completion_tokens, spend, api_requests, successful_requests) "
                f"SELECT user_id, ($1::text[])[1 + substr(user_id, {len(PREFIX) + 1})::bigint % 7], 'fake-gpt', "
                "'openai', 10, 5, 1000, 1, 1 FROM customers",
                days,
            )
        await connection.execute("ANALYZE customers; ANALYZE daily_customer_spend")
    finally:
        await connection.close()


async def _budgets_pg(connection: asyncpg.Connection, now: datetime, reset_at: datetime) -> None:
    await connection.executemany(
        "INSERT INTO budgets (budget_id, max_budget, budget_duration, budget_reset_at, created_at, created_by, "
        "updated_at, updated_by) VALUES ($1, $2, $3, $4, $5, 'bench', $5, 'bench')",
        [(TIER, _TIER_MAX_BUDGET, "1d", reset_at, now), (DOOMED, _TIER_MAX_BUDGET, None, None, now)],
    )
