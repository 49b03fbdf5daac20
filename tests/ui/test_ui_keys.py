"""The Keys page and the roles of the admin UI, over plain HTTP against a real proxy.

Risks guarded: a key's plaintext shown anywhere but once; a key made on the page that does not work (or keeps working
once blocked or deleted); a read_only key that can write through the UI (a control on a page, or a crafted POST with
a valid CSRF token); an LLM key that signs in; a UI session that outlives its key.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import APIRouter
from fastapi.routing import APIRoute

import haimaker.ui
from tests.support.proxy import RunningProxy, base_config, running_proxy
from tests.ui.ui_client import UiClient, csrf_token

NEW_KEY = re.compile(r'<input id="new-key" type="text" value="(sk-[^"]+)" readonly')
KEY_ROWS = re.compile(r'<tr data-key-token="([0-9a-f]{64})"')
# What reading pages must never offer a read-only session: a form that POSTs (sign-out aside) or a link to a form page.
POST_FORM = re.compile(r'<form[^>]*method="post"[^>]*action="([^"]+)"')
WRITE_LINK = re.compile(r'href="(/ui/[a-z]+/(?:new|edit|delete)[^"]*)"')
SESSION_ROUTES = {"/ui/login", "/ui/logout"}


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningProxy]:
    # A proxy of its own: the shared one's customer and budget counts are asserted elsewhere.
    with running_proxy(tmp_path_factory.mktemp("ui-keys"), base_config()) as running:
        with running.client() as api:
            api.post("/budget/new", json={"budget_id": "keys-tier", "max_budget": 10}).raise_for_status()
            api.post("/customer/new", json={"user_id": "keys-cust", "budget_id": "keys-tier"}).raise_for_status()
        yield running


@pytest.fixture
def client(proxy: RunningProxy) -> Iterator[UiClient]:
    ui = UiClient(proxy)
    try:
        yield ui
    finally:
        ui.close()


@pytest.fixture
def admin(client: UiClient) -> UiClient:
    assert client.sign_in().status_code == 303
    return client


def generate(proxy: RunningProxy, **fields: Any) -> dict[str, Any]:
    with proxy.client() as api:
        response = api.post("/key/generate", json=fields)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def chat(proxy: RunningProxy, key: str) -> httpx.Response:
    body = {"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "hi"}]}
    return httpx.post(proxy.url + "/v1/chat/completions", json=body, headers=proxy.headers(key), timeout=30)


def create_on_page(admin: UiClient, **fields: str) -> tuple[str, httpx.Response]:
    response = admin.submit("/ui/keys/new", "/ui/keys/new", fields)
    assert response.status_code == 201, response.text
    match = NEW_KEY.search(response.text)
    assert match, "the new key is not shown"
    return match.group(1), response


def signed_in_with(proxy: RunningProxy, key: str) -> UiClient:
    ui = UiClient(proxy)
    response = ui.sign_in(key)
    assert response.status_code == 303, response.text
    return ui


# ---- the Keys page ---------------------------------------------------------------------------------------------------


def test_a_key_created_on_the_page_is_shown_once_works_and_is_listed_masked(
    proxy: RunningProxy, admin: UiClient
) -> None:
    plaintext, created = create_on_page(
        admin, key_alias="page-app", key_type="llm_api", models="gpt-3.5-turbo", max_budget="5", rpm_limit="10"
    )
    assert plaintext.startswith("sk-") and len(plaintext) > 20
    assert 'data-copy-target="new-key"' in created.text and "/ui/static/copy.js" in created.text
    assert created.headers["cache-control"] == "no-store"
    assert "only time the key is shown" in created.text

    assert chat(proxy, plaintext).status_code == 200

    listed = admin.get("/ui/keys")
    assert listed.status_code == 200
    assert plaintext not in listed.text
    masked = f"sk-...{plaintext[-4:]}"
    row = _row(listed.text, "page-app")
    assert masked in row and "llm_api" in row and "$5.00" in row and "Active" in row
    # Shown once: the key is in no other page, and its API record holds only the hash.
    with proxy.client() as api:
        info = api.get("/key/info", params={"key": plaintext}).json()
    assert plaintext not in str(info)
    assert info["info"]["key_name"] == masked


def test_form_errors_show_the_api_message_next_to_the_field_and_create_nothing(
    proxy: RunningProxy, admin: UiClient
) -> None:
    before = len(KEY_ROWS.findall(admin.get("/ui/keys").text))
    bad = admin.submit("/ui/keys/new", "/ui/keys/new", {"key_alias": "bad-key", "max_budget": "-1"})
    assert bad.status_code in (400, 422)
    assert 'data-error-for="max_budget"' in bad.text
    assert 'value="bad-key"' in bad.text  # what was typed stays
    assert NEW_KEY.search(bad.text) is None
    assert len(KEY_ROWS.findall(admin.get("/ui/keys").text)) == before


def test_block_unblock_and_delete_from_the_page_reach_the_proxy(proxy: RunningProxy, admin: UiClient) -> None:
    plaintext, _ = create_on_page(admin, key_alias="to-block", key_type="llm_api")
    token = _token_of(admin.get("/ui/keys").text, "to-block")

    blocked = admin.submit("/ui/keys", f"/ui/keys/block?token={token}", {})
    assert blocked.status_code == 303
    page = admin.get(blocked.headers["location"])
    assert "Key to-block blocked" in page.text and "Blocked" in _row(page.text, "to-block")
    assert chat(proxy, plaintext).status_code == 401

    assert admin.submit("/ui/keys", f"/ui/keys/unblock?token={token}", {}).status_code == 303
    assert chat(proxy, plaintext).status_code == 200

    confirm = admin.get("/ui/keys/delete", token=token)
    assert confirm.status_code == 200 and "Delete Key?" in confirm.text and plaintext not in confirm.text
    deleted = admin.submit(f"/ui/keys/delete?token={token}", f"/ui/keys/delete?token={token}", {})
    assert deleted.status_code == 303
    assert token not in admin.get("/ui/keys").text
    assert chat(proxy, plaintext).status_code == 401
    assert admin.get("/ui/keys/delete", token=token).status_code == 404


# ---- roles -----------------------------------------------------------------------------------------------------------


def test_an_llm_key_cannot_sign_in(proxy: RunningProxy, client: UiClient) -> None:
    for key_type in ("llm_api", "default"):
        key = generate(proxy, key_type=key_type)["key"]
        response = client.sign_in(key)
        assert response.status_code == 403
        assert "LLM routes only" in response.text
        assert client.get("/ui/customers").status_code == 303


def test_a_blocked_or_unknown_key_cannot_sign_in(proxy: RunningProxy, client: UiClient) -> None:
    key = generate(proxy, key_type="read_only")["key"]
    with proxy.client() as api:
        api.post("/key/block", json={"key": key}).raise_for_status()
    assert client.sign_in(key).status_code == 401
    assert client.sign_in("sk-no-such-key").status_code == 401
    assert client.get("/ui/customers").status_code == 303


READ_PAGES = ("/ui/customers", "/ui/customers/view?id=keys-cust", "/ui/budgets", "/ui/keys", "/ui/spend", "/ui/models")


def test_a_read_only_key_sees_every_page_without_any_write_control(proxy: RunningProxy) -> None:
    generate(proxy, key_alias="listed-key", key_type="llm_api")
    reader = signed_in_with(proxy, generate(proxy, key_type="read_only")["key"])
    try:
        for path in READ_PAGES:
            page = reader.get(path)
            assert page.status_code == 200, path
            assert POST_FORM.findall(page.text) == ["/ui/logout"], path
            assert WRITE_LINK.findall(page.text) == [], path
            assert 'id="read-only-badge"' in page.text
        # The same pages show the controls to the master key (the assertions above are not vacuous).
        writer = signed_in_with(proxy, proxy.master_key)
        try:
            assert len(POST_FORM.findall(writer.get("/ui/keys").text)) > 1
            assert WRITE_LINK.findall(writer.get("/ui/customers/view?id=keys-cust").text)
        finally:
            writer.close()
    finally:
        reader.close()


def _write_routes() -> list[str]:
    """Every POST route of every UI module but sign-in and sign-out: a new write route (or module) is covered without
    editing this test."""
    routes: set[str] = set()
    for module in pkgutil.iter_modules(haimaker.ui.__path__):
        router = getattr(importlib.import_module(f"haimaker.ui.{module.name}"), "router", None)
        if isinstance(router, APIRouter):
            routes |= {r.path for r in router.routes if isinstance(r, APIRoute) and "POST" in (r.methods or ())}
    writes = sorted(routes - SESSION_ROUTES)
    assert {"/ui/keys/new", "/ui/customers/new", "/ui/budgets/delete", "/ui/keys/block"} <= set(writes)
    return writes


def test_a_read_only_session_is_refused_every_write_with_403_even_with_its_csrf_token(proxy: RunningProxy) -> None:
    key = generate(proxy, key_type="read_only")
    reader = signed_in_with(proxy, key["key"])
    try:
        token = csrf_token(reader.get("/ui/models").text)
        fields = {"csrf_token": token, "user_id": "ro-made", "budget_id": "ro-made", "key_alias": "ro-made"}
        for path in _write_routes():
            response = reader.http.post(path, params={"id": "keys-cust", "token": key["token"]}, data=fields)
            assert response.status_code == 403, path
            assert "read_only key" in response.text
        for form_page in ("/ui/customers/new", "/ui/customers/edit?id=keys-cust", "/ui/budgets/new", "/ui/keys/new"):
            assert reader.get(form_page).status_code == 403, form_page
        assert reader.get(f"/ui/keys/delete?token={key['token']}").status_code == 403
    finally:
        reader.close()
    with proxy.client() as api:
        assert api.get("/customer/info", params={"end_user_id": "ro-made"}).status_code == 404
        assert api.get("/customer/info", params={"end_user_id": "keys-cust"}).json()["blocked"] is False
        assert api.get("/key/info", params={"key": key["token"]}).json()["info"]["blocked"] is False
        assert api.get("/key/list", params={"key_alias": "ro-made"}).json()["keys"] == []


def test_a_management_key_signs_in_and_may_write(proxy: RunningProxy) -> None:
    manager = signed_in_with(proxy, generate(proxy, key_type="management")["key"])
    try:
        assert 'id="read-only-badge"' not in manager.get("/ui/keys").text
        created = manager.submit("/ui/budgets/new", "/ui/budgets/new", {"budget_id": "by-manager"})
        assert created.status_code == 303
    finally:
        manager.close()


def test_a_ui_session_ends_when_its_key_is_blocked_or_deleted(proxy: RunningProxy) -> None:
    for action in ("/key/block", "/key/delete"):
        key = generate(proxy, key_type="read_only")
        reader = signed_in_with(proxy, key["key"])
        try:
            assert reader.get("/ui/customers").status_code == 200
            with proxy.client() as api:
                body = {"keys": [key["key"]]} if action == "/key/delete" else {"key": key["key"]}
                api.post(action, json=body).raise_for_status()
            response = reader.get("/ui/customers")
            assert response.status_code == 303, action
            assert response.headers["location"].startswith("/ui/login")
        finally:
            reader.close()


def test_a_key_changed_to_read_only_loses_its_write_controls_at_once(proxy: RunningProxy) -> None:
    key = generate(proxy, key_type="management")
    manager = signed_in_with(proxy, key["key"])
    try:
        assert "+ Create Key" in manager.get("/ui/keys").text
        with proxy.client() as api:
            api.post("/key/update", json={"key": key["key"], "key_type": "read_only"}).raise_for_status()
        assert "+ Create Key" not in manager.get("/ui/keys").text
        assert manager.submit("/ui/models", "/ui/budgets/new", {"budget_id": "demoted"}).status_code == 403
    finally:
        manager.close()


def _row(html: str, alias: str) -> str:
    for match in re.finditer(r"<tr data-key-token=.*?</tr>", html, re.S):
        if f"<td>{alias}</td>" in match.group(0):
            return match.group(0)
    raise AssertionError(f"no row for {alias}")


def _token_of(html: str, alias: str) -> str:
    token = KEY_ROWS.search(_row(html, alias))
    assert token
    return token.group(1)


def test_key_pages_are_only_for_signed_in_sessions(client: UiClient) -> None:
    for path in ("/ui/keys", "/ui/keys/new"):
        response = client.get(path)
        assert response.status_code == 303 and response.headers["location"].startswith("/ui/login?next=")
