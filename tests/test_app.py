"""The app's lifespan (`app.py`): one exit stack opens and closes everything, also when start-up fails part-way.

Evidence is read from the outside: the tasks left on the event loop, the connections PostgreSQL still sees from the
proxy's engine, Redis clients still connected under the proxy's name, and the logging record factory (the log
redaction must be uninstalled, or every later log line of the process goes through a dead app's redactor).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from haimaker.app import HaimakerApp, create_app
from haimaker.config.loader import ConfigError, load_config
from tests.support.databases import temporary_database
from tests.support.proxy import base_config

pytestmark = pytest.mark.postgres


def _app(tmp_path: Path, database_url: str, **sections: Any) -> HaimakerApp:
    general = {"database_url": database_url, **sections.pop("general_settings", {})}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(base_config(general_settings=general, **sections)))
    return create_app(load_config(path))


_OTHER_SESSIONS = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"


async def _connections_from_others(database_url: str) -> int:
    """Sessions PostgreSQL has open on the test's own database, other than the one asking."""
    probe = create_async_engine(database_url, poolclass=NullPool)
    try:
        async with probe.connect() as conn:
            others = await conn.execute(text(_OTHER_SESSIONS))
            return int(others.scalar_one())
    finally:
        await probe.dispose()


def _other_tasks() -> set[asyncio.Task[Any]]:
    return asyncio.all_tasks() - {asyncio.current_task()}


async def test_a_start_up_failing_after_the_tokenizer_load_leaves_nothing_open(tmp_path: Path) -> None:
    factory = logging.getLogRecordFactory()
    async with temporary_database("postgres", tmp_path) as url:
        async with _app(tmp_path, url).api.router.lifespan_context(_app(tmp_path, url).api):
            pass  # migrated and remembered
        # A damaged schema at the head revision: migrations are skipped, and loading the virtual keys (after the
        # tokenizer load has started) fails.
        engine = create_async_engine(url, poolclass=NullPool)
        async with engine.begin() as connection:
            await connection.execute(text("DROP TABLE virtual_keys"))
        await engine.dispose()
        before = _other_tasks()
        app = _app(tmp_path, url)
        with pytest.raises(Exception, match="virtual_keys"):
            async with app.api.router.lifespan_context(app.api):
                pytest.fail("the lifespan must not start")
        assert _other_tasks() <= before  # the tokenizer load, and nothing else, was started: it is gone too
        assert await _connections_from_others(url) == 0  # the engine is disposed
        assert logging.getLogRecordFactory() is factory  # the log redaction is uninstalled


async def test_a_refused_store_fails_start_up_and_leaves_nothing_open(tmp_path: Path) -> None:
    async with temporary_database("postgres", tmp_path) as url:
        app = _app(tmp_path, url)
        async with app.api.router.lifespan_context(app.api):
            pass  # remembers the store's id
        async with temporary_database("postgres", tmp_path) as other:
            # The remembered URL now names an emptied store: refused, not migrated into a new one.
            memory = tmp_path / "store-id"
            memory.write_text(memory.read_text().replace(url.rsplit("/", 1)[-1], other.rsplit("/", 1)[-1]))
            factory = logging.getLogRecordFactory()
            refused = _app(tmp_path, other)
            with pytest.raises(ConfigError, match="store id"):
                async with refused.api.router.lifespan_context(refused.api):
                    pytest.fail("the lifespan must not start")
            assert logging.getLogRecordFactory() is factory
            assert await _connections_from_others(other) == 0


@pytest.mark.redis
async def test_shutdown_closes_everything_start_up_opened(tmp_path: Path, redis_url: str, redis_prefix: str) -> None:
    factory = logging.getLogRecordFactory()
    before = _other_tasks()
    async with temporary_database("postgres", tmp_path) as url:
        app = _app(tmp_path, url, general_settings={"redis_url": redis_url, "redis_key_prefix": redis_prefix})
        async with app.api.router.lifespan_context(app.api):
            state = app.state
            assert state.cluster is not None and state.reset_job is not None
            assert {t.get_name() for t in _other_tasks() - before} >= {
                "haimaker-spend-recorder",
                "haimaker-store-monitor",
                "haimaker-reset-job",
            }
            assert await _connections_from_others(url) > 0
        assert _other_tasks() <= before  # jobs, recorder, Redis subscriber: all ended
        assert await _connections_from_others(url) == 0
        assert logging.getLogRecordFactory() is factory


async def test_a_route_served_before_the_lifespan_ran_answers_503_not_500(tmp_path: Path) -> None:
    # One `get_state` for the management API, health and the UI: the same clear refusal everywhere.
    app = _app(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'never-opened.db'}")
    transport = httpx.ASGITransport(app=app)  # runs no lifespan
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        key = {"Authorization": "Bearer sk-test-master-1234"}
        responses = [
            await client.get(path, headers=key) for path in ("/health/readiness", "/customer/list", "/ui/customers")
        ]
        responses.append(await client.post("/v1/chat/completions", headers=key, json={"model": "gpt-3.5-turbo"}))
        for response in responses:
            assert response.status_code == 503, response.url
            assert response.json()["error"]["type"] == "service_unavailable"
