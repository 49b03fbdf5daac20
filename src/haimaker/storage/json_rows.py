"""Many rows in one statement: the rows travel as one JSON parameter and the database unpacks them.

The spend writer stores thousands of rows a second. Through per-row bind parameters that costs Python work per
value (SQLAlchemy's parameter processing) and, on SQLite, one `sqlite3_step` per row of an executemany or of a
RETURNING clause; each step is a GIL hand-off between aiosqlite's thread and the event loop, which under load costs
milliseconds apiece, and the writer fell behind the requests it records. Here the statement text never changes
(compiled once), the parameter is one string from orjson, and SQLite's `json_each` / PostgreSQL's
`jsonb_to_recordset` unpack every row inside a single step.

Values are what the columns' SQLAlchemy types would store: datetimes as naive UTC text on SQLite (the format its
DATETIME type reads back) and as RFC 3339 with offset on PostgreSQL; naive datetimes are refused, as `UTCDateTime`
refuses them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import JSON, BigInteger, Boolean, Column, Integer, String, Table, TextClause, text

from haimaker.storage.tables import UTCDateTime


def rows_param(rows: Iterable[Mapping[str, Any]], datetime_columns: Sequence[str], dialect: str) -> str:
    """The JSON array of row objects bound as `:rows`."""
    prepared = []
    # Many rows share an instant (a period end, a batch's creation time): each distinct one is converted once.
    converted: dict[datetime, str] = {}
    for row in rows:
        if datetime_columns:
            row = dict(row)
            for name in datetime_columns:
                value = row[name]
                if value is not None:
                    text_value = converted.get(value)
                    if text_value is None:
                        text_value = converted[value] = _db_time(value, dialect)
                    row[name] = text_value
        prepared.append(row)
    return orjson.dumps(prepared).decode()


def insert_from_json(table: Table, columns: Sequence[str], dialect: str, suffix: str = "") -> TextClause:
    """`INSERT INTO table (columns) SELECT … FROM <the :rows JSON>` followed by `suffix` (ON CONFLICT, RETURNING)."""
    names = ", ".join(columns)
    return text(f"INSERT INTO {table.name} ({names}) {_select_rows(table, columns, dialect)} {suffix}".rstrip())


def _select_rows(table: Table, columns: Sequence[str], dialect: str) -> str:
    if dialect == "sqlite":
        values = ", ".join(f"json_extract(value, '$.{name}')" for name in columns)
        # `WHERE true`: without it SQLite's parser reads a following ON CONFLICT as part of a join.
        return f"SELECT {values} FROM json_each(:rows) WHERE true"
    if dialect == "postgresql":
        definitions = ", ".join(f"{name} {_postgres_type(table.c[name])}" for name in columns)
        return f"SELECT {', '.join(columns)} FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r({definitions})"
    raise NotImplementedError(f"no JSON row support for the {dialect!r} dialect")


def _postgres_type(column: Column[Any]) -> str:
    kind = column.type
    if isinstance(kind, UTCDateTime):
        return "timestamptz"
    if isinstance(kind, JSON):
        return "jsonb"
    if isinstance(kind, Boolean):
        return "boolean"
    if isinstance(kind, BigInteger | Integer):
        return "bigint"
    if isinstance(kind, String):
        return "text"
    raise NotImplementedError(f"no JSON row mapping for column {column.name} of type {kind!r}")


def _db_time(value: datetime, dialect: str) -> str:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"naive datetime {value!r}: haimaker stores timezone-aware UTC datetimes only")
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    if dialect == "sqlite":
        return value.replace(tzinfo=None).isoformat(" ", "microseconds")  # what SQLite's DATETIME type reads back
    return value.isoformat()
