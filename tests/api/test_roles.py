"""Every role against every route class, over real HTTP on both engines: the master key reaches everything; a
`management` key the admin API and the UI, never an LLM; a `read_only` key the admin API's reads and the UI, never a
write or an LLM; an `llm_api` or `default` key LLM routes only. No key, an unknown key and a blocked key get 401.

A key that may call LLMs never reaches an admin route, and the other way round; `allowed_routes` narrow a role and
never widen it; admin keys created, blocked, deleted or demoted take effect on the next request, without a restart.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.api.mgmt_support import CHAT, assert_error, new_id
from tests.support.proxy import RunningProxy
from tests.ui.ui_client import UiClient

ALLOWED_MESSAGE = "Virtual key is not allowed to call this route."

# The roles a request can present: a key of each key_type, the master key, none, an unknown key and a blocked key.
ROLES = ("master", "management", "read_only", "llm_api", "default", "no_key", "unknown", "blocked")

Request = Callable[[httpx.Client], httpx.Response]


def _llm(client: httpx.Client) -> httpx.Response:
    return client.post("/chat/completions", json=CHAT)


def _llm_v1(client: httpx.Client) -> httpx.Response:
    return client.post("/v1/chat/completions", json=CHAT)


def _models(client: httpx.Client) -> httpx.Response:
    return client.get("/models")


def _admin_read(client: httpx.Client) -> httpx.Response:
    return client.get("/customer/list")


def _admin_read_spend(client: httpx.Client) -> httpx.Response:
    return client.get("/spend/logs")


def _admin_write(client: httpx.Client) -> httpx.Response:
    return client.post("/customer/new", json={"user_id": new_id("roles")})


def _budget_write(client: httpx.Client) -> httpx.Response:
    return client.post("/budget/new", json={"budget_id": new_id("roles-tier")})


def _key_read(client: httpx.Client) -> httpx.Response:
    return client.get("/key/list")


def _key_write(client: httpx.Client) -> httpx.Response:
    return client.post("/key/generate", json={})


ROUTES: dict[str, Request] = {
    "llm": _llm,
    "llm_v1": _llm_v1,
    "models": _models,
    "admin_read": _admin_read,
    "admin_read_spend": _admin_read_spend,
    "admin_write": _admin_write,
    "budget_write": _budget_write,
    "key_read": _key_read,
    "key_write": _key_write,
}

_LLM_ONLY = {"llm": 200, "llm_v1": 200, "models": 200}
_ADMIN_READS = {"admin_read": 200, "admin_read_spend": 200, "key_read": 200}
_ADMIN_WRITES = {"admin_write": 200, "budget_write": 200, "key_write": 200}
_EVERYTHING = dict.fromkeys(ROUTES, 401)

# role -> route -> status; anything not listed for a valid key is 403 (outside its role).
EXPECTED: dict[str, dict[str, int]] = {
    "master": {**_LLM_ONLY, **_ADMIN_READS, **_ADMIN_WRITES},
    "management": {**dict.fromkeys(ROUTES, 403), **_ADMIN_READS, **_ADMIN_WRITES},
    "read_only": {**dict.fromkeys(ROUTES, 403), **_ADMIN_READS},
    "llm_api": {**dict.fromkeys(ROUTES, 403), **_LLM_ONLY},
    "default": {**dict.fromkeys(ROUTES, 403), **_LLM_ONLY},
    "no_key": _EVERYTHING,
    "unknown": _EVERYTHING,
    "blocked": _EVERYTHING,
}

# Signing in to the UI: 303 to the page asked for, 403 for a key without a UI role, 401 for a key that is none.
UI_SIGN_IN: dict[str, int] = {
    "master": 303,
    "management": 303,
    "read_only": 303,
    "llm_api": 403,
    "default": 403,
    "no_key": 401,
    "unknown": 401,
    "blocked": 401,
}


def generate(proxy: RunningProxy, **fields: Any) -> dict[str, Any]:
    with proxy.client() as api:
        response = api.post("/key/generate", json=fields)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.fixture(scope="module")
def role_keys(shared_proxy: RunningProxy) -> dict[str, str | None]:
    """The key each role presents (None: no key at all)."""
    keys: dict[str, str | None] = {"master": shared_proxy.master_key, "no_key": None}
    for key_type in ("management", "read_only", "llm_api", "default"):
        keys[key_type] = generate(shared_proxy, key_type=key_type, key_alias=new_id(key_type))["key"]
    keys["unknown"] = "sk-" + uuid.uuid4().hex
    blocked = generate(shared_proxy, key_type="management")
    with shared_proxy.client() as api:
        assert api.post("/key/block", json={"key": blocked["token"]}).status_code == 200
    keys["blocked"] = blocked["key"]
    return keys


def client_as(proxy: RunningProxy, key: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    return httpx.Client(base_url=proxy.url, headers=headers, timeout=30)


@pytest.fixture
def as_role(shared_proxy: RunningProxy, role_keys: dict[str, str | None]) -> Iterator[Callable[[str], httpx.Client]]:
    clients: list[httpx.Client] = []

    def make(role: str) -> httpx.Client:
        client = client_as(shared_proxy, role_keys[role])
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.mark.parametrize("route", list(ROUTES))
@pytest.mark.parametrize("role", ROLES)
def test_every_role_against_every_route_class(as_role: Callable[[str], httpx.Client], role: str, route: str) -> None:
    expected = EXPECTED[role][route]
    response = ROUTES[route](as_role(role))
    if expected == 200:
        assert response.status_code == 200, response.text
    elif expected == 403:
        error = assert_error(response, 403, "auth_error")
        assert error["message"].startswith(ALLOWED_MESSAGE), error
    else:
        assert_error(response, 401, "auth_error")


@pytest.mark.parametrize("role", ROLES)
def test_every_role_signing_in_to_the_ui(
    shared_proxy: RunningProxy, role_keys: dict[str, str | None], role: str
) -> None:
    ui = UiClient(shared_proxy)
    try:
        form = {"key": role_keys[role] or "", "next": "/ui/customers"}
        response = ui.submit("/ui/login", "/ui/login", form)
        assert response.status_code == UI_SIGN_IN[role], response.text
        page = ui.get("/ui/customers")
        if UI_SIGN_IN[role] == 303:
            assert page.status_code == 200, page.text
        else:
            assert page.status_code == 303 and page.headers["location"].startswith("/ui/login")
    finally:
        ui.close()


def test_llm_keys_never_reach_an_admin_route_and_admin_keys_never_an_llm(
    shared_proxy: RunningProxy, role_keys: dict[str, str | None]
) -> None:
    for role in ("llm_api", "default"):
        with client_as(shared_proxy, role_keys[role]) as client:
            for route in ("admin_read", "admin_read_spend", "admin_write", "key_read", "key_write", "budget_write"):
                error = assert_error(ROUTES[route](client), 403, "auth_error")
                assert "llm_api_routes" in error["message"]
    for role in ("management", "read_only"):
        with client_as(shared_proxy, role_keys[role]) as client:
            for route in ("llm", "llm_v1", "models"):
                assert_error(ROUTES[route](client), 403, "auth_error")
    # Nothing a refused call asked for happened: no customer was created by a refused write.
    user = new_id("never")
    with client_as(shared_proxy, role_keys["read_only"]) as reader:
        assert reader.post("/customer/new", json={"user_id": user}).status_code == 403
        assert reader.get("/customer/info", params={"end_user_id": user}).status_code == 404


def test_allowed_routes_narrow_a_role(shared_proxy: RunningProxy) -> None:
    only_chat = generate(shared_proxy, allowed_routes=["/chat/completions"])["key"]
    with client_as(shared_proxy, only_chat) as client:
        assert _llm(client).status_code == 200
        error = assert_error(_models(client), 403, "auth_error")
        assert "['/chat/completions']" in error["message"] and "Tried to call route: /models" in error["message"]
        assert_error(client.post("/embeddings", json={"model": "gpt-3.5-turbo", "input": "x"}), 403, "auth_error")


def test_allowed_routes_never_widen_a_role(shared_proxy: RunningProxy) -> None:
    llm_key = generate(shared_proxy, allowed_routes=["management_routes", "/customer/*"])["key"]
    with client_as(shared_proxy, llm_key) as client:
        assert_error(_admin_read(client), 403, "auth_error")
        assert_error(_admin_write(client), 403, "auth_error")
    reader = generate(shared_proxy, key_type="read_only")
    with shared_proxy.client() as api:
        widened = api.post("/key/update", json={"key": reader["token"], "allowed_routes": ["management_routes"]})
    assert widened.status_code == 200, widened.text
    with client_as(shared_proxy, reader["key"]) as client:
        assert _admin_read(client).status_code == 200
        assert_error(_admin_write(client), 403, "auth_error")
        assert_error(_llm(client), 403, "auth_error")


def test_admin_keys_take_effect_and_are_revoked_without_a_restart(shared_proxy: RunningProxy) -> None:
    manager = generate(shared_proxy, key_type="management")
    with shared_proxy.client() as master, client_as(shared_proxy, manager["key"]) as client:
        assert _admin_write(client).status_code == 200
        # A management key may itself create keys, and the new key works at once.
        made = client.post("/key/generate", json={"key_type": "llm_api"})
        assert made.status_code == 200, made.text
        with client_as(shared_proxy, made.json()["key"]) as llm:
            assert _llm(llm).status_code == 200

        assert master.post("/key/block", json={"key": manager["token"]}).status_code == 200
        blocked = assert_error(_admin_read(client), 401, "auth_error")
        assert "Key is blocked" in blocked["message"]
        assert master.post("/key/unblock", json={"key": manager["token"]}).status_code == 200
        assert _admin_read(client).status_code == 200

        demoted = master.post("/key/update", json={"key": manager["token"], "key_type": "read_only"})
        assert demoted.status_code == 200, demoted.text
        assert _admin_read(client).status_code == 200
        assert_error(_admin_write(client), 403, "auth_error")

        assert master.post("/key/delete", json={"keys": [manager["token"]]}).status_code == 200
        assert_error(_admin_read(client), 401, "auth_error")
