"""Store identity: a proxy never takes a deleted, replaced or emptied store for a new one (issue 10, finding 4)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from sqlalchemy import text

from haimaker.storage.engine import create_engine, upgrade
from haimaker.storage.store_identity import (
    STORE_ID_FILENAME,
    StoreIdentityError,
    remember_store,
    remembered_store_id,
    store_key,
    verify_store,
)
from tests.support.databases import DatabaseKind, temporary_database


async def _start(url: str, memory: Path) -> str:
    """What the app does at start: verify, migrate, remember."""
    await verify_store(url, memory)
    await upgrade(url)
    return await remember_store(url, memory)


async def test_the_same_store_is_accepted_at_every_start(migrated_database_url: str, tmp_path: Path) -> None:
    memory = tmp_path / STORE_ID_FILENAME
    first = await _start(migrated_database_url, memory)
    assert await _start(migrated_database_url, memory) == first
    assert remembered_store_id(memory, migrated_database_url) == first


def test_a_store_is_remembered_by_its_url_without_the_password() -> None:
    key = store_key("postgresql+asyncpg://haimaker:s3cret-pw@db.internal:5432/spend")
    assert "s3cret-pw" not in key and key.startswith("postgresql://haimaker:***@db.internal")


async def test_an_emptied_store_is_refused(database_kind: DatabaseKind, tmp_path: Path) -> None:
    memory = tmp_path / STORE_ID_FILENAME
    async with temporary_database(database_kind, tmp_path) as url:
        await _start(url, memory)
        engine = create_engine(url)
        try:
            async with engine.begin() as connection:
                for table in ("dead_letters", "haimaker_meta", "daily_customer_spend", "spend_logs", "customers"):
                    await connection.execute(text(f"DROP TABLE {table}"))
                await connection.execute(text("DROP TABLE budgets"))
                await connection.execute(text("DROP TABLE alembic_version"))
        finally:
            await engine.dispose()
        with pytest.raises(StoreIdentityError, match=r"no store id: it is new or was emptied.*delete .*store-id"):
            await _start(url, memory)


async def test_a_missing_sqlite_file_is_refused_and_not_created(tmp_path: Path) -> None:
    memory = tmp_path / STORE_ID_FILENAME
    db = tmp_path / "haimaker.db"
    url = f"sqlite+aiosqlite:///{db}"
    await _start(url, memory)
    db.unlink()
    with pytest.raises(StoreIdentityError, match="is missing"):
        await _start(url, memory)
    assert not db.exists()


async def test_another_store_at_the_same_path_is_refused_and_a_copy_of_the_same_accepted(tmp_path: Path) -> None:
    memory = tmp_path / STORE_ID_FILENAME
    db, other, backup = tmp_path / "haimaker.db", tmp_path / "other.db", tmp_path / "backup.db"
    url = f"sqlite+aiosqlite:///{db}"
    await _start(url, memory)
    await upgrade(f"sqlite+aiosqlite:///{other}")
    shutil.copy(db, backup)
    shutil.copy(other, db)
    with pytest.raises(StoreIdentityError, match="its store id is"):
        await _start(url, memory)
    shutil.copy(backup, db)  # restored from a backup: the same store
    await _start(url, memory)


async def test_starting_fresh_on_purpose_is_deleting_the_memory(tmp_path: Path) -> None:
    memory = tmp_path / STORE_ID_FILENAME
    db = tmp_path / "haimaker.db"
    url = f"sqlite+aiosqlite:///{db}"
    first = await _start(url, memory)
    db.unlink()
    memory.unlink()
    assert await _start(url, memory) != first
