"""Sign-in, sign-out, session cookie and CSRF of the admin UI, over plain HTTP."""

from __future__ import annotations

from ui_client import UiClient, csrf_token


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
