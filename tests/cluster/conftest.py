"""Fixtures for the multi-process tests: a fresh PostgreSQL database and a Redis key prefix per deployment.

A deployment is what several instances share. The shared Redis is never flushed: keys live under the deployment's
own prefix and are deleted afterwards.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.cluster.cluster_setup import Deployment
from tests.support.databases import drop_database, make_database_url
from tests.support.redis_servers import PREFIX_STEM, REDIS_URL


def _require_redis() -> None:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        message = f"Redis is unreachable at {REDIS_URL}: {exc}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    finally:
        client.close()


def _delete_prefix(prefix: str) -> None:
    assert prefix.startswith(PREFIX_STEM)
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        for start in range(0, len(keys), 500):
            client.unlink(*keys[start : start + 500])
    finally:
        client.close()


def _deployment(directory: Path) -> Iterator[Deployment]:
    _require_redis()
    database_url = asyncio.run(make_database_url("postgres", directory))
    deployment = Deployment(database_url, REDIS_URL, f"{PREFIX_STEM}{uuid.uuid4().hex[:12]}")
    try:
        yield deployment
    finally:
        _delete_prefix(deployment.prefix)
        asyncio.run(drop_database(database_url))


@pytest.fixture(scope="module")
def module_deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """One deployment for the tests of a module that share a cluster."""
    yield from _deployment(tmp_path_factory.mktemp("deployment"))


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    """A deployment of one test's own."""
    yield from _deployment(tmp_path)
