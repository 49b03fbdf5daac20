"""Admin UI test helpers: a proxy per module, and an httpx client that signs in and submits forms like a browser.

The UI is driven over real HTTP (the proxy on 127.0.0.1), with the session cookie kept by the client and the CSRF token
read from the page, exactly as a browser would get it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support.proxy import RunningProxy, base_config, running_proxy

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_token(html: str) -> str:
    """The CSRF token of the first form on a page."""
    match = _CSRF.search(html)
    assert match, "no CSRF field on the page"
    return match.group(1)


class UiClient:
    """A cookie-keeping client for the UI; `submit` reads the form's CSRF token from the page first."""

    def __init__(self, proxy: RunningProxy) -> None:
        self.proxy = proxy
        self.http = httpx.Client(base_url=proxy.url, timeout=30)

    def close(self) -> None:
        self.http.close()

    def get(self, path: str, **params: str | int) -> httpx.Response:
        return self.http.get(path, params=params)

    def submit(self, page: str, action: str, data: dict[str, str]) -> httpx.Response:
        """GET `page`, then POST `data` with the page's CSRF token to `action` (no redirect followed)."""
        token = csrf_token(self.get(page).text)
        return self.http.post(action, data={"csrf_token": token, **data})

    def sign_in(self, key: str | None = None) -> httpx.Response:
        return self.submit("/ui/login", "/ui/login", {"key": key or self.proxy.master_key, "next": "/ui/customers"})


@pytest.fixture(scope="module")
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
