"""Cache coherence: an admin write announced by one instance is in every instance's catalog within a second,
and a subscriber that reconnects reloads everything it may have missed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from pathlib import Path

import pytest
from redis.asyncio import Redis

from haimaker.accounting.store_sink import StoreSink
from haimaker.clock import SystemClock
from haimaker.state.catalog import Catalog
from haimaker.state.invalidation import CatalogRefresher, InvalidationBus
from haimaker.state.redis import connect
from haimaker.storage.engine import create_engine, session_factory, upgrade
from haimaker.storage.records import Budget, Customer
from tests.support.databases import temporary_database
from tests.support.redis_servers import private_redis

pytestmark = pytest.mark.redis


class Instance:
    """One instance's catalog and bus, on the shared store."""

    def __init__(self, client: Redis, prefix: str, sink: StoreSink) -> None:
        self.catalog = Catalog()
        self.catalog.attach_store(sink.customers.get_many)
        self.forgotten: list[str] = []
        self.bus = InvalidationBus(client, prefix, CatalogRefresher(self.catalog, sink, self.forgotten.append))


@pytest.fixture
async def sink(tmp_path: Path) -> AsyncIterator[StoreSink]:
    async with temporary_database("sqlite", tmp_path) as url:
        await upgrade(url)
        engine = create_engine(url)
        yield StoreSink(session_factory(engine), SystemClock())
        await engine.dispose()


async def _until(predicate: Callable[[], bool], timeout_s: float = 1.0) -> float:
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"not seen within {timeout_s}s")
        await asyncio.sleep(0.005)
    return time.monotonic() - started


async def _instances(stack: AsyncExitStack, client: Redis, prefix: str, sink: StoreSink, n: int) -> list[Instance]:
    instances = [Instance(client, prefix, sink) for _ in range(n)]
    for instance in instances:
        instance.bus.start()
        stack.push_async_callback(instance.bus.aclose)
        await instance.bus.wait_subscribed()
    return instances


async def test_block_budget_edit_and_delete_reach_every_instance_within_a_second(
    redis_client: Redis, redis_prefix: str, sink: StoreSink
) -> None:
    await sink.budgets.create(Budget(budget_id="tier", max_budget=10_000))
    await sink.customers.create(Customer(user_id="alice", budget_id="tier"))
    async with AsyncExitStack() as stack:
        first, second, third = await _instances(stack, redis_client, redis_prefix, sink, 3)
        for instance in (second, third):  # in their working sets (a message refreshes only a cached customer)
            alice = await instance.catalog.lookup("alice")
            assert alice is not None and not alice.blocked

        await sink.customers.set_blocked(["alice"], True)
        first.bus.publish("customer", "alice")
        for other in (second, third):
            catalog = other.catalog
            assert await _until(lambda: catalog.customers["alice"].blocked) < 1.0  # noqa: B023

        await sink.budgets.update("tier", {"max_budget": 5_000})
        first.bus.publish("budget", "tier")
        assert await _until(lambda: third.catalog.limits_for("alice").max_budget == 5_000) < 1.0

        await sink.customers.delete_many(["alice"])
        first.bus.publish("customer", "alice")
        assert await _until(lambda: "alice" not in second.catalog.customers) < 1.0
        assert "alice" in second.forgotten

        await sink.budgets.delete("tier")
        first.bus.publish("budget", "tier")
        assert await _until(lambda: "tier" not in third.catalog.budgets) < 1.0


async def test_a_reconnecting_subscriber_reloads_what_it_missed(tmp_path: Path, sink: StoreSink) -> None:
    with private_redis(tmp_path) as server:
        client = connect(server.url)
        try:
            async with AsyncExitStack() as stack:
                (instance,) = await _instances(stack, client, "haimaker-t-reconnect", sink, 1)
                assert await instance.catalog.lookup("bob") is None  # remembered as absent
                server.stop()
                await _until(lambda: not instance.bus.is_subscribed, timeout_s=3)
                # Written while the channel was down: no message will ever say so.
                await sink.customers.create(Customer(user_id="bob", blocked=True))
                server.start()
                await instance.bus.wait_subscribed(timeout_s=5)
                bob = await instance.catalog.lookup("bob")
                assert bob is not None and bob.blocked
        finally:
            await client.aclose()


async def test_a_resync_rereads_only_the_cached_customers_in_batches(
    sink: StoreSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    import haimaker.state.invalidation as invalidation

    monkeypatch.setattr(invalidation, "RESYNC_BATCH", 2)
    long_ago = datetime(2026, 1, 1, tzinfo=UTC)
    for user_id in ("kept", "edited", "deleted", "idle-1", "idle-2"):
        await sink.customers.create(Customer(user_id=user_id, created_at=long_ago))
    catalog = Catalog()
    catalog.attach_store(sink.customers.get_many)
    for user_id in ("kept", "edited", "deleted"):
        await catalog.lookup(user_id)
    fresh = Customer(user_id="fresh", created_at=datetime.now(UTC))  # first seen in traffic, not written yet
    catalog.put_new_customer(fresh)
    await sink.customers.set_blocked(["edited"], True)  # messages about these two were missed
    await sink.customers.delete_many(["deleted"])
    reads: list[list[str]] = []
    get_many = sink.customers.get_many

    async def counted(user_ids: Sequence[str]) -> dict[str, Customer]:
        reads.append(sorted(user_ids))
        return await get_many(user_ids)

    monkeypatch.setattr(sink.customers, "get_many", counted)
    forgotten: list[str] = []

    await CatalogRefresher(catalog, sink, forgotten.append).reload()

    assert sorted(user_id for batch in reads for user_id in batch) == ["deleted", "edited", "fresh", "kept"]
    assert max(len(batch) for batch in reads) == 2  # the idle customers of the store are never read
    assert catalog.customers["edited"].blocked
    assert "deleted" not in catalog.customers and forgotten == ["deleted"]
    assert catalog.customers["fresh"] is fresh  # its first charge is still on its way to the store


async def test_a_message_about_a_customer_not_cached_here_does_not_cache_it(sink: StoreSink) -> None:
    await sink.customers.create(Customer(user_id="elsewhere", created_at=datetime(2026, 1, 1, tzinfo=UTC)))
    catalog = Catalog()
    catalog.attach_store(sink.customers.get_many)
    assert await catalog.lookup("newcomer") is None  # remembered as absent
    refresher = CatalogRefresher(catalog, sink, lambda user_id: None)

    await refresher.changed("customer", "elsewhere")
    await sink.customers.create(Customer(user_id="newcomer", created_at=datetime(2026, 1, 1, tzinfo=UTC)))
    await refresher.changed("customer", "newcomer")

    assert "elsewhere" not in catalog.customers
    assert not catalog.is_absent("newcomer") and await catalog.lookup("newcomer") is not None
