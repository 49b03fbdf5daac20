"""Grouped, durable spend writes: the only writer of spend to the store.

Charges are queued without awaiting (safe in `finally` of a cancelled stream) and written in groups:
one transaction per group, a group closing after `max_delay_s` (100 ms) or `max_rows` (500) items.
Period resets (`SpendReset`: a customer's or a key's, at request time or from the reset job) go through the same
queue and join the group they fall in: the group's one transaction applies them set-based, each exactly between the
charges queued before and after it (`SpendRepository.write_batch`), so a reset boundary under load, when every
customer's next request resets its period, costs no more transactions than the charges alone. `flush()` waits until
everything queued so far is durable; `aclose()` drains the queue and closes the journal before shutdown (called
again, it does nothing).

With a journal (`journal.py`), `record()` also appends every item to local disk before the response is sent, so a
process crash loses nothing acknowledged. The in-memory queue is then bounded (`max_queued`): past it, while the store
refuses or lags, items are only journaled and the writer reads them back from the journal, in order and in a worker
thread, as the queue empties (memory stays bounded; the journal is bounded by disk).

A failed write is one of two things (`storage/write_errors.py`), and one bad row never stops the others:
- Store trouble (unreachable, locked, read-only, schema gone): the whole group is kept and retried with backoff
  (50 ms doubling to 5 s); nothing is dropped. While the store is known lost (`is_store_lost`, the store monitor),
  nothing is attempted: a deleted SQLite file must not swallow charges that a restored one would never see.
- A data error (a value this store cannot hold): the group is split in halves, recursively, until the rows that
  cannot be written are alone; every other row is written, and each such row (or reset) goes to the dead letters
  (`accounting/dead_letters.py`) with its error. Writes are idempotent by request_id, so halves already written
  are skipped when a group is retried after store trouble. A group of n rows with k bad ones costs about
  2·k·log2(n) extra transactions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from haimaker.accounting.dead_letters import DeadLetterBox
from haimaker.state.counters import SpendReset
from haimaker.storage.records import Customer, SpendLog
from haimaker.storage.spend_repo import refused_requests
from haimaker.storage.write_errors import describe_error, is_data_error

if TYPE_CHECKING:
    from haimaker.accounting.journal import Position, SpendJournal

logger = logging.getLogger("haimaker.recorder")

DEFAULT_MAX_QUEUED = 50_000


@dataclass(frozen=True, slots=True)
class BudgetReset:
    """Zero every customer of a tier (and the unbudgeted ones for the default tier) whose period ended, in one
    statement written alone. Only journals written before the reset job queued `SpendReset`s in batches hold these
    (`services/resets.py`); they are still replayed."""

    budget_id: str
    include_unbudgeted: bool
    now: datetime
    next_reset_at: datetime


class SpendSink(Protocol):
    """Where grouped writes go (the storage layer)."""

    async def write_charges(self, new_customers: list[Customer], items: list[GroupItem]) -> int:
        """Write a group in one transaction: the charges, and the resets among them in their place."""
        ...

    async def reset_budget(self, reset: BudgetReset) -> None: ...


GroupItem = SpendLog | SpendReset
_Item = SpendLog | SpendReset | BudgetReset


class SpendRecorder:
    def __init__(
        self,
        sink: SpendSink,
        *,
        max_delay_s: float = 0.1,
        max_rows: int = 500,
        max_catch_up_rows: int = 5_000,
        dead_letters: DeadLetterBox | None = None,
        is_store_lost: Callable[[], bool] | None = None,
        journal: SpendJournal | None = None,
        max_queued: int = DEFAULT_MAX_QUEUED,
    ) -> None:
        self._sink = sink
        self._journal = journal
        # Without a journal the queue is the only copy of a charge, so it cannot be bounded.
        self._max_queued: int | None = max_queued if journal is not None else None
        # Set while items exist only in the journal: where the first of them starts. Items recorded meanwhile go
        # there too, so that the store receives everything in order.
        self._spilled_from: Position | None = None
        # Items that found neither room in the queue nor a working journal (a disk failing while spilling): they
        # follow the spilled ones.
        self._overflow: list[_Item] = []
        self._journal_failed = False
        self._sync_task: asyncio.Task[None] | None = None
        self.dead_letters = dead_letters or DeadLetterBox()
        self._is_store_lost = is_store_lost or (lambda: False)
        self._failing_since: float | None = None  # monotonic time of the first failure of the current streak
        self.last_error: str | None = None  # sanitised, of the current streak
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
        if self._journal is not None and self._journal.fsync == "group":
            self._sync_task = asyncio.create_task(self._sync_journal(self._journal), name="haimaker-journal-sync")

    @property
    def pending(self) -> int:
        return self._queued - self._written

    @property
    def queued(self) -> int:
        """The sequence number of the last charge or reset queued (`written` reaches it once all are durable)."""
        return self._queued

    @property
    def written(self) -> int:
        """How many charges and resets this recorder has made durable since it started."""
        return self._written

    @property
    def failing_for_s(self) -> float:
        """How long writes have been failing (or held because the store is lost); 0 while they succeed."""
        return 0.0 if self._failing_since is None else time.monotonic() - self._failing_since

    def record(self, log: SpendLog) -> None:
        """Queue a charge. Never awaits. Its customer row is created with it if absent."""
        self._put(log)

    def reset_customer(self, reset: SpendReset) -> None:
        """Queue a period reset of a customer or a key (never awaits); it is written with the group it falls in."""
        self._put(reset)

    def reset_budget(self, reset: BudgetReset) -> None:
        self._put(reset)

    @property
    def spilled(self) -> bool:
        """Items wait in the journal only (the queue was full)."""
        return self._spilled_from is not None

    @property
    def journal_only(self) -> int:
        """Items pending in the journal only (spilled past `max_queued`), not in memory."""
        if self._spilled_from is None:
            return 0
        return max(0, self.pending - len(self._queue) - len(self._overflow))

    @property
    def journal_bytes(self) -> int:
        """Bytes of the live journal on disk (0 without one)."""
        return 0 if self._journal is None else self._journal.size_bytes

    def _put(self, item: _Item) -> None:
        self._queued += 1
        journal = self._journal
        if journal is None or self._journal_failed:
            self._hold_in_memory(item)
        else:
            spill = self._spilled_from is None and self._max_queued is not None and len(self._queue) >= self._max_queued
            if spill:
                self._spilled_from = journal.tell()
                logger.warning("spend queue full (%d items): further charges wait in the journal", len(self._queue))
            try:
                journal.append(self._queued, item)
            except (TypeError, ValueError):
                # An item the journal cannot encode (an integer past 64 bits, a lone surrogate) no store holds either:
                # it waits in memory (behind any spilled items) and the writer files it as a dead letter, never
                # raising into the request.
                logger.error("spend item not journaled (a value JSON cannot carry); it is kept in memory")
                if spill:
                    self._spilled_from = None
                self._hold_in_memory(item)
            except OSError:
                if spill:
                    self._spilled_from = None
                self._lose_journal()
                self._hold_in_memory(item)
            else:
                if self._spilled_from is None:
                    self._queue.append(item)
        # A reset does not close the group early: at a period boundary every request resets its customer, and
        # closing a group on each would write them one transaction apiece.
        if len(self._queue) >= self._max_rows:
            self._wakeup.set()

    def _hold_in_memory(self, item: _Item) -> None:
        # Behind the spilled items when there are any: the store must receive everything in the order recorded.
        (self._overflow if self._spilled_from is not None else self._queue).append(item)

    def _lose_journal(self) -> None:
        # A disk that refuses writes must not refuse requests: carry on in memory, as without a journal. Spilled
        # items stay readable (`_refill` keeps the journal object for them).
        logger.exception("spend journal write failed: charges are kept in memory only from now on")
        self._journal_failed = True
        self._max_queued = None
        if self._spilled_from is None:
            self._drop_journal()

    def _drop_journal(self) -> None:
        journal, self._journal = self._journal, None
        if journal is not None:
            journal.close(clean=False)

    async def _refill(self, journal: SpendJournal, start: Position) -> None:
        """Move spilled items from the journal back into the queue, in order (reads in a worker thread)."""
        # At most a catch-up group per read: parsing holds the GIL, so the loop is never starved for long.
        room = min(self._max_catch_up_rows, max(self._max_rows, (self._max_queued or 0) - len(self._queue)))
        items, reached = await asyncio.to_thread(journal.read, start, journal.tell(), room)
        self._queue.extend(items)
        if reached == journal.tell():
            # Nothing was journaled while the thread read (no `_put` ran since): the queue is whole again.
            self._spilled_from = None
            self._queue.extend(self._overflow)
            self._overflow = []
            logger.warning("spend queue caught up with the journal")
            if self._journal_failed:
                self._drop_journal()
        else:
            self._spilled_from = reached

    async def _sync_journal(self, journal: SpendJournal) -> None:
        """fsync policy `group`: fsync the journal once per write interval, in a worker thread."""
        while True:
            await asyncio.sleep(self._max_delay_s)
            try:
                await journal.sync()
            except OSError:
                logger.exception("spend journal fsync failed")

    async def _close_journal(self) -> None:
        journal, self._journal = self._journal, None
        if self._sync_task is not None:
            self._sync_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sync_task
        if journal is not None:
            # Deleted when everything is in the store; kept, for the next start to replay, when not.
            if self.pending:
                logger.error("%d charges stay in the spend journal; the next start writes them", self.pending)
            journal.close(clean=self.pending == 0)

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
            spilled_from, journal = self._spilled_from, self._journal
            if spilled_from is not None and journal is not None and len(self._queue) <= (self._max_queued or 0) // 2:
                await self._refill(journal, spilled_from)
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
            if self._journal is not None and count:
                try:
                    await self._journal.mark_written(self._written)
                except OSError:
                    logger.exception("spend journal: could not note written charges (files are deleted later)")

    async def _write_next_group(self) -> int:
        """Write the charges and resets up to the next tier-wide reset (or that reset alone); return how many items."""
        head = self._queue[0]
        if isinstance(head, BudgetReset):
            await self._retry(lambda: self._write_budget_reset(head))
            del self._queue[0]
            return 1
        items: list[GroupItem] = []
        for item in self._queue[: self._max_catch_up_rows]:
            if isinstance(item, BudgetReset):
                break
            items.append(item)
        await self._retry(lambda: self._write_isolating(items))
        del self._queue[: len(items)]
        return len(items)

    async def _write_isolating(self, items: list[GroupItem]) -> None:
        """Write `items`; on a data error split them until the bad items are alone and file those as dead letters.
        Store trouble propagates (to `_retry`), whatever has been written by then stays written. A split keeps the
        order: each half is a run of the queue, written as the whole group would have written it."""
        # Charges create their customer if absent ("first call works"; traffic re-creates a deleted one).
        # A customer first seen through a key with `end_user_budget_id` is created on that budget (spend log metadata,
        # so that a journaled charge replayed after a crash creates it the same way).
        # A refused request (`accounting/refusals.py`) was never admitted: its log creates no customer.
        new_customers: dict[str, Customer] = {}
        for log in items:
            if not isinstance(log, SpendLog) or not log.end_user or refused_requests(log):
                continue
            known = new_customers.get(log.end_user)
            # Only the customer's first call carries the budget: a later call in the same group never drops it.
            if known is None or known.budget_id is None:
                budget_id = _new_customer_budget(log.metadata)
                if known is None or budget_id is not None:
                    new_customers[log.end_user] = Customer(
                        user_id=log.end_user, created_at=log.start_time, budget_id=budget_id
                    )
        try:
            await self._sink.write_charges(list(new_customers.values()), items)
        except Exception as exc:
            if not is_data_error(exc):
                raise
            if len(items) == 1:
                await self.dead_letters.put(items[0], exc)
                return
            middle = len(items) // 2
            await self._write_isolating(items[:middle])
            await self._write_isolating(items[middle:])

    async def _write_budget_reset(self, reset: BudgetReset) -> None:
        try:
            await self._sink.reset_budget(reset)
        except Exception as exc:
            if not is_data_error(exc):
                raise
            await self.dead_letters.put(reset, exc)

    async def _retry(self, write: Callable[[], Awaitable[None]]) -> None:
        """Run `write` until it completes: store trouble is retried with backoff, and nothing is attempted while
        the store is known lost (the monitor's verdict), so nothing is written into a deleted or replaced file."""
        delay = 0.05
        while True:
            if self._is_store_lost():
                self._note_failure("the store is lost (see /health/readiness)")
                await asyncio.sleep(min(delay, 1.0))
                delay = min(delay * 2, 1.0)
                continue
            try:
                await write()
                self._failing_since = self.last_error = None
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Never drop a charge: keep the group and try again, backing off up to 5 s.
                self._note_failure(describe_error(exc))
                logger.warning(
                    "spend write failed (%s); retrying in %.2fs (%d items pending)",
                    self.last_error,
                    delay,
                    self.pending,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _note_failure(self, reason: str) -> None:
        if self._failing_since is None:
            self._failing_since = time.monotonic()
        self.last_error = reason

    async def aclose(self, timeout_s: float = 30.0) -> None:
        """Write everything pending, then stop (again: a no-op)."""
        self._closing = True
        self._wakeup.set()
        if self._task is None or self._task.done():
            await self._close_journal()
            return
        if self._is_store_lost():
            # Nothing can be written into a lost store; waiting would only delay the shutdown (a journal, when
            # configured, keeps the pending charges for the next start against the restored store).
            timeout_s = min(timeout_s, 1.0)
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout=timeout_s)
        except TimeoutError:
            logger.error("spend recorder could not drain in %.0fs: %d charges not written", timeout_s, self.pending)
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        await self._close_journal()


NEW_CUSTOMER_BUDGET_FIELD = "end_user_budget_id"


def _new_customer_budget(metadata: dict[str, Any]) -> str | None:
    value = metadata.get(NEW_CUSTOMER_BUDGET_FIELD)
    return value if isinstance(value, str) else None
