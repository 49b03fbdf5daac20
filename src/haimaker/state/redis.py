"""Customer counters in Redis, shared by every instance: each operation is one Lua script (`lua/*.lua`).

Keys, under the configured prefix `p` (`general_settings.redis_key_prefix`), per customer id `cid` (the hash
tag keeps a customer's keys in one cluster slot):

    p:{cid}:c   hash  s spend (nano-dollars, current period, charges not yet written included), rsv reserved,
                      inf requests in flight, pin requests in flight on a shrunk reservation (at most one),
                      ws/wr/wt rate window start (ms) / requests / tokens,
                      rst spend reset instant (ms), per the period (budget id + duration) it follows
    p:{cid}:r   zset  live reservations: member `id|cost|tokens|slot|partial|window` -> lease deadline (ms)
    p:{cid}:e   zset  reservations whose lease expired, kept a day so that a late settle charges exactly once
    p:epoch     string  a random id set when the data set is new: a changed epoch means Redis lost its data
    p:fence     string  after a data loss, the instant (server ms) every instance stops charging locally; seeds
                        from the durable store wait until `FENCE_MARGIN_S` after it (see `resilient.py`)

Invariants:
- `admit` is one script: every limit checked, then everything reserved, all or nothing. Its semantics are those of
  `MemoryCounterStore.admit_now`, line for line; rate windows use the Redis server's clock (`TIME`), so every
  instance agrees on them; period resets use the injected `Clock` (datetimes), as in the memory store.
- A reservation is a lease: its instance renews it while the request runs (`renew`); the lease of a dead instance
  runs out and the next admission gives its reservation back, so survivors' limits stay exact.
- `settle` and `release` are idempotent per reservation (replays after an outage never count twice).
- A customer unknown to Redis is seeded from the durable store (`SpendSource`) before its first admission; charges
  for an unseeded customer are left to that seed (the durable store has them once written). A customer the caller
  knows to be new (`is_new`: nothing stored for it) is seeded at zero by its first admission script itself.
- Money is integral nano-dollars throughout (`HINCRBY`); Lua's doubles are exact below 2^53 nano-dollars.

This module only speaks to Redis: outages, fallback and never-awaiting wrappers are `resilient.py`'s.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Any, Final

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript

from haimaker.clock import Clock
from haimaker.errors import BudgetExceededError, RateLimitError
from haimaker.money import Nanos
from haimaker.periods import NextReset
from haimaker.state.counters import WINDOW_S, Demand, Limits, Reservation, SpendReset, SpendResetSink
from haimaker.state.resp import ScriptClient
from haimaker.state.verdicts import budget_exceeded, rate_limit_headers, rate_limited

# The durable spend of a customer and the end of its period (None, None when it is not stored).
SpendSource = Callable[[str], Awaitable[tuple[Nanos, datetime | None]]]

LEASE_S: Final = 10.0
# Idle customers' keys expire after a week; they are seeded again from the durable store when next seen.
IDLE_TTL_MS: Final = 7 * 24 * 3600 * 1000
POOL_SIZE: Final = 100
# Generous: a busy event loop delays every reply, and one failed call switches the instance to its outage policy.
# A stopped Redis refuses connections at once; only an unresponsive one takes these long to notice.
POOL_TIMEOUT_S: Final = 10.0
SOCKET_TIMEOUT_S: Final = 5.0
CONNECT_TIMEOUT_S: Final = 5.0

_NOT_SEEDED: Final = 1
_SEED_MEMORY_S: Final = 5.0
_REFUSALS: Final = {2: "parallel_requests", 3: "requests", 4: "tokens"}
_SCRIPTS: Final = ("admit", "settle", "release", "charge", "seed", "reset", "renew", "fence")
# Seeds wait this long past the reseed fence: every instance has written what it charged locally by then.
FENCE_MARGIN_S: Final = 0.5


@dataclass(slots=True)
class SharedReservation(Reservation):
    """A reservation held in Redis: `member` names it in the customer's lease set; `epoch` is the data set it
    was made in (a reservation from before Redis lost its data settles as a plain charge)."""

    member: str = ""
    epoch: str = ""


class SeedUnavailableError(Exception):
    """The durable store could not be read to seed a customer (not a Redis failure)."""


@dataclass(frozen=True, slots=True)
class Admission:
    """An admitted request and what the script saw: the customer's spend and period end."""

    reservation: SharedReservation
    spend: Nanos
    spend_reset_at: datetime | None


@dataclass(frozen=True, slots=True)
class Seen:
    """What an admission script saw of one subject: its spend and period end (admitted or refused)."""

    subject: str
    spend: Nanos
    spend_reset_at: datetime | None


@dataclass(frozen=True, slots=True)
class Refusal:
    """A refused request and what the script saw: a refusal can follow a period reset that the script applied."""

    error: BudgetExceededError | RateLimitError
    spend: Nanos
    spend_reset_at: datetime | None


def connect(url: str, *, max_connections: int = POOL_SIZE) -> Redis:
    """A client on a `BlockingConnectionPool` (the default pool fails past its size instead of waiting).

    No retries inside redis-py: a failed call reports at once, and `resilient.py` decides what an outage means.
    """
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=POOL_TIMEOUT_S,
        socket_timeout=SOCKET_TIMEOUT_S,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=30,
    )
    return Redis.from_pool(pool)


def _ms(when: datetime | None) -> str:
    return "" if when is None else str(int(when.timestamp() * 1000))


def _from_ms(ms: int) -> datetime | None:
    return None if ms < 0 else datetime.fromtimestamp(ms / 1000, UTC)


def _opt(value: int | None) -> str:
    return "" if value is None else str(value)


class RedisCounters:
    """The Redis side of the shared `CounterStore`: async, and raising `redis.RedisError` on any failure."""

    def __init__(
        self,
        client: Redis,
        prefix: str,
        clock: Clock,
        next_reset: NextReset,
        resets: SpendResetSink,
        spend_source: SpendSource,
        *,
        budget_status_code: int,
        use_server_time: bool = True,
        lease_s: float = LEASE_S,
        is_new: Callable[[str], bool] | None = None,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self._clock = clock
        self._next_reset = next_reset
        self._resets = resets
        self._spend_source = spend_source
        self._budget_status_code = budget_status_code
        self._use_server_time = use_server_time
        self.lease_s = lease_s
        # True for a customer the durable store is known to hold nothing for: its first admission seeds it at zero
        # in the same script, instead of a failed admission, a seed and a second admission.
        self._is_new = is_new
        sources = {
            name: resources.files(__package__).joinpath(f"lua/{name}.lua").read_text("utf-8") for name in _SCRIPTS
        }
        # Pipelined maintenance (resets, lease renewals) goes through redis-py; single calls, the per-request
        # admit/settle/release among them, through the multiplexed `ScriptClient`.
        self._scripts: dict[str, AsyncScript] = {name: client.register_script(src) for name, src in sources.items()}
        self._calls = ScriptClient.like(client)
        for name, source in sources.items():
            self._calls.register(name, source)
        self._seeding: dict[str, asyncio.Future[None]] = {}

    # -- keys

    def keys(self, customer_id: str) -> tuple[str, str, str]:
        """The customer's hash, live leases and expired leases."""
        base = f"{self.prefix}:{{{customer_id}}}"
        return f"{base}:c", f"{base}:r", f"{base}:e"

    @property
    def epoch_key(self) -> str:
        return f"{self.prefix}:epoch"

    def _now_ms(self) -> int:
        # 0 tells the scripts to read the server's clock, which every instance shares.
        return 0 if self._use_server_time else int(self._clock.time() * 1000)

    async def _run(self, name: str, keys: Sequence[str], args: Iterable[str | int]) -> Any:
        return await self._calls.run(name, keys, list(args))

    # -- admission

    async def admit(self, limits: Limits, demand: Demand, *, fail_closed: bool) -> Admission:
        """Check every limit and reserve, in one script; raise BudgetExceededError / RateLimitError."""
        verdict = await self.decide(limits, demand, fail_closed=fail_closed)
        if isinstance(verdict, Refusal):
            raise verdict.error
        return verdict

    async def decide(self, limits: Limits, demand: Demand, *, fail_closed: bool) -> Admission | Refusal:
        """`admit`, with a refusal returned, not raised, together with the spend and period end the script saw."""
        verdict, _ = await self.decide_all(((limits, demand),), fail_closed=fail_closed)
        return verdict if isinstance(verdict, Refusal) else verdict[0]

    async def decide_all(
        self, parts: Sequence[tuple[Limits, Demand]], *, fail_closed: bool
    ) -> tuple[list[Admission] | Refusal, list[Seen]]:
        """Several subjects of one request in one script, all or nothing. Returns the admissions (one per subject, in
        order) or the first refusal, and what the script saw of every subject (a refusal can follow period resets
        that the script applied)."""
        new = [self._is_new is not None and self._is_new(limits.customer_id) for limits, _ in parts]
        for attempt in range(2 * len(parts) + 1):
            reservation_id, result = await self._admit_once(parts, fail_closed, new)
            if int(result[0]) != _NOT_SEEDED:
                break
            await self._seed_from_store(parts[int(result[1]) - 1][0].customer_id, again=attempt > 0)
        else:  # pragma: no cover - a key vanished twice in a row (eviction, a concurrent delete)
            raise RuntimeError(f"subjects {[limits.customer_id for limits, _ in parts]!r} could not be seeded in Redis")
        status, refused_index, now_ms = int(result[0]), int(result[1]), int(result[2])
        now = now_ms / 1000
        admissions: list[Admission] = []
        seen: list[Seen] = []
        refusal: Refusal | None = None
        for index, (limits, demand) in enumerate(parts):
            base = 3 + 10 * index
            cost, tokens, ws, wr, wt, spend, rst, did_reset, estimate_flag, partial = (
                int(v) for v in result[base : base + 10]
            )
            reset_at = _from_ms(rst)
            if did_reset and reset_at is not None:
                self._resets.reset_customer(SpendReset(limits.customer_id, reset_at))
            seen.append(Seen(limits.customer_id, spend, reset_at))
            window_start = ws / 1000
            if index + 1 == refused_index:
                if status in _REFUSALS:
                    limit = {2: limits.max_parallel_requests, 3: limits.rpm_limit, 4: limits.tpm_limit}[status]
                    error: BudgetExceededError | RateLimitError = rate_limited(
                        limits, _REFUSALS[status], limit or 0, window_start, now
                    )
                else:
                    estimate = demand.cost if estimate_flag else None
                    error = budget_exceeded(self._budget_status_code, limits, spend, estimate)
                refusal = Refusal(error, spend, reset_at)
            elif status == 0:
                slot = limits.max_parallel_requests is not None
                reservation = SharedReservation(
                    customer_id=limits.customer_id,
                    cost=cost,
                    tokens=tokens,
                    window_start=window_start,
                    holds_parallel_slot=slot,
                    partial=bool(partial),
                    rate_headers=rate_limit_headers(limits, wr, wt),
                    # The same member the script stored: it names the reservation in every later call.
                    member=f"{reservation_id}|{cost}|{tokens}|{int(slot)}|{partial}|{ws}",
                )
                admissions.append(Admission(reservation, spend, reset_at))
        return (refusal if refusal is not None else admissions), seen

    async def _admit_once(
        self, parts: Sequence[tuple[Limits, Demand]], fail_closed: bool, new: Sequence[bool]
    ) -> tuple[str, list[Any]]:
        reservation_id = uuid.uuid4().hex[:16]
        keys: list[str] = []
        args: list[str | int] = [
            reservation_id,
            self._now_ms(),
            int(self.lease_s * 1000),
            "1" if fail_closed else "0",
            int(WINDOW_S * 1000),
            IDLE_TTL_MS,
        ]
        for (limits, demand), seed_if_absent in zip(parts, new, strict=True):
            period, tier_reset, next_reset, clock_ms = "", "", "", 0
            if limits.budget_duration is not None:
                now = self._clock.now()
                period = f"{limits.budget_id or ''}\x1f{limits.budget_duration}"
                tier_reset = _ms(limits.budget_reset_at)
                next_reset = _ms(self._next_reset(limits.budget_duration, now))
                clock_ms = int(now.timestamp() * 1000)
            keys.extend(self.keys(limits.customer_id))
            args.extend(
                (
                    demand.cost,
                    demand.tokens,
                    _opt(limits.max_budget),
                    _opt(limits.rpm_limit),
                    _opt(limits.tpm_limit),
                    _opt(limits.max_parallel_requests),
                    period,
                    tier_reset,
                    next_reset,
                    clock_ms,
                    "1" if seed_if_absent else "0",
                )
            )
        result: list[Any] = await self._run("admit", keys, args)
        return reservation_id, result

    async def _seed_from_store(self, customer_id: str, *, again: bool = False) -> None:
        """Seed a customer from the durable store, once per instance however many requests wait for it.

        A finished seed is remembered for a few seconds, for the requests whose first answer crossed it.
        """
        pending = self._seeding.get(customer_id)
        if pending is not None and not (again and pending.done()):
            await asyncio.shield(pending)
            return
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._seeding[customer_id] = future
        try:
            await asyncio.sleep(await self._fence_wait_s("wait", 0.0, FENCE_MARGIN_S))
            try:
                spend, reset_at = await self._spend_source(customer_id)
            except Exception as exc:
                raise SeedUnavailableError(f"cannot read customer {customer_id!r} from the store: {exc}") from exc
            await self.seed(customer_id, spend, reset_at, overwrite=False)
            future.set_result(None)
            loop.call_later(_SEED_MEMORY_S, self._forget_seed, customer_id, future)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: the waiters, if any, re-raise it
            self._forget_seed(customer_id, future)
            raise

    def _forget_seed(self, customer_id: str, future: asyncio.Future[None]) -> None:
        if self._seeding.get(customer_id) is future:
            del self._seeding[customer_id]

    # -- settlement

    async def settle(self, reservation: SharedReservation, cost: Nanos, tokens: int) -> Nanos | None:
        """Turn the reservation into the actual cost; the customer's new spend (None: replayed, or not seeded)."""
        applied, spend = await self._run(
            "settle", self.keys(reservation.customer_id), (reservation.member, cost, tokens)
        )
        return int(spend) if applied and int(spend) >= 0 else None

    async def release(self, reservation: SharedReservation) -> bool:
        """Give the reservation back; False when it was no longer held (expired, or released before)."""
        return bool(await self._run("release", self.keys(reservation.customer_id), (reservation.member,)))

    async def charge(self, customer_id: str, cost: Nanos) -> Nanos | None:
        """Add a charge without a reservation; the new spend, or None when the customer is not seeded."""
        spend = int(await self._run("charge", self.keys(customer_id)[:1], (cost,)))
        return spend if spend >= 0 else None

    async def spend_of(self, customer_id: str) -> Nanos | None:
        """The customer's spend as the cluster counts it; None when Redis does not hold the customer."""
        value = await self.client.hget(self.keys(customer_id)[0], "s")
        return None if value is None else int(value)

    async def seed(self, customer_id: str, spend: Nanos, reset_at: datetime | None, *, overwrite: bool) -> Nanos:
        """Set a customer's spend and period end (only if absent unless `overwrite`); the spend now held."""
        args = (spend, _ms(reset_at), "1" if overwrite else "0", IDLE_TTL_MS)
        return int(await self._run("seed", self.keys(customer_id)[:1], args))

    async def reset_due(self, now: datetime, customer_ids: Sequence[str], next_reset_at: datetime) -> list[str]:
        """Zero the spend of the customers whose period has ended; return those actually reset."""
        done: list[str] = []
        now_ms, next_ms = _ms(now), _ms(next_reset_at)
        for start in range(0, len(customer_ids), 500):
            chunk = customer_ids[start : start + 500]
            async with self.client.pipeline(transaction=False) as pipe:
                for customer_id in chunk:
                    await self._scripts["reset"](keys=self.keys(customer_id)[:1], args=(now_ms, next_ms), client=pipe)
                results = await pipe.execute()
            done.extend(cid for cid, hit in zip(chunk, results, strict=True) if int(hit))
        return done

    async def forget(self, customer_id: str) -> None:
        """Drop every key of a deleted customer."""
        await self.client.unlink(*self.keys(customer_id))

    async def renew(self, reservations: Iterable[SharedReservation]) -> int:
        """Extend the leases of reservations still in flight; how many were extended."""
        by_customer: dict[str, list[str]] = {}
        for reservation in reservations:
            by_customer.setdefault(reservation.customer_id, []).append(reservation.member)
        if not by_customer:
            return 0
        lease_ms = int(self.lease_s * 1000)
        async with self.client.pipeline(transaction=False) as pipe:
            for customer_id, members in by_customer.items():
                keys = self.keys(customer_id)[1:2]
                await self._scripts["renew"](keys=keys, args=(self._now_ms(), lease_ms, *members), client=pipe)
            results = await pipe.execute()
        return sum(int(n) for n in results)

    # -- the data set

    async def ensure_epoch(self) -> tuple[str, bool]:
        """The data set's epoch, creating it when absent; (epoch, whether this call created it)."""
        candidate = uuid.uuid4().hex
        created = bool(await self.client.set(self.epoch_key, candidate, nx=True))
        if created:
            return candidate, True
        value = await self.client.get(self.epoch_key)
        if value is None:  # pragma: no cover - deleted between the two calls
            return await self.ensure_epoch()
        return (value.decode() if isinstance(value, bytes) else str(value)), False

    async def set_reseed_fence(self, grace_s: float) -> float:
        """After a data loss: create the cluster's reseed fence `grace_s` from now unless another instance did;
        the seconds until it."""
        return await self._fence_wait_s("set", grace_s, 0.0)

    async def _fence_wait_s(self, mode: str, grace_s: float, margin_s: float) -> float:
        args = (mode, int(grace_s * 1000), int(margin_s * 1000))
        return int(await self._run("fence", [f"{self.prefix}:fence"], args)) / 1000

    async def ping(self) -> None:
        await self.client.ping()

    async def drop_idle_connections(self) -> None:
        """Forget pooled connections that may predate a Redis restart (they reconnect when next used)."""
        self._calls.disconnect()
        await self.client.connection_pool.disconnect(inuse_connections=False)

    def close(self) -> None:
        """Close the script connection (the redis-py client is its owner's to close)."""
        self._calls.disconnect()
