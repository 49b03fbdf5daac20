"""Several instances behind a load balancer: this instance's share of the cluster, built and closed together.

With a Redis URL configured (`general_settings.redis_url`, `router_settings.redis_host/port/password`, or env
`REDIS_URL`), the app builds a `Cluster` instead of the in-memory counters:

- `store`: the counters in Redis (`redis.py`), behind the outage policy (`resilient.py`);
- `bus`: admin writes announced to every instance (`invalidation.py`);
- `lock`: one writer at a time for cluster-wide jobs (`locks.py`): PostgreSQL when the store is, else Redis.

Every key lives under `general_settings.redis_key_prefix`, so several deployments (or test runs) can share one
Redis. `aclose()` stops the subscriber, finishes pending counter updates, then closes the connection pool.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from haimaker.clock import Clock
from haimaker.money import Nanos
from haimaker.periods import NextReset
from haimaker.state.batching import BatchedLookup
from haimaker.state.catalog import Catalog
from haimaker.state.counters import SpendResetSink
from haimaker.state.invalidation import RESYNC_INTERVAL_S, CatalogRefresher, CatalogSource, InvalidationBus
from haimaker.state.keys import KeyCatalog, token_of_subject
from haimaker.state.locks import JobLock, PostgresJobLock, RedisJobLock
from haimaker.state.redis import RedisCounters, connect
from haimaker.state.resilient import ResilientCounterStore

logger = logging.getLogger("haimaker.state")


@dataclass
class Cluster:
    client: Redis
    store: ResilientCounterStore
    bus: InvalidationBus
    lock: JobLock

    def changed(self, kind: str, key: str) -> None:
        """Tell every instance that an admin write changed `kind` `key` (never awaits)."""
        self.bus.publish(kind, key)

    def status(self) -> dict[str, Any]:
        """What a health check may show: Redis reachability and pending counter updates."""
        return {"redis": self.store.health.value, "redis_pending_updates": self.store.pending}

    async def aclose(self) -> None:
        await self.bus.aclose()
        await self.store.aclose()
        self.store.redis.close()
        await self.client.aclose()


async def open_cluster(
    redis_url: str,
    prefix: str,
    *,
    clock: Clock,
    next_reset: NextReset,
    resets: SpendResetSink,
    flush: Callable[[], Awaitable[None]],
    source: CatalogSource,
    catalog: Catalog,
    key_catalog: KeyCatalog,
    db: AsyncEngine,
    budget_status_code: int,
    fail_closed: bool,
) -> Cluster:
    """Connect to Redis and start the subscriber and the counters' maintenance (a Redis outage does not fail it)."""
    client = connect(redis_url)

    def is_new(customer_id: str) -> bool:
        # Admission has just looked the customer up (`Catalog.lookup`): the store did not know it a moment ago. A
        # customer another instance created since still has its Redis key (they live a week), so a seed is a no-op
        # for it; a customer the store does not know is new. Either way spend 0, without a second database read
        # (and within the admission script) on every new customer's first request. Not right after Redis lost its
        # data: then the store is read for everyone, as the keys of recently created customers are gone too.
        if token_of_subject(customer_id) is not None:
            return False  # a virtual key: its spend is in the store (an imported key's too)
        return catalog.is_absent(customer_id) and _no_recent_data_loss()

    async def spend_of_subjects(subjects: Sequence[str]) -> dict[str, tuple[Nanos, datetime | None]]:
        """Durable spend of counter subjects: virtual keys from their rows, customers from theirs (a key's per-model
        subject holds rate windows only, and starts at zero)."""
        tokens = {subject: token_of_subject(subject) for subject in subjects}
        found = await source.customers.spend_of_many([s for s, t in tokens.items() if t is None])
        key_tokens = [t for t in tokens.values() if t is not None]
        if key_tokens:
            by_token = await source.keys.spend_of_many(key_tokens)
            found.update({s: by_token[t] for s, t in tokens.items() if t is not None and t in by_token})
        return found

    # Read only for customers `is_new` did not vouch for (their first admission seeds them itself).
    durable_spend: BatchedLookup[str, tuple[Nanos, datetime | None]] = BatchedLookup(
        spend_of_subjects, missing=(0, None)
    )

    def _no_recent_data_loss() -> bool:
        reseeded_at = store.reseeded_at
        return reseeded_at is None or time.monotonic() - reseeded_at > 2 * RESYNC_INTERVAL_S

    counters = RedisCounters(
        client, prefix, clock, next_reset, resets, durable_spend, budget_status_code=budget_status_code, is_new=is_new
    )
    store = ResilientCounterStore(
        counters,
        clock,
        next_reset,
        resets,
        budget_status_code=budget_status_code,
        fail_closed=fail_closed,
        flush=flush,
    )
    await store.start()
    bus = InvalidationBus(client, prefix, CatalogRefresher(catalog, source, store.forget_local, key_catalog))
    bus.start()
    lock: JobLock = PostgresJobLock(db) if db.dialect.name == "postgresql" else RedisJobLock(client, prefix)
    logger.info(
        "shared state in Redis (key prefix %r, %s); job lock in %s",
        prefix,
        "fail closed" if fail_closed else "fail open",
        "PostgreSQL" if isinstance(lock, PostgresJobLock) else "Redis",
    )
    return Cluster(client, store, bus, lock)
