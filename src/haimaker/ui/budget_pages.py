"""The Budgets pages: the table of every budget, create and edit forms, delete with confirmation, usage snippets.

Writes go through `services.budgets` (as `/budget/new`, `/budget/update`, `/budget/delete` do), after the form has
passed the API's own request model and the services' field rules, so every bad value gets the API's message, shown
next to its field, all at once. Private budgets (one customer's custom limits, see `tiers.py`) are not listed.
"""

from __future__ import annotations

from typing import Any, Final
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from fastapi.templating import Jinja2Templates

from haimaker.api.deps import ServicesDep
from haimaker.errors import ProxyError
from haimaker.services.container import Services
from haimaker.storage.records import Budget
from haimaker.ui.deps import AdminSession, CheckedForm, EditorSession, TemplatesDep, redirect
from haimaker.ui.forms import (
    BUDGET_FORM_FIELDS,
    CUSTOM_RESET,
    RESET_CHOICES,
    chosen_duration,
    duration_form_values,
    errors_for,
    given,
)
from haimaker.ui.rendering import notice_query, render, usd_form_value
from haimaker.ui.session import Session
from haimaker.ui.tiers import customer_counts, example_tier, list_tiers
from haimaker.ui.validation import InvalidForm, budget_fields

router = APIRouter(prefix="/ui", include_in_schema=False)

_FIELDS: Final = ("budget_id", *BUDGET_FORM_FIELDS, "budget_duration", "budget_duration_custom")
_RESET_OPTIONS: Final = (*RESET_CHOICES, (CUSTOM_RESET, "Custom…"))
_RESET_LABELS: Final = {value: text for value, text in RESET_CHOICES if value}


def reset_label(duration: str | None) -> str:
    return "Not set" if not duration else _RESET_LABELS.get(duration, duration)


@router.get("/budgets", response_class=HTMLResponse)
async def budgets_page(
    request: Request, services: ServicesDep, templates: TemplatesDep, session: AdminSession
) -> Response:
    # Private budgets (one customer's custom limits) are not tiers: they are shown on their customer's page.
    tiers = await list_tiers(services)
    rows: list[dict[str, Any]] = [
        {
            "budget": tier.budget,
            "customers": tier.customers,
            "is_default": tier.is_default,
            "reset_label": reset_label(tier.budget.budget_duration),
        }
        for tier in tiers
    ]
    models = services.router.model_names
    context = {
        "nav": "budgets",
        "budgets": rows,
        "base_url": str(request.base_url).rstrip("/"),
        "example_budget": example_tier(tiers),
        "example_model": models[0] if models else "gpt-4o-mini",
    }
    return render(templates, request, session, "budgets.html", context)


def _form_page(
    templates: Jinja2Templates,
    request: Request,
    session: Session,
    *,
    is_edit: bool,
    values: dict[str, str],
    errors: dict[str, str],
    status_code: int = 200,
) -> Response:
    action = "/ui/budgets/edit" if is_edit else "/ui/budgets/new"
    if is_edit:
        action += "?" + _id_query(values.get("budget_id", ""))
    context = {
        "nav": "budgets",
        "is_edit": is_edit,
        "action": action,
        "form": values,
        "errors": errors,
        "reset_options": _RESET_OPTIONS,
    }
    return render(templates, request, session, "budget_form.html", context, status_code=status_code)


def _id_query(budget_id: str) -> str:
    return urlencode({"id": budget_id})


def _values_of(budget: Budget) -> dict[str, str]:
    values = {
        "budget_id": budget.budget_id,
        "max_budget": usd_form_value(budget.max_budget),
        "soft_budget": usd_form_value(budget.soft_budget),
        "tpm_limit": "" if budget.tpm_limit is None else str(budget.tpm_limit),
        "rpm_limit": "" if budget.rpm_limit is None else str(budget.rpm_limit),
    }
    return values | duration_form_values(budget.budget_duration)


def _submitted(form: dict[str, str], *, is_edit: bool) -> dict[str, Any]:
    """The wire fields of a budget form: as `/budget/new` (empty = not given) or `/budget/update` (empty = clear)."""
    fields: dict[str, Any] = given(form, ("budget_id", *BUDGET_FORM_FIELDS), empty_is_null=is_edit)
    duration = chosen_duration(form)
    if duration is not None or is_edit:
        fields["budget_duration"] = duration
    return fields


def _budget_errors(error: ProxyError | InvalidForm, form: dict[str, str]) -> dict[str, str]:
    # A bad custom period is shown under the custom field, where it was typed.
    alias = "budget_duration_custom" if form.get("budget_duration") == CUSTOM_RESET else "budget_duration"
    return errors_for(error, _FIELDS, {"budget_duration": alias})


@router.get("/budgets/new", response_class=HTMLResponse)
async def new_budget_page(request: Request, templates: TemplatesDep, session: EditorSession) -> Response:
    return _form_page(templates, request, session, is_edit=False, values={}, errors={})


@router.post("/budgets/new", response_class=HTMLResponse)
async def create_budget(
    request: Request, services: ServicesDep, templates: TemplatesDep, session: AdminSession, form: CheckedForm
) -> Response:
    try:
        fields = await budget_fields(_submitted(form, is_edit=False), services.budgets.changes)
        created = await services.budgets.create(fields)
    except (InvalidForm, ProxyError) as error:
        errors = _budget_errors(error, form)
        return _form_page(templates, request, session, is_edit=False, values=form, errors=errors, status_code=400)
    return redirect("/ui/budgets?" + notice_query(session, "budget-created", created.budget_id))


@router.get("/budgets/edit", response_class=HTMLResponse)
async def edit_budget_page(
    request: Request, services: ServicesDep, templates: TemplatesDep, session: EditorSession, id: str
) -> Response:
    budget = await services.budgets.get(id)
    if budget is None:
        return _missing(templates, request, session, id)
    return _form_page(templates, request, session, is_edit=True, values=_values_of(budget), errors={})


@router.post("/budgets/edit", response_class=HTMLResponse)
async def update_budget(
    request: Request,
    services: ServicesDep,
    templates: TemplatesDep,
    session: AdminSession,
    form: CheckedForm,
    id: str,
) -> Response:
    form = {**form, "budget_id": id}  # read-only in the form: the URL decides which budget changes
    try:
        await services.budgets.update(await budget_fields(_submitted(form, is_edit=True), services.budgets.changes))
    except (InvalidForm, ProxyError) as error:
        errors = _budget_errors(error, form)
        return _form_page(templates, request, session, is_edit=True, values=form, errors=errors, status_code=400)
    return redirect("/ui/budgets?" + notice_query(session, "budget-updated", id))


async def _delete_context(services: Services, budget: Budget) -> dict[str, Any]:
    default_id = services.catalog.default_budget_id
    has_default = default_id is not None and default_id != budget.budget_id
    fallback = f"the default budget ({default_id})" if has_default else "no budget (no limits)"
    counts = await customer_counts(services, [budget.budget_id])
    return {
        "nav": "budgets",
        "budget": budget,
        "customers": counts.get(budget.budget_id, 0),
        "fallback": fallback,
    }


@router.get("/budgets/delete", response_class=HTMLResponse)
async def delete_budget_page(
    request: Request, services: ServicesDep, templates: TemplatesDep, session: EditorSession, id: str
) -> Response:
    budget = await services.budgets.get(id)
    if budget is None:
        return _missing(templates, request, session, id)
    context = await _delete_context(services, budget) | {"errors": {}}
    return render(templates, request, session, "budget_delete.html", context)


@router.post("/budgets/delete", response_class=HTMLResponse)
async def delete_budget(
    request: Request,
    services: ServicesDep,
    templates: TemplatesDep,
    session: AdminSession,
    form: CheckedForm,
    id: str,
) -> Response:
    try:
        await services.budgets.delete(id)
    except ProxyError as error:
        budget = await services.budgets.get(id)
        if budget is None:
            return _missing(templates, request, session, id)
        context = await _delete_context(services, budget) | {"errors": {"": error.message}}
        return render(templates, request, session, "budget_delete.html", context, status_code=error.status_code)
    return redirect("/ui/budgets?" + notice_query(session, "budget-deleted", id))


def _missing(templates: Jinja2Templates, request: Request, session: Session, budget_id: str) -> Response:
    context = {
        "nav": "budgets",
        "heading": "Budget not found",
        "message": f"Budget with id '{budget_id}' does not exist. It may have been deleted.",
        "back_href": "/ui/budgets",
        "back_text": "Back to Budgets",
    }
    return render(templates, request, session, "error.html", context, status_code=404)
