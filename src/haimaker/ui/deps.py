"""FastAPI dependencies of the admin UI, as `Annotated` aliases: templates, the signed-in session (its cookie valid
and its id still live on the server), and the CSRF-checked form of a POST. The app state and the services come from
`api/deps.py`, as for every route."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.responses import RedirectResponse
from fastapi.templating import Jinja2Templates

from haimaker.api.deps import get_state
from haimaker.state.ui_sessions import LiveSessions
from haimaker.ui.session import (
    CSRF_FIELD,
    CSRF_HEADER,
    CsrfRejected,
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


async def read_session(request: Request) -> Session | None:
    """The request's session; None when absent or invalid, and when it is a signed-in session that was signed out
    (or that the server no longer knows: after a restart without Redis)."""
    session = get_codec(request).read(request)
    if session is not None and session.is_admin and not await get_live_sessions(request).is_live(session.session_id):
        return None
    return session


async def require_admin_session(request: Request) -> Session:
    """The signed-in admin's session; anyone else is sent to the sign-in page."""
    session = await read_session(request)
    if session is None or not session.is_admin:
        next_path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise SignInRequired(next_path if request.method == "GET" else "/ui/customers")
    return session


async def require_csrf_form(request: Request) -> dict[str, str]:
    """The submitted form (values stripped), once its CSRF token matched the session's; else 403, nothing changes."""
    session = get_codec(request).read(request)
    form = await request.form()
    submitted = form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER)
    if not is_valid_csrf(session, submitted if isinstance(submitted, str) else None):
        raise CsrfRejected()
    return {key: value.strip() for key, value in form.items() if isinstance(value, str) and key != CSRF_FIELD}


TemplatesDep = Annotated[Jinja2Templates, Depends(get_templates)]
AdminSession = Annotated[Session, Depends(require_admin_session)]
CheckedForm = Annotated[dict[str, str], Depends(require_csrf_form)]


def is_https(request: Request) -> bool:
    return request.url.scheme == "https" or request.headers.get("x-forwarded-proto") == "https"


def redirect(url: str) -> RedirectResponse:
    """303 See Other: the browser follows with a GET (post/redirect/get)."""
    return RedirectResponse(url, status_code=303)
