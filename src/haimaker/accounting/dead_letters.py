"""Where the recorder puts what it cannot write: the store's `dead_letters` table, else a file, else the log.

An item lands here only when writing it alone failed with a data error (`storage/write_errors.py`): a customer id
with a NUL on PostgreSQL, a token count past 64 bits. It is encoded as ASCII JSON (control characters, surrogates
and non-ASCII escaped; numbers of any size as digits), so recording it can never fail for the value that made the
write fail. When the table insert fails too (the store went away meanwhile), the item is appended to a JSON-lines
file beside the config (`dead-letters.jsonl`, one `write()` + fsync per item); when that fails as well, it is logged
at ERROR with its payload. Every path is counted, and the counts make readiness "degraded" until an operator acts.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Protocol

from haimaker.state.counters import SpendReset
from haimaker.storage.records import SpendLog
from haimaker.storage.write_errors import describe_error

logger = logging.getLogger("haimaker.recorder")

DEAD_LETTER_FILENAME: Final = "dead-letters.jsonl"


class DeadLetterTable(Protocol):
    """The store's dead-letter table (`storage.dead_letters_repo.DeadLetterRepository`)."""

    async def add(self, kind: str, payload: str, error: str) -> str: ...


def item_kind(item: object) -> str:
    if isinstance(item, SpendLog):
        return "charge"
    if isinstance(item, SpendReset):
        return "customer_reset"
    return "budget_reset"


def encode_item(item: object) -> str:
    """The item as ASCII JSON text; decodes back to the dataclass's fields (datetimes as ISO 8601)."""
    fields = dataclasses.asdict(item) if dataclasses.is_dataclass(item) and not isinstance(item, type) else item
    return json.dumps(fields, ensure_ascii=True, sort_keys=True, default=_plain, allow_nan=True)


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return repr(value)


class DeadLetterBox:
    """Files items that cannot be written and counts them: `in_table` (this process), `in_file` (the file's lines,
    those of earlier runs included), `in_log_only` (nowhere else could take them)."""

    def __init__(self, table: DeadLetterTable | None = None, path: Path | None = None) -> None:
        self._table = table
        self.path = path
        self.in_table = 0
        self.in_file = _count_lines(path) if path is not None else 0
        self.in_log_only = 0

    @property
    def total(self) -> int:
        return self.in_table + self.in_file + self.in_log_only

    async def put(self, item: object, error: BaseException) -> None:
        """File `item`, which failed with `error`. Never raises: the writer must move on to the next item."""
        kind, payload, reason = item_kind(item), encode_item(item), describe_error(error)
        logger.error("spend item could not be written (%s); filed as a dead letter: %s", reason, kind)
        if self._table is not None:
            try:
                await self._table.add(kind, payload, reason)
                self.in_table += 1
                return
            except Exception as exc:
                logger.error("dead-letter table unavailable (%s); using the dead-letter file", describe_error(exc))
        if self.path is not None:
            line = json.dumps(
                {"kind": kind, "error": reason, "payload": payload, "filed_at": datetime.now(UTC).isoformat()},
                ensure_ascii=True,
            )
            try:
                await asyncio.to_thread(_append_line, self.path, line)
                self.in_file += 1
                return
            except OSError as exc:
                logger.error("dead-letter file %s unavailable (%s)", self.path, describe_error(exc))
        self.in_log_only += 1
        logger.error("dead letter kept only in this log: kind=%s error=%s payload=%s", kind, reason, payload)


def _append_line(path: Path, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (line + "\n").encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)


def _count_lines(path: Path) -> int:
    try:
        with path.open("rb") as file:
            return sum(1 for line in file if line.strip())
    except FileNotFoundError:
        return 0
    except OSError:
        logger.warning("cannot read the dead-letter file %s", path, exc_info=True)
        return 0
