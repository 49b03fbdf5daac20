"""Sign-in, sign-out, session cookie and CSRF of the admin UI, over plain HTTP."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from haimaker.ui.session import COOKIE_NAME as COOKIE
from tests.support.proxy import RunningProxy, base_config, running_proxy
from tests.ui.ui_client import UiClient, csrf_token


def test_pages_redirect_to_sign_in_when_signed_out(ui: UiClient) -> None:
    for path in ("/ui/customers", "/ui/budgets", "/ui/spend", "/ui/models"):
        response = ui.get(path)
        assert response.status_code == 303
        assert response.headers["location"].startswith("/ui/login?next=")


def test_sign_in_with_master_key_sets_signed_http_only_cookie_without_the_key(ui: UiClient) -> None:
    response = ui.sign_in()
    assert response.status_code == 303
    assert response.headers["location"] == "/ui/customers"
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie.replace("Lax", "lax")
    assert ui.proxy.master_key not in cookie
    page = ui.get("/ui/models")
    assert page.status_code == 200
    assert ui.proxy.master_key not in page.text


def test_wrong_key_is_refused_and_grants_nothing(ui: UiClient) -> None:
    response = ui.sign_in("sk-wrong-key")
    assert response.status_code == 401
    assert "Invalid key" in response.text
    assert "sk-wrong-key" not in response.text
    assert ui.get("/ui/customers").status_code == 303


def test_post_without_csrf_token_is_refused(admin: UiClient) -> None:
    response = admin.http.post("/ui/logout", data={})
    assert response.status_code == 403
    assert "nothing was changed" in response.text
    assert admin.get("/ui/customers").status_code == 200  # still signed in


def test_post_with_another_sessions_csrf_token_is_refused(admin: UiClient, ui_proxy: object) -> None:
    other = UiClient(admin.proxy)
    try:
        foreign = csrf_token(other.get("/ui/login").text)
    finally:
        other.close()
    response = admin.http.post("/ui/logout", data={"csrf_token": foreign})
    assert response.status_code == 403


def test_sign_in_form_needs_its_csrf_token(ui: UiClient) -> None:
    ui.get("/ui/login")
    response = ui.http.post("/ui/login", data={"key": ui.proxy.master_key})
    assert response.status_code == 403
    assert ui.get("/ui/customers").status_code == 303


def test_forged_cookie_is_ignored(ui: UiClient) -> None:
    ui.http.cookies.set("haimaker_ui", "eyJjc3JmIjoieCIsImFkbWluIjp0cnVlfQ.forged.sig", path="/ui")
    assert ui.get("/ui/customers").status_code == 303


def test_sign_out_ends_the_session(admin: UiClient) -> None:
    response = admin.submit("/ui/models", "/ui/logout", {})
    assert response.status_code == 303
    assert response.headers["location"].startswith("/ui/login")
    assert admin.get("/ui/customers").status_code == 303


def test_sign_in_returns_to_the_page_asked_for_but_never_off_site(ui: UiClient) -> None:
    token = csrf_token(ui.get("/ui/login").text)
    response = ui.http.post("/ui/login", data={"csrf_token": token, "key": ui.proxy.master_key, "next": "/ui/spend"})
    assert response.headers["location"] == "/ui/spend"
    ui.http.cookies.clear()
    token = csrf_token(ui.get("/ui/login").text)
    data = {"csrf_token": token, "key": ui.proxy.master_key, "next": "//evil.example/ui"}
    response = ui.http.post("/ui/login", data=data)
    assert response.headers["location"] == "/ui/customers"


def test_pages_cannot_be_framed_or_run_foreign_scripts(admin: UiClient) -> None:
    page = admin.get("/ui/customers")
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["cache-control"] == "no-store"


# ---- issue 10 finding 9: revocable sessions, throttled sign-in, notices from a fixed set ---------------------------


def _copy_of(admin: UiClient) -> UiClient:
    """Another client holding a copy of the admin's cookie (another tab, or a stolen cookie)."""
    copy = UiClient(admin.proxy)
    copy.http.cookies.set(COOKIE, admin.http.cookies[COOKIE], domain="127.0.0.1", path="/ui")
    return copy


def test_a_copied_cookie_stops_working_at_sign_out(admin: UiClient) -> None:
    copy = _copy_of(admin)
    try:
        assert copy.get("/ui/customers").status_code == 200
        assert admin.submit("/ui/models", "/ui/logout", {}).status_code == 303
        response = copy.get("/ui/customers")
        assert response.status_code == 303
        assert response.headers["location"].startswith("/ui/login?next=")
        assert copy.get("/ui/login").status_code == 200  # the sign-in page, not a redirect into the UI
    finally:
        copy.close()


def test_a_restart_without_redis_signs_everyone_out(tmp_path: Path) -> None:
    with running_proxy(tmp_path, base_config()) as first:
        ui = UiClient(first)
        assert ui.sign_in().status_code == 303
        cookie = ui.http.cookies[COOKIE]
        ui.close()
    with running_proxy(tmp_path, base_config()) as second:
        ui = UiClient(second)
        try:
            ui.http.cookies.set(COOKIE, cookie, domain="127.0.0.1", path="/ui")
            assert ui.get("/ui/customers").status_code == 303
        finally:
            ui.close()


@pytest.mark.redis
def test_with_redis_a_sign_out_on_one_instance_signs_out_on_every_instance(
    tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    shared = {"redis_url": redis_url, "redis_key_prefix": redis_prefix}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with (
        running_proxy(tmp_path / "a", base_config(general_settings=shared)) as first,
        running_proxy(tmp_path / "b", base_config(general_settings=shared)) as second,
    ):
        on_first, on_second = UiClient(first), UiClient(second)
        try:
            assert on_first.sign_in().status_code == 303
            on_second.http.cookies.set(COOKIE, on_first.http.cookies[COOKIE], domain="127.0.0.1", path="/ui")
            assert on_second.get("/ui/customers").status_code == 200  # the same session on the other instance
            assert on_second.submit("/ui/models", "/ui/logout", {}).status_code == 303
            assert on_first.get("/ui/customers").status_code == 303
        finally:
            on_first.close()
            on_second.close()


def _local_client(proxy: RunningProxy, address: str) -> UiClient:
    client = UiClient(proxy)
    client.http.close()
    transport = httpx.HTTPTransport(local_address=address)
    client.http = httpx.Client(base_url=proxy.url, timeout=30, transport=transport)
    return client


def test_wrong_sign_ins_throttle_the_address_even_for_the_right_key(tmp_path: Path) -> None:
    config = base_config(general_settings={"auth_failure_limit": 3, "auth_failure_window_s": 60})
    with running_proxy(tmp_path, config) as proxy:
        guesser, admin = _local_client(proxy, "127.0.0.1"), _local_client(proxy, "127.0.0.2")
        try:
            for _ in range(3):
                assert guesser.sign_in("sk-guess").status_code == 401
            refused = guesser.sign_in()
            assert refused.status_code == 429
            assert refused.headers["retry-after"] == "60"
            assert "Too many failed sign-ins" in refused.text
            assert guesser.get("/ui/customers").status_code == 303  # not signed in
            # Someone else's guessing never locks the real admin out.
            assert admin.sign_in().status_code == 303
            assert admin.get("/ui/customers").status_code == 200
        finally:
            guesser.close()
            admin.close()


def test_a_link_cannot_put_its_own_text_in_the_notice_banner(admin: UiClient) -> None:
    page = admin.get("/ui/customers", notice="customer-deleted", id="Your account is locked: call +1 555 0100")
    assert page.status_code == 200
    assert "call +1 555" not in page.text and 'class="notice"' not in page.text
    unknown = admin.get("/ui/customers", notice="Visit evil.example")
    assert "evil.example" not in unknown.text


def test_a_notice_after_a_write_names_its_id(tmp_path: Path) -> None:
    # A proxy of its own: the shared one's customer count is asserted elsewhere.
    with running_proxy(tmp_path, base_config()) as proxy:
        admin, other = UiClient(proxy), UiClient(proxy)
        try:
            assert admin.sign_in().status_code == 303
            response = admin.submit("/ui/customers/new", "/ui/customers/new", {"user_id": "notice-cust", "alias": ""})
            assert response.status_code == 303, response.text
            page = admin.get(response.headers["location"])
            assert '<p class="notice" role="status">Customer notice-cust created.</p>' in page.text
            # The same link in another session shows nothing: the notice is signed for the session it was made for.
            assert other.sign_in().status_code == 303
            assert "notice-cust created" not in other.get(response.headers["location"]).text
        finally:
            admin.close()
            other.close()
