"""`CounterStore` in process memory: the single-instance default.

Admission runs without any await between reading and writing the counters, so on one event loop it
is atomic by construction: N concurrent requests are admitted one after the other, each seeing the
reservations of those before it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from haimaker.clock import Clock
from haimaker.money import Nanos
from haimaker.periods import NextReset
from haimaker.state.counters import WINDOW_S, Demand, Limits, Reservation, SpendReset, SpendResetSink
from haimaker.state.verdicts import budget_exceeded, rate_limit_headers, rate_limited


class CustomerCounters:
    """The live counters of one customer."""

    __slots__ = (
        "in_flight",
        "partial_in_flight",
        "period_key",
        "reserved",
        "spend",
        "spend_reset_at",
        "window_requests",
        "window_start",
        "window_tokens",
    )

    def __init__(self, spend: Nanos = 0, spend_reset_at: datetime | None = None) -> None:
        self.spend = spend
        self.reserved: Nanos = 0
        self.spend_reset_at = spend_reset_at
        self.period_key: tuple[str | None, str | None] | None = None
        self.window_start = 0.0
        self.window_requests = 0
        self.window_tokens = 0
        self.in_flight = 0
        # Admitted requests whose reservation was shrunk to what remained (at most one at a time).
        self.partial_in_flight = 0


@dataclass(slots=True)
class _Plan:
    """What one subject's admission will take, once every subject of the request has passed its checks."""

    limits: Limits
    counters: CustomerCounters
    cost: Nanos
    tokens: int
    partial: bool


class MemoryCounterStore:
    """Counters for every customer seen by this process."""

    def __init__(self, clock: Clock, next_reset: NextReset, resets: SpendResetSink, *, budget_status_code: int) -> None:
        self._clock = clock
        self._next_reset = next_reset
        self._resets = resets
        self._budget_status_code = budget_status_code
        self._counters: dict[str, CustomerCounters] = {}

    def _get(self, customer_id: str) -> CustomerCounters:
        counters = self._counters.get(customer_id)
        if counters is None:
            counters = self._counters[customer_id] = CustomerCounters()
        return counters

    async def admit(self, limits: Limits, demand: Demand, *, fail_closed: bool) -> Reservation:
        return self.admit_now(limits, demand, fail_closed=fail_closed)

    async def admit_all(self, parts: Sequence[tuple[Limits, Demand]], *, fail_closed: bool) -> list[Reservation]:
        return self.admit_all_now(parts, fail_closed=fail_closed)

    def admit_now(self, limits: Limits, demand: Demand, *, fail_closed: bool) -> Reservation:
        """The whole admission, synchronous: nothing else runs on the loop until it returns."""
        return self.admit_all_now(((limits, demand),), fail_closed=fail_closed)[0]

    def admit_all_now(self, parts: Sequence[tuple[Limits, Demand]], *, fail_closed: bool) -> list[Reservation]:
        """Every subject checked, then every subject reserved: a refusal of one takes nothing from the others."""
        now = self._clock.time()
        plans = [self._check(limits, demand, fail_closed, now) for limits, demand in parts]
        return [self._take(plan) for plan in plans]

    def _check(self, limits: Limits, demand: Demand, fail_closed: bool, now: float) -> _Plan:
        """Apply a due period reset and roll the rate window, then check every limit; raise on a refusal."""
        c = self._get(limits.customer_id)
        if limits.budget_duration is not None:
            self._apply_due_reset(c, limits)
        if now - c.window_start >= WINDOW_S:
            c.window_start, c.window_requests, c.window_tokens = now, 0, 0

        if limits.max_parallel_requests is not None and c.in_flight >= limits.max_parallel_requests:
            raise rate_limited(limits, "parallel_requests", limits.max_parallel_requests, c.window_start, now)
        if limits.rpm_limit is not None and c.window_requests >= limits.rpm_limit:
            raise rate_limited(limits, "requests", limits.rpm_limit, c.window_start, now)
        if limits.tpm_limit is not None and c.window_tokens >= limits.tpm_limit:
            raise rate_limited(limits, "tokens", limits.tpm_limit, c.window_start, now)
        cost = 0
        partial = False
        if limits.max_budget is not None:
            committed = c.spend + c.reserved
            remaining = limits.max_budget - committed
            does_not_fit = demand.cost > remaining
            # A request that does not fit may run on what remains only while no other such request is in
            # flight: each can overshoot by its excess, so one at a time bounds the overshoot to one request.
            if remaining <= 0 or (does_not_fit and (fail_closed or c.partial_in_flight)):
                raise budget_exceeded(
                    self._budget_status_code, limits, c.spend, demand.cost if fail_closed and remaining > 0 else None
                )
            cost = min(demand.cost, remaining)
            partial = does_not_fit
        tokens = demand.tokens
        if limits.tpm_limit is not None:
            tokens = min(tokens, limits.tpm_limit - c.window_tokens)
        return _Plan(limits, c, cost, tokens, partial)

    def _take(self, plan: _Plan) -> Reservation:
        c, limits = plan.counters, plan.limits
        c.reserved += plan.cost
        c.window_requests += 1
        c.window_tokens += plan.tokens
        holds_slot = limits.max_parallel_requests is not None
        c.in_flight += 1 if holds_slot else 0
        c.partial_in_flight += 1 if plan.partial else 0
        return Reservation(
            customer_id=limits.customer_id,
            cost=plan.cost,
            tokens=plan.tokens,
            window_start=c.window_start,
            holds_parallel_slot=holds_slot,
            partial=plan.partial,
            rate_headers=rate_limit_headers(limits, c.window_requests, c.window_tokens),
        )

    def _apply_due_reset(self, c: CustomerCounters, limits: Limits) -> None:
        assert limits.budget_duration is not None
        key = (limits.budget_id, limits.budget_duration)
        if c.period_key != key:
            # New customer, new tier or new duration: follow the tier's stored boundary.
            c.period_key = key
            if c.spend_reset_at is None or c.spend_reset_at > (limits.budget_reset_at or c.spend_reset_at):
                c.spend_reset_at = limits.budget_reset_at
        now = self._clock.now()
        if c.spend_reset_at is None:
            c.spend_reset_at = self._next_reset(limits.budget_duration, now)
        elif now >= c.spend_reset_at:
            c.spend = 0
            c.spend_reset_at = self._next_reset(limits.budget_duration, now)
            self._resets.reset_customer(SpendReset(limits.customer_id, c.spend_reset_at))

    def settle(self, reservation: Reservation, cost: Nanos, tokens: int) -> Nanos:
        c = self._get(reservation.customer_id)
        if not reservation.done:
            reservation.done = True
            c.reserved -= reservation.cost
            if reservation.holds_parallel_slot:
                c.in_flight -= 1
            if reservation.partial:
                c.partial_in_flight -= 1
            if reservation.window_start == c.window_start:
                c.window_tokens += tokens - reservation.tokens
        c.spend += cost
        return c.spend

    def release(self, reservation: Reservation) -> None:
        if reservation.done:
            return
        reservation.done = True
        c = self._get(reservation.customer_id)
        c.reserved -= reservation.cost
        if reservation.holds_parallel_slot:
            c.in_flight -= 1
        if reservation.partial:
            c.partial_in_flight -= 1
        if reservation.window_start == c.window_start:
            c.window_tokens -= reservation.tokens

    def add_spend(self, customer_id: str, cost: Nanos) -> Nanos:
        c = self._get(customer_id)
        c.spend += cost
        return c.spend

    def spend(self, customer_id: str) -> Nanos | None:
        c = self._counters.get(customer_id)
        return None if c is None else c.spend

    def seed(self, customer_id: str, spend: Nanos, spend_reset_at: datetime | None) -> None:
        c = self._get(customer_id)
        c.spend = spend
        c.spend_reset_at = spend_reset_at

    def reset_due(self, now: datetime, customer_ids: list[str], next_reset_at: datetime) -> list[str]:
        done = []
        for customer_id in customer_ids:
            # Only counters this process holds: the reset job passes every due customer of a tier (millions), and one
            # not held here starts from its stored, already reset, row when it is next seen.
            c = self._counters.get(customer_id)
            if c is None:
                continue
            if c.spend_reset_at is None or c.spend_reset_at <= now:
                c.spend = 0
                c.spend_reset_at = next_reset_at
                done.append(customer_id)
        return done

    def forget(self, customer_id: str) -> None:
        self._counters.pop(customer_id, None)

    def evict(self, customer_id: str, *, rate_limited: bool) -> bool:
        c = self._counters.get(customer_id)
        if c is not None:
            if c.reserved or c.in_flight or c.partial_in_flight:
                return False  # a request in flight
            if rate_limited and self._clock.time() - c.window_start < WINDOW_S:
                return False  # its rate window still counts, and the store does not keep it
            del self._counters[customer_id]
        return True

    def adopt(self, customer_id: str, spend: Nanos, spend_reset_at: datetime | None) -> None:
        if customer_id not in self._counters:
            self.seed(customer_id, spend, spend_reset_at)

    def __len__(self) -> int:
        return len(self._counters)
