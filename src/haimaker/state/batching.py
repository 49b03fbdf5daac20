"""Concurrent single-key lookups coalesced into bulk reads, with at most one bulk read in flight.

Seeding counters in Redis reads each customer's durable spend once. When many customers arrive at once (a new Redis,
a restart, traffic from thousands of customers the instance has not served yet) one query per customer would queue
on the database pool; here the keys asked for while a read is running wait and go out together in the next one, so
the batch grows with the load and the number of queries stays small.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class BatchedLookup(Generic[K, V]):
    """`await lookup(key)`: the value `read_many` returns for the key, or `missing` when it returns none."""

    def __init__(self, read_many: Callable[[Sequence[K]], Awaitable[Mapping[K, V]]], missing: V) -> None:
        self._read_many = read_many
        self._missing = missing
        self._waiting: dict[K, asyncio.Future[V]] = {}
        self._reader: asyncio.Task[None] | None = None

    async def __call__(self, key: K) -> V:
        future = self._waiting.get(key)
        if future is None:
            future = self._waiting[key] = asyncio.get_running_loop().create_future()
            if self._reader is None:
                self._reader = asyncio.create_task(self._read())
        # Shielded: one caller giving up must not cancel the answer the others wait for.
        return await asyncio.shield(future)

    async def _read(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, {}
                try:
                    values = await self._read_many(list(batch))
                except Exception as exc:
                    for future in batch.values():
                        if not future.done():
                            future.set_exception(exc)
                            future.exception()  # retrieved here: a caller that gave up must not log it
                    continue
                for key, future in batch.items():
                    if not future.done():
                        future.set_result(values.get(key, self._missing))
        finally:
            self._reader = None
