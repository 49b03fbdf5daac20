"""Spend in the durable store: the grouped charge write (its reports are in `spend_reports.py`).

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
- Period resets ride in the batch (`ChargeBatch.customer_resets`, `key_resets`), each at its place among the logs, and
  the result is exactly that of writing the logs and resets one by one in that order, in the same one statement per
  table. A reset applies only to a row whose stored period ends before the reset's (`spend_reset_at` unset or
  earlier), so a reset written twice (a replayed journal, another instance's job) is a no-op. Of a subject's resets,
  the one that decides is the first with the latest period (`_spend_changes`): when it applies, the subject's spend
  becomes the logs after it; when it does not, no earlier one could either, and every log adds.
- With `export_usage` (a usage export sink is configured), the inserted logs of charged requests with a customer
  also go to the usage outbox (`outbox_repo.add_to_outbox`) in the same transaction: exported exactly when stored.
- Daily rollup rows are keyed by the log's UTC start date; `end_user_id` "" collects requests without a customer. A
  refusal row counts as the `refused_requests` failed requests it stands for (`accounting/refusals.py`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import orjson
from sqlalchemy import TextClause, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from haimaker.clock import Clock, SystemClock
from haimaker.storage._upsert import chunked
from haimaker.storage.engine import WRITE_TRANSACTION
from haimaker.storage.json_rows import insert_from_json, rows_param
from haimaker.storage.outbox_repo import add_to_outbox
from haimaker.storage.records import Customer, SpendLog
from haimaker.storage.spend_reports import SUCCESS, SpendReports
from haimaker.storage.tables import (
    DailyCustomerSpendRow,
    customer_values,
    customers_table,
    daily_customer_spend_table,
    spend_log_values,
    spend_logs_table,
)

_DAILY_KEY: Final = ("end_user_id", "date", "model", "custom_llm_provider")
# A refusal row (`accounting/refusals.py`) stands for this many refused requests (metadata): each counts in the rollup.
REFUSED_REQUESTS_FIELD: Final = "refused_requests"


@dataclass(frozen=True, slots=True)
class BatchReset:
    """A period reset inside a charge batch: the subject's spend restarts from zero for the period ending at
    `next_reset_at`, after the batch's first `position` logs and before the others."""

    subject: str  # a customer id (`customer_resets`) or a key token (`key_resets`)
    next_reset_at: datetime
    position: int


@dataclass(frozen=True, slots=True)
class ChargeBatch:
    """What one `write_batch` transaction stores: customers to create if absent, the spend logs, and the period
    resets queued among them (in queue order)."""

    new_customers: Sequence[Customer] = ()
    logs: Sequence[SpendLog] = ()
    customer_resets: Sequence[BatchReset] = ()
    key_resets: Sequence[BatchReset] = ()


class SpendRepository(SpendReports):
    """Writes charge batches; answers spend reports (`spend_reports.py`) from `spend_logs` and the daily rollup."""

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], *, clock: Clock | None = None, export_usage: bool = False
    ) -> None:
        self._sessions = sessions
        self._clock: Clock = clock or SystemClock()
        # A usage export sink is configured: charges also go to the outbox, in the same transaction (outbox_repo.py).
        self._export_usage = export_usage

    async def write_batch(self, batch: ChargeBatch) -> int:
        """Store a batch in one transaction; returns the number of logs inserted (0 for a batch already stored)."""
        # Where each log stands among the resets: its first occurrence in the batch.
        positions: dict[str, int] = {}
        first_by_id: dict[str, SpendLog] = {}
        for position, log in enumerate(batch.logs):
            if log.request_id not in first_by_id:
                first_by_id[log.request_id] = log
                positions[log.request_id] = position
        logs = [first_by_id[request_id] for request_id in sorted(first_by_id)]
        if not logs and not batch.new_customers and not batch.customer_resets and not batch.key_resets:
            return 0
        async with self._sessions() as session, session.begin():
            await session.connection(execution_options=WRITE_TRANSACTION)
            await self._insert_missing_customers(session, batch.new_customers)
            inserted = await _insert_logs(session, logs)
            if self._export_usage and inserted:
                await add_to_outbox(session, inserted, self._clock.now())
            sql = _CHARGE_SQL[_dialect(session)]
            customer_changes = _spend_changes(inserted, positions, batch.customer_resets, _end_user_of)
            await _change_spend(session, sql.lock_customers, sql.change_customer_spend, customer_changes)
            key_changes = _spend_changes(inserted, positions, batch.key_resets, _api_key_of)
            await _change_spend(session, sql.lock_keys, sql.change_key_spend, key_changes)
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
    change_customer_spend: TextClause  # add charges and apply resets (`_spend_changes`)
    lock_keys: TextClause | None  # PostgreSQL: lock the charged keys in sorted order
    change_key_spend: TextClause
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
            change_customer_spend=_change_spend_sql(dialect, "customers", "user_id", "spend_reset_at"),
            lock_keys=None,
            change_key_spend=_change_spend_sql(dialect, "virtual_keys", "token", "budget_reset_at"),
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
            f"SELECT user_id FROM customers WHERE user_id IN (SELECT subject FROM {_PG_CHANGES}) "
            "ORDER BY user_id FOR UPDATE"
        ),
        change_customer_spend=_change_spend_sql(dialect, "customers", "user_id", "spend_reset_at"),
        lock_keys=text(
            f"SELECT token FROM virtual_keys WHERE token IN (SELECT subject FROM {_PG_CHANGES}) "
            "ORDER BY token FOR UPDATE"
        ),
        change_key_spend=_change_spend_sql(dialect, "virtual_keys", "token", "budget_reset_at"),
        upsert_daily=daily,
    )


_PG_CHANGES: Final = (
    "jsonb_to_recordset(CAST(:changes AS jsonb)) "
    "AS d(subject text, spend_before bigint, spend_after bigint, next_reset_at timestamptz)"
)
_SQLITE_CHANGES: Final = (
    "(SELECT json_extract(value, '$.subject') AS subject, json_extract(value, '$.spend_before') AS spend_before, "
    "json_extract(value, '$.spend_after') AS spend_after, json_extract(value, '$.next_reset_at') AS next_reset_at "
    "FROM json_each(:changes)) AS d"
)


def _change_spend_sql(dialect: str, table: str, id_column: str, period_column: str) -> TextClause:
    """One UPDATE for every subject of a batch: a reset that applies (the stored period ends before the reset's)
    leaves the spend after it and starts its period; otherwise every charge adds (`_spend_changes`)."""
    applies = (
        f"d.next_reset_at IS NOT NULL AND ({table}.{period_column} IS NULL "
        f"OR {table}.{period_column} < d.next_reset_at)"
    )
    changes = _SQLITE_CHANGES if dialect == "sqlite" else _PG_CHANGES
    return text(
        f"UPDATE {table} SET "
        f"spend = CASE WHEN {applies} THEN d.spend_after ELSE {table}.spend + d.spend_before + d.spend_after END, "
        f"{period_column} = CASE WHEN {applies} THEN d.next_reset_at ELSE {table}.{period_column} END "
        f"FROM {changes} WHERE {table}.{id_column} = d.subject"
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


def _end_user_of(log: SpendLog) -> str:
    return log.end_user


def _api_key_of(log: SpendLog) -> str:
    return log.api_key


def _spend_changes(
    logs: Sequence[SpendLog],
    positions: Mapping[str, int],
    resets: Sequence[BatchReset],
    subject_of: Callable[[SpendLog], str],
) -> list[dict[str, Any]]:
    """Per subject, in sorted order (the lock order): the spend of the inserted logs before and after its deciding
    reset, and that reset's period end (None without a reset).

    Written one by one, a reset applies when the stored period ends before its own, after which the period is the
    later of the two. So of a subject's resets only the first with the latest period can be the last to apply: when
    it applies, the spend is the charges after it; when it does not (the period is already that far), none before it
    did, and every charge adds. `_change_spend_sql` makes that choice per row.
    """
    deciding: dict[str, BatchReset] = {}
    for reset in resets:
        known = deciding.get(reset.subject)
        if known is None or reset.next_reset_at > known.next_reset_at:
            deciding[reset.subject] = reset
    before: defaultdict[str, int] = defaultdict(int)
    after: defaultdict[str, int] = defaultdict(int)
    for log in logs:
        subject = subject_of(log)
        if not subject or log.status != SUCCESS or not log.spend:
            continue
        deciding_reset = deciding.get(subject)
        if deciding_reset is not None and positions[log.request_id] >= deciding_reset.position:
            after[subject] += log.spend
        else:
            before[subject] += log.spend
    changes: list[dict[str, Any]] = []
    for subject in sorted(before.keys() | after.keys() | deciding.keys()):
        deciding_reset = deciding.get(subject)
        changes.append(
            {
                "subject": subject,
                "spend_before": before[subject],
                "spend_after": after[subject],
                "next_reset_at": None if deciding_reset is None else deciding_reset.next_reset_at,
            }
        )
    return changes


async def _change_spend(
    session: AsyncSession, lock: TextClause | None, change: TextClause, changes: list[dict[str, Any]]
) -> None:
    """Apply `_spend_changes` in one statement (a subject without a row stays absent)."""
    if not changes:
        return
    params = {"changes": rows_param(changes, ("next_reset_at",), _dialect(session))}
    if lock is not None:
        await session.execute(lock, params)
    await session.execute(change, params)


def refused_requests(log: SpendLog) -> int:
    """How many refused requests a refusal row stands for; 0 for any other log."""
    count = log.metadata.get(REFUSED_REQUESTS_FIELD) if log.status != SUCCESS else None
    return count if isinstance(count, int) and not isinstance(count, bool) and count > 0 else 0


async def _add_daily_rollups(session: AsyncSession, logs: Sequence[SpendLog]) -> None:
    """Upsert the logs' counters into the daily rollup, in sorted key order."""
    totals: dict[tuple[str, str, str, str], list[int]] = {}
    for log in logs:
        key = (log.end_user, log.start_time.astimezone(UTC).date().isoformat(), log.model, log.custom_llm_provider)
        counters = totals.setdefault(key, [0] * len(DailyCustomerSpendRow.COUNTERS))
        is_success = log.status == SUCCESS
        requests = refused_requests(log) or 1
        for index, amount in enumerate(
            (
                log.prompt_tokens,
                log.completion_tokens,
                log.cache_read_input_tokens,
                log.cache_creation_input_tokens,
                log.spend if is_success else 0,
                requests,
                requests if is_success else 0,
                0 if is_success else requests,
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
