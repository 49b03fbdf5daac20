"""The admin UI at `/ui`: mounting, sign-in and sign-out, CSRF enforcement, and the Models page.

Pages live in `budget_pages.py`, `customer_pages.py`, `customer_forms.py`, `key_pages.py` and `spend_pages.py`; each
calls the service layer (`Services`, from `api/deps.py`), the same code the management API calls, so a rule
(validation message, shared-tier copy, catalog update) exists once. This module owns what every page shares: the
redirect to the sign-in page, the 403 page for a POST without a valid CSRF token, and the 403 page for a write
asked for by a read-only session (the dependencies that raise them are in `deps.py`).

Sign-in takes the master key, or a virtual key whose `key_type` reaches the admin API (`management`: reads and
writes; `read_only`: reads only); an `llm_api` or `default` key is refused.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from haimaker.api.deps import AppStateDep
from haimaker.errors import InvalidKeyError, ProxyError
from haimaker.identity import Caller
from haimaker.state.ui_sessions import MASTER_HOLDER, SessionStoreUnavailable, key_holder
from haimaker.ui import budget_pages, customer_forms, customer_pages, key_pages, spend_pages
from haimaker.ui.deps import (
    AdminSession,
    SessionForm,
    TemplatesDep,
    get_codec,
    get_live_sessions,
    get_templates,
    is_https,
    read_session,
    redirect,
)
from haimaker.ui.rendering import STATIC_DIR, build_templates, render
from haimaker.ui.session import (
    SESSION_MAX_AGE_S,
    CsrfRejected,
    ReadOnlyRefused,
    Session,
    SignInRequired,
    safe_next_path,
)

router = APIRouter(prefix="/ui", include_in_schema=False)
_MILLION = Decimal(1_000_000)


@router.get("", include_in_schema=False)
@router.get("/", include_in_schema=False)
async def index() -> RedirectResponse:
    return redirect("/ui/customers")


@router.get("/login", response_class=HTMLResponse)
async def login_page(request: Request, templates: TemplatesDep, next: str | None = None) -> Response:
    codec = get_codec(request)
    session = await read_session(request)
    if session is not None and session.is_signed_in:
        return redirect(safe_next_path(next))
    session = session or Session.anonymous()
    context = {"next_path": safe_next_path(next), "error": None, "is_enabled": codec.is_enabled, "nav": ""}
    response = render(templates, request, session, "login.html", context)
    codec.write(response, session, secure=is_https(request))
    return response


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request, state: AppStateDep, templates: TemplatesDep, form: SessionForm) -> Response:
    codec = get_codec(request)
    next_path = safe_next_path(form.get("next"))
    key = form.get("key", "")
    # The form passed its CSRF check, so the browser has a session; shown signed out, whatever it was.
    current = codec.read(request) or Session.anonymous()
    session = Session(csrf=current.csrf)

    def page(error: str, status_code: int) -> Response:
        context = {"next_path": next_path, "error": error, "is_enabled": codec.is_enabled, "nav": ""}
        return render(templates, request, session, "login.html", context, status_code=status_code)

    # An address throttled for wrong keys is refused before its key is looked at, the right one included.
    throttle = state.auth_throttle
    address = throttle.address_of(request.scope)
    refusal = throttle.refusal(address)
    if refusal is not None:
        retry_after = refusal.headers["retry-after"]
        response = page(f"Too many failed sign-ins from this address. Try again in {retry_after} seconds.", 429)
        response.headers["retry-after"] = retry_after
        return response
    # The master key, or a virtual key of type management (reads and writes) or read_only (reads only): the same
    # check as an API call with that key (a blocked or expired key is refused with its message).
    caller: Caller | None = None
    if codec.is_enabled and key:
        try:
            caller = await state.auth.identify({"authorization": f"Bearer {key}"})
        except InvalidKeyError:
            caller = None
        except ProxyError as error:
            return page(error.message, error.status_code)
    if caller is not None and not caller.can_read_admin:
        return page("This key may call LLM routes only: sign in with a management or read_only key.", 403)
    if caller is not None:
        signed_in = Session.signed_in()
        # Who signed in is kept on the server, beside the session id: a key's role is read from there on every page.
        holder = MASTER_HOLDER if caller.key is None else key_holder(caller.token)
        try:
            await get_live_sessions(request).add(signed_in.session_id, SESSION_MAX_AGE_S, holder)
        except SessionStoreUnavailable:
            return page("Sign-in is unavailable: the shared session store (Redis) cannot be reached.", 503)
        response = redirect(next_path)
        codec.write(response, signed_in, secure=is_https(request))
        return response
    if codec.is_enabled and key:
        throttle.record_failure(address)
    message = "Invalid key: use the proxy's master key, or a management or read_only key."
    return page(message if key else "Enter the master key or a management or read_only key.", 401)


@router.post("/logout")
async def logout(request: Request, form: SessionForm) -> Response:
    codec = get_codec(request)
    session = codec.read(request)
    if session is not None:
        # Revoked on the server: a copy of this cookie (another tab, a stolen one) is signed out as well.
        await get_live_sessions(request).revoke(session.session_id)
    response = redirect("/ui/login?notice=signed-out")
    codec.clear(response)
    return response


@router.get("/models", response_class=HTMLResponse)
async def models_page(request: Request, state: AppStateDep, templates: TemplatesDep, session: AdminSession) -> Response:
    rows: list[dict[str, Any]] = []
    for name in state.router.model_names:
        for deployment in state.router.group(name):
            price = deployment.price
            rows.append(
                {
                    "model_name": deployment.model_name,
                    "provider": deployment.provider,
                    "upstream_model": deployment.upstream_model,
                    "region": deployment.region_name,
                    "input_per_million": _per_million(price.input_cost_per_token) if price else None,
                    "output_per_million": _per_million(price.output_cost_per_token) if price else None,
                }
            )
    has_missing = any(row["input_per_million"] is None for row in rows)
    context = {"nav": "models", "rows": rows, "has_missing": has_missing}
    return render(templates, request, session, "models.html", context)


def _per_million(per_token: Decimal) -> str:
    """USD per million tokens, with at least 2 decimals and no trailing noise (`0.50`, `0.075`)."""
    text = f"{(per_token * _MILLION).normalize():f}"
    whole, _, fraction = text.partition(".")
    return f"{whole}.{fraction.ljust(2, '0')}"


async def favicon() -> RedirectResponse:
    """Browsers ask for `/favicon.ico` on any page of the host (the JSON API's docs too): send them to the UI's SVG."""
    return RedirectResponse("/ui/static/favicon.svg", status_code=301)


def include_ui_routes(api: FastAPI) -> None:
    """Mount the admin UI on the app: pages under `/ui`, assets under `/ui/static`."""
    api.state.haimaker_ui_templates = build_templates()
    api.include_router(router)
    api.include_router(budget_pages.router)
    api.include_router(customer_pages.router)
    api.include_router(customer_forms.router)
    api.include_router(key_pages.router)
    api.include_router(spend_pages.router)
    api.mount("/ui/static", StaticFiles(directory=str(STATIC_DIR)), name="ui-static")
    api.add_api_route("/favicon.ico", favicon, methods=["GET", "HEAD"], include_in_schema=False)

    async def on_sign_in_required(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, SignInRequired)
        target = "/ui/login?" + urlencode({"next": exc.next_path})
        if request.headers.get("hx-request") == "true":
            return Response(status_code=204, headers={"HX-Redirect": target})
        return redirect(target)

    async def on_csrf_rejected(request: Request, exc: Exception) -> Response:
        session = get_codec(request).read(request)
        context = {
            "nav": "",
            "heading": "Form expired",
            "message": "This form was refused: its security token is missing or out of date, so nothing was changed. "
            "Go back, reload the page and submit it again.",
            "back_href": "/ui/customers" if session and session.is_signed_in else "/ui/login",
            "back_text": "Continue",
        }
        return render(get_templates(request), request, session, "error.html", context, status_code=403)

    async def on_read_only_refused(request: Request, exc: Exception) -> Response:
        context = {
            "nav": "",
            "heading": "Read-only access",
            "message": "You signed in with a read_only key: it can see every page but change nothing, so nothing "
            "was changed. Sign in with the master key or a management key to make changes.",
            "back_href": "/ui/customers",
            "back_text": "Continue",
        }
        session = await read_session(request)
        return render(get_templates(request), request, session, "error.html", context, status_code=403)

    api.add_exception_handler(SignInRequired, on_sign_in_required)
    api.add_exception_handler(CsrfRejected, on_csrf_rejected)
    api.add_exception_handler(ReadOnlyRefused, on_read_only_refused)
