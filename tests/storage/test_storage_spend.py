"""SpendRepository.write_batch on both engines: idempotent retries, exact sums under concurrency, no deadlocks."""

from __future__ import annotations

import asyncio
import random
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from haimaker.storage import (
    ChargeBatch,
    CustomerRepository,
    DailySpend,
    SpendRepository,
    create_engine,
    session_factory,
)
from tests.support.factories import make_customer, make_log


async def test_batch_creates_customers_writes_logs_and_adds_spend(
    spend: SpendRepository, customers: CustomerRepository
) -> None:
    await customers.create(make_customer(user_id="bob", spend=100))
    batch = ChargeBatch(
        new_customers=[make_customer(user_id="alice")],
        logs=[
            make_log(request_id="r1", end_user="alice", spend=1_000),
            make_log(request_id="r2", end_user="alice", spend=2_000),
            make_log(request_id="r3", end_user="bob", spend=5),
        ],
    )
    assert await spend.write_batch(batch) == 3
    alice = await customers.get("alice")
    bob = await customers.get("bob")
    assert alice is not None
    assert bob is not None
    assert (alice.spend, bob.spend) == (3_000, 105)
    assert {log.request_id for log in await spend.list_logs()} == {"r1", "r2", "r3"}


async def test_same_batch_twice_counts_once(spend: SpendRepository, customers: CustomerRepository) -> None:
    batch = ChargeBatch(
        new_customers=[make_customer(user_id="alice")],
        logs=[make_log(request_id=f"r{index}", end_user="alice", spend=1_000) for index in range(3)],
    )
    assert await spend.write_batch(batch) == 3
    assert await spend.write_batch(batch) == 0
    alice = await customers.get("alice")
    assert alice is not None
    assert alice.spend == 3_000
    [daily] = await spend.daily_activity(end_user_ids=["alice"])
    assert (daily.api_requests, daily.spend) == (3, 3_000)


async def test_partly_stored_batch_counts_only_the_new_logs(
    spend: SpendRepository, customers: CustomerRepository
) -> None:
    await customers.create(make_customer(user_id="alice"))
    first = [make_log(request_id=f"r{index}", end_user="alice", spend=10) for index in range(2)]
    await spend.write_batch(ChargeBatch(logs=first))
    retried = [*first, make_log(request_id="r-new", end_user="alice", spend=7)]
    assert await spend.write_batch(ChargeBatch(logs=retried)) == 1
    alice = await customers.get("alice")
    assert alice is not None
    assert alice.spend == 27
    [daily] = await spend.daily_activity(end_user_ids=["alice"])
    assert (daily.api_requests, daily.prompt_tokens, daily.spend) == (3, 30, 27)


async def test_a_request_id_repeated_within_a_batch_counts_once(
    spend: SpendRepository, customers: CustomerRepository
) -> None:
    await customers.create(make_customer(user_id="alice"))
    log = make_log(request_id="r1", end_user="alice", spend=10)
    assert await spend.write_batch(ChargeBatch(logs=[log, log])) == 1
    alice = await customers.get("alice")
    assert alice is not None
    assert alice.spend == 10


async def test_failed_requests_add_no_spend_and_count_as_failed(
    spend: SpendRepository, customers: CustomerRepository
) -> None:
    await customers.create(make_customer(user_id="alice"))
    logs = [
        make_log(request_id="ok", end_user="alice", spend=10),
        make_log(request_id="bad", end_user="alice", spend=99, status="failure", prompt_tokens=3),
    ]
    await spend.write_batch(ChargeBatch(logs=logs))
    alice = await customers.get("alice")
    assert alice is not None
    assert alice.spend == 10
    [daily] = await spend.daily_activity(end_user_ids=["alice"])
    assert daily == DailySpend(
        end_user_id="alice",
        date="2026-01-01",
        model="gpt-4o",
        custom_llm_provider="openai",
        prompt_tokens=13,
        completion_tokens=10,
        cache_read_input_tokens=0,
        cache_creation_input_tokens=0,
        spend=10,
        api_requests=2,
        successful_requests=1,
        failed_requests=1,
    )
    assert await spend.total_spend() == 10


async def test_charge_for_a_missing_customer_still_writes_the_log(
    spend: SpendRepository, customers: CustomerRepository
) -> None:
    assert await spend.write_batch(ChargeBatch(logs=[make_log(request_id="r1", end_user="deleted")])) == 1
    assert await customers.get("deleted") is None
    assert [log.request_id for log in await spend.list_logs(end_user="deleted")] == ["r1"]


async def test_new_customers_are_insert_if_absent(spend: SpendRepository, customers: CustomerRepository) -> None:
    await customers.create(make_customer(user_id="alice", alias="keep me", spend=50))
    batch = ChargeBatch(new_customers=[make_customer(user_id="alice", alias="not me")], logs=[])
    assert await spend.write_batch(batch) == 0
    alice = await customers.get("alice")
    assert alice is not None
    assert (alice.alias, alice.spend) == ("keep me", 50)


async def test_empty_batch_writes_nothing(spend: SpendRepository) -> None:
    assert await spend.write_batch(ChargeBatch()) == 0


async def test_daily_rollup_uses_the_utc_date_of_the_start_time(spend: SpendRepository) -> None:
    new_york_evening = datetime(2026, 1, 1, 20, 30, tzinfo=timezone(timedelta(hours=-5)))
    await spend.write_batch(ChargeBatch(logs=[make_log(end_user="alice", start_time=new_york_evening)]))
    [daily] = await spend.daily_activity(end_user_ids=["alice"])
    assert daily.date == "2026-01-02"


async def test_rollup_keeps_models_and_providers_apart(spend: SpendRepository) -> None:
    logs = [
        make_log(end_user="alice", model="a", custom_llm_provider="openai"),
        make_log(end_user="alice", model="a", custom_llm_provider="azure"),
        make_log(end_user="alice", model="b", custom_llm_provider="openai"),
        make_log(end_user="alice", model="b", custom_llm_provider="openai"),
    ]
    await spend.write_batch(ChargeBatch(logs=logs))
    rows = await spend.daily_activity(end_user_ids=["alice"])
    assert [(r.model, r.custom_llm_provider, r.api_requests) for r in rows] == [
        ("a", "azure", 1),
        ("a", "openai", 1),
        ("b", "openai", 2),
    ]


async def _write_concurrently(url: str, batches: list[ChargeBatch], *, engines: int) -> list[int]:
    """Write the batches from several engines at once (separate pools, like separate processes)."""
    created: list[AsyncEngine] = [create_engine(url) for _ in range(engines)]
    try:
        repositories = [SpendRepository(session_factory(engine)) for engine in created]
        return await asyncio.gather(
            *(repositories[index % engines].write_batch(batch) for index, batch in enumerate(batches))
        )
    finally:
        for engine in created:
            await engine.dispose()


async def test_concurrent_batches_on_one_hot_customer_sum_exactly(
    migrated_database_url: str, customers: CustomerRepository, spend: SpendRepository
) -> None:
    await customers.create(make_customer(user_id="hot"))
    batches = [
        ChargeBatch(
            new_customers=[make_customer(user_id="hot")],
            logs=[
                make_log(request_id=f"b{batch}-r{index}", end_user="hot", spend=1_000_000 + batch * 10 + index)
                for index in range(5)
            ],
        )
        for batch in range(30)
    ]
    inserted = await _write_concurrently(migrated_database_url, batches, engines=2)
    assert inserted == [5] * 30
    expected = sum(log.spend for batch in batches for log in batch.logs)
    hot = await customers.get("hot")
    assert hot is not None
    assert hot.spend == expected
    [daily] = await spend.daily_activity(end_user_ids=["hot"])
    assert (daily.api_requests, daily.successful_requests, daily.spend) == (150, 150, expected)


async def test_a_batch_retried_by_two_processes_at_once_counts_once(
    migrated_database_url: str, customers: CustomerRepository
) -> None:
    batch = ChargeBatch(
        new_customers=[make_customer(user_id="alice")],
        logs=[make_log(request_id=f"r{index}", end_user="alice", spend=3) for index in range(20)],
    )
    inserted = await _write_concurrently(migrated_database_url, [batch] * 6, engines=2)
    assert sum(inserted) == 20
    alice = await customers.get("alice")
    assert alice is not None
    assert alice.spend == 60


async def test_concurrent_batches_over_overlapping_customers_in_any_order_sum_exactly(
    migrated_database_url: str, customers: CustomerRepository, spend: SpendRepository
) -> None:
    rng = random.Random(1234)
    user_ids = [f"c{index}" for index in range(6)]
    for user_id in user_ids[:3]:
        await customers.create(make_customer(user_id=user_id))
    batches: list[ChargeBatch] = []
    for batch in range(40):
        order = rng.sample(user_ids, k=3)
        logs = [
            make_log(request_id=f"b{batch}-{user_id}-{repeat}", end_user=user_id, spend=rng.randint(1, 10**6))
            for user_id in order
            for repeat in range(2)
        ]
        # Customers 3..5 do not exist yet: batches ask for them, each in its own order.
        new = [make_customer(user_id=user_id) for user_id in order if user_id not in user_ids[:3]]
        batches.append(ChargeBatch(new_customers=new, logs=logs))
    inserted = await asyncio.wait_for(_write_concurrently(migrated_database_url, batches, engines=2), timeout=60)
    assert inserted == [6] * 40
    expected: dict[str, int] = dict.fromkeys(user_ids, 0)
    for batch_ in batches:
        for log in batch_.logs:
            expected[log.end_user] += log.spend
    assert {c.user_id: c.spend for c in await customers.list_all()} == expected
    assert await spend.total_spend() == sum(expected.values())
    by_user = {row.end_user_id: row.spend for row in await spend.daily_activity()}
    assert by_user == expected


@pytest.mark.parametrize("database_kind", [pytest.param("postgres", marks=pytest.mark.postgres)])
async def test_batch_locks_customers_in_sorted_order_so_writers_cannot_deadlock(
    migrated_database_url: str, customers: CustomerRepository, spend: SpendRepository, engine: AsyncEngine
) -> None:
    # Another writer holds "a". A batch charging "b" then "a" must wait for "a" before touching "b", so the other
    # writer can still take "b" (sorted order): locking "b" first would deadlock the two.
    for user_id in ("a", "b"):
        await customers.create(make_customer(user_id=user_id))
    batch = ChargeBatch(logs=[make_log(end_user="b", spend=1), make_log(end_user="a", spend=2)])
    async with engine.connect() as other:
        await other.execute(text("SET LOCAL lock_timeout = '5s'"))
        await other.execute(text("UPDATE customers SET spend = spend + 10 WHERE user_id = 'a'"))
        writing = asyncio.create_task(spend.write_batch(batch))
        await _until_a_backend_waits_on_a_lock(engine)
        await other.execute(text("UPDATE customers SET spend = spend + 20 WHERE user_id = 'b'"))
        await other.commit()
    assert await writing == 2
    assert {c.user_id: c.spend for c in await customers.list_all()} == {"a": 12, "b": 21}


async def _until_a_backend_waits_on_a_lock(engine: AsyncEngine) -> None:
    query = text(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    for _ in range(500):
        # A fresh transaction each time: statistics views are a snapshot per transaction.
        async with engine.connect() as connection:
            if (await connection.execute(query)).scalar_one():
                return
        await asyncio.sleep(0.01)
    raise AssertionError("the batch never waited on the held row lock")
