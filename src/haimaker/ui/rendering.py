"""The Jinja2 environment of the admin UI: templates shipped as package data, autoescaped, with money filters
(`usd`: every amount shown, through `amounts.format_usd`; `usd_value`: an amount in a form field).

Pages are rendered through `render(...)`, which adds what every page needs: the session's CSRF token, the signed-in
flag, whether the session may write (`can_write`: templates show no write control otherwise), the active navigation
tab, and a notice after a successful write: a fixed message chosen by code. A message
that names an id shows it only with the signature the redirect after the write added (`notice_query`): an HMAC keyed
by the session's CSRF token, which no one else knows, so a link cannot put its own text in the banner.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlencode

from fastapi.templating import Jinja2Templates
from starlette.requests import Request
from starlette.responses import HTMLResponse

from haimaker.money import NANOS_PER_USD, Nanos
from haimaker.ui.amounts import format_usd
from haimaker.ui.session import CSRF_FIELD, Session

TEMPLATES_DIR: Final = Path(__file__).parent / "templates"
STATIC_DIR: Final = Path(__file__).parent / "static"

# Pages load only our own script and stylesheet, cannot be framed (the Block button must not be clickjacked), and
# are not cached (they show spend and limits). htmx injects one small <style> for its indicators.
SECURITY_HEADERS: Final = {
    "content-security-policy": "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}

NOTICES: Final = {
    "budget-created": "Budget {id} created.",
    "budget-updated": "Budget {id} saved.",
    "budget-deleted": "Budget {id} deleted.",
    "customer-created": "Customer {id} created.",
    "customer-updated": "Customer {id} saved.",
    "customer-deleted": "Customer {id} deleted.",
    "customer-blocked": "Customer {id} blocked: its LLM calls are refused with 403.",
    "customer-unblocked": "Customer {id} unblocked.",
    "key-blocked": "Key {id} blocked: its requests are refused with 401.",
    "key-unblocked": "Key {id} unblocked.",
    "key-deleted": "Key {id} deleted.",
    "signed-out": "You are signed out.",
}


def _usd(nanos: Nanos | None) -> str:
    return "Unlimited" if nanos is None else format_usd(nanos)


def usd_form_value(nanos: Nanos | None) -> str:
    """A form field value in USD, without trailing zeros (`4`, `0.25`)."""
    if nanos is None:
        return ""
    text = f"{Decimal(nanos) / NANOS_PER_USD:f}"  # exact: a form must give back the stored amount
    return text.rstrip("0").rstrip(".") if "." in text else text


def _when(value: datetime | None) -> str:
    return "—" if value is None else value.strftime("%Y-%m-%d %H:%M UTC")


def _count(value: int | None) -> str:
    return "n/a" if value is None else f"{value:,}"


def build_templates() -> Jinja2Templates:
    templates = Jinja2Templates(directory=str(TEMPLATES_DIR))
    env = templates.env
    env.autoescape = True
    env.trim_blocks = True
    env.lstrip_blocks = True
    env.filters.update(usd=_usd, usd_value=usd_form_value, when=_when, count=_count)
    env.globals["csrf_field"] = CSRF_FIELD
    return templates


def notice_query(session: Session, code: str, subject: str) -> str:
    """The query string of the page to show notice `code` about `subject` (an id) on, signed for this session."""
    return urlencode({"notice": code, "id": subject, "ns": _notice_signature(session, code, subject)})


def _notice_signature(session: Session, code: str, subject: str) -> str:
    return hmac.new(session.csrf.encode(), f"{code}\n{subject}".encode(), hashlib.sha256).hexdigest()[:32]


def notice_text(request: Request, session: Session | None) -> str | None:
    """The notice the URL asks for: a fixed message, with its id only when the signature matches."""
    code = request.query_params.get("notice") or ""
    message = NOTICES.get(code)
    if message is None or "{id}" not in message:
        return message
    subject = request.query_params.get("id", "")
    signature = request.query_params.get("ns", "")
    if session is None or not hmac.compare_digest(
        signature.encode(), _notice_signature(session, code, subject).encode()
    ):
        return None
    return message.format(id=subject)


def render(
    templates: Jinja2Templates,
    request: Request,
    session: Session | None,
    name: str,
    context: dict[str, Any],
    *,
    status_code: int = 200,
) -> HTMLResponse:
    """Render a page (or an htmx fragment) with the shared context."""
    full = {
        "csrf_token": session.csrf if session else "",
        "is_signed_in": bool(session and session.is_signed_in),
        # Templates show a write control (a form that POSTs, a link to a form page) only when this is true.
        "can_write": bool(session and session.is_signed_in and session.can_write),
        "notice": notice_text(request, session),
        "is_htmx": request.headers.get("hx-request") == "true",
        **context,
    }
    response = templates.TemplateResponse(request, name, full, status_code=status_code)
    response.headers.update(SECURITY_HEADERS)
    return response
