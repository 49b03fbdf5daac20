"""Period resets inside a charge batch, on both engines: applied set-based in the batch's one transaction, each at its
place among the charges, with exactly the result of writing the charges and resets one by one in queue order."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from haimaker.storage import ChargeBatch, CustomerRepository, SpendRepository
from haimaker.storage.keys_repo import KeyRepository
from haimaker.storage.records import Customer, SpendLog, VirtualKey
from haimaker.storage.spend_repo import BatchReset
from tests.support.factories import T0, make_customer, make_log

PERIOD_1 = T0 + timedelta(days=1)
PERIOD_2 = T0 + timedelta(days=2)
PERIOD_3 = T0 + timedelta(days=3)


async def _spend_of(customers: CustomerRepository, user_id: str) -> tuple[int, datetime | None]:
    return (await customers.spend_of_many([user_id]))[user_id]


async def test_a_charge_before_the_reset_is_wiped_and_one_after_it_survives(
    spend: SpendRepository, customers: CustomerRepository
) -> None:
    await customers.create(make_customer(user_id="alice", spend=5_000, spend_reset_at=T0))
    batch = ChargeBatch(
        logs=[
            make_log(request_id="before", end_user="alice", spend=100),
            make_log(request_id="after", end_user="alice", spend=20),
        ],
        customer_resets=[BatchReset("alice", PERIOD_1, position=1)],
    )
    assert await spend.write_batch(batch) == 2
    assert await _spend_of(customers, "alice") == (20, PERIOD_1)
    # Both charges are logged and in the daily rollup whatever the period: a reset is about the budget only.
    [daily] = await spend.daily_activity(end_user_ids=["alice"])
    assert (daily.api_requests, daily.spend) == (2, 120)


async def test_a_batch_written_again_changes_nothing(spend: SpendRepository, customers: CustomerRepository) -> None:
    await customers.create(make_customer(user_id="alice", spend=5_000, spend_reset_at=T0))
    batch = ChargeBatch(
        logs=[make_log(request_id="r1", end_user="alice", spend=100), make_log(request_id="r2", end_user="alice")],
        customer_resets=[BatchReset("alice", PERIOD_1, position=1)],
    )
    await spend.write_batch(batch)
    await spend.write_batch(batch)  # a retry after a crash, or a replayed journal
    assert await _spend_of(customers, "alice") == (1_000, PERIOD_1)


async def test_a_reset_of_a_period_already_started_elsewhere_lets_every_charge_add(
    spend: SpendRepository, customers: CustomerRepository
) -> None:
    """Another instance (or the reset job) reset the row already: this reset is a no-op, the charges all add."""
    await customers.create(make_customer(user_id="alice", spend=7, spend_reset_at=PERIOD_1))
    batch = ChargeBatch(
        logs=[make_log(request_id="r1", end_user="alice", spend=100), make_log(request_id="r2", end_user="alice")],
        customer_resets=[BatchReset("alice", PERIOD_1, position=1)],
    )
    await spend.write_batch(batch)
    assert await _spend_of(customers, "alice") == (1_107, PERIOD_1)


async def test_resets_without_charges_and_resets_of_unknown_customers(
    spend: SpendRepository, customers: CustomerRepository
) -> None:
    await customers.create(make_customer(user_id="idle", spend=300, spend_reset_at=T0))
    await customers.create(make_customer(user_id="current", spend=300, spend_reset_at=PERIOD_2))
    batch = ChargeBatch(
        customer_resets=[
            BatchReset("idle", PERIOD_1, 0),
            BatchReset("current", PERIOD_1, 0),  # its period ends later: left alone
            BatchReset("ghost", PERIOD_1, 0),
        ]
    )
    assert await spend.write_batch(batch) == 0
    assert await customers.spend_of_many(["idle", "current", "ghost"]) == {
        "idle": (0, PERIOD_1),
        "current": (300, PERIOD_2),
    }


async def test_a_new_customer_reset_before_its_first_charge_starts_in_that_period(
    spend: SpendRepository, customers: CustomerRepository
) -> None:
    batch = ChargeBatch(
        new_customers=[make_customer(user_id="newcomer")],
        logs=[make_log(request_id="r1", end_user="newcomer", spend=42)],
        customer_resets=[BatchReset("newcomer", PERIOD_1, 0)],
    )
    await spend.write_batch(batch)
    assert await _spend_of(customers, "newcomer") == (42, PERIOD_1)


async def test_a_key_reset_in_the_batch_orders_the_key_spend_the_same_way(
    spend: SpendRepository, sessions: async_sessionmaker[AsyncSession]
) -> None:
    keys = KeyRepository(sessions)
    token = "b" * 64
    await keys.create(VirtualKey(token=token, spend=900, budget_reset_at=T0))
    batch = ChargeBatch(
        logs=[
            make_log(request_id="k1", api_key=token, spend=100),
            make_log(request_id="k2", api_key=token, spend=30),
            make_log(request_id="k3", api_key=token, spend=4),
        ],
        key_resets=[BatchReset(token, PERIOD_1, position=1)],
    )
    await spend.write_batch(batch)
    assert await keys.spend_of_many([token]) == {token: (34, PERIOD_1)}


async def test_a_group_of_charges_and_resets_is_one_transaction_of_constant_statements(
    spend: SpendRepository, customers: CustomerRepository, engine: AsyncEngine
) -> None:
    """1,000 customers reset lazily at their first request after the boundary: one transaction, and as many
    statements as a batch of charges alone."""
    stale = [make_customer(user_id=f"c{index:04d}", spend=999, spend_reset_at=T0) for index in range(1_000)]
    await spend.write_batch(ChargeBatch(new_customers=stale))
    logs = [make_log(request_id=f"r{index:04d}", end_user=f"c{index:04d}", spend=index) for index in range(1_000)]
    resets = [BatchReset(f"c{index:04d}", PERIOD_1, position=index) for index in range(1_000)]
    commits: list[object] = []
    statements: list[str] = []

    def count_commit(connection: object) -> None:
        commits.append(connection)

    def count_statement(*args: Any) -> None:
        statements.append(args[2])

    event.listen(engine.sync_engine, "commit", count_commit)
    event.listen(engine.sync_engine, "before_cursor_execute", count_statement)
    try:
        await spend.write_batch(ChargeBatch(logs=logs, customer_resets=resets))
    finally:
        event.remove(engine.sync_engine, "commit", count_commit)
        event.remove(engine.sync_engine, "before_cursor_execute", count_statement)
    assert len(commits) == 1
    updates = [sql for sql in statements if sql.lstrip().upper().startswith("UPDATE CUSTOMERS")]
    assert len(updates) == 1
    assert len(statements) <= 8
    stored = await customers.spend_of_many([f"c{index:04d}" for index in range(1_000)])
    assert stored == {f"c{index:04d}": (index, PERIOD_1) for index in range(1_000)}


@dataclass
class _Row:
    spend: int
    period: datetime | None


def _one_by_one(row: _Row, items: list[tuple[str, int | datetime]]) -> _Row:
    """The reference: each charge adds, each reset applies when the stored period ends before its own."""
    spend, period = row.spend, row.period
    for kind, value in items:
        if kind == "charge":
            assert isinstance(value, int)
            spend += value
        else:
            assert isinstance(value, datetime)
            if period is None or period < value:
                spend, period = 0, value
    return _Row(spend, period)


async def test_any_mix_of_charges_and_resets_matches_writing_them_one_by_one(
    spend: SpendRepository, customers: CustomerRepository
) -> None:
    rng = random.Random(15)
    periods = [None, T0, PERIOD_1, PERIOD_2, PERIOD_3]
    expected: dict[str, _Row] = {}
    logs: list[SpendLog] = []
    resets: list[BatchReset] = []
    stored: list[Customer] = []
    for case in range(60):
        user_id = f"u{case:02d}"
        row = _Row(rng.randrange(0, 1_000), rng.choice(periods))
        stored.append(make_customer(user_id=user_id, spend=row.spend, spend_reset_at=row.period))
        items: list[tuple[str, int | datetime]] = []
        for _ in range(rng.randrange(0, 7)):
            if rng.random() < 0.6:
                amount = rng.randrange(1, 100)
                items.append(("charge", amount))
                logs.append(make_log(request_id=f"{user_id}-{len(logs)}", end_user=user_id, spend=amount))
            else:
                period = rng.choice(periods[1:])
                assert period is not None
                items.append(("reset", period))
                resets.append(BatchReset(user_id, period, position=len(logs)))
        expected[user_id] = _one_by_one(row, items)
    await spend.write_batch(ChargeBatch(new_customers=stored))
    await spend.write_batch(ChargeBatch(logs=logs, customer_resets=resets))
    found = await customers.spend_of_many(list(expected))
    assert {user_id: _Row(*found[user_id]) for user_id in expected} == expected
