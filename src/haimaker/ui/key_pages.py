"""The Keys page: the table of virtual keys (masked), the create form, the new key shown once, block, delete.

Writes go through `services.keys` (as `/key/generate`, `/key/block`, `/key/unblock` and `/key/delete` do), after the
form has passed the API's own request model and the services' field rules, so every bad value gets the API's message
next to its field, all at once.

Invariants:
- The plaintext key exists in exactly one response: the answer to the create form's POST (rendered, not redirected:
  a redirect would have to carry or store the key). It is never in a URL, a cookie, a log or the table; pages are
  `no-store`. The table shows LiteLLM's masked `key_name` (`sk-...abcd`); rows and actions name a key by its token
  (the SHA-256 hex the API shows too).
- The table is paginated in the database (`PAGE_SIZE` rows), like the Customers page.
"""

from __future__ import annotations

from typing import Any, Final
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from fastapi.templating import Jinja2Templates

from haimaker.api.deps import ServicesDep
from haimaker.errors import NotFoundError, ProxyError
from haimaker.services.container import Services
from haimaker.storage.records import KEY_TYPES, VirtualKey
from haimaker.ui.deps import AdminSession, CheckedForm, EditorSession, TemplatesDep, redirect
from haimaker.ui.forms import CUSTOM_RESET, RESET_CHOICES, chosen_duration, errors_for, given
from haimaker.ui.rendering import notice_query, render
from haimaker.ui.session import Session
from haimaker.ui.tiers import tier_options
from haimaker.ui.validation import InvalidForm, new_key_fields

router = APIRouter(prefix="/ui", include_in_schema=False)

PAGE_SIZE: Final = 50
_TEXT_FIELDS: Final = (
    "key_alias",
    "key_type",
    "max_budget",
    "rpm_limit",
    "tpm_limit",
    "customer_id",
    "end_user_budget_id",
    "duration",
)
_FIELDS: Final = (*_TEXT_FIELDS, "models", "budget_duration", "budget_duration_custom")
_RESET_OPTIONS: Final = (*RESET_CHOICES, (CUSTOM_RESET, "Custom…"))
_KEY_TYPE_LABELS: Final = {
    "default": "Default (LLM routes)",
    "llm_api": "LLM API (LLM routes only)",
    "management": "Management (admin API and UI, no LLM calls)",
    "read_only": "Read-only (admin reads and UI, no writes)",
}
_KEY_TYPE_OPTIONS: Final = tuple((kind, _KEY_TYPE_LABELS.get(kind, kind)) for kind in KEY_TYPES)


def _token_query(token: str) -> str:
    return urlencode({"token": token})


def key_label(key: VirtualKey) -> str:
    """How notices and headings name a key: its alias, else its masked name."""
    return key.key_alias or key.key_name


def submitted_fields(form: dict[str, str]) -> dict[str, Any]:
    """The create form as `/key/generate` reads its body: empty inputs not given, models a list."""
    fields: dict[str, Any] = given(form, _TEXT_FIELDS, empty_is_null=False)
    models = [name.strip() for name in form.get("models", "").split(",") if name.strip()]
    if models:
        fields["models"] = models
    duration = chosen_duration(form)
    if duration is not None:
        fields["budget_duration"] = duration
    return fields


def _key_errors(error: ProxyError | InvalidForm, form: dict[str, str]) -> dict[str, str]:
    # A bad custom period is shown under the custom field, where it was typed.
    alias = "budget_duration_custom" if form.get("budget_duration") == CUSTOM_RESET else "budget_duration"
    return errors_for(error, _FIELDS, {"budget_duration": alias})


@router.get("/keys", response_class=HTMLResponse)
async def keys_page(
    request: Request,
    services: ServicesDep,
    templates: TemplatesDep,
    session: AdminSession,
    alias: str = "",
    page: int = 1,
) -> Response:
    alias = alias.strip()
    # The first page tells the total; a page past the end shows the last one (as the Customers page does).
    listed = await services.keys.list(max(page, 1), PAGE_SIZE, alias or None, return_full_object=True)
    total = listed.total_count
    pages = max(1, listed.total_pages)
    if listed.current_page > pages:
        listed = await services.keys.list(pages, PAGE_SIZE, alias or None, return_full_object=True)
    page = min(max(page, 1), pages)
    keys = listed.keys
    now = services.clock.now()
    rows = [
        {
            "key": key,
            "is_expired": key.expires is not None and key.expires <= now,
            "type_label": _KEY_TYPE_LABELS.get(key.key_type, key.key_type),
            "query": _token_query(key.token),
        }
        for key in keys
    ]
    context = {"nav": "keys", "rows": rows, "alias": alias, "page": page, "pages": pages, "total": total}
    return render(templates, request, session, "keys.html", context)


async def _form_page(
    services: Services,
    templates: Jinja2Templates,
    request: Request,
    session: Session,
    *,
    values: dict[str, str],
    errors: dict[str, str],
    status_code: int = 200,
) -> Response:
    context = {
        "nav": "keys",
        "form": {"key_type": "default", **values},
        "errors": errors,
        "key_type_options": _KEY_TYPE_OPTIONS,
        "reset_options": _RESET_OPTIONS,
        "budget_options": await tier_options(services),
        "model_names": services.router.model_names,
    }
    return render(templates, request, session, "key_form.html", context, status_code=status_code)


@router.get("/keys/new", response_class=HTMLResponse)
async def new_key_page(
    request: Request, services: ServicesDep, templates: TemplatesDep, session: EditorSession
) -> Response:
    return await _form_page(services, templates, request, session, values={}, errors={})


@router.post("/keys/new", response_class=HTMLResponse)
async def create_key(
    request: Request, services: ServicesDep, templates: TemplatesDep, session: AdminSession, form: CheckedForm
) -> Response:
    try:
        fields = await new_key_fields(submitted_fields(form), services.keys.check)
        plaintext, key = await services.keys.generate(fields)
    except (InvalidForm, ProxyError) as error:
        errors = _key_errors(error, form)
        return await _form_page(
            services, templates, request, session, values=form, errors=errors, status_code=error.status_code
        )
    # The one response that carries the key: rendered here, never redirected to (see the module docstring).
    context = {
        "nav": "keys",
        "plaintext": plaintext,
        "key": key,
        "type_label": _KEY_TYPE_LABELS.get(key.key_type, key.key_type),
    }
    return render(templates, request, session, "key_created.html", context, status_code=201)


@router.post("/keys/block", response_class=HTMLResponse)
async def block_key(
    request: Request,
    services: ServicesDep,
    templates: TemplatesDep,
    session: AdminSession,
    form: CheckedForm,
    token: str,
) -> Response:
    try:
        key = await services.keys.block(token)
    except NotFoundError:
        return _missing(templates, request, session)
    return redirect("/ui/keys?" + notice_query(session, "key-blocked", key_label(key)))


@router.post("/keys/unblock", response_class=HTMLResponse)
async def unblock_key(
    request: Request,
    services: ServicesDep,
    templates: TemplatesDep,
    session: AdminSession,
    form: CheckedForm,
    token: str,
) -> Response:
    try:
        key = await services.keys.unblock(token)
    except NotFoundError:
        return _missing(templates, request, session)
    return redirect("/ui/keys?" + notice_query(session, "key-unblocked", key_label(key)))


@router.get("/keys/delete", response_class=HTMLResponse)
async def delete_key_page(
    request: Request, services: ServicesDep, templates: TemplatesDep, session: EditorSession, token: str
) -> Response:
    try:
        key = await services.keys.info(token)
    except NotFoundError:
        return _missing(templates, request, session)
    context = {"nav": "keys", "key": key, "query": _token_query(token)}
    return render(templates, request, session, "key_delete.html", context)


@router.post("/keys/delete", response_class=HTMLResponse)
async def delete_key(
    request: Request,
    services: ServicesDep,
    templates: TemplatesDep,
    session: AdminSession,
    form: CheckedForm,
    token: str,
) -> Response:
    try:
        key = await services.keys.info(token)
        await services.keys.delete(keys=[token])
    except NotFoundError:
        return _missing(templates, request, session)
    return redirect("/ui/keys?" + notice_query(session, "key-deleted", key_label(key)))


def _missing(templates: Jinja2Templates, request: Request, session: Session) -> Response:
    context = {
        "nav": "keys",
        "heading": "Key not found",
        "message": "This key does not exist. It may have been deleted.",
        "back_href": "/ui/keys",
        "back_text": "Back to Keys",
    }
    return render(templates, request, session, "error.html", context, status_code=404)
