"""The admin UI test client: signs in and submits forms like a browser (cookie kept, CSRF token read from a page)."""

from __future__ import annotations

import re

import httpx

from tests.support.proxy import RunningProxy

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
        return self.http.get(path, params=params) if params else self.http.get(path)

    def submit(self, page: str, action: str, data: dict[str, str]) -> httpx.Response:
        """GET `page`, then POST `data` with the page's CSRF token to `action` (no redirect followed)."""
        token = csrf_token(self.get(page).text)
        return self.http.post(action, data={"csrf_token": token, **data})

    def sign_in(self, key: str | None = None) -> httpx.Response:
        return self.submit("/ui/login", "/ui/login", {"key": key or self.proxy.master_key, "next": "/ui/customers"})
