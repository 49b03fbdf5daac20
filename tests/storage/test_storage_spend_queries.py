"""SpendRepository reports (`storage/spend_reports.py`) on both engines: filters, orderings, half-open time ranges,
inclusive date ranges, aggregates grouped by the database."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from haimaker.storage import ChargeBatch, SpendLog, SpendRepository
from haimaker.storage.spend_reports import ActivityScope, SpendCounters
from tests.support.factories import T0, make_log

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


@pytest.fixture
async def stored(spend: SpendRepository) -> list[SpendLog]:
    """Two days of traffic: alice and bob on two models, one failure, one request without a customer."""
    logs = [
        make_log(request_id="a1", end_user="alice", model="gpt-4o", spend=100, start_time=T0, api_key="k1"),
        make_log(request_id="a2", end_user="alice", model="gpt-4o", spend=200, start_time=T0 + HOUR),
        make_log(request_id="a3", end_user="alice", model="claude", spend=300, start_time=T0 + DAY),
        make_log(request_id="b1", end_user="bob", model="claude", spend=1_000, start_time=T0 + 2 * HOUR, api_key="k1"),
        make_log(
            request_id="b2",
            end_user="bob",
            model="claude",
            custom_llm_provider="anthropic",
            spend=5_000,
            status="failure",
            start_time=T0 + 3 * HOUR,
            api_key="k1",
        ),
        make_log(request_id="n1", end_user="", model="gpt-4o", spend=7, start_time=T0 + DAY + HOUR),
    ]
    await spend.write_batch(ChargeBatch(logs=logs))
    return logs


async def test_list_logs_is_newest_first_and_round_trips_records(
    spend: SpendRepository, stored: list[SpendLog]
) -> None:
    logs = await spend.list_logs()
    assert [log.request_id for log in logs] == ["n1", "a3", "b2", "b1", "a2", "a1"]
    assert sorted(logs, key=lambda log: log.request_id) == sorted(stored, key=lambda log: log.request_id)


async def test_list_logs_filters(spend: SpendRepository, stored: list[SpendLog]) -> None:
    assert [log.request_id for log in await spend.list_logs(end_user="alice")] == ["a3", "a2", "a1"]
    assert [log.request_id for log in await spend.list_logs(request_id="b1")] == ["b1"]
    assert [log.request_id for log in await spend.list_logs(start=T0 + HOUR, end=T0 + 3 * HOUR)] == ["b1", "a2"]
    assert [log.request_id for log in await spend.list_logs(end_user="", limit=5)] == ["n1"]
    assert [log.request_id for log in await spend.list_logs(limit=2)] == ["n1", "a3"]


async def test_metadata_round_trips(spend: SpendRepository) -> None:
    metadata = {"user_api_key_end_user_id": "alice", "usage": {"prompt_tokens": 3}, "tags": ["x", "y"]}
    await spend.write_batch(ChargeBatch(logs=[make_log(request_id="m", metadata=metadata)]))
    [log] = await spend.list_logs(request_id="m")
    assert log.metadata == metadata


async def test_top_end_users_ranks_whole_days_of_the_rollup_and_skips_requests_without_customer(
    spend: SpendRepository, stored: list[SpendLog]
) -> None:
    assert await spend.top_end_users() == [("bob", 2, 1_000), ("alice", 3, 600)]
    assert await spend.top_end_users(start_date=date(2026, 1, 2)) == [("alice", 1, 300)]
    assert await spend.top_end_users(end_date=date(2026, 1, 1)) == [("bob", 2, 1_000), ("alice", 2, 300)]
    assert await spend.top_end_users(limit=1) == [("bob", 2, 1_000)]
    assert await spend.top_end_users(start_date=date(2026, 1, 11)) == []


async def test_top_end_users_of_a_key_come_from_its_logs(spend: SpendRepository, stored: list[SpendLog]) -> None:
    assert await spend.top_end_users_of_key("k1") == [("bob", 2, 1_000), ("alice", 1, 100)]
    assert await spend.top_end_users_of_key("k1", start=T0 + HOUR) == [("bob", 2, 1_000)]
    assert await spend.top_end_users_of_key("k1", end=T0 + HOUR) == [("alice", 1, 100)]
    assert await spend.top_end_users_of_key("k2") == []


async def test_activity_aggregates_are_grouped_by_the_database(spend: SpendRepository, stored: list[SpendLog]) -> None:
    everyone = ActivityScope()
    by_day = await spend.activity_by_day(everyone)
    assert [(day, c.api_requests, c.successful_requests, c.failed_requests, c.spend) for day, c in by_day] == [
        ("2026-01-02", 1, 1, 0, 300),
        ("2026-01-01", 4, 3, 1, 1_300),
    ]
    assert by_day[1][1].prompt_tokens == 40 and by_day[1][1].completion_tokens == 20
    breakdown = await spend.activity_by_model_and_provider(everyone)
    assert sorted((day, model, provider, c.api_requests, c.spend) for day, model, provider, c in breakdown) == [
        ("2026-01-01", "claude", "anthropic", 1, 0),
        ("2026-01-01", "claude", "openai", 1, 1_000),
        ("2026-01-01", "gpt-4o", "openai", 2, 300),
        ("2026-01-02", "claude", "openai", 1, 300),
    ]
    named = ActivityScope(end_user_ids=("alice", "bob", "nobody"), exclude_end_user_ids=("bob",))
    assert [(day, user, c.spend) for day, user, c in sorted(await spend.activity_by_customer(named))] == [
        ("2026-01-01", "alice", 300),
        ("2026-01-02", "alice", 300),
    ]
    one_day = ActivityScope(start_date=date(2026, 1, 1), end_date=date(2026, 1, 1), model="claude")
    assert [(day, c.api_requests) for day, c in await spend.activity_by_day(one_day)] == [("2026-01-01", 2)]
    assert await spend.activity_by_day(ActivityScope(end_user_ids=("",))) == [
        ("2026-01-02", SpendCounters(10, 5, 0, 0, 7, 1, 1, 0))
    ]


async def test_spend_by_day_and_model_from_the_rollup_and_from_logs(
    spend: SpendRepository, stored: list[SpendLog]
) -> None:
    assert await spend.spend_by_day_and_model() == [
        ("2026-01-01", "claude", 1_000),
        ("2026-01-01", "gpt-4o", 300),
        ("2026-01-02", "claude", 300),
        ("2026-01-02", "gpt-4o", 7),
    ]
    assert await spend.spend_by_day_and_model("alice", start_date=date(2026, 1, 2)) == [("2026-01-02", "claude", 300)]
    assert await spend.logged_spend_by_day_and_model(api_key="k1") == [
        ("2026-01-01", "claude", 1_000),
        ("2026-01-01", "gpt-4o", 100),
    ]
    assert await spend.logged_spend_by_day_and_model(T0 + HOUR, T0 + 2 * DAY, request_id="a3") == [
        ("2026-01-02", "claude", 300)
    ]
    assert await spend.logged_spend_by_day_and_model(end_user="bob", api_key="k2") == []


async def test_daily_activity_filters(spend: SpendRepository, stored: list[SpendLog]) -> None:
    rows = await spend.daily_activity()
    assert [(r.date, r.end_user_id, r.model, r.api_requests, r.spend) for r in rows] == [
        ("2026-01-01", "alice", "gpt-4o", 2, 300),
        ("2026-01-01", "bob", "claude", 1, 0),  # anthropic, the failure
        ("2026-01-01", "bob", "claude", 1, 1_000),  # openai
        ("2026-01-02", "alice", "claude", 1, 300),
    ]
    assert {r.end_user_id for r in await spend.daily_activity(end_user_ids=["bob"])} == {"bob"}
    assert {r.end_user_id for r in await spend.daily_activity(exclude_end_user_ids=["bob"])} == {"alice"}
    assert [r.end_user_id for r in await spend.daily_activity(end_user_ids=[""])] == [""]
    same_day = await spend.daily_activity(start_date=date(2026, 1, 2), end_date=date(2026, 1, 2))
    assert [(r.date, r.end_user_id) for r in same_day] == [("2026-01-02", "alice")]
    assert [r.end_user_id for r in await spend.daily_activity(model="claude")] == ["bob", "bob", "alice"]
    failed, succeeded = await spend.daily_activity(end_user_ids=["bob"])
    assert (failed.custom_llm_provider, failed.successful_requests, failed.failed_requests) == ("anthropic", 0, 1)
    assert (succeeded.custom_llm_provider, succeeded.successful_requests, succeeded.failed_requests) == ("openai", 1, 0)


async def test_total_spend_uses_a_half_open_range(spend: SpendRepository, stored: list[SpendLog]) -> None:
    assert await spend.total_spend() == 1_607
    assert await spend.total_spend(start=T0, end=T0 + HOUR) == 100
    assert await spend.total_spend(start=T0 + HOUR, end=T0 + DAY) == 1_200
    assert await spend.total_spend(start=T0 + 10 * DAY) == 0
