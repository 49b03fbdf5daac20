"""Customers at scale on both engines (issue 15): pages by key read the primary-key index without sorting, at any
depth; prefix search uses the same index; totals are bounded or estimated; a budget's deletion or edit is one
statement whatever the number of its customers; a walk by key is stable under concurrent inserts.

The store is filled by one bulk SQL statement (generate_series / a recursive CTE), 100,000 customers in about a
second, and the plans are read with EXPLAIN from the very statements the repository runs.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, Final

import pytest
from sqlalchemy import bindparam, event, text
from sqlalchemy.ext.asyncio import AsyncEngine

from haimaker.storage import BudgetRepository, CustomerRepository
from haimaker.storage.tables import UTCDateTime
from tests.support.factories import T0, make_budget, make_customer

N_CUSTOMERS: Final = 100_000
TIER: Final = "big-tier"

_FILL_POSTGRES: Final = """
INSERT INTO customers (user_id, created_at, budget_id)
SELECT 'user-' || lpad(g::text, 6, '0'), :created_at, :budget_id FROM generate_series(0, :n - 1) AS g
"""
_FILL_SQLITE: Final = """
WITH RECURSIVE seq(g) AS (SELECT 0 UNION ALL SELECT g + 1 FROM seq WHERE g < :n - 1)
INSERT INTO customers (user_id, created_at, budget_id)
SELECT 'user-' || substr('000000' || g, -6), :created_at, :budget_id FROM seq
"""


async def fill(engine: AsyncEngine, n: int, budget_id: str | None = None) -> None:
    """`n` customers `user-000000`..., created at T0, linked to `budget_id`; then, on PostgreSQL, fresh planner
    statistics, as autovacuum would gather (haimaker never runs ANALYZE on SQLite, whose planner then assumes every
    index selective)."""
    is_postgres = engine.dialect.name == "postgresql"
    statement = text(_FILL_POSTGRES if is_postgres else _FILL_SQLITE).bindparams(
        bindparam("created_at", type_=UTCDateTime())
    )
    async with engine.begin() as connection:
        await connection.execute(statement, {"n": n, "created_at": T0, "budget_id": budget_id})
    if is_postgres:
        async with engine.connect() as connection:
            await connection.execute(text("ANALYZE customers"))
            await connection.commit()


@contextmanager
def recorded_statements(engine: AsyncEngine) -> Iterator[list[tuple[str, Any]]]:
    """The SQL (and parameters) the engine sends while the block runs."""
    statements: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        statements.append((statement, parameters))

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)


def verbs(statements: list[tuple[str, Any]]) -> list[str]:
    """The first word of each statement that reads or writes rows (not SQLite's PRAGMA or BEGIN)."""
    return [verb for verb in (sql.split()[0].upper() for sql, _ in statements) if verb not in ("PRAGMA", "BEGIN")]


async def plan_of(engine: AsyncEngine, run: Callable[[], Awaitable[object]]) -> str:
    """The query plan of the one statement `run` sends, as the engine's EXPLAIN prints it."""
    with recorded_statements(engine) as statements:
        await run()
    [(statement, parameters)] = [(sql, params) for sql, params in statements if sql.lstrip().startswith("SELECT")]
    explain = "EXPLAIN " if engine.dialect.name == "postgresql" else "EXPLAIN QUERY PLAN "
    async with engine.connect() as connection:
        rows = await connection.exec_driver_sql(explain + statement, parameters)
        return "\n".join(" ".join(str(value) for value in row) for row in rows)


def assert_index_scan(plan: str, engine: AsyncEngine, index: str, *, ranged: bool = True) -> None:
    """The plan reads `index` in order, by range unless the query starts at the beginning (`ranged`), and neither
    scans the table nor sorts: LIMIT then stops it after the rows it returns."""
    if engine.dialect.name == "postgresql":
        assert re.search(rf"Index (Only )?Scan (Backward )?using {index} on customers", plan), plan
        assert "Seq Scan" not in plan and "Sort" not in plan, plan
        assert not ranged or "Index Cond" in plan, plan
    else:
        sqlite_index = "sqlite_autoindex_customers_1" if index == "pk_customers" else index
        assert f"USING INDEX {sqlite_index}" in plan or f"USING COVERING INDEX {sqlite_index}" in plan, plan
        assert "TEMP B-TREE" not in plan, plan
        assert "SEARCH customers" in plan if ranged else "SCAN customers USING" in plan, plan


async def test_pages_by_key_and_prefix_search_read_the_primary_key_without_sorting(
    engine: AsyncEngine, customers: CustomerRepository
) -> None:
    started = time.perf_counter()
    await fill(engine, N_CUSTOMERS)
    fill_s = time.perf_counter() - started

    deep = "user-099000"
    assert_index_scan(await plan_of(engine, lambda: customers.list_page(51)), engine, "pk_customers", ranged=False)
    # A bounded count stops after `up_to` rows, whichever way the planner reads them.
    bounded = await plan_of(engine, lambda: customers.count(up_to=1001))
    assert "Sort" not in bounded and "TEMP B-TREE" not in bounded, bounded
    assert engine.dialect.name != "postgresql" or "Limit" in bounded, bounded
    for run in (
        lambda: customers.list_page(51, after=deep),
        lambda: customers.list_page(51, before=deep),
        lambda: customers.list_page(51, prefix="user-0990"),
        lambda: customers.list_page(51, prefix="user-0990", after="user-099010"),
        lambda: customers.count("user-0990"),
    ):
        assert_index_scan(await plan_of(engine, run), engine, "pk_customers")

    timings_ms: dict[str, float] = {}
    timed: tuple[tuple[str, Callable[[], Awaitable[object]]], ...] = (
        ("first page", lambda: customers.list_page(51)),
        ("page after user-099000", lambda: customers.list_page(51, after=deep)),
        ("prefix user-0990", lambda: customers.list_page(51, prefix="user-0990")),
        ("count up to 1001", lambda: customers.count(up_to=1001)),
        ("estimated count", customers.estimated_count),
        ("exact count", customers.count),
    )
    for name, query in timed:
        started = time.perf_counter()
        await query()
        timings_ms[name] = (time.perf_counter() - started) * 1000
    print(f"{engine.dialect.name}: fill {N_CUSTOMERS:,} in {fill_s:.2f} s;", timings_ms)

    page = await customers.list_page(50, after=deep)
    assert [c.user_id for c in page] == [f"user-{index:06d}" for index in range(99_001, 99_051)]
    assert [c.user_id for c in await customers.list_page(2, before=deep)] == ["user-098998", "user-098999"]
    assert await customers.count("user-0990") == 100
    assert await customers.count(up_to=1001) == 1001
    assert await customers.count() == N_CUSTOMERS
    # PostgreSQL's statistic is an estimate: after the ANALYZE above (which reads every row of so small a table) it
    # is the count, as is SQLite's largest rowid while nothing was deleted.
    assert await customers.estimated_count() == N_CUSTOMERS


async def test_estimate_is_none_before_the_store_has_one(engine: AsyncEngine, customers: CustomerRepository) -> None:
    estimate = await customers.estimated_count()
    # A fresh PostgreSQL table has no statistic yet (reltuples -1); SQLite's empty table has no rowid.
    assert estimate is None


async def test_deleting_a_budget_of_100k_customers_is_one_statement(
    engine: AsyncEngine, customers: CustomerRepository, budgets: BudgetRepository
) -> None:
    await budgets.create(make_budget(budget_id=TIER))
    await fill(engine, N_CUSTOMERS, budget_id=TIER)

    await budgets.create(make_budget(budget_id="small-tier"))
    await customers.create(make_customer(user_id="small-1", budget_id="small-tier"))

    # Whether a budget is shared: a count that stops at 2, over the budget_id index for a budget of few customers
    # (for one of many, reading the table in any order finds 2 at once).
    is_shared = await plan_of(engine, lambda: customers.count_on_budget("small-tier", up_to=2))
    assert_index_scan(is_shared, engine, "ix_customers_budget_id")
    assert await customers.count_on_budget("small-tier", up_to=2) == 1
    assert await customers.count_on_budget(TIER, up_to=2) == 2

    with recorded_statements(engine) as edits:
        updated = await budgets.update(TIER, {"max_budget": 5_000_000_000, "rpm_limit": 10})
    assert updated is not None and updated.rpm_limit == 10
    assert verbs(edits) == ["UPDATE"]  # the tier's row only: its customers read it through their budget_id

    started = time.perf_counter()
    with recorded_statements(engine) as deletes:
        deleted = await budgets.delete(TIER)
    delete_ms = (time.perf_counter() - started) * 1000
    print(f"{engine.dialect.name}: delete a budget of {N_CUSTOMERS:,} customers: {delete_ms:.0f} ms")
    assert deleted is not None
    assert verbs(deletes) == ["DELETE"]
    # The foreign key's ON DELETE SET NULL unlinked every customer in that statement.
    assert await customers.count_on_budget(TIER, up_to=1) == 0
    assert await budgets.get(TIER) is None
    assert await customers.count() == N_CUSTOMERS + 1


@pytest.mark.parametrize("page_size", [1, 7, 100])
async def test_walking_by_key_under_concurrent_inserts_has_no_duplicates_and_no_gaps(
    engine: AsyncEngine, customers: CustomerRepository, page_size: int
) -> None:
    await fill(engine, 1_000)
    originals = {f"user-{index:06d}" for index in range(1_000)}
    inserted: list[str] = []
    walk_done = asyncio.Event()

    async def insert_meanwhile() -> None:
        # Ids between and around the existing ones ("user-000123x"), before and after the walk's position.
        index = 0
        while not walk_done.is_set():
            user_id = f"user-{(index * 389) % 1_000:06d}x{index}"
            await customers.create(make_customer(user_id=user_id))
            inserted.append(user_id)
            index += 1
            await asyncio.sleep(0)

    async def walk() -> list[tuple[str, str | None]]:
        seen: list[tuple[str, str | None]] = []  # (id, the cursor it was read after)
        after: str | None = None
        try:
            while page := await customers.list_page(page_size, after=after):
                seen.extend((customer.user_id, after) for customer in page)
                after = page[-1].user_id
                await asyncio.sleep(0)
        finally:
            walk_done.set()
        return seen

    seen, _ = await asyncio.gather(walk(), insert_meanwhile())
    ids = [user_id for user_id, _ in seen]
    assert len(inserted) > 0
    assert ids == sorted(set(ids))  # strictly increasing: nothing twice, nothing out of order
    assert originals <= set(ids)  # no gap: every customer there all along was listed
    assert set(ids) <= originals | set(inserted)
