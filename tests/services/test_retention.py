"""Spend-log retention (`services/retention.py`, `storage/spend_log_purge.py`) on both engines: only logs older than
the period go, in bounded batches, the rollups stay, one instance at a time, and the app runs the job when asked."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from haimaker.app import create_app
from haimaker.clock import FakeClock
from haimaker.config.loader import load_config
from haimaker.services.retention import LOCK_NAME, RetentionJob
from haimaker.state.locks import PostgresJobLock
from haimaker.storage import ChargeBatch, SpendRepository, create_engine, session_factory, upgrade
from haimaker.storage.spend_log_purge import SpendLogPurge
from tests.support.databases import temporary_database
from tests.support.factories import make_log
from tests.support.proxy import base_config

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
async def engine(migrated_database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(migrated_database_url)
    yield engine
    await engine.dispose()


def deletes_counted(engine: AsyncEngine) -> list[str]:
    """The DELETE statements the engine runs from now on."""
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("DELETE"):
            seen.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    return seen


def job(engine: AsyncEngine, **overrides: Any) -> RetentionJob:
    settings: dict[str, Any] = {
        "purge": SpendLogPurge(session_factory(engine)),
        "clock": FakeClock(NOW),
        "retention": timedelta(days=30),
        "interval_s": 86_400,
        "pause_s": 0,
    }
    return RetentionJob(**(settings | overrides))


async def test_retention_deletes_only_old_logs_in_batches_and_keeps_the_rollups(engine: AsyncEngine) -> None:
    spend = SpendRepository(session_factory(engine))
    cutoff = NOW - timedelta(days=30)
    old = [make_log(request_id=f"old{n:02d}", start_time=cutoff - timedelta(minutes=n + 1)) for n in range(23)]
    kept = [
        make_log(request_id="at-cutoff", start_time=cutoff),
        make_log(request_id="recent", start_time=NOW - timedelta(days=1)),
    ]
    await spend.write_batch(ChargeBatch(logs=old + kept))
    rollup_before = await spend.daily_activity()
    deletes = deletes_counted(engine)

    assert await job(engine, batch_size=10).run_once() == 23
    assert len(deletes) == 3  # 10 + 10 + 3: the short batch says nothing is left
    assert sorted(log.request_id for log in await spend.list_logs()) == ["at-cutoff", "recent"]
    assert await spend.daily_activity() == rollup_before
    assert await spend.top_end_users(start_date=date(2026, 1, 1)) == [("alice", 25, 25_000)]

    assert await job(engine, batch_size=10).run_once() == 0  # nothing older left: one statement, no more
    assert len(deletes) == 4


@pytest.mark.postgres
async def test_retention_runs_on_one_instance_at_a_time(tmp_path: Path) -> None:
    async with temporary_database("postgres", tmp_path) as url:
        await upgrade(url)
        engine = create_engine(url)
        try:
            spend = SpendRepository(session_factory(engine))
            await spend.write_batch(ChargeBatch(logs=[make_log(start_time=NOW - timedelta(days=40))]))
            lock = PostgresJobLock(engine)
            other_instance = job(engine, lock=PostgresJobLock(engine))
            async with lock.hold(LOCK_NAME) as held:
                assert held
                assert await other_instance.run_once() is None  # skipped: another instance is deleting
                assert len(await spend.list_logs()) == 1
            assert await other_instance.run_once() == 1
        finally:
            await engine.dispose()


async def test_the_app_runs_the_job_when_a_retention_period_is_set(database_url: str, tmp_path: Path) -> None:
    general = {
        "database_url": database_url,
        "maximum_spend_logs_retention_period": 30,
        "maximum_spend_logs_retention_interval": "6h",
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(base_config(general_settings=general)))
    app = create_app(load_config(path))
    async with app.api.router.lifespan_context(app.api):
        names = {task.get_name() for task in asyncio.all_tasks()}
        assert "haimaker-spend-log-retention" in names
    assert "haimaker-spend-log-retention" not in {task.get_name() for task in asyncio.all_tasks()}

    path.write_text(yaml.safe_dump(base_config(general_settings={"database_url": database_url})))
    app = create_app(load_config(path))
    async with app.api.router.lifespan_context(app.api):
        assert "haimaker-spend-log-retention" not in {task.get_name() for task in asyncio.all_tasks()}
