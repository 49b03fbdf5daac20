"""Fixtures of the admin UI tests: one proxy for the plain-HTTP tests (it takes about a second to start), a fresh UI
client per test, and a signed-in one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.proxy import RunningProxy, base_config, running_proxy
from tests.ui.ui_client import UiClient


@pytest.fixture(scope="session")
def ui_proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningProxy]:
    path: Path = tmp_path_factory.mktemp("ui-proxy")
    with running_proxy(path, base_config()) as proxy:
        yield proxy


@pytest.fixture
def ui(ui_proxy: RunningProxy) -> Iterator[UiClient]:
    client = UiClient(ui_proxy)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def admin(ui: UiClient) -> UiClient:
    response = ui.sign_in()
    assert response.status_code == 303, response.text
    return ui
