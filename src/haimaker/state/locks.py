"""One writer at a time for cluster-wide jobs (the budget reset job), by a lock in PostgreSQL or Redis.

    async with lock.hold("budget-resets") as held:
        if held:
            ...  # only one instance gets here at a time; the others skip this round

- `PostgresJobLock`: a session advisory lock (`pg_try_advisory_lock`) on a connection held for the job; it is
  released when the job ends or, if the process dies, when its connection closes. Preferred whenever the durable
  store is PostgreSQL: it works while Redis is down, and the jobs write to that store.
- `RedisJobLock`: `SET key token NX PX ttl`, released by a compare-and-delete script; a dead holder's lock expires
  after `ttl_s`. An unreachable Redis means "not held" (the job waits for the next round; request-time resets keep
  active customers exact meanwhile).

A lock never blocks: it is taken or skipped. Jobs stay idempotent anyway (a reset re-checks that it is due), so a
lease that runs out during a long job costs a repeated no-op, not a double reset.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from importlib import resources
from typing import Final, Protocol, TypeVar

from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

logger = logging.getLogger("haimaker.state")

LOCK_TTL_S: Final = 300.0


class JobLock(Protocol):
    def hold(self, name: str) -> AbstractAsyncContextManager[bool]:
        """Try to take the lock `name`: yields whether this instance holds it."""
        ...


T = TypeVar("T")


async def run_locked(lock: JobLock | None, name: str, work: Callable[[], Awaitable[T]]) -> T | None:
    """`work` under the cluster-wide lock `name` (at once when there is no lock: one instance); None when another
    instance holds it."""
    if lock is None:
        return await work()
    async with lock.hold(name) as held:
        return await work() if held else None


def advisory_key(name: str) -> int:
    """A stable signed 64-bit key for a lock name (PostgreSQL advisory locks are keyed by bigint)."""
    digest = hashlib.sha256(f"haimaker:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class PostgresJobLock:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    @asynccontextmanager
    async def hold(self, name: str) -> AsyncIterator[bool]:
        key = advisory_key(name)
        try:
            connection = await self._engine.connect()
        except (SQLAlchemyError, OSError) as exc:
            logger.warning("job lock %r not taken: database unreachable (%s)", name, exc)
            yield False
            return
        try:
            held = bool(await connection.scalar(text("SELECT pg_try_advisory_lock(:key)"), {"key": key}))
            # Session-level: end the implicit transaction so the connection is not left idle in one.
            await connection.commit()
            try:
                yield held
            finally:
                if held:
                    try:
                        await connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
                        await connection.commit()
                    except (SQLAlchemyError, OSError):  # the connection died: the lock died with it
                        pass
        finally:
            await connection.close()


class RedisJobLock:
    def __init__(self, client: Redis, prefix: str, *, ttl_s: float = LOCK_TTL_S) -> None:
        self._client = client
        self._prefix = prefix
        self._ttl_ms = int(ttl_s * 1000)
        self._unlock = client.register_script(resources.files(__package__).joinpath("lua/unlock.lua").read_text())

    @asynccontextmanager
    async def hold(self, name: str) -> AsyncIterator[bool]:
        key = f"{self._prefix}:lock:{name}"
        token = uuid.uuid4().hex
        try:
            held = bool(await self._client.set(key, token, nx=True, px=self._ttl_ms))
        except RedisError as exc:
            logger.warning("job lock %r not taken: Redis unreachable (%s)", name, exc)
            held = False
        try:
            yield held
        finally:
            if held:
                try:
                    await self._unlock(keys=[key], args=[token])
                except RedisError:  # it expires by itself
                    pass
