"""The `CounterStore` of several instances: Redis while it answers, and a decided behaviour while it does not.

States: UP (Redis serves every admission) → DOWN (a Redis call failed; a probe pings every 50 ms) →
RECOVERING (Redis answers again; what it missed is put back) → UP.

- `general_settings.fail_closed_budget_enforcement: true`: while not UP, requests that have limits are refused
  with 503 `Budget enforcement unavailable: …` (customers without limits are still served and charged).
- Otherwise (fail open): they are admitted against this instance's own counters (`MemoryCounterStore`), so each
  instance enforces the limits on its own, and the outage is logged as an error every 10 s.

Invariants:
- `settle`, `release`, `add_spend`, `seed`, `reset_due` and `forget` never await: the Redis call is a task in
  `_tasks` (awaited by `aclose`). A call that fails, and every call made while not UP, is kept in a per-customer
  ledger, in order, and replayed on recovery: settles and releases are idempotent per reservation, so nothing is
  counted twice or lost.
- If Redis lost its data meanwhile (its epoch key changed), the ledger is dropped instead: the spend recorder is
  flushed; the first instance back sets a fence half a second ahead (on Redis' clock), and every instance goes back
  to Redis at that same instant after flushing again; customers are seeded from the durable store only half a second
  past the fence, when it has every charge made before it. Residual race: a charge whose Redis update is delayed
  past the seed while its durable write is not (milliseconds), or an instance that notices the return only after
  the fence. The durable store itself is exact.
- The local counters double as the mirror of what Redis last said (spend, period end), refused admissions included
  (one may have applied a period reset): `spend()` and `settle` answer from it, and a fallback starts from it.
- Leases of this instance's reservations in flight are renewed every `lease_s / 3` while UP.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from redis.exceptions import RedisError

from haimaker.clock import Clock
from haimaker.errors import ServiceUnavailableError
from haimaker.money import Nanos
from haimaker.periods import NextReset
from haimaker.state.counters import Demand, Limits, Reservation, SpendReset, SpendResetSink
from haimaker.state.memory import MemoryCounterStore
from haimaker.state.redis import RedisCounters, Refusal, SeedUnavailableError, SharedReservation

logger = logging.getLogger("haimaker.state")

# Short, so that the instances notice a returning Redis at nearly the same time (a refused connect is cheap).
PROBE_INTERVAL_S: Final = 0.05
LOG_EVERY_S: Final = 10.0
FLUSH_TIMEOUT_S: Final = 10.0
RESEED_GRACE_S: Final = 0.5
CLOSE_TIMEOUT_S: Final = 10.0


class Health(enum.Enum):
    UP = "up"
    DOWN = "down"
    RECOVERING = "recovering"


@dataclass(frozen=True, slots=True)
class _Charge:
    cost: Nanos


@dataclass(frozen=True, slots=True)
class _Settle:
    reservation: SharedReservation
    cost: Nanos
    tokens: int


@dataclass(frozen=True, slots=True)
class _Release:
    reservation: SharedReservation


@dataclass(frozen=True, slots=True)
class _Seed:
    spend: Nanos
    reset_at: datetime | None


@dataclass(frozen=True, slots=True)
class _Reset:
    now: datetime
    next_reset_at: datetime


@dataclass(frozen=True, slots=True)
class _Forget:
    pass


_Op = _Charge | _Settle | _Release | _Seed | _Reset | _Forget


class _LocalResets:
    """The fallback's resets: written durably as usual, and owed to Redis."""

    def __init__(self, sink: SpendResetSink, owe: Callable[[str, _Op], None], clock: Clock) -> None:
        self._sink = sink
        self._owe = owe
        self._clock = clock

    def reset_customer(self, reset: SpendReset) -> None:
        self._sink.reset_customer(reset)
        self._owe(reset.customer_id, _Reset(self._clock.now(), reset.next_reset_at))


class ResilientCounterStore:
    """Shared counters in Redis with an outage policy; implements `CounterStore`."""

    def __init__(
        self,
        redis: RedisCounters,
        clock: Clock,
        next_reset: NextReset,
        resets: SpendResetSink,
        *,
        budget_status_code: int,
        fail_closed: bool,
        flush: Callable[[], Awaitable[None]],
        probe_interval_s: float = PROBE_INTERVAL_S,
        reseed_grace_s: float = RESEED_GRACE_S,
    ) -> None:
        self.redis = redis
        self.local = MemoryCounterStore(
            clock, next_reset, _LocalResets(resets, self._owe, clock), budget_status_code=budget_status_code
        )
        self._fail_closed = fail_closed
        self._flush = flush
        self._probe_interval_s = probe_interval_s
        self._reseed_grace_s = reseed_grace_s
        self.health = Health.RECOVERING  # until `start()` has reached Redis
        self._epoch: str | None = None
        # When this instance last saw Redis come back without its data (monotonic seconds), if ever.
        self.reseeded_at: float | None = None
        self._reset_at: dict[str, datetime | None] = {}
        self._live: dict[str, SharedReservation] = {}
        self._owed: dict[str, list[_Op]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._maintenance: asyncio.Task[None] | None = None
        self._down_since = 0.0
        self._last_log = 0.0
        self.served_locally = 0
        self.refused = 0
        self.outages = 0

    # -- lifecycle

    async def start(self) -> None:
        """Connect (an unreachable Redis is an outage, not a boot failure) and start the maintenance task."""
        try:
            self._epoch, _ = await self.redis.ensure_epoch()
            self.health = Health.UP
        except RedisError as exc:
            self._mark_down(exc)
        self._maintenance = asyncio.create_task(self._maintain(), name="haimaker-redis-maintenance")

    async def aclose(self) -> None:
        """Stop the maintenance task, finish every pending Redis call (replaying what failed), and stop."""
        if self._maintenance is not None:
            self._maintenance.cancel()
            try:
                await self._maintenance
            except asyncio.CancelledError:
                pass
        try:
            await asyncio.wait_for(self._drain(), CLOSE_TIMEOUT_S)
        except (TimeoutError, RedisError):
            pass
        if self._owed:
            logger.error(
                "closing with %d customers' counter updates not applied to Redis (they are in the durable store)",
                len(self._owed),
            )

    async def _drain(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        if self.health is Health.UP and self._owed:
            await self._replay()

    @property
    def pending(self) -> int:
        """Redis calls scheduled and not finished, plus customers with updates owed to Redis."""
        return len(self._tasks) + len(self._owed)

    # -- CounterStore

    async def admit(self, limits: Limits, demand: Demand, *, fail_closed: bool) -> Reservation:
        return (await self.admit_all(((limits, demand),), fail_closed=fail_closed))[0]

    async def admit_all(self, parts: Sequence[tuple[Limits, Demand]], *, fail_closed: bool) -> list[Reservation]:
        if self.health is Health.UP:
            try:
                verdict, seen = await self.redis.decide_all(parts, fail_closed=fail_closed)
            except RedisError as exc:
                self._mark_down(exc)
            except SeedUnavailableError as exc:
                logger.error("%s", exc)
                return self._admit_locally(parts, fail_closed, "the durable store is unreachable")
            else:
                # Refused too: the script may have reset a period before it refused.
                for subject in seen:
                    self._note(subject.subject, subject.spend, subject.spend_reset_at)
                if isinstance(verdict, Refusal):
                    raise verdict.error
                reservations: list[Reservation] = []
                for admission in verdict:
                    reservation = admission.reservation
                    reservation.epoch = self._epoch or ""
                    self._live[reservation.member] = reservation
                    reservations.append(reservation)
                return reservations
        return self._admit_locally(parts, fail_closed, "Redis is unreachable")

    def _admit_locally(self, parts: Sequence[tuple[Limits, Demand]], fail_closed: bool, why: str) -> list[Reservation]:
        if self._fail_closed:
            self.refused += 1
            raise ServiceUnavailableError(
                f"Budget enforcement unavailable: {why}, and general_settings.fail_closed_budget_enforcement "
                "refuses requests it cannot check. Retry shortly.",
                headers={"retry-after": "1"},
            )
        self.served_locally += 1
        return self.local.admit_all_now(parts, fail_closed=fail_closed)

    def settle(self, reservation: Reservation, cost: Nanos, tokens: int) -> Nanos:
        customer_id = reservation.customer_id
        if not isinstance(reservation, SharedReservation):
            spend = self.local.settle(reservation, cost, tokens)
            self._submit(customer_id, _Charge(cost))
            return spend
        first = not reservation.done
        reservation.done = True
        self._live.pop(reservation.member, None)
        spend = self.local.add_spend(customer_id, cost)
        if first and reservation.epoch == self._epoch:
            self._submit(customer_id, _Settle(reservation, cost, tokens))
        else:
            # Settled before (the memory store charges again too), or made before Redis lost its data.
            self._submit(customer_id, _Charge(cost))
        return spend

    def release(self, reservation: Reservation) -> None:
        if not isinstance(reservation, SharedReservation):
            self.local.release(reservation)
            return
        if reservation.done:
            return
        reservation.done = True
        self._live.pop(reservation.member, None)
        if reservation.epoch == self._epoch:
            self._submit(reservation.customer_id, _Release(reservation))

    def add_spend(self, customer_id: str, cost: Nanos) -> Nanos:
        spend = self.local.add_spend(customer_id, cost)
        self._submit(customer_id, _Charge(cost))
        return spend

    def spend(self, customer_id: str) -> Nanos | None:
        return self.local.spend(customer_id)

    async def current_spend(self, customer_id: str) -> Nanos | None:
        """The customer's spend as the whole cluster counts it (`spend()` is this instance's last view of it)."""
        if self.health is Health.UP:
            try:
                spend = await self.redis.spend_of(customer_id)
            except RedisError as exc:
                self._mark_down(exc)
            else:
                if spend is not None:
                    return spend
        return self.local.spend(customer_id)

    def seed(self, customer_id: str, spend: Nanos, spend_reset_at: datetime | None) -> None:
        """An admin write of a customer's spend: it replaces the shared value."""
        self.seed_local(customer_id, spend, spend_reset_at)
        self._submit(customer_id, _Seed(spend, spend_reset_at))

    def seed_local(self, customer_id: str, spend: Nanos, spend_reset_at: datetime | None) -> None:
        """What the durable store says at startup: for this instance's mirror only (Redis may know better)."""
        self._reset_at[customer_id] = spend_reset_at
        self.local.seed(customer_id, spend, spend_reset_at)

    def reset_due(self, now: datetime, customer_ids: list[str], next_reset_at: datetime) -> list[str]:
        done = self.local.reset_due(now, customer_ids, next_reset_at)
        for customer_id in done:
            self._reset_at[customer_id] = next_reset_at
        if self.health is Health.UP and self._spawn(self._reset_in_redis(now, customer_ids, next_reset_at)):
            return done
        # Owed only for the customers held here: a tier of millions must not queue millions of entries while Redis is
        # away, and the others' shared counters reset themselves at their next admission (the script's period check).
        for customer_id in done:
            self._owe(customer_id, _Reset(now, next_reset_at))
        return done

    def forget(self, customer_id: str) -> None:
        self.forget_local(customer_id)
        self._submit(customer_id, _Forget())

    def evict(self, customer_id: str, *, rate_limited: bool) -> bool:
        if customer_id in self._owed or not self.local.evict(customer_id, rate_limited=rate_limited):
            return False  # changes owed to Redis must reach it first
        self._reset_at.pop(customer_id, None)
        return True

    def adopt(self, customer_id: str, spend: Nanos, spend_reset_at: datetime | None) -> None:
        if self.local.spend(customer_id) is None:
            self.seed_local(customer_id, spend, spend_reset_at)

    def forget_local(self, customer_id: str) -> None:
        """Drop this instance's view of a deleted customer (another instance deleted its shared counters)."""
        self.local.forget(customer_id)
        self._reset_at.pop(customer_id, None)

    # -- Redis calls that never await

    def _submit(self, customer_id: str, op: _Op) -> None:
        if self.health is not Health.UP or not self._spawn(self._apply(customer_id, op)):
            self._owe(customer_id, op)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> bool:
        try:
            task = asyncio.get_running_loop().create_task(coro)
        except RuntimeError:  # no running loop (interpreter shutdown): the caller keeps it in the ledger
            coro.close()
            return False
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _apply(self, customer_id: str, op: _Op) -> None:
        try:
            await self._run(customer_id, op)
        except RedisError as exc:
            self._owe(customer_id, op)
            self._mark_down(exc)

    async def _reset_in_redis(self, now: datetime, customer_ids: list[str], next_reset_at: datetime) -> None:
        try:
            await self.redis.reset_due(now, customer_ids, next_reset_at)
        except RedisError as exc:
            for customer_id in customer_ids:
                self._owe(customer_id, _Reset(now, next_reset_at))
            self._mark_down(exc)

    async def _run(self, customer_id: str, op: _Op) -> None:
        spend: Nanos | None = None
        if isinstance(op, _Charge):
            spend = await self.redis.charge(customer_id, op.cost)
        elif isinstance(op, _Settle):
            spend = await self.redis.settle(op.reservation, op.cost, op.tokens)
        elif isinstance(op, _Release):
            await self.redis.release(op.reservation)
        elif isinstance(op, _Seed):
            spend = await self.redis.seed(customer_id, op.spend, op.reset_at, overwrite=True)
        elif isinstance(op, _Reset):
            await self.redis.reset_due(op.now, [customer_id], op.next_reset_at)
        else:
            await self.redis.forget(customer_id)
        if spend is not None:
            self._note(customer_id, spend, self._reset_at.get(customer_id))

    def _owe(self, customer_id: str, op: _Op) -> None:
        ops = self._owed.setdefault(customer_id, [])
        if isinstance(op, _Charge) and ops and isinstance(ops[-1], _Charge):
            ops[-1] = _Charge(ops[-1].cost + op.cost)
        else:
            ops.append(op)

    def _note(self, customer_id: str, spend: Nanos, reset_at: datetime | None) -> None:
        self._reset_at[customer_id] = reset_at
        self.local.seed(customer_id, spend, reset_at)

    # -- outages

    def _mark_down(self, exc: BaseException) -> None:
        if self.health is Health.DOWN:
            return
        self.health = Health.DOWN
        self.outages += 1
        loop = asyncio.get_running_loop()
        self._down_since = self._last_log = loop.time()
        policy = (
            "refusing requests with limits (503, fail_closed_budget_enforcement)"
            if self._fail_closed
            else "enforcing limits per instance until it is back (fail open)"
        )
        logger.error("Redis unreachable (%s: %s): %s", type(exc).__name__, exc, policy)

    async def _maintain(self) -> None:
        loop = asyncio.get_running_loop()
        renew_every = self.redis.lease_s / 3
        next_renew = loop.time() + renew_every
        while True:
            await asyncio.sleep(self._probe_interval_s)
            try:
                if self.health is Health.DOWN:
                    await self._probe(loop.time())
                elif self.health is Health.UP and loop.time() >= next_renew:
                    next_renew = loop.time() + renew_every
                    await self._renew_and_check_epoch()
            except RedisError as exc:
                self._mark_down(exc)
            except Exception:  # pragma: no cover - a bug must not stop the probe
                logger.exception("Redis maintenance failed")

    async def _probe(self, now: float) -> None:
        if now - self._last_log >= LOG_EVERY_S:
            self._last_log = now
            logger.error(
                "Redis unreachable for %.0fs: %d requests served with local limits, %d refused, %d updates owed",
                now - self._down_since,
                self.served_locally,
                self.refused,
                sum(len(ops) for ops in self._owed.values()),
            )
        await self.redis.ping()
        await self._recover()

    async def _renew_and_check_epoch(self) -> None:
        await self.redis.renew(list(self._live.values()))
        epoch, _ = await self.redis.ensure_epoch()
        if epoch != self._epoch:
            logger.error("Redis lost its data (epoch changed): reseeding counters from the durable store")
            self.health = Health.RECOVERING
            await self._recover()

    async def _recover(self) -> None:
        """Put back what Redis missed, then serve from it again."""
        self.health = Health.RECOVERING
        try:
            # Calls still in flight either land or join the ledger before it is replayed.
            while self._tasks:
                await asyncio.gather(*list(self._tasks), return_exceptions=True)
            await self.redis.drop_idle_connections()
            epoch, created = await self.redis.ensure_epoch()
            if self._epoch is not None and epoch == self._epoch and not created:
                how = f"replayed {await self._replay()} owed updates"
            else:
                # Redis lost its data (or never had ours): the durable store is the truth. Reservations made
                # before settle as plain charges from now on; what this instance still holds is written first,
                # so that customers seeded from now on include it.
                if self._epoch is not None:
                    self.reseeded_at = time.monotonic()
                self._epoch = epoch
                self._owed.clear()
                # Write what this instance holds; then, at the cluster's fence (one instant for every instance),
                # stop charging locally and write again. Seeds wait past the fence (`RedisCounters`), so they find
                # every charge made before it in the store, and every charge after it goes to Redis.
                await self._flush_recorder()
                await asyncio.sleep(await self.redis.set_reseed_fence(self._reseed_grace_s))
                await self._flush_recorder()
                self._owed.clear()  # in the durable store now, so the seeds include it
                how = "new data set: customers are seeded again from the durable store"
        except RedisError as exc:
            self.health = Health.DOWN
            logger.error("Redis recovery failed (%s: %s); still probing", type(exc).__name__, exc)
            return
        # No await since the ledger was found empty: nothing can be owed now.
        self.health = Health.UP
        logger.warning(
            "Redis reachable again after %.1fs (%s); %d requests were served with local limits, %d refused",
            asyncio.get_running_loop().time() - self._down_since,
            how,
            self.served_locally,
            self.refused,
        )

    async def _flush_recorder(self) -> None:
        try:
            await asyncio.wait_for(self._flush(), FLUSH_TIMEOUT_S)
        except TimeoutError:
            logger.error("spend recorder did not flush in %.0fs; reseeding anyway", FLUSH_TIMEOUT_S)

    async def _replay(self) -> int:
        """Apply the ledger, customer by customer and in order; returns how many updates were applied."""
        applied = 0
        while self._owed:
            customer_id, ops = self._owed.popitem()
            for index, op in enumerate(ops):
                try:
                    await self._run(customer_id, op)
                except RedisError:
                    # Keep the rest, ahead of anything owed since.
                    self._owed[customer_id] = ops[index:] + self._owed.get(customer_id, [])
                    raise
                applied += 1
        return applied
