"""Redis for tests: the shared server at 127.0.0.1:6379 under a key prefix of the test's own, or a private server.

Several test runs share the Redis at 127.0.0.1:6379, so a test never flushes it: it gets a unique prefix
(`haimaker-t-<hex>`) and its keys are deleted afterwards (SCAN + UNLINK on the prefix). Override the server with
`HAIMAKER_TEST_REDIS_URL`. When it is unreachable, Redis tests are skipped, or fail when `CI=true`.

`private_redis()` starts a `redis-server` of the test's own on a free port (no persistence), for tests that stop
and restart it.

Its fixtures (redis_prefix, redis_url) reach every test folder through `pytest_plugins` in
tests/conftest.py.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Final

import pytest
from redis.asyncio import Redis

from tests.support.process import free_port

REDIS_URL: Final = os.environ.get("HAIMAKER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
PREFIX_STEM: Final = "haimaker-t-"


def _unavailable(message: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


async def delete_prefix(client: Redis, prefix: str) -> int:
    """Delete every key under `prefix` (never anything else)."""
    if not prefix.startswith(PREFIX_STEM):
        raise ValueError(f"refusing to delete {prefix!r}: not a test prefix")
    deleted = 0
    async for batch in _scan_batches(client, f"{prefix}:*"):
        deleted += int(await client.unlink(*batch))
    return deleted


async def _scan_batches(client: Redis, pattern: str) -> AsyncIterator[list[bytes]]:
    batch: list[bytes] = []
    async for key in client.scan_iter(match=pattern, count=500):
        batch.append(key)
        if len(batch) >= 500:
            yield batch
            batch = []
    if batch:
        yield batch


@pytest.fixture
async def redis_url() -> str:
    """The shared test Redis (skipped, or failed on CI, when unreachable)."""
    client = Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        await client.ping()
    except Exception as exc:
        _unavailable(f"Redis is unreachable at {REDIS_URL}: {exc}")
    finally:
        await client.aclose()
    return REDIS_URL


@pytest.fixture
async def redis_prefix(redis_url: str) -> AsyncIterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards."""
    prefix = f"{PREFIX_STEM}{uuid.uuid4().hex[:12]}"
    yield prefix
    client = Redis.from_url(redis_url)
    try:
        await delete_prefix(client, prefix)
    finally:
        await client.aclose()


class PrivateRedis:
    """A `redis-server` of one test's own, without persistence: `stop()` loses its data, `start()` brings it back."""

    def __init__(self, directory: Path) -> None:
        executable = shutil.which("redis-server")
        if executable is None:
            _unavailable("redis-server is not installed")
        self._executable = executable or "redis-server"
        self._directory = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._process = subprocess.Popen(
            [
                self._executable,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--dir",
                str(self._directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return
            time.sleep(0.02)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    @property
    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def stop(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait(10)
            self._process = None


@contextlib.contextmanager
def private_redis(directory: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(directory)
    server.start()
    try:
        yield server
    finally:
        server.stop()
