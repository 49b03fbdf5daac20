"""The live sessions of the admin UI: which signed-in session ids are still valid (sign-out revokes one).

The UI cookie is signed, but a signature cannot be taken back: a copied cookie would work until it expires. So a
signed-in cookie also names a random session id, and a session counts only while its id is in this set.

- In memory (one process; several workers need Redis anyway): bounded (`MAX_LOCAL_SESSIONS`, the oldest forgotten
  first), and empty after a restart, which signs everyone out. That is the safe side: no file of live sessions
  to leak or restore.
- In Redis when the proxy has one (`general_settings.redis_url`): `<prefix>:ui:session:<sha256 of the id>`, with the
  session's lifetime as TTL, so every instance and worker agrees, a sign-out anywhere counts everywhere, and
  sessions survive a restart. Only a digest of the id is stored. An unreachable Redis signs nobody in: reads
  count as "not live" and sign-in fails (fail closed: an admin page is never worth a revoked session).
"""

from __future__ import annotations

import hashlib
import logging
from typing import Final

from redis.asyncio import Redis
from redis.exceptions import RedisError

from haimaker.clock import Clock

logger = logging.getLogger("haimaker.ui")

MAX_LOCAL_SESSIONS: Final = 10_000


class SessionStoreUnavailable(Exception):
    """The shared session store (Redis) could not record a sign-in."""


class LiveSessions:
    """The set of live UI session ids, in this process or in Redis."""

    def __init__(self, clock: Clock, redis: Redis | None = None, prefix: str = "haimaker") -> None:
        self._clock = clock
        self._redis = redis
        self._prefix = prefix
        self._local: dict[str, float] = {}  # id digest -> expiry (clock.time())

    def _key(self, session_id: str) -> str:
        return f"{self._prefix}:ui:session:{hashlib.sha256(session_id.encode()).hexdigest()}"

    async def add(self, session_id: str, ttl_s: int) -> None:
        """Record a new signed-in session; raises `SessionStoreUnavailable` if Redis cannot record it."""
        key = self._key(session_id)
        if self._redis is None:
            local = self._local
            local[key] = self._clock.time() + ttl_s
            while len(local) > MAX_LOCAL_SESSIONS:
                del local[next(iter(local))]
            return
        try:
            await self._redis.set(key, b"1", ex=ttl_s)
        except (RedisError, OSError) as exc:
            logger.warning("cannot record a UI session in Redis: %s", type(exc).__name__)
            raise SessionStoreUnavailable() from None

    async def is_live(self, session_id: str) -> bool:
        """Whether the session was signed in and not signed out since (nor expired)."""
        if not session_id:
            return False
        key = self._key(session_id)
        if self._redis is None:
            expires_at = self._local.get(key)
            if expires_at is None:
                return False
            if expires_at <= self._clock.time():
                del self._local[key]
                return False
            return True
        try:
            return bool(await self._redis.exists(key))
        except (RedisError, OSError) as exc:
            logger.warning("cannot check a UI session in Redis (treated as signed out): %s", type(exc).__name__)
            return False

    async def revoke(self, session_id: str) -> None:
        """Sign a session out, everywhere (best effort in Redis: a failure is logged)."""
        if not session_id:
            return
        key = self._key(session_id)
        self._local.pop(key, None)
        if self._redis is not None:
            try:
                await self._redis.delete(key)
            except (RedisError, OSError) as exc:
                logger.warning("cannot revoke a UI session in Redis: %s", type(exc).__name__)
