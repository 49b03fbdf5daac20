"""The live set of admin UI sessions: sign-in adds, sign-out revokes, expiry and a bounded table (in memory), and
the same set shared through Redis."""

from __future__ import annotations

import hashlib
import socket

import pytest
from redis.asyncio import Redis

from haimaker.clock import FakeClock
from haimaker.state.ui_sessions import (
    MASTER_HOLDER,
    MAX_LOCAL_SESSIONS,
    LiveSessions,
    SessionStoreUnavailable,
    key_holder,
    token_of_holder,
)


async def test_a_session_is_live_from_sign_in_until_sign_out() -> None:
    sessions = LiveSessions(FakeClock())
    assert not await sessions.is_live("s1")
    await sessions.add("s1", 60)
    assert await sessions.is_live("s1")
    assert not await sessions.is_live("s2") and not await sessions.is_live("")
    await sessions.revoke("s1")
    assert not await sessions.is_live("s1")


async def test_a_session_ends_with_its_lifetime() -> None:
    clock = FakeClock()
    sessions = LiveSessions(clock)
    await sessions.add("s1", 60)
    clock.advance(59)
    assert await sessions.is_live("s1")
    clock.advance(1)
    assert not await sessions.is_live("s1")


async def test_a_session_remembers_who_signed_in_until_sign_out() -> None:
    sessions = LiveSessions(FakeClock())
    await sessions.add("by-master", 60)
    await sessions.add("by-key", 60, key_holder("ab" * 32))
    assert await sessions.holder_of("by-master") == MASTER_HOLDER
    holder = await sessions.holder_of("by-key")
    assert holder is not None and token_of_holder(holder) == "ab" * 32
    assert token_of_holder(MASTER_HOLDER) is None
    await sessions.revoke("by-key")
    assert await sessions.holder_of("by-key") is None


async def test_the_local_table_is_bounded_and_forgets_the_oldest_first() -> None:
    sessions = LiveSessions(FakeClock())
    for i in range(MAX_LOCAL_SESSIONS + 2):
        await sessions.add(f"s{i}", 60)
    assert not await sessions.is_live("s0") and not await sessions.is_live("s1")
    assert await sessions.is_live("s2") and await sessions.is_live(f"s{MAX_LOCAL_SESSIONS + 1}")


@pytest.mark.redis
async def test_in_redis_every_instance_sees_a_sign_out_and_only_a_digest_is_stored(
    redis_url: str, redis_prefix: str
) -> None:
    first_client, second_client = Redis.from_url(redis_url), Redis.from_url(redis_url)
    try:
        first = LiveSessions(FakeClock(), first_client, redis_prefix)
        second = LiveSessions(FakeClock(), second_client, redis_prefix)
        await first.add("secret-session-id", 60)
        assert await second.is_live("secret-session-id")
        keys = [key async for key in first_client.scan_iter(match=f"{redis_prefix}:ui:session:*")]
        assert len(keys) == 1 and b"secret-session-id" not in keys[0]
        assert 0 < await first_client.ttl(keys[0]) <= 60
        await second.revoke("secret-session-id")
        assert not await first.is_live("secret-session-id")
        await first.add("by-key", 60, key_holder("cd" * 32))
        assert await second.holder_of("by-key") == key_holder("cd" * 32)
        # A session recorded before holders existed (value "1") was the master key's: only admins could sign in.
        legacy = f"{redis_prefix}:ui:session:{hashlib.sha256(b'legacy-session').hexdigest()}"
        await first_client.set(legacy, b"1", ex=60)
        assert await second.holder_of("legacy-session") == MASTER_HOLDER
    finally:
        await first_client.aclose()
        await second_client.aclose()


async def test_an_unreachable_redis_signs_nobody_in() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = Redis.from_url(f"redis://127.0.0.1:{port}/0", socket_connect_timeout=1)
    try:
        sessions = LiveSessions(FakeClock(), client, "haimaker-t-down")
        with pytest.raises(SessionStoreUnavailable):
            await sessions.add("s1", 60)
        assert not await sessions.is_live("s1")
        await sessions.revoke("s1")  # logged, never raised
    finally:
        await client.aclose()
