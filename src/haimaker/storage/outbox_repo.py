"""The usage outbox: charged requests queued for export in the charge's own transaction, and each sink's progress.

Invariants:
- `add_to_outbox` runs inside `SpendRepository.write_batch`'s transaction with the logs that transaction inserted,
  so a charge is in the outbox exactly when its spend log is stored (a retried batch inserts no log, hence no row;
  `request_id` is unique besides). Only successful requests with a customer go in: a refusal, a failure or a request
  nobody is billed for has nothing to export.
- Rows are read in (`txid`, `id`) order after a sink's cursor. On PostgreSQL `txid` is the inserting transaction's id
  (the column's default) and a read takes only rows of transactions older than the oldest still running
  (`pg_snapshot_xmin`): every such transaction has ended, and any later row has a larger `txid`, so nothing can
  commit behind a cursor that passed it (ids alone would: a sequence value taken first may commit last). SQLite
  serialises writers (the charge write takes the lock at BEGIN), so there `txid` is 0 and `id` order is commit order.
  The price: transaction ids are server-wide, so a long *writing* transaction in any database of the same PostgreSQL
  server holds back rows committed after it began until it ends (a delay, shown as lag, never a loss).
- A cursor only moves forward (`advance` is a conditional upsert), in the same transaction as the dead letters of the
  rows it passes; rows behind every configured sink's cursor may be pruned.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import ColumnClause, ColumnElement, delete, func, literal_column, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from haimaker.clock import Clock, SystemClock
from haimaker.storage.json_rows import insert_from_json, rows_param
from haimaker.storage.outbox_tables import cursors_table, failures_table, usage_outbox_table
from haimaker.storage.records import SpendLog

_SUCCESS: Final = "success"
_COLUMNS: Final = (
    "request_id",
    "end_user",
    "model",
    "custom_llm_provider",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "spend",
    "start_time",
    "created_at",
)
_TIMES: Final = ("start_time", "created_at")
_INSERT: Final = {
    dialect: insert_from_json(usage_outbox_table, _COLUMNS, dialect, "ON CONFLICT (request_id) DO NOTHING")
    for dialect in ("sqlite", "postgresql")
}
# The oldest transaction still running (PostgreSQL): rows of older transactions are all committed or gone.
_PG_HORIZON: Final[ColumnClause[Any]] = literal_column(
    "CAST(CAST(pg_snapshot_xmin(pg_current_snapshot()) AS text) AS bigint)"
)


@dataclass(frozen=True, slots=True, order=True)
class OutboxPosition:
    """A place in the outbox's read order; (0, 0) is before every row."""

    txid: int = 0
    id: int = 0


@dataclass(frozen=True, slots=True)
class UsageEvent:
    """One charged request to export (`spend` in nano-dollars; `model` is the model group the client asked for)."""

    position: OutboxPosition
    request_id: str
    end_user: str
    model: str
    custom_llm_provider: str
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    spend: int
    start_time: datetime


@dataclass(frozen=True, slots=True)
class Rejection:
    """An event a sink refused for good, and why (already scrubbed of secrets)."""

    request_id: str
    status_code: int
    error: str


@dataclass(frozen=True, slots=True)
class SinkProgress:
    """Where one sink stands: its cursor and counts, its last error and success, and what waits for it."""

    sink: str
    cursor: OutboxPosition
    exported: int
    failed: int
    last_error: str | None
    last_error_at: datetime | None
    last_success_at: datetime | None
    pending: int
    oldest_pending_at: datetime | None


async def add_to_outbox(session: AsyncSession, logs: Sequence[SpendLog], now: datetime) -> None:
    """Queue the charged requests among `logs` (those just inserted) for export, in the caller's transaction."""
    rows = [
        {
            "request_id": log.request_id,
            "end_user": log.end_user,
            "model": log.model_group or log.model,
            "custom_llm_provider": log.custom_llm_provider,
            "prompt_tokens": log.prompt_tokens,
            "completion_tokens": log.completion_tokens,
            "total_tokens": log.total_tokens,
            "spend": log.spend,
            "start_time": log.start_time,
            "created_at": now,
        }
        for log in logs
        if log.status == _SUCCESS and log.end_user
    ]
    if rows:
        dialect = session.get_bind().dialect.name
        await session.execute(_INSERT[dialect], {"rows": rows_param(rows, _TIMES, dialect)})


def _after(position: OutboxPosition) -> ColumnElement[bool]:
    table = usage_outbox_table
    return tuple_(table.c.txid, table.c.id) > tuple_(position.txid, position.id)


class OutboxRepository:
    """Reads the outbox for the exporter, and keeps each sink's cursor, counts, errors and dead letters."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], *, clock: Clock | None = None) -> None:
        self._sessions = sessions
        self._clock: Clock = clock or SystemClock()

    async def cursor(self, sink: str) -> OutboxPosition:
        async with self._sessions() as session:
            row = (
                await session.execute(
                    select(cursors_table.c.last_txid, cursors_table.c.last_id).where(cursors_table.c.sink == sink)
                )
            ).first()
        return OutboxPosition() if row is None else OutboxPosition(row.last_txid, row.last_id)

    async def read_after(self, position: OutboxPosition, limit: int) -> list[UsageEvent]:
        """Up to `limit` events after `position`, in read order, from transactions that have all ended."""
        table = usage_outbox_table
        async with self._sessions() as session:
            query = select(table).where(_after(position))
            if session.get_bind().dialect.name == "postgresql":
                query = query.where(table.c.txid < _PG_HORIZON)
            rows = (await session.execute(query.order_by(table.c.txid, table.c.id).limit(limit))).all()
        return [
            UsageEvent(
                position=OutboxPosition(row.txid, row.id),
                request_id=row.request_id,
                end_user=row.end_user,
                model=row.model,
                custom_llm_provider=row.custom_llm_provider,
                prompt_tokens=row.prompt_tokens,
                completion_tokens=row.completion_tokens,
                total_tokens=row.total_tokens,
                spend=row.spend,
                start_time=row.start_time,
            )
            for row in rows
        ]

    async def advance(
        self, sink: str, position: OutboxPosition, *, exported: int, rejections: Sequence[Rejection] = ()
    ) -> None:
        """Move `sink`'s cursor to `position` (never back) and file its rejections, in one transaction."""
        now = self._clock.now()
        async with self._sessions() as session, session.begin():
            dialect = session.get_bind().dialect.name
            if rejections:
                failures = _insert(dialect, failures_table).values(
                    [
                        {
                            "sink": sink,
                            "request_id": r.request_id,
                            "status_code": r.status_code,
                            "error": r.error,
                            "failed_at": now,
                        }
                        for r in rejections
                    ]
                )
                await session.execute(failures.on_conflict_do_nothing())
            values: dict[str, Any] = {
                "sink": sink,
                "last_txid": position.txid,
                "last_id": position.id,
                "exported": exported,
                "failed": len(rejections),
                "last_success_at": now,
            }
            upsert = _insert(dialect, cursors_table).values(values)
            stored = cursors_table.c
            await session.execute(
                upsert.on_conflict_do_update(
                    index_elements=[stored.sink],
                    set_={
                        "last_txid": upsert.excluded.last_txid,
                        "last_id": upsert.excluded.last_id,
                        "exported": stored.exported + upsert.excluded.exported,
                        "failed": stored.failed + upsert.excluded.failed,
                        "last_success_at": upsert.excluded.last_success_at,
                    },
                    where=tuple_(stored.last_txid, stored.last_id)
                    < tuple_(upsert.excluded.last_txid, upsert.excluded.last_id),
                )
            )

    async def record_error(self, sink: str, error: str) -> None:
        """Remember a failed attempt (the cursor stays where it is)."""
        now = self._clock.now()
        async with self._sessions() as session, session.begin():
            upsert = _insert(session.get_bind().dialect.name, cursors_table).values(
                sink=sink, last_error=error, last_error_at=now
            )
            await session.execute(
                upsert.on_conflict_do_update(
                    index_elements=[cursors_table.c.sink],
                    set_={"last_error": upsert.excluded.last_error, "last_error_at": upsert.excluded.last_error_at},
                )
            )

    async def progress(self, sinks: Sequence[str]) -> list[SinkProgress]:
        """Each sink's cursor, counts, errors, and how many rows (and since when) wait after its cursor."""
        result: list[SinkProgress] = []
        table = usage_outbox_table
        async with self._sessions() as session:
            stored = {
                row.sink: row
                for row in (await session.execute(select(cursors_table).where(cursors_table.c.sink.in_(sinks)))).all()
            }
            for sink in sinks:
                row = stored.get(sink)
                cursor = OutboxPosition() if row is None else OutboxPosition(row.last_txid, row.last_id)
                pending, oldest = (
                    await session.execute(select(func.count(), func.min(table.c.created_at)).where(_after(cursor)))
                ).one()
                result.append(
                    SinkProgress(
                        sink=sink,
                        cursor=cursor,
                        exported=0 if row is None else row.exported,
                        failed=0 if row is None else row.failed,
                        last_error=None if row is None else row.last_error,
                        last_error_at=None if row is None else row.last_error_at,
                        last_success_at=None if row is None else row.last_success_at,
                        pending=int(pending),
                        oldest_pending_at=oldest,
                    )
                )
        return result

    async def prune(self, sinks: Sequence[str]) -> int:
        """Delete the rows every one of `sinks` has passed; returns how many."""
        if not sinks:
            return 0
        async with self._sessions() as session, session.begin():
            rows = (
                await session.execute(
                    select(cursors_table.c.last_txid, cursors_table.c.last_id).where(cursors_table.c.sink.in_(sinks))
                )
            ).all()
            if len(rows) < len(set(sinks)):
                return 0  # a sink that never advanced still needs everything
            floor = min(OutboxPosition(row.last_txid, row.last_id) for row in rows)
            table = usage_outbox_table
            deleted = await session.execute(
                delete(table).where(tuple_(table.c.txid, table.c.id) <= tuple_(floor.txid, floor.id))
            )
        return int(getattr(deleted, "rowcount", 0) or 0)


def _insert(dialect: str, table: Any) -> Any:
    """The dialect's INSERT (both have ON CONFLICT DO NOTHING / DO UPDATE … WHERE)."""
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)
