"""BatchedLookup: concurrent lookups share bulk reads, one read in flight at a time, errors reach every waiter."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

import pytest

from haimaker.state.batching import BatchedLookup


class SlowStore:
    def __init__(self, rows: Mapping[str, int]) -> None:
        self.rows = dict(rows)
        self.reads: list[list[str]] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self.fail = False

    async def read_many(self, keys: Sequence[str]) -> dict[str, int]:
        self.reads.append(sorted(keys))
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0.02)
            if self.fail:
                raise OSError("database unreachable")
            return {key: self.rows[key] for key in keys if key in self.rows}
        finally:
            self.in_flight -= 1


async def test_lookups_made_together_share_one_read() -> None:
    store = SlowStore({f"c{i}": i for i in range(100)})
    lookup = BatchedLookup(store.read_many, missing=-1)
    values = await asyncio.gather(*(lookup(f"c{i}") for i in range(100)), lookup("c5"), lookup("nobody"))
    assert values == [*range(100), 5, -1]
    assert len(store.reads) == 1 and len(store.reads[0]) == 101


async def test_lookups_during_a_read_wait_for_the_next_single_read() -> None:
    store = SlowStore({f"c{i}": i for i in range(30)})
    lookup = BatchedLookup(store.read_many, missing=-1)

    async def arrive(i: int) -> int:
        await asyncio.sleep(0.001 * i)  # spread over the first read
        return await lookup(f"c{i}")

    assert await asyncio.gather(*(arrive(i) for i in range(30))) == list(range(30))
    assert store.most_in_flight == 1
    assert len(store.reads) < 10
    assert sorted(key for read in store.reads for key in read) == sorted(f"c{i}" for i in range(30))


async def test_a_failed_read_fails_its_waiters_and_the_next_lookup_reads_again() -> None:
    store = SlowStore({"a": 1})
    lookup = BatchedLookup(store.read_many, missing=-1)
    store.fail = True
    results = await asyncio.gather(lookup("a"), lookup("b"), return_exceptions=True)
    assert all(isinstance(r, OSError) for r in results)
    store.fail = False
    assert await lookup("a") == 1


async def test_a_caller_giving_up_does_not_cancel_the_others() -> None:
    store = SlowStore({"a": 1})
    lookup = BatchedLookup(store.read_many, missing=-1)
    impatient = asyncio.ensure_future(lookup("a"))
    patient = asyncio.ensure_future(lookup("a"))
    await asyncio.sleep(0)
    impatient.cancel()
    with pytest.raises(asyncio.CancelledError):
        await impatient
    assert await patient == 1
