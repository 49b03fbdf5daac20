"""`config check`'s look into the store for the default budget, in process: held, missing, and unreadable."""

from __future__ import annotations

from pathlib import Path

import yaml

from haimaker.cli import _missing_default_budget
from haimaker.config.loader import Settings, load_config
from haimaker.storage.budgets_repo import BudgetRepository
from haimaker.storage.engine import create_engine, session_factory, upgrade
from haimaker.storage.records import Budget

MODELS = [{"model_name": "local", "litellm_params": {"model": "mock/local"}}]


def _settings(tmp_path: Path, database_url: str) -> Settings:
    path = tmp_path / "config.yaml"
    config = {
        "model_list": MODELS,
        "general_settings": {"database_url": database_url},
        "litellm_settings": {"max_end_user_budget_id": "free"},
    }
    path.write_text(yaml.safe_dump(config))
    return load_config(path, env={})


async def test_a_store_holding_the_default_budget_passes_and_one_without_it_is_named(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"
    await upgrade(url)
    settings = _settings(tmp_path, url)
    missing = await _missing_default_budget(settings)
    assert missing is not None and missing.startswith("litellm_settings.max_end_user_budget_id: The default end-user")

    engine = create_engine(url)
    try:
        await BudgetRepository(session_factory(engine)).create(Budget(budget_id="free", rpm_limit=5))
    finally:
        await engine.dispose()
    assert await _missing_default_budget(settings) is None


async def test_a_store_that_cannot_be_read_is_said_so_without_its_password(tmp_path: Path) -> None:
    settings = _settings(tmp_path, "postgresql://app:s3cret-pw@127.0.0.1:1/app")
    problem = await _missing_default_budget(settings)
    assert problem is not None and problem.startswith("database_url: cannot read the store")
    assert "s3cret-pw" not in problem
