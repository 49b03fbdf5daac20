"""Spend reports in the durable store: per-request spend logs, and aggregates computed by the database.

The daily rollup (`daily_customer_spend`, written in the charge transaction) answers every aggregate: the database
groups and sums, and a result holds one row per day, per (day, model, provider), per (day, customer) of customers
named by the caller, or at most `limit` customers; never one row per request, nor per customer of the whole store.

`spend_logs` is read only where the rollup has no dimension to answer from, always through an index:
- `list_logs`: per-request rows, newest first, at most `limit` (`ix_spend_logs_start_time`, `..._end_user_...`,
  `..._api_key_...`, or the primary key for one request);
- `logged_spend_by_day_and_model` and `top_end_users_of_key`: reports for one request or one virtual key (the
  rollup has no key column), grouped by the database; they cover only the days spend-log retention keeps;
- `total_spend`: a check of the logs against the rollup (no endpoint uses it).

Time ranges are half-open, `start <= start_time < end`; date ranges are inclusive UTC days; None means unbounded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Final

from sqlalchemy import BigInteger, ColumnElement, case, cast, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import QueryableAttribute

from haimaker.money import Nanos
from haimaker.storage.records import DailySpend, SpendLog
from haimaker.storage.tables import DailyCustomerSpendRow, SpendLogRow

SUCCESS: Final = "success"
# Spend counted in reports: failed requests never count, whatever their log carries.
_COUNTED_SPEND: Final = case((SpendLogRow.status == SUCCESS, SpendLogRow.spend), else_=0)
_ROLLUP: Final = DailyCustomerSpendRow
# SUM(...) of each rollup counter, in `SpendCounters` field order (rows end with them: `_counters(row[n:])`).
# PostgreSQL sums BIGINT as NUMERIC, which the driver decodes into a Decimal per value: cast back to BIGINT (a day's
# total stays far below 2^63 nano-dollars or tokens). A group has at least one row, so no sum is NULL.
_COUNTER_SUMS: Final = tuple(
    cast(func.sum(getattr(_ROLLUP, name)), BigInteger).label(name) for name in _ROLLUP.COUNTERS
)


@dataclass(frozen=True, slots=True)
class SpendCounters:
    """The rollup's counters summed over some of its rows (field names are `DailyCustomerSpendRow.COUNTERS`)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    spend: Nanos = 0
    api_requests: int = 0
    successful_requests: int = 0
    failed_requests: int = 0


@dataclass(frozen=True, slots=True)
class ActivityScope:
    """Which rollup rows a daily-activity report covers.

    `end_user_ids` None means every customer except "" (requests without a customer); ranges are inclusive.
    """

    end_user_ids: tuple[str, ...] | None = None
    exclude_end_user_ids: tuple[str, ...] | None = None
    start_date: date | None = None
    end_date: date | None = None
    model: str | None = None

    def conditions(self) -> list[ColumnElement[bool]]:
        conditions = _date_range(_ROLLUP.date, self.start_date, self.end_date)
        if self.end_user_ids is not None:
            conditions.append(_ROLLUP.end_user_id.in_(self.end_user_ids))
        else:
            conditions.append(_ROLLUP.end_user_id != "")
        if self.exclude_end_user_ids:
            conditions.append(_ROLLUP.end_user_id.not_in(self.exclude_end_user_ids))
        if self.model is not None:
            conditions.append(_ROLLUP.model == self.model)
        return conditions


class SpendReports:
    """Read-only spend reports; `SpendRepository` inherits them (one repository per table pair, two modules)."""

    _sessions: async_sessionmaker[AsyncSession]

    async def list_logs(
        self,
        end_user: str | None = None,
        request_id: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        limit: int = 10_000,
        api_key: str | None = None,
    ) -> list[SpendLog]:
        """Spend logs matching every given filter, newest first, at most `limit`."""
        statement = (
            select(SpendLogRow)
            .where(*_log_conditions(start, end, end_user=end_user, request_id=request_id, api_key=api_key))
            .order_by(SpendLogRow.start_time.desc(), SpendLogRow.request_id.desc())
            .limit(limit)
        )
        async with self._sessions() as session:
            rows = await session.scalars(statement)
            return [row.to_record() for row in rows]

    async def top_end_users(
        self, start_date: date | None = None, end_date: date | None = None, limit: int = 100
    ) -> list[tuple[str, int, Nanos]]:
        """(end_user, requests, spend) of the customers who spent most over whole UTC days, highest first."""
        total = func.sum(_ROLLUP.spend)
        statement = (
            select(_ROLLUP.end_user_id, func.sum(_ROLLUP.api_requests), total)
            .where(_ROLLUP.end_user_id != "", *_date_range(_ROLLUP.date, start_date, end_date))
            .group_by(_ROLLUP.end_user_id)
            .order_by(total.desc(), _ROLLUP.end_user_id)
            .limit(limit)
        )
        async with self._sessions() as session:
            rows = await session.execute(statement)
            return [(end_user, int(count or 0), int(spend or 0)) for end_user, count, spend in rows]

    async def top_end_users_of_key(
        self, api_key: str, start: datetime | None = None, end: datetime | None = None, limit: int = 100
    ) -> list[tuple[str, int, Nanos]]:
        """(end_user, requests, spend) of one key's biggest spenders, from the logs (`ix_spend_logs_api_key_...`)."""
        total = func.sum(_COUNTED_SPEND)
        statement = (
            select(SpendLogRow.end_user, func.count(), total)
            .where(SpendLogRow.end_user != "", *_log_conditions(start, end, api_key=api_key))
            .group_by(SpendLogRow.end_user)
            .order_by(total.desc(), SpendLogRow.end_user)
            .limit(limit)
        )
        async with self._sessions() as session:
            rows = await session.execute(statement)
            return [(end_user, int(count), int(spend or 0)) for end_user, count, spend in rows]

    async def activity_by_day(self, scope: ActivityScope) -> list[tuple[str, SpendCounters]]:
        """(YYYY-MM-DD, counters) of every day with activity in the scope, newest first."""
        statement = (
            select(_ROLLUP.date, *_COUNTER_SUMS)
            .where(*scope.conditions())
            .group_by(_ROLLUP.date)
            .order_by(_ROLLUP.date.desc())
        )
        async with self._sessions() as session:
            return [(row[0], _counters(row[1:])) for row in await session.execute(statement)]

    async def activity_by_model_and_provider(self, scope: ActivityScope) -> list[tuple[str, str, str, SpendCounters]]:
        """(YYYY-MM-DD, model, provider, counters) per day, model and provider in the scope."""
        statement = (
            select(_ROLLUP.date, _ROLLUP.model, _ROLLUP.custom_llm_provider, *_COUNTER_SUMS)
            .where(*scope.conditions())
            .group_by(_ROLLUP.date, _ROLLUP.model, _ROLLUP.custom_llm_provider)
        )
        async with self._sessions() as session:
            return [(row[0], row[1], row[2], _counters(row[3:])) for row in await session.execute(statement)]

    async def activity_by_customer(self, scope: ActivityScope) -> list[tuple[str, str, SpendCounters]]:
        """(YYYY-MM-DD, end_user_id, counters) per day and customer in the scope: as many rows as customers active on
        each day, so callers name the customers (`scope.end_user_ids`)."""
        statement = (
            select(_ROLLUP.date, _ROLLUP.end_user_id, *_COUNTER_SUMS)
            .where(*scope.conditions())
            .group_by(_ROLLUP.date, _ROLLUP.end_user_id)
        )
        async with self._sessions() as session:
            return [(row[0], row[1], _counters(row[2:])) for row in await session.execute(statement)]

    async def daily_activity(
        self,
        end_user_ids: tuple[str, ...] | list[str] | None = None,
        exclude_end_user_ids: tuple[str, ...] | list[str] | None = None,
        start_date: date | None = None,
        end_date: date | None = None,
        model: str | None = None,
    ) -> list[DailySpend]:
        """The rollup's own rows, ordered by date, customer, model and provider (checks and tests: one row per
        customer, day, model and provider, so reports use the aggregates above)."""
        scope = ActivityScope(
            tuple(end_user_ids) if end_user_ids else None,
            tuple(exclude_end_user_ids) if exclude_end_user_ids else None,
            start_date,
            end_date,
            model,
        )
        statement = (
            select(_ROLLUP)
            .where(*scope.conditions())
            .order_by(_ROLLUP.date, _ROLLUP.end_user_id, _ROLLUP.model, _ROLLUP.custom_llm_provider)
        )
        async with self._sessions() as session:
            return [daily.to_record() for daily in await session.scalars(statement)]

    async def spend_by_day_and_model(
        self, end_user: str | None = None, start_date: date | None = None, end_date: date | None = None
    ) -> list[tuple[str, str, Nanos]]:
        """(YYYY-MM-DD, model, spend) per UTC day and model with any requests, oldest first; every request (with or
        without a customer) when `end_user` is None."""
        conditions = _date_range(_ROLLUP.date, start_date, end_date)
        if end_user is not None:
            conditions.append(_ROLLUP.end_user_id == end_user)
        statement = (
            select(_ROLLUP.date, _ROLLUP.model, func.sum(_ROLLUP.spend))
            .where(*conditions)
            .group_by(_ROLLUP.date, _ROLLUP.model)
            .order_by(_ROLLUP.date, _ROLLUP.model)
        )
        async with self._sessions() as session:
            rows = await session.execute(statement)
            return [(day, model, int(spend or 0)) for day, model, spend in rows]

    async def logged_spend_by_day_and_model(
        self,
        start: datetime | None = None,
        end: datetime | None = None,
        *,
        end_user: str | None = None,
        request_id: str | None = None,
        api_key: str | None = None,
    ) -> list[tuple[str, str, Nanos]]:
        """(YYYY-MM-DD, model, spend) per UTC day and model of the logs of one request or one key, oldest first."""
        async with self._sessions() as session:
            day = _utc_day(session)
            statement = (
                select(day, SpendLogRow.model, func.sum(_COUNTED_SPEND))
                .where(*_log_conditions(start, end, end_user=end_user, request_id=request_id, api_key=api_key))
                .group_by(day, SpendLogRow.model)
                .order_by(day, SpendLogRow.model)
            )
            rows = await session.execute(statement)
            return [(str(day), model, int(spend or 0)) for day, model, spend in rows]

    async def total_spend(self, start: datetime | None = None, end: datetime | None = None) -> Nanos:
        """Spend of all successful requests started in the range, from the logs."""
        statement = select(func.coalesce(func.sum(_COUNTED_SPEND), 0)).where(*_log_conditions(start, end))
        async with self._sessions() as session:
            return int(await session.scalar(statement) or 0)


def _counters(sums: Sequence[int]) -> SpendCounters:
    return SpendCounters(*sums)


def _utc_day(session: AsyncSession) -> ColumnElement[str]:
    """A log's UTC start date as YYYY-MM-DD, the rollup's `date`."""
    if session.get_bind().dialect.name == "sqlite":
        # SQLite holds naive UTC text, "YYYY-MM-DD HH:MM:SS.ffffff".
        return func.substr(SpendLogRow.start_time, 1, 10)
    return func.to_char(func.timezone("UTC", SpendLogRow.start_time), "YYYY-MM-DD")


def _log_conditions(
    start: datetime | None,
    end: datetime | None,
    *,
    end_user: str | None = None,
    request_id: str | None = None,
    api_key: str | None = None,
) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if start is not None:
        conditions.append(SpendLogRow.start_time >= start)
    if end is not None:
        conditions.append(SpendLogRow.start_time < end)
    if end_user is not None:
        conditions.append(SpendLogRow.end_user == end_user)
    if request_id is not None:
        conditions.append(SpendLogRow.request_id == request_id)
    if api_key is not None:
        conditions.append(SpendLogRow.api_key == api_key)
    return conditions


def _date_range(
    column: QueryableAttribute[str], start_date: date | None, end_date: date | None
) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if start_date is not None:
        conditions.append(column >= start_date.isoformat())
    if end_date is not None:
        conditions.append(column <= end_date.isoformat())
    return conditions
