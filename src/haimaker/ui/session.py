"""Admin UI sessions: a signed cookie, sign-in with an admin or read-only key, and CSRF tokens.

Invariants:
- The cookie never holds the key, nor its hash: only `{"csrf": <random token>, "admin": bool, "iat": <unix s>,
  "sid": <random session id>}`, signed with itsdangerous. It is HttpOnly, SameSite=Lax, `Secure` over https, and
  expires after `SESSION_MAX_AGE_S`.
- A signed-in cookie counts only while its session id is live on the server (`state/ui_sessions.py`): signing out
  revokes it, so a copied cookie stops working at once, on every instance.
- The cookie says only that someone signed in, never with which key nor what they may do: the server records who
  signed in beside the live session id (the master key, or a virtual key by its token), and the role of each request
  is read from there (`ui/deps.py::read_session`), so a `read_only` key never writes, whatever its cookie says.
- The signing secret is derived from the master key's SHA-256 (HMAC with a fixed label), so every worker of one proxy
  accepts the same cookies and changing the master key signs every session out. Without a master key there is no UI.
- Every POST carries the session's CSRF token in a hidden field (`csrf_token`) or the `X-CSRF-Token` header (htmx);
  a missing or different token is refused before the handler runs. Anonymous visitors get a session too, so the
  sign-in form is protected as well; signing in issues a new token (no session fixation).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Any, Final

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import Response

from haimaker.identity import hash_key

COOKIE_NAME: Final = "haimaker_ui"
CSRF_FIELD: Final = "csrf_token"
CSRF_HEADER: Final = "x-csrf-token"
SESSION_MAX_AGE_S: Final = 8 * 3600
_SECRET_LABEL: Final = b"haimaker-ui-session-v1"


class SignInRequired(Exception):
    """The page needs a signed-in admin; the UI answers with a redirect to the sign-in page."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


class CsrfRejected(Exception):
    """A POST without the session's CSRF token; the UI answers 403 and changes nothing."""


class ReadOnlyRefused(Exception):
    """A write (or a page that is only a write form) asked for by a read-only session; the UI answers 403."""


@dataclass(frozen=True, slots=True)
class Session:
    """What the cookie says about the browser (its CSRF token, whether someone signed in) and, once the server read
    who signed in, whether this session may write (`can_write`: never from the cookie)."""

    csrf: str
    is_signed_in: bool = False
    issued_at: int = 0
    session_id: str = ""
    can_write: bool = False

    @classmethod
    def anonymous(cls) -> Session:
        return cls(csrf=secrets.token_urlsafe(32))

    @classmethod
    def signed_in(cls) -> Session:
        return cls(
            csrf=secrets.token_urlsafe(32),
            is_signed_in=True,
            issued_at=int(time.time()),
            session_id=secrets.token_urlsafe(32),
        )


class SessionCodec:
    """Signs and reads session cookies for one proxy (one master key)."""

    def __init__(self, master_key: str | None) -> None:
        self.is_enabled = master_key is not None
        secret = hmac.new(hash_key(master_key or secrets.token_hex(32)), _SECRET_LABEL, hashlib.sha256).hexdigest()
        self._serializer = URLSafeTimedSerializer(secret, salt="haimaker.ui.session")

    def read(self, request: Request) -> Session | None:
        """The request's valid session, or None (absent, forged, expired or malformed)."""
        raw = request.cookies.get(COOKIE_NAME)
        if not raw or not self.is_enabled:
            return None
        try:
            data: Any = self._serializer.loads(raw, max_age=SESSION_MAX_AGE_S)
        except BadSignature:
            return None
        if not isinstance(data, dict) or not isinstance(data.get("csrf"), str):
            return None
        session_id = data.get("sid")
        return Session(
            csrf=data["csrf"],
            is_signed_in=data.get("admin") is True,
            issued_at=int(data.get("iat", 0)),
            session_id=session_id if isinstance(session_id, str) else "",
        )

    def write(self, response: Response, session: Session, *, secure: bool) -> None:
        value = self._serializer.dumps(
            {"csrf": session.csrf, "admin": session.is_signed_in, "iat": session.issued_at, "sid": session.session_id}
        )
        response.set_cookie(
            COOKIE_NAME,
            value,
            max_age=SESSION_MAX_AGE_S,
            path="/ui",
            httponly=True,
            samesite="lax",
            secure=secure,
        )

    def clear(self, response: Response) -> None:
        response.delete_cookie(COOKIE_NAME, path="/ui", httponly=True, samesite="lax")


def is_valid_csrf(session: Session | None, submitted: str | None) -> bool:
    """Constant-time check of a submitted CSRF token against the session's."""
    if session is None or not submitted:
        return False
    return hmac.compare_digest(session.csrf.encode(), submitted.encode())


def safe_next_path(value: str | None) -> str:
    """Where to go after sign-in: a path inside the UI only (never another site)."""
    if value and value.startswith("/ui") and not value.startswith("//") and "\\" not in value:
        return value
    return "/ui/customers"
