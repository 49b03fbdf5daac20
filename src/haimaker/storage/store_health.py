"""Is the store still there? A cheap periodic check that a running proxy's store has not been lost.

`StoreMonitor.check()` (every second in a background task, and on each readiness probe; never per request) gives
one of three verdicts:
- "lost": the SQLite file is missing, was replaced (another device/inode than the one opened at start: SQLite in
  WAL mode keeps writing into a deleted file, and every such write vanishes at the next start), or is read-only
  (no write permission bits, or not writable for this process); or the store answers without its schema or with
  another store id (a PostgreSQL that came back empty).
- "unreachable": no connection within `PROBE_TIMEOUT_S`.
- "ok": the store answers with its own id. The probe also counts the dead letters (one round trip).
The verdict is recomputed at each check, never latched: a restored file or store counts as ok again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from haimaker.storage.store_identity import sqlite_path

logger = logging.getLogger("haimaker.storage")

PROBE_TIMEOUT_S: Final = 2.0
CHECK_INTERVAL_S: Final = 1.0
_PROBE: Final = text(
    "SELECT (SELECT value FROM haimaker_meta WHERE key = 'store_id'), (SELECT count(*) FROM dead_letters)"
)

StoreState = Literal["ok", "unreachable", "lost"]


@dataclass(frozen=True, slots=True)
class StoreStatus:
    state: StoreState
    reason: str = ""
    dead_letters: int = 0  # rows in the dead-letter table at the last probe that reached it


class StoreMonitor:
    """Watches one store; `status` is the last verdict, `is_lost` the hot-path read (an attribute, no I/O)."""

    def __init__(self, engine: AsyncEngine, url: str, store_id: str, *, interval_s: float = CHECK_INTERVAL_S) -> None:
        self._engine = engine
        self._store_id = store_id
        self._interval_s = interval_s
        self._path = sqlite_path(url)
        self._file_id = _file_id(self._path) if self._path is not None else None
        self.status = StoreStatus("ok")
        self.is_lost = False

    async def check(self) -> StoreStatus:
        """Check now; updates and returns `status`."""
        problem = await asyncio.to_thread(self._file_problem) if self._path is not None else None
        # With the file gone, skip the query: a new connection would create an empty file at the path.
        status = StoreStatus("lost", problem) if problem else await self._probe()
        if status.state != self.status.state:
            log = logger.info if status.state == "ok" else logger.error
            log("store %s%s", status.state, f": {status.reason}" if status.reason else "")
        self.status = status
        self.is_lost = status.state == "lost"
        return status

    async def run(self) -> None:
        """Check every `interval_s` until cancelled."""
        while True:
            try:
                await self.check()
            except Exception:
                logger.exception("store check failed")
            await asyncio.sleep(self._interval_s)

    def _file_problem(self) -> str | None:
        assert self._path is not None
        try:
            info = os.stat(self._path)
        except FileNotFoundError:
            return "the database file is missing (deleted or moved while serving)"
        except OSError as exc:
            return f"the database file cannot be read ({exc.strerror})"
        if (info.st_dev, info.st_ino) != self._file_id:
            return "the database file was replaced while serving (another file is at its path)"
        if not info.st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH) or not os.access(self._path, os.W_OK):
            return "the database file is read-only"
        return None

    async def _probe(self) -> StoreStatus:
        try:
            async with asyncio.timeout(PROBE_TIMEOUT_S):
                connection = await self._engine.connect()
        except Exception as exc:
            return StoreStatus("unreachable", f"no connection to the store ({type(exc).__name__})")
        try:
            async with asyncio.timeout(PROBE_TIMEOUT_S):
                row = (await connection.execute(_PROBE)).one()
        except TimeoutError:
            return StoreStatus("unreachable", "the store did not answer in time")
        except Exception:
            return StoreStatus("lost", "the store answers without its schema (emptied or replaced)")
        finally:
            with contextlib.suppress(Exception):
                await connection.close()
        store_id, dead_letters = row
        if store_id != self._store_id:
            return StoreStatus("lost", "the store answers with another store id (emptied or replaced)")
        return StoreStatus("ok", dead_letters=int(dead_letters or 0))


def _file_id(path: Path) -> tuple[int, int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino
