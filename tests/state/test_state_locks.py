"""Cluster-wide job locks: of several instances trying at once, exactly one holds the lock; it is free again after."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from redis.asyncio import Redis

from haimaker.state.locks import JobLock, PostgresJobLock, RedisJobLock
from haimaker.storage.engine import create_engine
from tests.support.databases import temporary_database


async def _contend(locks: list[JobLock], name: str = "budget-resets") -> list[bool]:
    """Every lock tries at once and keeps what it got until all have tried."""
    everyone_tried = asyncio.Event()
    tried = 0

    async def one(lock: JobLock) -> bool:
        nonlocal tried
        async with lock.hold(name) as held:
            tried += 1
            if tried == len(locks):
                everyone_tried.set()
            await everyone_tried.wait()
            return held

    return await asyncio.gather(*(one(lock) for lock in locks))


@pytest.mark.redis
async def test_one_of_five_instances_holds_the_redis_lock(redis_client: Redis, redis_prefix: str) -> None:
    locks: list[JobLock] = [RedisJobLock(redis_client, redis_prefix) for _ in range(5)]
    assert sorted(await _contend(locks)) == [False] * 4 + [True]
    assert sorted(await _contend(locks)) == [False] * 4 + [True]  # released after each round
    assert sorted(await _contend(locks, "another-job")) == [False] * 4 + [True]


@pytest.mark.redis
async def test_a_dead_holders_redis_lock_expires(redis_client: Redis, redis_prefix: str) -> None:
    short = RedisJobLock(redis_client, redis_prefix, ttl_s=0.2)
    await redis_client.set(f"{redis_prefix}:lock:budget-resets", "a-dead-instance", px=200)
    async with short.hold("budget-resets") as held:
        assert not held
    await asyncio.sleep(0.3)
    async with short.hold("budget-resets") as held:
        assert held


@pytest.fixture
async def postgres_url(tmp_path: Path) -> AsyncIterator[str]:
    async with temporary_database("postgres", tmp_path) as url:
        yield url


@pytest.mark.postgres
async def test_one_of_five_instances_holds_the_postgres_lock(postgres_url: str) -> None:
    async with AsyncExitStack() as stack:
        engines = [create_engine(postgres_url) for _ in range(5)]
        for engine in engines:
            stack.push_async_callback(engine.dispose)
        locks: list[JobLock] = [PostgresJobLock(engine) for engine in engines]
        assert sorted(await _contend(locks)) == [False] * 4 + [True]
        assert sorted(await _contend(locks)) == [False] * 4 + [True]
