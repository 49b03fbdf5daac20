"""Session cookies and CSRF tokens of the admin UI."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from haimaker.ui.session import COOKIE_NAME, Session, SessionCodec, is_valid_csrf, safe_next_path


def _request_with(cookie: str | None) -> Request:
    headers = [(b"cookie", f"{COOKIE_NAME}={cookie}".encode())] if cookie else []
    return Request({"type": "http", "method": "GET", "path": "/ui", "headers": headers, "query_string": b""})


def _cookie_of(codec: SessionCodec, session: Session) -> str:
    response = Response()
    codec.write(response, session, secure=False)
    header = response.headers["set-cookie"]
    return header.split(";", 1)[0].split("=", 1)[1]


def test_session_round_trips_and_never_holds_the_key() -> None:
    codec = SessionCodec("sk-master-secret")
    session = Session.signed_in()
    cookie = _cookie_of(codec, session)
    assert "sk-master-secret" not in cookie
    assert codec.read(_request_with(cookie)) == session


def test_cookie_flags() -> None:
    response = Response()
    SessionCodec("sk-x").write(response, Session.anonymous(), secure=True)
    header = response.headers["set-cookie"].lower()
    assert "httponly" in header and "samesite=lax" in header and "secure" in header and "path=/ui" in header


def test_a_cookie_signed_under_another_master_key_is_rejected() -> None:
    cookie = _cookie_of(SessionCodec("sk-old"), Session.signed_in())
    assert SessionCodec("sk-new").read(_request_with(cookie)) is None


def test_tampered_cookie_is_rejected() -> None:
    codec = SessionCodec("sk-x")
    cookie = _cookie_of(codec, Session.anonymous())
    assert codec.read(_request_with(cookie[:-2] + "xx")) is None


def test_without_a_master_key_no_session_is_accepted() -> None:
    codec = SessionCodec(None)
    cookie = _cookie_of(codec, Session.signed_in())
    assert not codec.is_enabled
    assert codec.read(_request_with(cookie)) is None


def test_csrf_check() -> None:
    session = Session.anonymous()
    assert is_valid_csrf(session, session.csrf)
    assert not is_valid_csrf(session, None)
    assert not is_valid_csrf(session, "")
    assert not is_valid_csrf(session, Session.anonymous().csrf)
    assert not is_valid_csrf(None, session.csrf)


def test_next_path_stays_inside_the_ui() -> None:
    assert safe_next_path("/ui/spend?range=7d") == "/ui/spend?range=7d"
    for hostile in ("https://evil.example", "//evil.example", "/\\evil.example", "/api", None, ""):
        assert safe_next_path(hostile) == "/ui/customers"
