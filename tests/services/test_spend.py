"""Spend reports (`services/spend.py`) on both engines: each answer equals the spend logs aggregated in Python, for a
generated data set; the aggregates read only the daily rollup; a report over a big store leaves the event loop free.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text

from haimaker.app_state import AppState
from haimaker.errors import BadRequestError
from haimaker.services.spend import ActivityReport, DaySummary, SpendMetrics
from haimaker.storage import ChargeBatch, SpendLog
from haimaker.storage.json_rows import insert_from_json, rows_param
from haimaker.storage.tables import DailyCustomerSpendRow, daily_customer_spend_table
from tests.support.factories import make_customer, make_log

DAY0 = datetime(2026, 1, 1, tzinfo=UTC)
DAYS = 5
CUSTOMERS = [f"c{n}" for n in range(8)] + [""]  # "": requests without a customer
MODELS = [("gpt-4o", "openai"), ("claude", "anthropic"), ("local", "")]
KEYS = ["key-hash-1", "key-hash-2"]


def generated_logs(count: int = 400, seed: int = 15) -> list[SpendLog]:
    """Several customers, models, providers, keys and days; about one request in seven fails."""
    rng = random.Random(seed)
    logs = []
    for n in range(count):
        model, provider = rng.choice(MODELS)
        logs.append(
            make_log(
                request_id=f"r{n:04d}",
                end_user=rng.choice(CUSTOMERS),
                model=model,
                custom_llm_provider=provider,
                prompt_tokens=rng.randrange(1, 500),
                completion_tokens=rng.randrange(0, 200),
                cache_read_input_tokens=rng.randrange(0, 50),
                cache_creation_input_tokens=rng.randrange(0, 20),
                spend=rng.randrange(1, 10**6),
                status="failure" if rng.random() < 0.15 else "success",
                start_time=DAY0 + timedelta(days=rng.randrange(DAYS), seconds=rng.randrange(86_400)),
                api_key=rng.choice(KEYS),
            )
        )
    return logs


def day_of(log: SpendLog) -> str:
    return log.start_time.astimezone(UTC).date().isoformat()


def add_log(metrics: SpendMetrics, log: SpendLog) -> None:
    is_success = log.status == "success"
    metrics.spend += log.spend if is_success else 0
    metrics.prompt_tokens += log.prompt_tokens
    metrics.completion_tokens += log.completion_tokens
    metrics.cache_read_input_tokens += log.cache_read_input_tokens
    metrics.cache_creation_input_tokens += log.cache_creation_input_tokens
    metrics.api_requests += 1
    metrics.successful_requests += is_success
    metrics.failed_requests += not is_success


@dataclass
class Day:
    metrics: SpendMetrics = field(default_factory=SpendMetrics)
    models: dict[str, SpendMetrics] = field(default_factory=dict)
    providers: dict[str, SpendMetrics] = field(default_factory=dict)
    entities: dict[str, SpendMetrics] = field(default_factory=dict)


def expected_days(logs: list[SpendLog], *, with_entities: bool) -> dict[str, Day]:
    days: dict[str, Day] = defaultdict(Day)
    for log in logs:
        day = days[day_of(log)]
        add_log(day.metrics, log)
        add_log(day.models.setdefault(log.model, SpendMetrics()), log)
        add_log(day.providers.setdefault(log.custom_llm_provider or "unknown", SpendMetrics()), log)
        if with_entities:
            add_log(day.entities.setdefault(log.end_user, SpendMetrics()), log)
    return dict(days)


def reported_days(report: ActivityReport) -> dict[str, Day]:
    return {day.date: Day(day.metrics, day.models, day.providers, day.entities) for day in report.days}


def totals_of(logs: list[SpendLog]) -> SpendMetrics:
    totals = SpendMetrics()
    for log in logs:
        add_log(totals, log)
    return totals


def top_spenders(logs: list[SpendLog]) -> list[tuple[str, int, int]]:
    counts: dict[str, int] = defaultdict(int)
    spends: dict[str, int] = defaultdict(int)
    for log in logs:
        if log.end_user:
            counts[log.end_user] += 1
            spends[log.end_user] += log.spend if log.status == "success" else 0
    return sorted(((user, counts[user], spends[user]) for user in counts), key=lambda row: (-row[2], row[0]))[:100]


def summary_of(logs: list[SpendLog], first: date, last: date) -> list[DaySummary]:
    days = [first + timedelta(days=n) for n in range((last - first).days + 1)]
    spend: dict[date, int] = dict.fromkeys(days, 0)
    models: dict[date, dict[str, int]] = {day: {} for day in days}
    for log in logs:
        day = log.start_time.astimezone(UTC).date()
        if day in spend:
            cost = log.spend if log.status == "success" else 0
            spend[day] += cost
            models[day][log.model] = models[day].get(log.model, 0) + cost
    return [
        DaySummary(day, spend[day], {"default_user_id": spend[day]} if models[day] else {}, models[day]) for day in days
    ]


@pytest.fixture
async def logs(app_state: AppState) -> list[SpendLog]:
    logs = generated_logs()
    await app_state.sink.customers.create(make_customer(user_id="c1", alias="One"))
    assert await app_state.sink.spend.write_batch(ChargeBatch(logs=logs)) == len(logs)
    return logs


async def test_daily_activity_of_all_customers_sums_them_per_day_and_pages_days(
    app_state: AppState, logs: list[SpendLog]
) -> None:
    spend = app_state.services.spend
    with_customer = [log for log in logs if log.end_user]
    expected = expected_days(with_customer, with_entities=False)
    newest_first = sorted(expected, reverse=True)
    for page in (1, 2, 3):
        report = await spend.daily_activity(page=page, page_size=2)
        assert [day.date for day in report.days] == newest_first[(page - 1) * 2 : page * 2]
        assert reported_days(report) == {day: expected[day] for day in newest_first[(page - 1) * 2 : page * 2]}
        assert report.totals == totals_of(with_customer)  # every day, not only the page's
        assert (report.total_pages, report.has_more, report.aliases) == (3, page < 3, {})
    assert (await spend.daily_activity(page=4, page_size=2)).days == []


async def test_daily_activity_of_named_customers_breaks_each_day_down_by_customer(
    app_state: AppState, logs: list[SpendLog]
) -> None:
    named = [log for log in logs if log.end_user in {"c1", "c3"} and log.model == "claude"]
    report = await app_state.services.spend.daily_activity(
        end_user_ids=["c1", "c2", "c3"],
        exclude_end_user_ids=["c2"],
        model="claude",
        start_date=date(2026, 1, 2),
        end_date=date(2026, 1, 4),
        page_size=10,
    )
    in_range = [log for log in named if "2026-01-02" <= day_of(log) <= "2026-01-04"]
    assert reported_days(report) == expected_days(in_range, with_entities=True)
    assert report.totals == totals_of(in_range)
    assert report.aliases == {"c1": "One", "c3": None}


async def test_daily_activity_bounds_the_customer_breakdown(app_state: AppState) -> None:
    ids = [f"u{n}" for n in range(1_000)]
    with pytest.raises(BadRequestError) as refused:
        await app_state.services.spend.daily_activity(end_user_ids=ids, page_size=101)
    assert refused.value.param == "page_size"
    assert (await app_state.services.spend.daily_activity(end_user_ids=ids, page_size=100)).days == []


async def test_daily_summary_equals_the_logs_per_day_and_model(app_state: AppState, logs: list[SpendLog]) -> None:
    spend = app_state.services.spend
    first, last = date(2025, 12, 31), date(2026, 1, 4)
    assert await spend.daily_summary(first, last) == summary_of(logs, first, last)
    c3 = [log for log in logs if log.end_user == "c3"]
    assert await spend.daily_summary(first, last, end_user="c3") == summary_of(c3, first, last)
    # A key's summary comes from its logs (the rollup has no key), grouped by the database.
    of_key = [log for log in logs if log.api_key == KEYS[0] and log.end_user == "c3"]
    assert await spend.daily_summary(first, last, end_user="c3", api_key=KEYS[0]) == summary_of(of_key, first, last)
    one = logs[7]
    assert await spend.daily_summary(first, last, request_id=one.request_id) == summary_of([one], first, last)


async def test_top_end_users_count_whole_days_of_the_range(app_state: AppState, logs: list[SpendLog]) -> None:
    spend = app_state.services.spend
    # 2 Jan 05:00 to 4 Jan 00:00 (half-open): the days it touches are 2 and 3 January.
    start, end = DAY0 + timedelta(days=1, hours=5), DAY0 + timedelta(days=3)
    in_days = [log for log in logs if "2026-01-02" <= day_of(log) <= "2026-01-03"]
    assert await spend.top_end_users(start=start, end=end) == top_spenders(in_days)
    of_key = [log for log in in_days if log.api_key == KEYS[1]]
    assert await spend.top_end_users(start=start, end=end, api_key=KEYS[1]) == top_spenders(of_key)
    assert await spend.top_end_users(start=end, end=end) == []
    # The default window starts 30 days before the clock's now (1 January 2026) and has no end.
    assert await spend.top_end_users() == top_spenders(logs)
    assert await spend.top_end_users(end=DAY0 + timedelta(days=1)) == top_spenders(
        [log for log in logs if day_of(log) == "2026-01-01"]
    )


async def test_reports_are_unchanged_when_the_spend_logs_are_gone(app_state: AppState, logs: list[SpendLog]) -> None:
    spend = app_state.services.spend
    first, last = date(2026, 1, 1), date(2026, 1, 5)

    async def reports() -> list[Any]:
        return [
            await spend.daily_activity(page_size=10),
            await spend.daily_activity(end_user_ids=["c1", "c4"], page_size=3, page=2),
            await spend.daily_summary(first, last),
            await spend.daily_summary(first, last, end_user="c5"),
            await spend.top_end_users(start=DAY0, end=DAY0 + timedelta(days=DAYS)),
        ]

    before = await reports()
    async with app_state.db.begin() as connection:
        assert (await connection.execute(text("DELETE FROM spend_logs"))).rowcount == len(logs)
    assert await reports() == before
    assert before[-1] == top_spenders(logs)


async def test_a_report_over_200k_rollup_rows_leaves_the_event_loop_free(app_state: AppState) -> None:
    customers, days, models = 20_000, 5, ("gpt-4o", "claude")
    counters = dict.fromkeys(DailyCustomerSpendRow.COUNTERS, 1)
    rows = [
        {
            "end_user_id": f"u{n:05d}",
            "date": (DAY0 + timedelta(days=d)).date().isoformat(),
            "model": model,
            "custom_llm_provider": "openai",
            **counters,
            "spend": n + 1,
        }
        for n in range(customers)
        for d in range(days)
        for model in models
    ]
    dialect = app_state.db.dialect.name
    columns = tuple(rows[0])
    insert = insert_from_json(daily_customer_spend_table, columns, dialect)
    async with app_state.db.begin() as connection:
        for start in range(0, len(rows), 10_000):
            await connection.execute(insert, {"rows": rows_param(rows[start : start + 10_000], (), dialect)})

    stop = asyncio.Event()

    async def worst_lag() -> float:
        worst = 0.0
        while not stop.is_set():
            before = time.perf_counter()
            await asyncio.sleep(0.005)
            worst = max(worst, time.perf_counter() - before - 0.005)
        return worst

    ticker = asyncio.create_task(worst_lag())
    await asyncio.sleep(0.05)
    started = time.perf_counter()
    report = await app_state.services.spend.daily_activity(page_size=10)
    top = await app_state.services.spend.top_end_users(start=DAY0, end=DAY0 + timedelta(days=days))
    elapsed = time.perf_counter() - started
    stop.set()
    lag = await ticker

    assert len(report.days) == days and report.days[0].date == "2026-01-05"
    assert report.totals.api_requests == len(rows)
    assert report.totals.spend == days * len(models) * customers * (customers + 1) // 2
    assert set(report.days[0].models) == set(models) and report.days[0].entities == {}
    assert top[0] == (f"u{customers - 1:05d}", days * len(models), days * len(models) * customers)
    assert len(top) == 100
    # The database aggregates; the loop only awaits it. (Aggregating these rows in Python took seconds.)
    assert lag < 0.2, f"event loop stalled {lag:.3f}s during a {elapsed:.2f}s report"
