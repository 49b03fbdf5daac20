"""FastAPI dependencies of the admin UI, as `Annotated` aliases: templates, the signed-in session (its cookie valid,
its id still live on the server, and the key that signed it in still allowed in), and the CSRF-checked form of a
POST. The app state and the services come from `api/deps.py`, as for every route.

Invariant: every UI write is a POST, every POST needs `CheckedForm`, and `CheckedForm` refuses (403) a session that
may not write (a `read_only` key's). Only the sign-in and sign-out forms use `SessionForm` (CSRF alone) instead. Pages
that are nothing but a write form (create, edit, delete confirmation) take `EditorSession`, which refuses the same
sessions, so a read-only session never even sees one.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated

from fastapi import Depends, Request
from fastapi.responses import RedirectResponse
from fastapi.templating import Jinja2Templates

from haimaker.api.deps import get_state
from haimaker.app_state import AppState
from haimaker.state.ui_sessions import LiveSessions, token_of_holder
from haimaker.storage.records import VirtualKey
from haimaker.ui.session import (
    CSRF_FIELD,
    CSRF_HEADER,
    CsrfRejected,
    ReadOnlyRefused,
    Session,
    SessionCodec,
    SignInRequired,
    is_valid_csrf,
)


def get_templates(request: Request) -> Jinja2Templates:
    return request.app.state.haimaker_ui_templates  # type: ignore[no-any-return]


def get_codec(request: Request) -> SessionCodec:
    # Built per request from the loaded settings: one HMAC, and no cached state to keep in step.
    return SessionCodec(get_state(request).settings.master_key)


def get_live_sessions(request: Request) -> LiveSessions:
    """The set of live UI sessions: in Redis when the proxy has one (every instance agrees), else in this process."""
    return get_state(request).ui_sessions


def key_may_write(key: VirtualKey | None, state: AppState) -> bool | None:
    """What a session signed in with `key` may do now: write (True), read (False), or nothing any more (None: the key
    was deleted, blocked, expired, or its type no longer reaches the admin UI)."""
    if key is None or key.blocked:
        return None
    if key.expires is not None and key.expires < state.clock.now():  # as `Authenticator.identify`
        return None
    if key.key_type == "management":
        return True
    if key.key_type == "read_only":
        return False
    return None


async def read_session(request: Request) -> Session | None:
    """The request's session; None when absent or invalid, and when it is a signed-in session that was signed out
    (or that the server no longer knows: after a restart without Redis), or whose key no longer lets it in.

    A signed-in session's `can_write` comes from who signed it in, read again on every request: the master key (or
        a virtual key's current `key_type` decides (`key_may_write`)."""
    cached: Session | None = getattr(request.state, "haimaker_ui_session", None)
    if cached is not None:
        return cached
    session = get_codec(request).read(request)
    if session is not None and session.is_signed_in:
        session = await _with_role(request, session)
    # Read once per request (a page takes both the session and the form dependency): one Redis read, one answer.
    request.state.haimaker_ui_session = session
    return session


async def _with_role(request: Request, session: Session) -> Session | None:
    holder = await get_live_sessions(request).holder_of(session.session_id)
    if holder is None:
        return None
    token = token_of_holder(holder)
    if token is None:
        return replace(session, can_write=True)
    state = get_state(request)
    may_write = key_may_write(state.services.key_catalog.get(token), state)
    return None if may_write is None else replace(session, can_write=may_write)


async def require_admin_session(request: Request) -> Session:
    """The signed-in session (read-only or not); anyone else is sent to the sign-in page."""
    session = await read_session(request)
    if session is None or not session.is_signed_in:
        next_path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise SignInRequired(next_path if request.method == "GET" else "/ui/customers")
    return session


async def require_editor_session(request: Request) -> Session:
    """A signed-in session that may write; a read-only one gets the 403 page."""
    session = await require_admin_session(request)
    if not session.can_write:
        raise ReadOnlyRefused()
    return session


async def require_session_form(request: Request) -> dict[str, str]:
    """The sign-in or sign-out form (values stripped), once its CSRF token matched the session's; else 403."""
    session = get_codec(request).read(request)
    form = await request.form()
    submitted = form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER)
    if not is_valid_csrf(session, submitted if isinstance(submitted, str) else None):
        raise CsrfRejected()
    return {key: value.strip() for key, value in form.items() if isinstance(value, str) and key != CSRF_FIELD}


async def require_csrf_form(request: Request) -> dict[str, str]:
    """The submitted form of a write (values stripped): its CSRF token matched the session's, and the session may
    write. Else 403 and nothing changes; a signed-out browser is sent to the sign-in page."""
    form = await require_session_form(request)
    await require_editor_session(request)
    return form


TemplatesDep = Annotated[Jinja2Templates, Depends(get_templates)]
AdminSession = Annotated[Session, Depends(require_admin_session)]
EditorSession = Annotated[Session, Depends(require_editor_session)]
CheckedForm = Annotated[dict[str, str], Depends(require_csrf_form)]
SessionForm = Annotated[dict[str, str], Depends(require_session_form)]


def is_https(request: Request) -> bool:
    return request.url.scheme == "https" or request.headers.get("x-forwarded-proto") == "https"


def redirect(url: str) -> RedirectResponse:
    """303 See Other: the browser follows with a GET (post/redirect/get)."""
    return RedirectResponse(url, status_code=303)
