"""Helpers for the budget engine's model test: prices, the stores under test (memory, Redis), the model's records."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction
from typing import Protocol

from redis.asyncio import Redis

from haimaker.accounting.pricing import ModelPrice
from haimaker.clock import FakeClock
from haimaker.limits.engine import GroupPrice, Ticket
from haimaker.money import Nanos
from haimaker.periods import NextReset
from haimaker.state.counters import CounterStore, SpendReset, SpendResetSink
from haimaker.state.memory import MemoryCounterStore
from haimaker.state.redis import RedisCounters, SpendSource, connect
from haimaker.state.resilient import Health, ResilientCounterStore

START = datetime(2026, 1, 15, 10, 0, 0, tzinfo=UTC)
MODEL = "priced"
# 1.25 and 7.5 nano-dollars a token: costs and estimates round (half-even) to whole nano-dollars.
PRICE = ModelPrice(input_cost_per_token=Decimal("0.00000000125"), output_cost_per_token=Decimal("0.0000000075"))
INPUT_NANOS = Fraction(5, 4)
OUTPUT_NANOS = Fraction(15, 2)
GROUP = GroupPrice(PRICE, None)
DEFAULT_MAX_OUTPUT = 256
GOLD, HOUSE = "gold", "house"  # alice's own budget; the default budget (bob, and alice when unlinked)
CUSTOMERS = ("alice", "bob")
# Leases of reservations in flight never run out here: the fake clock jumps days, and lease expiry (an instance
# that died) is `tests/state`'s subject, not this model's.
NEVER_S = 10.0**9


def charge_of(prompt_tokens: int, completion_tokens: int, n: int = 1) -> Nanos:
    """Prompt and output tokens at PRICE, rounded half-even once (Python's `round` of a Fraction)."""
    return round(prompt_tokens * INPUT_NANOS + completion_tokens * n * OUTPUT_NANOS)


class RecordedResets:
    """The durable side of request-time resets (`SpendResetSink`): kept to compare with the model's."""

    def __init__(self) -> None:
        self.resets: list[SpendReset] = []

    def reset_customer(self, reset: SpendReset) -> None:
        self.resets.append(reset)


# -- the stores under test


class Backend(Protocol):
    """A counter store for one example, opened and closed on the example's event loop."""

    async def open(
        self, clock: FakeClock, next_reset: NextReset, resets: SpendResetSink, durable: SpendSource, fail_closed: bool
    ) -> CounterStore: ...

    async def seed(self, customer_id: str, spend: Nanos) -> None:
        """Load a customer's spend from the durable store, as the app does at startup."""
        ...

    async def settled(self) -> None:
        """Wait until every counter update made so far has reached the store."""
        ...

    async def spend(self, customer_id: str) -> Nanos | None:
        """The customer's spend as admission will see it."""
        ...

    async def close(self) -> None: ...


class MemoryBackend:
    def __init__(self) -> None:
        self.store: MemoryCounterStore | None = None

    async def open(
        self, clock: FakeClock, next_reset: NextReset, resets: SpendResetSink, durable: SpendSource, fail_closed: bool
    ) -> CounterStore:
        self.store = MemoryCounterStore(clock, next_reset, resets, budget_status_code=400)
        return self.store

    async def seed(self, customer_id: str, spend: Nanos) -> None:
        assert self.store is not None
        self.store.seed(customer_id, spend, None)

    async def settled(self) -> None:
        return None

    async def spend(self, customer_id: str) -> Nanos | None:
        assert self.store is not None
        return self.store.spend(customer_id)

    async def close(self) -> None:
        return None


async def _no_flush() -> None:
    return None


class RedisBackend:
    """The production shape with Redis: `ResilientCounterStore` over `RedisCounters`, on the fake clock."""

    def __init__(self, url: str, prefix: str) -> None:
        self.url = url
        self.prefix = prefix
        self.client: Redis | None = None
        self.counters: RedisCounters | None = None
        self.store: ResilientCounterStore | None = None

    async def open(
        self, clock: FakeClock, next_reset: NextReset, resets: SpendResetSink, durable: SpendSource, fail_closed: bool
    ) -> CounterStore:
        self.client = connect(self.url, max_connections=4)
        self.counters = RedisCounters(
            self.client,
            self.prefix,
            clock,
            next_reset,
            resets,
            durable,
            budget_status_code=400,
            use_server_time=False,  # rate windows on the fake clock, as in the memory store
            lease_s=NEVER_S,
        )
        self.store = ResilientCounterStore(
            self.counters,
            clock,
            next_reset,
            resets,
            budget_status_code=400,
            fail_closed=fail_closed,
            flush=_no_flush,
        )
        await self.store.start()
        assert self.store.health is Health.UP
        return self.store

    async def seed(self, customer_id: str, spend: Nanos) -> None:
        # At startup the app loads this instance's mirror only; Redis seeds itself from the durable store.
        assert self.store is not None
        self.store.seed_local(customer_id, spend, None)

    async def settled(self) -> None:
        assert self.store is not None
        # settle/release never await: their Redis calls are tasks. Let them land (the maintenance loop never ends).
        while others := [
            task
            for task in asyncio.all_tasks()
            if task is not asyncio.current_task() and task.get_name() != "haimaker-redis-maintenance"
        ]:
            await asyncio.gather(*others)
        assert self.store.pending == 0
        assert self.store.health is Health.UP

    async def spend(self, customer_id: str) -> Nanos | None:
        assert self.store is not None
        shared = await self.store.current_spend(customer_id)
        # This instance's mirror agrees with Redis once every update has landed.
        assert self.store.spend(customer_id) in (shared, None)
        return shared

    async def close(self) -> None:
        if self.store is not None:
            await self.store.aclose()
        if self.counters is not None:
            self.counters.close()
        if self.client is not None:
            if self.counters is not None:
                # The example's own keys (the test's prefix is swept afterwards; a SCAN per example would be slow).
                keys = [key for customer_id in CUSTOMERS for key in self.counters.keys(customer_id)]
                await self.client.unlink(*keys, self.counters.epoch_key, f"{self.prefix}:fence")
            await self.client.aclose()


# -- the reference model


@dataclass(eq=False)
class Flight:
    """An admitted request, as the model sees it."""

    customer_id: str
    seq: int
    ticket: Ticket
    prompt_tokens: int
    output_tokens: int
    n: int
    estimate: Nanos
    cost: Nanos  # reserved
    tokens: int  # reserved
    in_store: bool  # False: admitted without limits, charged without a reservation
    window_start: float
    holds_slot: bool
    partial: bool

    def __repr__(self) -> str:
        return (
            f"<{self.customer_id}#{self.seq} reserved {self.cost}n {self.tokens}t{' partial' if self.partial else ''}>"
        )


@dataclass
class CustomerModel:
    spend: Nanos = 0
    charges: list[Nanos] = field(default_factory=list)  # settled since the last reset
    period_key: tuple[str, str] | None = None
    period_end: datetime | None = None
    durable_reset_at: datetime | None = None  # the spend_reset_at the durable store holds
    window_start: float = 0.0
    window_requests: int = 0
    window_settled_tokens: int = 0  # actual usage of finished requests admitted in this window
    # The overshoot bound (module docstring): from the latest admission with limits, or the last reset if later.
    anchor_budget: Nanos | None = None
    has_anchor: bool = False
    beyond_estimates: Nanos = 0
    over_reservations: Nanos = 0
    shrunk_share: Nanos = 0
    shrunk_settled: int = 0

    def reset(self, period_end: datetime) -> None:
        self.spend = 0
        self.charges.clear()
        self.period_end = self.durable_reset_at = period_end
        self.beyond_estimates = self.over_reservations = self.shrunk_share = self.shrunk_settled = 0


@dataclass(frozen=True)
class Admitted:
    cost: Nanos
    tokens: int
    partial: bool
    holds_slot: bool
    in_store: bool
    estimate: Nanos
    rate_headers: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Refused:
    reason: str  # parallel_requests | requests | tokens | budget
