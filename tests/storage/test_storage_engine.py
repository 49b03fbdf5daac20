"""Engine, URL and migration behaviour of `haimaker.storage.engine`, on both engines where a database is involved."""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text
from sqlalchemy.exc import StatementError
from sqlalchemy.ext.asyncio import AsyncEngine

from haimaker.storage import (
    BudgetRepository,
    ChargeBatch,
    CustomerRepository,
    SpendRepository,
    create_engine,
    normalize_database_url,
    upgrade,
)
from haimaker.storage.engine import alembic_config
from haimaker.storage.migrations import HEAD_REVISION
from haimaker.storage.tables import Base
from tests.support.factories import make_budget, make_customer, make_log


def test_missing_url_means_sqlite_file_in_config_dir(tmp_path: Path) -> None:
    assert normalize_database_url(None, config_dir=tmp_path) == f"sqlite+aiosqlite:///{tmp_path}/haimaker.db"
    assert normalize_database_url("  ", config_dir=tmp_path) == f"sqlite+aiosqlite:///{tmp_path}/haimaker.db"


def test_relative_config_dir_gives_absolute_sqlite_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert normalize_database_url(None, config_dir=Path("conf")) == f"sqlite+aiosqlite:///{tmp_path}/conf/haimaker.db"


@pytest.mark.parametrize(
    ("configured", "expected"),
    [
        ("sqlite:///data/x.db", "sqlite+aiosqlite:///data/x.db"),
        ("sqlite:////abs/x.db", "sqlite+aiosqlite:////abs/x.db"),
        ("postgresql://u:p@db:5432/app", "postgresql+asyncpg://u:p@db:5432/app"),
        ("postgres://u:p@db/app?sslmode=require", "postgresql+asyncpg://u:p@db/app?sslmode=require"),
        ("postgresql+asyncpg://u@db/app", "postgresql+asyncpg://u@db/app"),
        ("sqlite+aiosqlite:///x.db", "sqlite+aiosqlite:///x.db"),
        ("postgresql+psycopg://u@db/app", "postgresql+psycopg://u@db/app"),
    ],
)
def test_bare_schemes_get_async_drivers_and_explicit_drivers_are_kept(configured: str, expected: str) -> None:
    assert normalize_database_url(configured, config_dir=Path("/unused")) == expected


def test_malformed_url_error_does_not_echo_the_secret() -> None:
    with pytest.raises(ValueError) as excinfo:
        normalize_database_url("s3cret-password", config_dir=Path("/unused"))
    assert "s3cret" not in str(excinfo.value)


def test_unsupported_backend_is_refused() -> None:
    with pytest.raises(ValueError, match="unsupported database backend"):
        create_engine("mysql+aiomysql://u@db/app")


@pytest.mark.parametrize("url_kind", ["default", "memory"])
async def test_sqlite_connections_use_wal_normal_sync_busy_timeout_and_foreign_keys(
    tmp_path: Path, url_kind: str
) -> None:
    url = normalize_database_url(None, config_dir=tmp_path) if url_kind == "default" else "sqlite+aiosqlite://"
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            journal = (await connection.execute(text("PRAGMA journal_mode"))).scalar_one()
            synchronous = (await connection.execute(text("PRAGMA synchronous"))).scalar_one()
            busy_timeout = (await connection.execute(text("PRAGMA busy_timeout"))).scalar_one()
            foreign_keys = (await connection.execute(text("PRAGMA foreign_keys"))).scalar_one()
    finally:
        await engine.dispose()
    assert journal == ("wal" if url_kind == "default" else "memory")
    assert synchronous == 1  # NORMAL
    assert busy_timeout >= 1000
    assert foreign_keys == 1


async def _current_revisions(engine: AsyncEngine) -> set[str]:
    def read(connection: Connection) -> set[str]:
        return set(MigrationContext.configure(connection).get_current_heads())

    async with engine.connect() as connection:
        return await connection.run_sync(read)


def _head() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def test_head_revision_constant_matches_the_migrations() -> None:
    # `upgrade()` skips Alembic when the database is at HEAD_REVISION: a new migration must move it.
    assert HEAD_REVISION == _head()


async def test_upgrade_creates_schema_at_head_and_is_idempotent(database_url: str) -> None:
    await upgrade(database_url)
    await upgrade(database_url)
    engine = create_engine(database_url)
    try:
        assert await _current_revisions(engine) == {_head()}
    finally:
        await engine.dispose()


async def test_processes_starting_together_migrate_once(database_url: str) -> None:
    # Each upgrade() has its own engine, like separate processes; the lock serializes them.
    await asyncio.gather(*(upgrade(database_url) for _ in range(3)))
    engine = create_engine(database_url)
    try:
        assert await _current_revisions(engine) == {_head()}
    finally:
        await engine.dispose()


async def test_migrations_match_the_mapped_tables(migrated_database_url: str) -> None:
    def diff(connection: Connection) -> list[object]:
        context = MigrationContext.configure(connection, opts={"compare_type": True, "compare_server_default": False})
        return list(compare_metadata(context, Base.metadata))

    engine = create_engine(migrated_database_url)
    try:
        async with engine.connect() as connection:
            assert await connection.run_sync(diff) == []
    finally:
        await engine.dispose()


async def test_downgrade_to_base_then_upgrade_again(migrated_database_url: str) -> None:
    def downgrade_to_base(connection: Connection) -> None:
        command.downgrade(alembic_config(connection), "base")

    engine = create_engine(migrated_database_url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(downgrade_to_base)
        assert await _current_revisions(engine) == set()
        await upgrade(migrated_database_url)
        assert await _current_revisions(engine) == {_head()}
    finally:
        await engine.dispose()


async def test_naive_datetimes_are_refused(customers: CustomerRepository, spend: SpendRepository) -> None:
    with pytest.raises(StatementError, match="naive datetime"):
        await customers.create(make_customer(created_at=datetime(2026, 1, 1)))
    # The charge writer builds its own parameters (json_rows) and refuses them the same way.
    with pytest.raises(ValueError, match="naive datetime"):
        await spend.write_batch(ChargeBatch(logs=[make_log(start_time=datetime(2026, 1, 1))]))
    assert await spend.list_logs() == []


async def test_a_start_at_the_head_revision_never_imports_alembic(migrated_database_url: str) -> None:
    script = (
        "import asyncio, sys\n"
        "from haimaker.storage.engine import upgrade\n"
        f"asyncio.run(upgrade({migrated_database_url!r}))\n"
        "print('alembic' in sys.modules)\n"
    )
    child = await asyncio.create_subprocess_exec(sys.executable, "-c", script, stdout=asyncio.subprocess.PIPE)
    out, _ = await child.communicate()
    assert child.returncode == 0
    assert out.decode().strip() == "False"


async def test_datetimes_come_back_aware_utc_on_every_table(
    budgets: BudgetRepository, customers: CustomerRepository, spend: SpendRepository
) -> None:
    india = timezone(timedelta(hours=5, minutes=30))
    instant = datetime(2026, 3, 1, 5, 30, 0, 123456, tzinfo=india)
    budget = await budgets.create(make_budget(budget_reset_at=instant, created_at=instant, updated_at=instant))
    customer = await customers.create(make_customer(spend_reset_at=instant, created_at=instant))
    await spend.write_batch(ChargeBatch(logs=[make_log(request_id="r1", start_time=instant)]))

    stored_budget = await budgets.get(budget.budget_id)
    stored_customer = await customers.get(customer.user_id)
    [stored_log] = await spend.list_logs(request_id="r1")
    assert stored_budget is not None
    assert stored_customer is not None
    for value in (
        stored_budget.budget_reset_at,
        stored_budget.created_at,
        stored_budget.updated_at,
        stored_customer.spend_reset_at,
        stored_customer.created_at,
        stored_log.start_time,
    ):
        assert value == instant
        assert value is not None
        assert value.tzinfo is UTC
        assert value.microsecond == 123456
