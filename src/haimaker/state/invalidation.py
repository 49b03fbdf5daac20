"""Cache coherence between instances: admin writes announced over Redis pub/sub, catalogs refreshed from the store.

Every instance keeps customers and budgets in memory (`Catalog`). After an admin write, the instance that made it
publishes `{"kind", "key"}` on `<prefix>:invalidate`; every instance (itself included: harmless, and it repairs a
full reload that raced with the write) reads that row back from the durable store into its catalog. Delivery
takes milliseconds, so a block, a new budget, a tier edit or a delete is enforced everywhere well within a second.

The safety net, when the subscription (re)connects (messages may have been missed while it was down) and every
`resync_interval_s` (30 s) whatever happens: budgets and keys are read whole (a few thousand rows at most), and the
customers this instance holds (its working set, `state/working_set.py`; never the whole table, which may hold
millions) are read back in batches of `RESYNC_BATCH`, one query each, with the event loop serving requests between
them. No request waits on a resync: a batch replaces only records no admin write touched while it was read.

Kinds: `customer` (key: user id), `budget` (key: budget id), `key` (key: a virtual key's token); any other kind, or
an empty key, reloads everything.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Final, Protocol

import orjson
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from haimaker.state.catalog import Catalog
from haimaker.state.keys import KeyCatalog, key_subject
from haimaker.storage.records import Budget, Customer, VirtualKey

logger = logging.getLogger("haimaker.state")

RESYNC_INTERVAL_S: Final = 30.0
RESYNC_BATCH: Final = 1_000
# A cached customer the store does not have is dropped by a resync only when it is older than this: a customer first
# seen in traffic is in the store within a write interval (100 ms), unless the store is down.
_UNWRITTEN_GRACE: Final = timedelta(seconds=2 * RESYNC_INTERVAL_S)
_PUBLISH_ATTEMPTS: Final = 4


class _CustomerRows(Protocol):
    async def get(self, user_id: str) -> Customer | None: ...

    async def spend_of_many(self, user_ids: Sequence[str]) -> dict[str, tuple[int, datetime | None]]: ...

    async def get_many(self, user_ids: Sequence[str]) -> dict[str, Customer]: ...


class _BudgetRows(Protocol):
    async def get(self, budget_id: str) -> Budget | None: ...

    async def list_all(self) -> list[Budget]: ...


class _KeyRows(Protocol):
    async def get(self, token: str) -> VirtualKey | None: ...

    async def spend_of_many(self, tokens: Sequence[str]) -> dict[str, tuple[int, datetime | None]]: ...

    async def list_all(self) -> list[VirtualKey]: ...


class CatalogSource(Protocol):
    """Where the catalog is read back from (the storage layer's `StoreSink`)."""

    @property
    def customers(self) -> _CustomerRows: ...

    @property
    def keys(self) -> _KeyRows: ...

    @property
    def budgets(self) -> _BudgetRows: ...


class CatalogRefresher:
    """Applies invalidations to this instance's catalog, reading the rows back from the durable store."""

    def __init__(
        self,
        catalog: Catalog,
        source: CatalogSource,
        forget_customer: Callable[[str], None],
        key_catalog: KeyCatalog | None = None,
    ) -> None:
        self._catalog = catalog
        self._source = source
        self._forget_customer = forget_customer
        self._keys = key_catalog

    async def changed(self, kind: str, key: str) -> None:
        kind = kind.lower().rstrip("s")
        if kind in ("customer", "end_user") and key:
            if key not in self._catalog.customers:
                # Not in this instance's working set: its next request reads the row (caching every customer an
                # admin writes would fill every instance with them). Counters of a deleted one go all the same.
                self._catalog.forget_absent(key)
                if await self._source.customers.get(key) is None:
                    self._forget_customer(key)
                return
            customer = await self._source.customers.get(key)
            if customer is None:
                self._catalog.drop_customer(key)
                self._forget_customer(key)
            else:
                self._catalog.put_customer(customer)
        elif kind == "budget" and key:
            budget = await self._source.budgets.get(key)
            if budget is None:
                self._catalog.drop_budget(key)
            else:
                self._catalog.put_budget(budget)
        elif kind == "key" and key:
            if self._keys is not None:
                record = await self._source.keys.get(key)
                if record is None:
                    self._keys.drop(key)
                    self._forget_customer(key_subject(key))
                else:
                    self._keys.put(record)
        else:
            await self.reload()

    async def reload(self) -> None:
        """Read budgets and keys again, and the cached customers in batches (see the module's docstring)."""
        self._catalog.load_budgets(await self._source.budgets.list_all())
        self._catalog.forget_absent()  # a customer created by a message that was missed is read on its next request
        await self._reread_customers()
        if self._keys is not None:
            keys = await self._source.keys.list_all()
            gone = set(self._keys.keys) - {k.token for k in keys}
            self._keys.load(keys)
            for token in gone:
                self._forget_customer(key_subject(token))

    async def _reread_customers(self) -> None:
        catalog = self._catalog
        ids = list(catalog.customers)
        for start in range(0, len(ids), RESYNC_BATCH):
            seen = {user_id: catalog.customers.get(user_id) for user_id in ids[start : start + RESYNC_BATCH]}
            stored = await self._source.customers.get_many(list(seen))
            cutoff = datetime.now(UTC) - _UNWRITTEN_GRACE
            for user_id, before in seen.items():
                if before is None:
                    continue  # evicted or dropped while the batch was read
                row = stored.get(user_id)
                if row is not None:
                    catalog.refresh(row, before)
                elif catalog.customers.get(user_id) is before and (before.created_at or cutoff) <= cutoff:
                    # Deleted by an instance whose message was missed (a customer of recent traffic may just not be
                    # written yet, and stays).
                    catalog.drop_customer(user_id)
                    self._forget_customer(user_id)


class InvalidationBus:
    """Publishes this instance's admin writes and applies everyone's (Redis pub/sub)."""

    def __init__(
        self,
        client: Redis,
        prefix: str,
        refresher: CatalogRefresher,
        *,
        resync_interval_s: float = RESYNC_INTERVAL_S,
    ) -> None:
        self._client = client
        self.channel = f"{prefix}:invalidate"
        self._refresher = refresher
        self._resync_interval_s = resync_interval_s
        self._task: asyncio.Task[None] | None = None
        self._publishing: set[asyncio.Task[None]] = set()
        self._subscribed = asyncio.Event()
        self.received = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="haimaker-invalidation")

    @property
    def is_subscribed(self) -> bool:
        return self._subscribed.is_set()

    async def wait_subscribed(self, timeout_s: float = 5.0) -> None:
        """Wait until the subscription is live (tests, and startup ordering)."""
        await asyncio.wait_for(self._subscribed.wait(), timeout_s)

    def publish(self, kind: str, key: str) -> None:
        """Announce an admin write (never awaits; retried briefly, then left to the other instances' resync)."""
        task = asyncio.get_running_loop().create_task(self.publish_now(kind, key))
        self._publishing.add(task)
        task.add_done_callback(self._publishing.discard)

    async def publish_now(self, kind: str, key: str) -> None:
        message = orjson.dumps({"kind": kind, "key": key})
        delay = 0.05
        for attempt in range(_PUBLISH_ATTEMPTS):
            try:
                await self._client.publish(self.channel, message)
                return
            except RedisError as exc:
                if attempt == _PUBLISH_ATTEMPTS - 1:
                    logger.error(
                        "could not announce a change of %s %r (%s); other instances pick it up at their next resync",
                        kind,
                        key,
                        exc,
                    )
                    return
                await asyncio.sleep(delay)
                delay *= 4

    async def aclose(self) -> None:
        if self._publishing:
            await asyncio.gather(*list(self._publishing), return_exceptions=True)
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _listen(self) -> None:
        backoff = 0.1
        while True:
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                # Whatever was published while we were not listening: read everything again.
                await self._resync()
                self._subscribed.set()
                backoff = 0.1
                await self._receive(pubsub)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._subscribed.clear()
                logger.warning("invalidation channel lost (%s: %s); reconnecting", type(exc).__name__, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
            finally:
                try:
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
                except Exception:  # pragma: no cover - the connection is already gone
                    pass

    async def _receive(self, pubsub: PubSub) -> None:
        loop = asyncio.get_running_loop()
        next_resync = loop.time() + self._resync_interval_s
        while True:
            timeout = max(0.0, next_resync - loop.time())
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=min(timeout, 1.0))
            if message is not None and message.get("type") == "message" and not await self._apply(message.get("data")):
                next_resync = min(next_resync, loop.time() + 1.0)
            if loop.time() >= next_resync:
                next_resync = loop.time() + self._resync_interval_s
                await self._resync()

    async def _apply(self, data: object) -> bool:
        """Apply one message; False when the store could not be read (a resync follows shortly)."""
        self.received += 1
        try:
            payload = orjson.loads(data if isinstance(data, bytes | str) else b"")
            kind, key = str(payload["kind"]), str(payload.get("key") or "")
        except (orjson.JSONDecodeError, KeyError, TypeError):
            logger.warning("ignoring a malformed invalidation message")
            return True
        try:
            await self._refresher.changed(kind, key)
        except Exception:
            logger.exception("could not apply the change of %s %r", kind, key)
            return False
        return True

    async def _resync(self) -> None:
        try:
            await self._refresher.reload()
        except Exception:
            logger.exception("could not reload customers and budgets; keeping the cached ones")
