"""Dialect-specific INSERT for the two engines, so repositories can write `ON CONFLICT` clauses once.

Both dialects' `Insert` offer `on_conflict_do_nothing`, `on_conflict_do_update` and `excluded` with the same
arguments; this module picks the one matching the session's engine.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Final, TypeVar

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

# Rows per multi-row statement: well under both engines' bound-parameter limits (32,766) for our widest tables.
CHUNK_ROWS: Final = 500

T = TypeVar("T")


def dialect_insert(session: AsyncSession, table: Any) -> postgresql.Insert | sqlite.Insert:
    """An INSERT for `table` (a Table or mapped class) in the dialect of the session's engine."""
    name = session.get_bind().dialect.name
    if name == "postgresql":
        return postgresql.insert(table)
    if name == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(f"no upsert support for the {name!r} dialect")


def chunked(items: Sequence[T], size: int = CHUNK_ROWS) -> Iterator[Sequence[T]]:
    """Consecutive slices of at most `size` items."""
    for start in range(0, len(items), size):
        yield items[start : start + size]
