"""Spend in the durable store: the grouped charge write, and the reports built on spend logs and daily rollups.

Invariants of `SpendRepository.write_batch` (one transaction per batch):
- Idempotent: a spend log is keyed by `request_id` and a log already stored is skipped (PostgreSQL: ON CONFLICT DO
  NOTHING RETURNING; SQLite: the stored ids read inside the write-locked transaction); only the logs actually
  inserted add to `customers.spend`, `virtual_keys.spend` and to the daily rollup, so a batch retried after a crash
  never double-counts.
- Deadlock-free across processes: every writer touches tables in the same order (customers inserted, logs, customers
  updated, virtual keys updated, daily rollup) and rows within a table in sorted key order. On SQLite the transaction
  takes the write lock at BEGIN, since it reads (which logs are stored) before it writes.
- A constant number of statements per batch, whatever its size: rows travel as one JSON parameter (`json_rows`), so
  neither Python nor the driver does work per row beyond building that parameter.
- A log whose `status` is not "success" counts as a failed request and adds no spend anywhere, reports included.
- A charge for a customer that does not exist (deleted, or never created) still writes its log and rollup; the
  recorder lists customers it has not seen stored in `ChargeBatch.new_customers` to have them created first.
- The inserted logs' spend also adds to `virtual_keys.spend` where `token = api_key` (one statement per batch, keys
  locked in sorted order on PostgreSQL); a log whose key matches no row (the master key, a deleted key) adds nowhere.
- Daily rollup rows are keyed by the log's UTC start date; `end_user_id` "" collects requests without a customer.

Time ranges in reports are half-open, `start <= start_time < end`; date ranges are inclusive; None means unbounded.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Final

import orjson
from sqlalchemy import ColumnElement, TextClause, case, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import QueryableAttribute

from haimaker.clock import Clock, SystemClock
from haimaker.money import Nanos
from haimaker.storage._upsert import chunked
from haimaker.storage.engine import WRITE_TRANSACTION
from haimaker.storage.json_rows import insert_from_json, rows_param
from haimaker.storage.records import Customer, DailySpend, SpendLog
from haimaker.storage.tables import (
    DailyCustomerSpendRow,
    SpendLogRow,
    customer_values,
    customers_table,
    daily_customer_spend_table,
    spend_log_values,
    spend_logs_table,
)

SUCCESS: Final = "success"
_DAILY_KEY: Final = ("end_user_id", "date", "model", "custom_llm_provider")
# Spend counted in reports: failed requests never count, whatever their log carries.
_COUNTED_SPEND: Final = case((SpendLogRow.status == SUCCESS, SpendLogRow.spend), else_=0)


@dataclass(frozen=True, slots=True)
class ChargeBatch:
    """What one `write_batch` transaction stores: customers to create if absent, then the spend logs."""

    new_customers: Sequence[Customer] = ()
    logs: Sequence[SpendLog] = ()


class SpendRepository:
    """Writes charge batches; answers spend reports from `spend_logs` and `daily_customer_spend`."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], *, clock: Clock | None = None) -> None:
        self._sessions = sessions
        self._clock: Clock = clock or SystemClock()

    async def write_batch(self, batch: ChargeBatch) -> int:
        """Store a batch in one transaction; returns the number of logs inserted (0 for a batch already stored)."""
        first_by_id: dict[str, SpendLog] = {}
        for log in batch.logs:
            first_by_id.setdefault(log.request_id, log)
        logs = [first_by_id[request_id] for request_id in sorted(first_by_id)]
        if not logs and not batch.new_customers:
            return 0
        async with self._sessions() as session, session.begin():
            await session.connection(execution_options=WRITE_TRANSACTION)
            await self._insert_missing_customers(session, batch.new_customers)
            inserted = await _insert_logs(session, logs)
            await _add_customer_spend(session, inserted)
            await _add_key_spend(session, inserted)
            await _add_daily_rollups(session, inserted)
        return len(inserted)

    async def _insert_missing_customers(self, session: AsyncSession, customers: Sequence[Customer]) -> None:
        if not customers:
            return
        now = self._clock.now()
        first_by_id: dict[str, Customer] = {}
        for customer in customers:
            first_by_id.setdefault(customer.user_id, customer)
        rows = [
            customer_values(customer) | {"created_at": customer.created_at or now}
            for _, customer in sorted(first_by_id.items())
        ]
        sql = _CHARGE_SQL[_dialect(session)]
        for chunk in chunked(rows, _ROWS_PER_STATEMENT):
            await session.execute(sql.insert_customers, {"rows": sql.rows(chunk, _CUSTOMER_TIMES)})

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
        conditions = _time_range(start, end)
        if end_user is not None:
            conditions.append(SpendLogRow.end_user == end_user)
        if request_id is not None:
            conditions.append(SpendLogRow.request_id == request_id)
        if api_key is not None:
            conditions.append(SpendLogRow.api_key == api_key)
        statement = (
            select(SpendLogRow)
            .where(*conditions)
            .order_by(SpendLogRow.start_time.desc(), SpendLogRow.request_id.desc())
            .limit(limit)
        )
        async with self._sessions() as session:
            rows = await session.scalars(statement)
            return [row.to_record() for row in rows]

    async def top_end_users(
        self, start: datetime | None = None, end: datetime | None = None, limit: int = 100, api_key: str | None = None
    ) -> list[tuple[str, int, Nanos]]:
        """(end_user, request count, spend) of the customers who spent most, highest first; optionally one key's."""
        total = func.sum(_COUNTED_SPEND)
        conditions = _time_range(start, end)
        if api_key is not None:
            conditions.append(SpendLogRow.api_key == api_key)
        statement = (
            select(SpendLogRow.end_user, func.count(), total)
            .where(SpendLogRow.end_user != "", *conditions)
            .group_by(SpendLogRow.end_user)
            .order_by(total.desc(), SpendLogRow.end_user)
            .limit(limit)
        )
        async with self._sessions() as session:
            rows = await session.execute(statement)
            return [(end_user, int(count), int(spend or 0)) for end_user, count, spend in rows]

    async def daily_activity(
        self,
        end_user_ids: Sequence[str] | None = None,
        exclude_end_user_ids: Sequence[str] | None = None,
        start_date: date | None = None,
        end_date: date | None = None,
        model: str | None = None,
    ) -> list[DailySpend]:
        """Daily rollup rows ordered by date, customer, model and provider.

        Without `end_user_ids`, every customer except "" (requests without a customer).
        """
        row = DailyCustomerSpendRow
        conditions = _date_range(row.date, start_date, end_date)
        conditions.append(row.end_user_id.in_(end_user_ids) if end_user_ids else row.end_user_id != "")
        if exclude_end_user_ids:
            conditions.append(row.end_user_id.not_in(exclude_end_user_ids))
        if model is not None:
            conditions.append(row.model == model)
        statement = (
            select(row).where(*conditions).order_by(row.date, row.end_user_id, row.model, row.custom_llm_provider)
        )
        async with self._sessions() as session:
            rows = await session.scalars(statement)
            return [daily.to_record() for daily in rows]

    async def spend_by_model(
        self, start: datetime | None = None, end: datetime | None = None
    ) -> list[tuple[str, int, Nanos]]:
        """(model, request count, spend) per model, highest spend first."""
        total = func.sum(_COUNTED_SPEND)
        statement = (
            select(SpendLogRow.model, func.count(), total)
            .where(*_time_range(start, end))
            .group_by(SpendLogRow.model)
            .order_by(total.desc(), SpendLogRow.model)
        )
        async with self._sessions() as session:
            rows = await session.execute(statement)
            return [(model, int(count), int(spend or 0)) for model, count, spend in rows]

    async def spend_by_day(
        self, end_user: str | None = None, start_date: date | None = None, end_date: date | None = None
    ) -> list[tuple[str, Nanos]]:
        """(YYYY-MM-DD, spend) per UTC day that has any requests, oldest first; all requests when `end_user` is None."""
        row = DailyCustomerSpendRow
        conditions = _date_range(row.date, start_date, end_date)
        if end_user is not None:
            conditions.append(row.end_user_id == end_user)
        statement = select(row.date, func.sum(row.spend)).where(*conditions).group_by(row.date).order_by(row.date)
        async with self._sessions() as session:
            rows = await session.execute(statement)
            return [(day, int(spend or 0)) for day, spend in rows]

    async def spend_by_day_and_model(
        self, end_user: str | None = None, start_date: date | None = None, end_date: date | None = None
    ) -> list[tuple[str, str, Nanos]]:
        """(YYYY-MM-DD, model, spend) per UTC day and model that has any requests, oldest first; all requests when
        `end_user` is None."""
        row = DailyCustomerSpendRow
        conditions = _date_range(row.date, start_date, end_date)
        if end_user is not None:
            conditions.append(row.end_user_id == end_user)
        statement = (
            select(row.date, row.model, func.sum(row.spend))
            .where(*conditions)
            .group_by(row.date, row.model)
            .order_by(row.date, row.model)
        )
        async with self._sessions() as session:
            rows = await session.execute(statement)
            return [(day, model, int(spend or 0)) for day, model, spend in rows]

    async def total_spend(self, start: datetime | None = None, end: datetime | None = None) -> Nanos:
        """Spend of all successful requests started in the range."""
        statement = select(func.coalesce(func.sum(_COUNTED_SPEND), 0)).where(*_time_range(start, end))
        async with self._sessions() as session:
            return int(await session.scalar(statement) or 0)


_ROWS_PER_STATEMENT: Final = 5_000
_LOG_COLUMNS: Final = tuple(column.name for column in spend_logs_table.c)
_LOG_TIMES: Final = ("start_time", "end_time")
_CUSTOMER_COLUMNS: Final = tuple(column.name for column in customers_table.c)
_CUSTOMER_TIMES: Final = ("spend_reset_at", "created_at")
_DAILY_COLUMNS: Final = (*_DAILY_KEY, *DailyCustomerSpendRow.COUNTERS)


@dataclass(frozen=True, slots=True)
class _ChargeSql:
    """The charge write's statements for one dialect; every batch of rows is one JSON parameter (`json_rows`)."""

    dialect: str
    insert_customers: TextClause
    stored_ids: TextClause | None  # SQLite: which request ids are stored already
    insert_logs: TextClause
    lock_customers: TextClause | None  # PostgreSQL: lock the charged customers in sorted order
    add_spend: TextClause
    lock_keys: TextClause | None  # PostgreSQL: lock the charged keys in sorted order
    add_key_spend: TextClause
    upsert_daily: TextClause

    def rows(self, rows: Iterable[Mapping[str, Any]], datetime_columns: Sequence[str] = ()) -> str:
        return rows_param(rows, datetime_columns, self.dialect)


def _charge_sql(dialect: str) -> _ChargeSql:
    add_counters = ", ".join(
        f"{name} = daily_customer_spend.{name} + excluded.{name}" for name in DailyCustomerSpendRow.COUNTERS
    )
    upsert_daily = f"ON CONFLICT ({', '.join(_DAILY_KEY)}) DO UPDATE SET {add_counters}"
    insert_customers = insert_from_json(customers_table, _CUSTOMER_COLUMNS, dialect, "ON CONFLICT (user_id) DO NOTHING")
    daily = insert_from_json(daily_customer_spend_table, _DAILY_COLUMNS, dialect, upsert_daily)
    if dialect == "sqlite":
        return _ChargeSql(
            dialect=dialect,
            insert_customers=insert_customers,
            # SQLite has no cheap RETURNING here (one step per returned row, see `json_rows`): read which ids are
            # stored, inside the transaction that already holds SQLite's single write lock, then insert the rest.
            stored_ids=text(
                "SELECT request_id FROM spend_logs WHERE request_id IN (SELECT value FROM json_each(:ids))"
            ),
            insert_logs=insert_from_json(spend_logs_table, _LOG_COLUMNS, dialect),
            lock_customers=None,
            add_spend=text(
                "UPDATE customers SET spend = spend + d.value "
                "FROM json_each(:deltas) AS d WHERE customers.user_id = d.key"
            ),
            lock_keys=None,
            add_key_spend=text(
                "UPDATE virtual_keys SET spend = spend + d.value "
                "FROM json_each(:deltas) AS d WHERE virtual_keys.token = d.key"
            ),
            upsert_daily=daily,
        )
    return _ChargeSql(
        dialect=dialect,
        insert_customers=insert_customers,
        stored_ids=None,
        insert_logs=insert_from_json(
            spend_logs_table, _LOG_COLUMNS, dialect, "ON CONFLICT (request_id) DO NOTHING RETURNING request_id"
        ),
        # A multi-row UPDATE locks rows in join order; locking the customers sorted first keeps concurrent writers
        # (several instances) from deadlocking on customers they share.
        lock_customers=text(
            "SELECT user_id FROM customers WHERE user_id IN (SELECT key FROM jsonb_each_text(CAST(:deltas AS jsonb))) "
            "ORDER BY user_id FOR UPDATE"
        ),
        add_spend=text(
            "UPDATE customers AS c SET spend = c.spend + d.value::bigint "
            "FROM jsonb_each_text(CAST(:deltas AS jsonb)) AS d WHERE c.user_id = d.key"
        ),
        lock_keys=text(
            "SELECT token FROM virtual_keys WHERE token IN (SELECT key FROM jsonb_each_text(CAST(:deltas AS jsonb))) "
            "ORDER BY token FOR UPDATE"
        ),
        add_key_spend=text(
            "UPDATE virtual_keys AS k SET spend = k.spend + d.value::bigint "
            "FROM jsonb_each_text(CAST(:deltas AS jsonb)) AS d WHERE k.token = d.key"
        ),
        upsert_daily=daily,
    )


_CHARGE_SQL: Final = {dialect: _charge_sql(dialect) for dialect in ("sqlite", "postgresql")}


def _dialect(session: AsyncSession) -> str:
    return session.get_bind().dialect.name


async def _insert_logs(session: AsyncSession, logs: Sequence[SpendLog]) -> list[SpendLog]:
    """Insert the logs not stored yet; returns those inserted (in the given order)."""
    sql = _CHARGE_SQL[_dialect(session)]
    inserted: list[SpendLog] = []
    for chunk in chunked(logs, _ROWS_PER_STATEMENT):
        rows = {"rows": sql.rows((spend_log_values(log) for log in chunk), _LOG_TIMES)}
        if sql.stored_ids is None:
            inserted_ids = set((await session.execute(sql.insert_logs, rows)).scalars())
            inserted.extend(log for log in chunk if log.request_id in inserted_ids)
            continue
        ids = orjson.dumps([log.request_id for log in chunk]).decode()
        stored = set((await session.execute(sql.stored_ids, {"ids": ids})).scalars())
        fresh = [log for log in chunk if log.request_id not in stored]
        if fresh:
            if stored:
                rows = {"rows": sql.rows((spend_log_values(log) for log in fresh), _LOG_TIMES)}
            await session.execute(sql.insert_logs, rows)
        inserted.extend(fresh)
    return inserted


async def _add_customer_spend(session: AsyncSession, logs: Sequence[SpendLog]) -> None:
    """Add the logs' spend to their customers in one statement (a customer that does not exist stays absent)."""
    deltas: defaultdict[str, int] = defaultdict(int)
    for log in logs:
        if log.end_user and log.status == SUCCESS and log.spend:
            deltas[log.end_user] += log.spend
    if not deltas:
        return
    sql = _CHARGE_SQL[_dialect(session)]
    params = {"deltas": orjson.dumps(deltas).decode()}
    if sql.lock_customers is not None:
        await session.execute(sql.lock_customers, params)
    await session.execute(sql.add_spend, params)


async def _add_key_spend(session: AsyncSession, logs: Sequence[SpendLog]) -> None:
    """Add the logs' spend to their virtual keys (by `api_key`, the key's hash) in one statement."""
    deltas: defaultdict[str, int] = defaultdict(int)
    for log in logs:
        if log.api_key and log.status == SUCCESS and log.spend:
            deltas[log.api_key] += log.spend
    if not deltas:
        return
    sql = _CHARGE_SQL[_dialect(session)]
    params = {"deltas": orjson.dumps(deltas).decode()}
    if sql.lock_keys is not None:
        await session.execute(sql.lock_keys, params)
    await session.execute(sql.add_key_spend, params)


async def _add_daily_rollups(session: AsyncSession, logs: Sequence[SpendLog]) -> None:
    """Upsert the logs' counters into the daily rollup, in sorted key order."""
    totals: dict[tuple[str, str, str, str], list[int]] = {}
    for log in logs:
        key = (log.end_user, log.start_time.astimezone(UTC).date().isoformat(), log.model, log.custom_llm_provider)
        counters = totals.setdefault(key, [0] * len(DailyCustomerSpendRow.COUNTERS))
        is_success = log.status == SUCCESS
        for index, amount in enumerate(
            (
                log.prompt_tokens,
                log.completion_tokens,
                log.cache_read_input_tokens,
                log.cache_creation_input_tokens,
                log.spend if is_success else 0,
                1,
                int(is_success),
                int(not is_success),
            )
        ):
            counters[index] += amount
    if not totals:
        return
    rows: list[dict[str, Any]] = [
        dict(zip(_DAILY_KEY, key, strict=True)) | dict(zip(DailyCustomerSpendRow.COUNTERS, counters, strict=True))
        for key, counters in sorted(totals.items())
    ]
    sql = _CHARGE_SQL[_dialect(session)]
    for chunk in chunked(rows, _ROWS_PER_STATEMENT):
        await session.execute(sql.upsert_daily, {"rows": sql.rows(chunk)})


def _time_range(start: datetime | None, end: datetime | None) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if start is not None:
        conditions.append(SpendLogRow.start_time >= start)
    if end is not None:
        conditions.append(SpendLogRow.start_time < end)
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
