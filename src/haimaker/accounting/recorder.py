"""Grouped, durable spend writes: the only writer of spend to the store.

Charges are queued without awaiting (safe in `finally` of a cancelled stream) and written in groups:
one transaction per group, a group closing after `max_delay_s` (100 ms) or `max_rows` (500) charges.
Spend resets go through the same queue, so a reset is ordered exactly between the charges before
and after it. A failed write is retried until it succeeds; nothing is dropped. `flush()` waits until
everything queued so far is durable; `aclose()` drains the queue before shutdown.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from haimaker.state.counters import SpendReset
from haimaker.storage.records import Customer, SpendLog

logger = logging.getLogger("haimaker.recorder")


@dataclass(frozen=True, slots=True)
class BudgetReset:
    """Zero every customer of a tier (and the unbudgeted ones for the default tier) whose period ended."""

    budget_id: str
    include_unbudgeted: bool
    now: datetime
    next_reset_at: datetime


class SpendSink(Protocol):
    """Where grouped writes go (the storage layer)."""

    async def write_charges(self, new_customers: list[Customer], logs: list[SpendLog]) -> int: ...

    async def reset_customers(self, user_ids: list[str], next_reset_at: datetime) -> None: ...

    async def reset_budget(self, reset: BudgetReset) -> None: ...


_Item = SpendLog | SpendReset | BudgetReset


class SpendRecorder:
    def __init__(
        self, sink: SpendSink, *, max_delay_s: float = 0.1, max_rows: int = 500, max_catch_up_rows: int = 5_000
    ) -> None:
        self._sink = sink
        self._max_delay_s = max_delay_s
        self._max_rows = max_rows
        # A group normally closes at `max_rows`; a writer that fell behind takes up to this many at once, because
        # a group's cost is mostly its fixed round trips, and only bigger groups let it catch up under load.
        self._max_catch_up_rows = max(max_rows, max_catch_up_rows)
        self._queue: list[_Item] = []
        self._queued = 0  # sequence number of the last item queued
        self._written = 0  # sequence number of the last item made durable
        self._wakeup = asyncio.Event()
        self._progress = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="haimaker-spend-recorder")

    @property
    def pending(self) -> int:
        return self._queued - self._written

    def record(self, log: SpendLog) -> None:
        """Queue a charge. Never awaits. Its customer row is created with it if absent."""
        self._put(log)

    def reset_customer(self, reset: SpendReset) -> None:
        self._put(reset)

    def reset_budget(self, reset: BudgetReset) -> None:
        self._put(reset)

    def _put(self, item: _Item) -> None:
        self._queue.append(item)
        self._queued += 1
        if len(self._queue) >= self._max_rows or isinstance(item, SpendReset | BudgetReset):
            self._wakeup.set()

    async def flush(self) -> None:
        """Wait until every item queued before this call is durable."""
        target = self._queued
        if self._written >= target:
            return
        self._wakeup.set()
        async with self._progress:
            await self._progress.wait_for(lambda: self._written >= target)

    async def _run(self) -> None:
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), timeout=self._max_delay_s)
                except TimeoutError:
                    pass
                continue
            # A group: let it fill for up to max_delay_s unless it is full or someone waits on it.
            if len(self._queue) < self._max_rows and not self._closing and not self._wakeup.is_set():
                try:
                    await asyncio.wait_for(self._wakeup.wait(), timeout=self._max_delay_s)
                except TimeoutError:
                    pass
            self._wakeup.clear()
            count = await self._write_next_group()
            async with self._progress:
                self._written += count
                self._progress.notify_all()

    async def _write_next_group(self) -> int:
        """Write the charges up to the next reset (or the reset itself); return how many items."""
        head = self._queue[0]
        if isinstance(head, SpendReset | BudgetReset):
            await self._retry(lambda: self._write_reset(head))
            del self._queue[0]
            return 1
        logs: list[SpendLog] = []
        for item in self._queue[: self._max_catch_up_rows]:
            if not isinstance(item, SpendLog):
                break
            logs.append(item)
        # Charges create their customer if absent ("first call works"; traffic re-creates a deleted one).
        new_customers = {
            log.end_user: Customer(user_id=log.end_user, created_at=log.start_time) for log in logs if log.end_user
        }
        await self._retry(lambda: self._sink.write_charges(list(new_customers.values()), logs))
        del self._queue[: len(logs)]
        return len(logs)

    async def _write_reset(self, reset: SpendReset | BudgetReset) -> None:
        if isinstance(reset, SpendReset):
            await self._sink.reset_customers([reset.customer_id], reset.next_reset_at)
        else:
            await self._sink.reset_budget(reset)

    async def _retry(self, write: object) -> None:
        delay = 0.05
        while True:
            try:
                await write()  # type: ignore[operator]
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                # Never drop a charge: keep the group and try again, backing off up to 5 s.
                logger.exception("spend write failed; retrying in %.2fs (%d items pending)", delay, self.pending)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def aclose(self, timeout_s: float = 30.0) -> None:
        """Write everything pending, then stop."""
        self._closing = True
        self._wakeup.set()
        if self._task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout=timeout_s)
        except TimeoutError:
            logger.error("spend recorder could not drain in %.0fs: %d charges not written", timeout_s, self.pending)
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
