"""The hot-state seam: per-customer counters that admission reads and settlement writes.

`CounterStore` is implemented in process memory (`memory.py`, one instance) and in Redis
(`redis.py`, several instances). Both give the same guarantees: `admit` checks every limit of a
request and reserves what it needs atomically (all or nothing), `settle` turns a reservation into
actual spend and tokens, `release` gives it back. `settle`/`release` never await, so they are safe in
`finally` blocks of cancelled tasks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from haimaker.money import Nanos

WINDOW_S = 60.0


@dataclass(frozen=True, slots=True)
class Limits:
    """Everything admission needs to know about one subject's limits: a customer's effective budget, or a virtual
    key's own limits (`kind` "api_key", `customer_id` then the key's subject id, `state/keys.py::key_subject`)."""

    # The counter-store id: a customer id, or a key subject.
    customer_id: str
    budget_id: str | None
    max_budget: Nanos | None
    soft_budget: Nanos | None
    rpm_limit: int | None
    tpm_limit: int | None
    max_parallel_requests: int | None
    budget_duration: str | None
    # The tier's next reset instant as stored (may be in the past when the reset job is behind).
    budget_reset_at: datetime | None
    # What the limit belongs to, as LiteLLM names it in messages and headers: "end_user", "api_key", "model_per_key".
    kind: str = "end_user"
    # How messages name the subject (a key's alias and masked key); "" = `customer_id`.
    label: str = ""

    @property
    def has_any(self) -> bool:
        return (
            self.max_budget is not None
            or self.rpm_limit is not None
            or self.tpm_limit is not None
            or self.max_parallel_requests is not None
            or self.budget_duration is not None
            or self.soft_budget is not None
        )


@dataclass(frozen=True, slots=True)
class Demand:
    """What one request may use at most: its reservation before the call."""

    cost: Nanos
    tokens: int


@dataclass(slots=True)
class Reservation:
    """What `admit` took for one request, to be settled or released exactly once."""

    customer_id: str
    cost: Nanos
    tokens: int
    window_start: float
    holds_parallel_slot: bool
    # Shrunk to what remained of the budget (default mode): at most one such request in flight per customer.
    partial: bool = False
    # Headers for the client (x-ratelimit-end_user-*), computed at admission.
    rate_headers: tuple[tuple[str, str], ...] = ()
    done: bool = False


@dataclass(frozen=True, slots=True)
class SpendReset:
    """A customer's spend went back to zero at a period boundary: to be written durably."""

    customer_id: str
    next_reset_at: datetime


class SpendResetSink(Protocol):
    def reset_customer(self, reset: SpendReset) -> None: ...


class CounterStore(Protocol):
    """Per-customer spend, reservations, rate windows and in-flight counts."""

    async def admit(self, limits: Limits, demand: Demand, *, fail_closed: bool) -> Reservation:
        """Check every limit and reserve, atomically; raise BudgetExceededError / RateLimitError."""
        ...

    async def admit_all(self, parts: Sequence[tuple[Limits, Demand]], *, fail_closed: bool) -> list[Reservation]:
        """`admit` for several subjects of one request (its key and its customer), all or nothing: every limit of
        every subject is checked before anything is reserved, and a refusal leaves every subject as it was."""
        ...

    def settle(self, reservation: Reservation, cost: Nanos, tokens: int) -> Nanos:
        """Replace the reservation by the actual cost and tokens; return the customer's new spend."""
        ...

    def release(self, reservation: Reservation) -> None:
        """Give the reservation back (upstream failure, cancellation): nothing is charged."""
        ...

    def add_spend(self, customer_id: str, cost: Nanos) -> Nanos:
        """Charge a customer without a reservation (unlimited customers); return the new spend."""
        ...

    def spend(self, customer_id: str) -> Nanos | None:
        """The customer's spend in its current period including charges not yet written, if known."""
        ...

    def seed(self, customer_id: str, spend: Nanos, spend_reset_at: datetime | None) -> None:
        """Load a customer's durable spend (startup, admin writes)."""
        ...

    def reset_due(self, now: datetime, customer_ids: list[str], next_reset_at: datetime) -> list[str]:
        """Zero the spend of those customers whose period has ended; return their ids."""
        ...

    def forget(self, customer_id: str) -> None:
        """Drop a deleted customer's counters."""
        ...

    def evict(self, customer_id: str, *, rate_limited: bool) -> bool:
        """Drop an idle customer's counters held in this process, when nothing in them is still needed: no
        reservation, nothing owed to a shared store, and (`rate_limited`: it has rpm/tpm limits) no request in the
        current rate window. The durable spend must already be written (the caller's duty: `state/working_set.py`).
        Return whether it was dropped."""
        ...

    def adopt(self, customer_id: str, spend: Nanos, spend_reset_at: datetime | None) -> None:
        """A customer read back from the store into the working set: its stored spend, unless this process already
        counts the customer (then its counters are newer than the row)."""
        ...
