"""The create and edit forms of a customer: alias, budget (pricing tier), own limits, region, default model.

Create sends the filled fields as `POST /customer/new` would carry them; edit sends only the fields the admin changed,
as `POST /customer/update` would, so leaving a shared tier's limits untouched never gives the customer a private copy.
Validation and every rule (both a tier and limits, unknown default model, private copy of a shared tier) belong to
`services.customers`; every invalid field is reported at once, next to the field its `param` names. The tier
dropdown lists the default budget once and no other customer's private budget (`tiers.py`).
"""

from __future__ import annotations

from typing import Any, Final

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from haimaker.api.deps import ServicesDep
from haimaker.errors import NotFoundError, ProxyError
from haimaker.services.container import Services
from haimaker.services.customers import CustomerView
from haimaker.ui.customer_pages import customer_query, effective_budget, not_found_page
from haimaker.ui.deps import AdminSession, CheckedForm, EditorSession, TemplatesDep, redirect
from haimaker.ui.forms import CUSTOMER_LIMIT_FIELDS, errors_for, given
from haimaker.ui.rendering import notice_query, render, usd_form_value
from haimaker.ui.session import Session
from haimaker.ui.tiers import tier_options
from haimaker.ui.validation import InvalidForm, customer_update_fields, new_customer_fields

router = APIRouter(prefix="/ui", include_in_schema=False)

_EDITABLE: Final = ("alias", "budget_id", *CUSTOMER_LIMIT_FIELDS, "allowed_model_region", "default_model")
_FIELDS: Final = ("user_id", *_EDITABLE)
_REGIONS: Final = (("", "Any"), ("us", "US"), ("eu", "EU"))


def _model_options(services: Services) -> list[tuple[str, str]]:
    return [("", "None"), *((name, name) for name in services.router.model_names)]


async def _form_page(
    services: Services,
    templates: Any,
    request: Request,
    session: Session,
    *,
    view: CustomerView | None,
    values: dict[str, str],
    errors: dict[str, str],
    status_code: int = 200,
) -> Response:
    is_edit = view is not None
    user_id = values.get("user_id", "")
    current = view.customer.budget_id if view is not None else None
    default_id = services.catalog.default_budget_id
    context = {
        "nav": "customers",
        "is_edit": is_edit,
        "action": "/ui/customers/edit?" + customer_query(user_id) if is_edit else "/ui/customers/new",
        "cancel_href": "/ui/customers/view?" + customer_query(user_id) if is_edit else "/ui/customers",
        "form": values,
        "errors": errors,
        "budget_options": await tier_options(services, current),
        "budget_help": "Link a pricing tier; every customer on it gets its full limits."
        + (f" Without one, the default budget {default_id} applies." if default_id else ""),
        "region_options": _REGIONS,
        "model_options": _model_options(services),
    }
    return render(templates, request, session, "customer_form.html", context, status_code=status_code)


def _values_of(services: Services, view: CustomerView) -> dict[str, str]:
    """The edit form's starting values: the customer's fields and the limits that apply to it now."""
    customer = view.customer
    budget = effective_budget(services, view).budget
    return {
        "user_id": customer.user_id,
        "alias": customer.alias or "",
        # The default budget is the dropdown's empty choice (it is listed once): a customer linked to it explicitly
        # shows it there, and saving the form unchanged leaves the link alone (only changed fields are sent).
        "budget_id": "" if customer.budget_id == services.catalog.default_budget_id else customer.budget_id or "",
        "max_budget": usd_form_value(budget.max_budget) if budget else "",
        "budget_duration": (budget.budget_duration or "") if budget else "",
        "tpm_limit": "" if budget is None or budget.tpm_limit is None else str(budget.tpm_limit),
        "rpm_limit": "" if budget is None or budget.rpm_limit is None else str(budget.rpm_limit),
        "allowed_model_region": customer.allowed_model_region or "",
        "default_model": customer.default_model or "",
    }


@router.get("/customers/new", response_class=HTMLResponse)
async def new_customer_page(
    request: Request, services: ServicesDep, templates: TemplatesDep, session: EditorSession
) -> Response:
    return await _form_page(services, templates, request, session, view=None, values={}, errors={})


@router.post("/customers/new", response_class=HTMLResponse)
async def create_customer(
    request: Request, services: ServicesDep, templates: TemplatesDep, session: AdminSession, form: CheckedForm
) -> Response:
    submitted = given(form, _FIELDS, empty_is_null=False)
    try:
        fields = await new_customer_fields(submitted, services.customers.check)
        created = await services.customers.create(fields)
    except (InvalidForm, ProxyError) as error:
        errors = errors_for(error, _FIELDS)
        return await _form_page(
            services, templates, request, session, view=None, values=form, errors=errors, status_code=400
        )
    return redirect("/ui/customers/view?" + notice_query(session, "customer-created", created.customer.user_id))


@router.get("/customers/edit", response_class=HTMLResponse)
async def edit_customer_page(
    request: Request, services: ServicesDep, templates: TemplatesDep, session: EditorSession, id: str
) -> Response:
    try:
        view = await services.customers.info(id)
    except NotFoundError as error:
        return not_found_page(templates, request, session, error)
    values = _values_of(services, view)
    return await _form_page(services, templates, request, session, view=view, values=values, errors={})


@router.post("/customers/edit", response_class=HTMLResponse)
async def update_customer(
    request: Request,
    services: ServicesDep,
    templates: TemplatesDep,
    session: AdminSession,
    form: CheckedForm,
    id: str,
) -> Response:
    try:
        view = await services.customers.info(id)
    except NotFoundError as error:
        return not_found_page(templates, request, session, error)
    before = _values_of(services, view)
    changed = {name: value for name, value in form.items() if name in _EDITABLE and value != before.get(name, "")}
    values = {**form, "user_id": id}
    try:
        submitted = {"user_id": id, **given(changed, _EDITABLE, empty_is_null=True)}
        await services.customers.update(await customer_update_fields(submitted, services.customers.check))
    except (InvalidForm, ProxyError) as error:
        errors = errors_for(error, _FIELDS)
        return await _form_page(
            services, templates, request, session, view=view, values=values, errors=errors, status_code=400
        )
    return redirect("/ui/customers/view?" + notice_query(session, "customer-updated", id))
