"""Fixtures of the service tests: a whole app (migrated store, services) on each engine, without a server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml

from haimaker.app import create_app
from haimaker.app_state import AppState
from haimaker.clock import FakeClock
from haimaker.config.loader import load_config
from tests.support.proxy import base_config


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def app_state(database_url: str, tmp_path: Path, clock: FakeClock) -> AsyncIterator[AppState]:
    """A started app on a fresh database of the parametrized engine (its lifespan migrates the store)."""
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(base_config(general_settings={"database_url": database_url})))
    app = create_app(load_config(path), clock=clock)
    async with app.api.router.lifespan_context(app.api):
        yield app.state
