"""Spend reports: spend logs, per-day summaries, the customers' daily activity and the top spenders.

Every report first waits for the spend recorder, so a request whose response has been sent is in it. Money stays
in nano-dollars here; the API renders USD.

Invariants:
- The database does the work: aggregates come from the daily rollup (`storage/spend_reports.py`), grouped and
  limited in SQL, and the Python here is linear in the rows a report returns, which are bounded by days x models,
  by the customers a caller names, or by a limit, never by the number of customers or requests in the store.
  Only per-request rows (`logs`) and reports for one request or one key read `spend_logs`, through its indexes.
- Date ranges are inclusive UTC days; `end_date` before `start_date` is refused, and per-day summaries (which list
  every day of the range) are limited to `MAX_SUMMARY_DAYS`.
- Failed requests count as requests but never as spend.
- Every request reaches haimaker with an admin key, whose owner LiteLLM calls `default_user_id`: that is the `user`
  of every spend log, and the only `user_id` a filter can match.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Final

from haimaker.errors import BadRequestError
from haimaker.ids import checked_text
from haimaker.money import Nanos
from haimaker.storage.records import SpendLog
from haimaker.storage.spend_reports import ActivityScope, SpendCounters

if TYPE_CHECKING:
    from haimaker.services.container import Services

KEY_OWNER: Final = "default_user_id"
MAX_LOGS: Final = 10_000
MAX_SUMMARY_DAYS: Final = 3660
TOP_END_USERS: Final = 100
MAX_FILTER_IDS: Final = 1_000
# Rows of a daily-activity page's per-customer breakdown (named customers x days), so the answer stays bounded.
MAX_ENTITY_ROWS: Final = 100_000
DEFAULT_WINDOW: Final = timedelta(days=30)
_EARLIEST: Final = datetime.min.replace(tzinfo=UTC)


@dataclass(slots=True)
class SpendMetrics:
    """Counters summed over daily rollup rows."""

    spend: Nanos = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    api_requests: int = 0
    successful_requests: int = 0
    failed_requests: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def add(self, counters: SpendCounters) -> None:
        self.spend += counters.spend
        self.prompt_tokens += counters.prompt_tokens
        self.completion_tokens += counters.completion_tokens
        self.cache_read_input_tokens += counters.cache_read_input_tokens
        self.cache_creation_input_tokens += counters.cache_creation_input_tokens
        self.api_requests += counters.api_requests
        self.successful_requests += counters.successful_requests
        self.failed_requests += counters.failed_requests

    @classmethod
    def of(cls, counters: SpendCounters) -> SpendMetrics:
        metrics = cls()
        metrics.add(counters)
        return metrics


@dataclass(slots=True)
class DailyActivity:
    """One day of customer activity, with its breakdowns by model, provider and (when named) customer."""

    date: str
    metrics: SpendMetrics = field(default_factory=SpendMetrics)
    models: dict[str, SpendMetrics] = field(default_factory=dict)
    providers: dict[str, SpendMetrics] = field(default_factory=dict)
    entities: dict[str, SpendMetrics] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ActivityReport:
    """A page of days (newest first) and the totals over every matching day."""

    days: list[DailyActivity]
    totals: SpendMetrics
    page: int
    total_pages: int
    aliases: dict[str, str | None]

    @property
    def has_more(self) -> bool:
        return self.page < self.total_pages


@dataclass(frozen=True, slots=True)
class DaySummary:
    """Spend of one day, by key owner and by model (`/spend/logs` with a date range)."""

    day: date
    spend: Nanos
    users: dict[str, Nanos]
    models: dict[str, Nanos]


def hashed_key(api_key: str) -> str:
    """Spend logs carry keys hashed as LiteLLM does (sha256 hex); raw `sk-` keys are hashed before matching."""
    return hashlib.sha256(api_key.encode()).hexdigest() if api_key.startswith("sk-") else api_key


def check_range(start: date | None, end: date | None) -> None:
    if start is not None and end is not None and end < start:
        raise BadRequestError(f"end_date {end} is before start_date {start}.", param="end_date")


def _check_filters(**filters: str | None) -> None:
    """Filters go to the store as query parameters: the same text rule as the ids they match."""
    for name, value in filters.items():
        if value is not None:
            checked_text(value, param=name)


def _day_start(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC)


def _day_after(day: date) -> datetime | None:
    """The end of an inclusive range ending on `day`; None (no end) for the last day `date` can hold."""
    return None if day == date.max else _day_start(day + timedelta(days=1))


class SpendService:
    """Read-only reports over spend logs and daily rollups."""

    def __init__(self, services: Services) -> None:
        self._services = services

    async def logs(
        self,
        *,
        end_user: str | None = None,
        request_id: str | None = None,
        api_key: str | None = None,
        user_id: str | None = None,
        start_date: date | None = None,
        end_date: date | None = None,
        limit: int = MAX_LOGS,
    ) -> list[SpendLog]:
        """Spend logs matching every filter, newest first, at most `limit` (at most `MAX_LOGS`)."""
        _check_filters(end_user=end_user, request_id=request_id, api_key=api_key, user_id=user_id)
        check_range(start_date, end_date)
        await self._services.settle_pending()
        if user_id is not None and user_id != KEY_OWNER:
            return []
        return await self._services.spend_repo.list_logs(
            end_user=end_user,
            request_id=request_id,
            api_key=hashed_key(api_key) if api_key is not None else None,
            start=_day_start(start_date) if start_date is not None else None,
            end=_day_after(end_date) if end_date is not None else None,
            limit=min(limit, MAX_LOGS),
        )

    async def daily_summary(
        self,
        start_date: date,
        end_date: date,
        *,
        end_user: str | None = None,
        request_id: str | None = None,
        api_key: str | None = None,
        user_id: str | None = None,
    ) -> list[DaySummary]:
        """Per-day spend, by key owner and model, for every day of the range (zeros where nothing happened)."""
        _check_filters(end_user=end_user, request_id=request_id, api_key=api_key, user_id=user_id)
        check_range(start_date, end_date)
        if (end_date - start_date).days >= MAX_SUMMARY_DAYS:
            raise BadRequestError(
                f"The date range is too long to summarize per day (at most {MAX_SUMMARY_DAYS} days).",
                param="end_date",
            )
        days = {
            start_date + timedelta(days=n): DaySummary(start_date + timedelta(days=n), 0, {}, {})
            for n in range((end_date - start_date).days + 1)
        }
        totals: dict[date, Nanos] = dict.fromkeys(days, 0)
        for day, model, spend in await self._spend_by_day_and_model(
            start_date, end_date, end_user=end_user, request_id=request_id, api_key=api_key, user_id=user_id
        ):
            if day not in days:
                continue
            totals[day] += spend
            summary = days[day]
            summary.users[KEY_OWNER] = summary.users.get(KEY_OWNER, 0) + spend
            summary.models[model] = summary.models.get(model, 0) + spend
        return [DaySummary(day, totals[day], s.users, s.models) for day, s in sorted(days.items())]

    async def _spend_by_day_and_model(
        self,
        start_date: date,
        end_date: date,
        *,
        end_user: str | None,
        request_id: str | None,
        api_key: str | None,
        user_id: str | None,
    ) -> list[tuple[date, str, Nanos]]:
        await self._services.settle_pending()
        if user_id is not None and user_id != KEY_OWNER:
            return []
        repo = self._services.spend_repo
        if request_id is None and api_key is None:
            # The daily rollup is exact and small, however many requests the range holds.
            rows = await repo.spend_by_day_and_model(end_user, start_date, end_date)
        else:
            # The rollup has no request or key: the logs of that one request or key, grouped by the database.
            rows = await repo.logged_spend_by_day_and_model(
                _day_start(start_date),
                _day_after(end_date),
                end_user=end_user,
                request_id=request_id,
                api_key=hashed_key(api_key) if api_key is not None else None,
            )
        return [(date.fromisoformat(day), model, spend) for day, model, spend in rows]

    async def daily_activity(
        self,
        *,
        end_user_ids: Sequence[str] | None = None,
        exclude_end_user_ids: Sequence[str] | None = None,
        start_date: date | None = None,
        end_date: date | None = None,
        model: str | None = None,
        page: int = 1,
        page_size: int = 10,
    ) -> ActivityReport:
        """Customers' activity per day, newest day first, `page_size` days a page.

        Each day is broken down by model and provider; by customer only for the customers `end_user_ids` names
        (without it, a day sums every customer: a breakdown of all of them would be as big as the customer base).
        """
        for param, user_ids in (("end_user_ids", end_user_ids), ("exclude_end_user_ids", exclude_end_user_ids)):
            # Each id is a bound parameter: past ~32k, either store refuses the statement.
            if user_ids is not None and len(user_ids) > MAX_FILTER_IDS:
                raise BadRequestError(f"{param} lists more than {MAX_FILTER_IDS} ids.", param=param)
            for user_id in user_ids or ():
                checked_text(user_id, param=param)
        if end_user_ids and len(end_user_ids) * page_size > MAX_ENTITY_ROWS:
            raise BadRequestError(
                f"page_size x the number of end_user_ids is at most {MAX_ENTITY_ROWS} (one breakdown row each).",
                param="page_size",
            )
        _check_filters(model=model)
        check_range(start_date, end_date)
        await self._services.settle_pending()
        repo = self._services.spend_repo
        scope = ActivityScope(
            tuple(end_user_ids) if end_user_ids else None,
            tuple(exclude_end_user_ids) if exclude_end_user_ids else None,
            start_date,
            end_date,
            model,
        )
        # One row per day with activity (bounded by the range, not by customers or requests): the totals and the
        # page count come from them, and the page's breakdowns are read for its days only.
        days = await repo.activity_by_day(scope)
        totals = SpendMetrics()
        for _, counters in days:
            totals.add(counters)
        total_pages = max(1, math.ceil(len(days) / page_size))
        shown = {
            day: DailyActivity(day, SpendMetrics.of(counters))
            for day, counters in days[(page - 1) * page_size :][:page_size]
        }
        aliases: dict[str, str | None] = {}
        if shown:
            # The page's days are consecutive among the days with activity: its first and last bound them.
            page_scope = replace(
                scope, start_date=date.fromisoformat(min(shown)), end_date=date.fromisoformat(max(shown))
            )
            for day, model_name, provider, counters in await repo.activity_by_model_and_provider(page_scope):
                activity = shown[day]
                activity.models.setdefault(model_name, SpendMetrics()).add(counters)
                activity.providers.setdefault(provider or "unknown", SpendMetrics()).add(counters)
            if scope.end_user_ids is not None:
                for day, user_id, counters in await repo.activity_by_customer(page_scope):
                    shown[day].entities[user_id] = SpendMetrics.of(counters)
                named = sorted({user_id for activity in shown.values() for user_id in activity.entities})
                stored = await self._services.customers_repo.get_many(named)
                aliases = {user_id: stored[user_id].alias if user_id in stored else None for user_id in named}
        return ActivityReport(list(shown.values()), totals, page, total_pages, aliases)

    async def top_end_users(
        self, *, start: datetime | None = None, end: datetime | None = None, api_key: str | None = None
    ) -> list[tuple[str, int, Nanos]]:
        """(customer, requests, spend) of the `TOP_END_USERS` biggest spenders; the last 30 days by default.

        Counted over whole UTC days, every day the range `[start, end)` touches: the daily rollup answers, so the
        cost is one row per customer and day, not per request, and reports over days whose logs retention deleted
        still add up.
        """
        _check_filters(api_key=api_key)
        await self._services.settle_pending()
        if start is None:
            # No window before the first representable instant: then there is simply no lower bound.
            latest = end or self._services.clock.now()
            start = latest - DEFAULT_WINDOW if latest > _EARLIEST + DEFAULT_WINDOW else None
        if end is not None and end <= _EARLIEST:
            return []
        first = start.astimezone(UTC).date() if start is not None else None
        # The range is half-open: an `end` at midnight does not touch the day it starts.
        last = (end - timedelta.resolution).astimezone(UTC).date() if end is not None else None
        if first is not None and last is not None and last < first:
            return []
        repo = self._services.spend_repo
        if api_key is None:
            return await repo.top_end_users(first, last, limit=TOP_END_USERS)
        return await repo.top_end_users_of_key(
            hashed_key(api_key),
            start=_day_start(first) if first is not None else None,
            end=_day_after(last) if last is not None else None,
            limit=TOP_END_USERS,
        )
