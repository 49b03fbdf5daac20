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

Each live session also records who signed in (its holder): `MASTER_HOLDER` for the master key or a configured admin
key, `key:<token>` for a virtual key (its SHA-256 hex, which the counters in Redis already name). The UI reads the
key's current role from it on every request, so a key revoked, blocked or demoted ends its sessions at once, and the
cookie never holds the key nor its hash.
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
MASTER_HOLDER: Final = "master"
_KEY_HOLDER_PREFIX: Final = "key:"
# What sessions recorded before holders existed hold in Redis: only the master key or an admin key could sign in then.
_LEGACY_HOLDER: Final = b"1"


def key_holder(token: str) -> str:
    """The holder of a session signed in with the virtual key whose SHA-256 hex is `token`."""
    return f"{_KEY_HOLDER_PREFIX}{token}"


def token_of_holder(holder: str) -> str | None:
    """The virtual key token a holder names (None for the master key)."""
    return holder[len(_KEY_HOLDER_PREFIX) :] if holder.startswith(_KEY_HOLDER_PREFIX) else None


class SessionStoreUnavailable(Exception):
    """The shared session store (Redis) could not record a sign-in."""


class LiveSessions:
    """The set of live UI session ids, in this process or in Redis."""

    def __init__(self, clock: Clock, redis: Redis | None = None, prefix: str = "haimaker") -> None:
        self._clock = clock
        self._redis = redis
        self._prefix = prefix
        self._local: dict[str, tuple[float, str]] = {}  # id digest -> (expiry (clock.time()), holder)

    def _key(self, session_id: str) -> str:
        return f"{self._prefix}:ui:session:{hashlib.sha256(session_id.encode()).hexdigest()}"

    async def add(self, session_id: str, ttl_s: int, holder: str = MASTER_HOLDER) -> None:
        """Record a new signed-in session and who signed in; raises `SessionStoreUnavailable` if Redis cannot."""
        key = self._key(session_id)
        if self._redis is None:
            local = self._local
            local[key] = (self._clock.time() + ttl_s, holder)
            while len(local) > MAX_LOCAL_SESSIONS:
                del local[next(iter(local))]
            return
        try:
            await self._redis.set(key, holder.encode(), ex=ttl_s)
        except (RedisError, OSError) as exc:
            logger.warning("cannot record a UI session in Redis: %s", type(exc).__name__)
            raise SessionStoreUnavailable() from None

    async def is_live(self, session_id: str) -> bool:
        """Whether the session was signed in and not signed out since (nor expired)."""
        return await self.holder_of(session_id) is not None

    async def holder_of(self, session_id: str) -> str | None:
        """Who signed the session in (`MASTER_HOLDER` or `key_holder(token)`); None when it is not live."""
        if not session_id:
            return None
        key = self._key(session_id)
        if self._redis is None:
            entry = self._local.get(key)
            if entry is None:
                return None
            expires_at, holder = entry
            if expires_at <= self._clock.time():
                del self._local[key]
                return None
            return holder
        try:
            value = await self._redis.get(key)
        except (RedisError, OSError) as exc:
            logger.warning("cannot check a UI session in Redis (treated as signed out): %s", type(exc).__name__)
            return None
        if value is None:
            return None
        if isinstance(value, str):  # a client built with decode_responses
            value = value.encode()
        return MASTER_HOLDER if value == _LEGACY_HOLDER else value.decode(errors="replace")

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
