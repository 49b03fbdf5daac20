"""Every management route needs the admin key: 401 without it or with a wrong one, 403 with no master key set."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.mgmt_support import assert_error, mgmt_config, proxy_on
from tests.support.proxy import RunningProxy, base_config, running_proxy

BLOCK = {"user_ids": ["someone"]}
ROUTES: list[tuple[str, str, dict[str, Any] | None]] = [
    ("POST", "/customer/new", {"user_id": "someone"}),
    ("GET", "/customer/info?end_user_id=someone", None),
    ("POST", "/customer/update", {"user_id": "someone"}),
    ("POST", "/customer/delete", BLOCK),
    ("GET", "/customer/list", None),
    ("POST", "/customer/block", BLOCK),
    ("POST", "/customer/unblock", BLOCK),
    ("GET", "/customer/daily/activity", None),
    ("POST", "/end_user/new", {"user_id": "someone"}),
    ("GET", "/end_user/info?end_user_id=someone", None),
    ("POST", "/end_user/update", {"user_id": "someone"}),
    ("POST", "/end_user/delete", BLOCK),
    ("GET", "/end_user/list", None),
    ("POST", "/end_user/block", BLOCK),
    ("POST", "/end_user/unblock", BLOCK),
    ("GET", "/end_user/daily/activity", None),
    ("POST", "/budget/new", {}),
    ("POST", "/budget/update", {"budget_id": "x"}),
    ("POST", "/budget/info", {"budgets": ["x"]}),
    ("GET", "/budget/list", None),
    ("GET", "/budget/settings?budget_id=x", None),
    ("POST", "/budget/delete", {"id": "x"}),
    ("GET", "/spend/logs", None),
    ("POST", "/global/spend/end_users", None),
]


def send(client: httpx.Client, method: str, path: str, body: dict[str, Any] | None, **headers: str) -> httpx.Response:
    return client.request(method, path, json=body, headers=headers)


def test_every_route_refuses_a_missing_or_wrong_key(shared_proxy: RunningProxy) -> None:
    with httpx.Client(base_url=shared_proxy.url, timeout=30) as client:
        for method, path, body in ROUTES:
            missing = send(client, method, path, body)
            assert_error(missing, 401, "auth_error", "Authentication Error, No api key passed in.")
            wrong = send(client, method, path, body, authorization="Bearer sk-not-the-key")
            assert_error(wrong, 401, "auth_error")
        # The key is also read from x-litellm-api-key, as LiteLLM does.
        assert client.get("/budget/list", headers={"x-litellm-api-key": shared_proxy.master_key}).status_code == 200


def test_every_route_is_forbidden_without_a_master_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LITELLM_MASTER_KEY", "HAIMAKER_MASTER_KEY"):
        monkeypatch.delenv(name, raising=False)
    # The database plays no part in this refusal: SQLite only.
    config = mgmt_config(f"sqlite:///{tmp_path / 'auth.db'}", general_settings={"master_key": None})
    with proxy_on(tmp_path, config) as proxy, httpx.Client(base_url=proxy.url, timeout=30) as client:
        for method, path, body in ROUTES:
            response = send(client, method, path, body, authorization="Bearer sk-1234")
            error = assert_error(response, 403, "auth_error")
            assert "general_settings.master_key" in error["message"]


def test_management_call_without_key_gets_401_before_its_body_is_parsed(tmp_path: Path) -> None:
    with running_proxy(tmp_path, base_config()) as proxy:
        with httpx.Client(base_url=proxy.url) as anonymous:
            response = anonymous.post(
                "/customer/new", content=b'{"user_id": "x",}', headers={"Content-Type": "application/json"}
            )
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "auth_error"
