"""The Customers pages: the searchable, paginated table, a customer's page, block/unblock, and delete.

Reads and writes go through `services.customers` and `services.spend`, as `/customer/*` and `/spend/logs` do. The
table is paged by key and searched by id prefix in the database (50 rows a page, over the primary-key index), and
its total is estimated past 1,000 customers, so it stays fast with any number of customers.
The create and edit forms are in `customer_forms.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, timedelta
from typing import Any, Final
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from fastapi.templating import Jinja2Templates

from haimaker.api.deps import ServicesDep
from haimaker.errors import NotFoundError, ProxyError
from haimaker.money import Nanos
from haimaker.services.container import Services
from haimaker.services.customers import CustomerView
from haimaker.storage.records import Budget
from haimaker.ui.charts import budget_bar, daily_spend_chart
from haimaker.ui.deps import AdminSession, CheckedForm, EditorSession, TemplatesDep, redirect
from haimaker.ui.rendering import notice_query, render
from haimaker.ui.session import Session
from haimaker.ui.tiers import private_budget_ids

router = APIRouter(prefix="/ui", include_in_schema=False)

PAGE_SIZE: Final = 50
CHART_DAYS: Final = 30
LATEST_REQUESTS: Final = 20


@dataclass(frozen=True, slots=True)
class EffectiveBudget:
    """The budget that applies to a customer: its own row, else the default budget, else none."""

    budget: Budget | None
    is_default: bool

    @property
    def budget_id(self) -> str | None:
        return self.budget.budget_id if self.budget is not None else None


def effective_budget(services: Services, view: CustomerView) -> EffectiveBudget:
    return EffectiveBudget(view.budget, view.budget_is_default)


def customer_query(user_id: str, **extra: str) -> str:
    return urlencode({"id": user_id, **extra})


@router.get("/customers", response_class=HTMLResponse)
async def customers_page(
    request: Request,
    services: ServicesDep,
    templates: TemplatesDep,
    session: AdminSession,
    search: str = "",
    after: str = "",
    before: str = "",
) -> Response:
    search = search.strip()
    # Paged by key (next: after the last id, previous: before the first), so any page costs the same; the total is
    # exact only when few match, else estimated (`CustomerService.count`): nothing here counts every customer.
    result = await services.customers.list_page(
        PAGE_SIZE, search=search or None, after=after or None, before=None if after else before or None
    )
    total = await services.customers.count(search or None)
    private = await private_budget_ids(services, (v.customer.budget_id for v in result.views if v.customer.budget_id))
    rows = []
    for view in result.views:
        applied = effective_budget(services, view)
        max_budget = applied.budget.max_budget if applied.budget is not None else None
        rows.append(
            {
                "customer": view.customer,
                "bar": budget_bar(view.spend, max_budget),
                "budget_id": applied.budget_id,
                "is_default": applied.is_default,
                "has_custom_limits": applied.budget_id in private,
            }
        )
    context = {
        "nav": "customers",
        "customers": rows,
        "search": search,
        "total": total,
        "next_after": result.next_after,
        "prev_before": result.prev_before,
        "is_paged": bool(after or before),
    }
    is_fragment = request.headers.get("hx-request") == "true" and not request.headers.get("hx-history-restore-request")
    response = render(templates, request, session, "_customer_table.html" if is_fragment else "customers.html", context)
    response.headers["vary"] = "HX-Request"
    return response


def not_found_page(templates: Jinja2Templates, request: Request, session: Session, error: ProxyError) -> Response:
    context = {
        "nav": "customers",
        "heading": "Customer not found",
        "message": error.message,
        "back_href": "/ui/customers",
        "back_text": "Back to Customers",
    }
    return render(templates, request, session, "error.html", context, status_code=404)


@router.get("/customers/view", response_class=HTMLResponse)
async def customer_page(
    request: Request, services: ServicesDep, templates: TemplatesDep, session: AdminSession, id: str
) -> Response:
    try:
        view = await services.customers.info(id)
    except NotFoundError as error:
        return not_found_page(templates, request, session, error)
    applied = effective_budget(services, view)
    budget = applied.budget or Budget(budget_id="")
    remaining: Nanos | None = None
    if budget.max_budget is not None:
        remaining = max(0, budget.max_budget - view.spend)
    today = services.clock.now().astimezone(UTC).date()
    first = today - timedelta(days=CHART_DAYS - 1)
    days = await services.spend.daily_summary(first, today, end_user=id)
    # Only the rows shown: a hammered customer has a refusal row a second (accounting/refusals.py).
    logs = await services.spend.logs(end_user=id, start_date=first, limit=LATEST_REQUESTS)
    context: dict[str, Any] = {
        "nav": "customers",
        "customer": view.customer,
        "spend": view.spend,
        "bar": budget_bar(view.spend, budget.max_budget),
        "limits": budget,
        "budget_id": applied.budget_id,
        "is_default": applied.is_default,
        # A budget of its own (`tiers.py`): shown as the customer's custom limits, not by its uuid.
        "has_custom_limits": bool(applied.budget_id and await private_budget_ids(services, [applied.budget_id])),
        "remaining": remaining,
        "days": CHART_DAYS,
        "chart": daily_spend_chart([(d.day.isoformat(), d.spend) for d in days], title="Spend per day"),
        "logs": logs[:LATEST_REQUESTS],
    }
    return render(templates, request, session, "customer.html", context)


@router.post("/customers/block")
async def block_customer(services: ServicesDep, session: AdminSession, form: CheckedForm, id: str) -> Response:
    await services.customers.block([id])
    return redirect("/ui/customers/view?" + notice_query(session, "customer-blocked", id))


@router.post("/customers/unblock", response_class=HTMLResponse)
async def unblock_customer(
    request: Request, services: ServicesDep, templates: TemplatesDep, session: AdminSession, form: CheckedForm, id: str
) -> Response:
    try:
        await services.customers.unblock([id])
    except NotFoundError as error:
        return not_found_page(templates, request, session, error)
    return redirect("/ui/customers/view?" + notice_query(session, "customer-unblocked", id))


@router.get("/customers/delete", response_class=HTMLResponse)
async def delete_customer_page(
    request: Request, services: ServicesDep, templates: TemplatesDep, session: EditorSession, id: str
) -> Response:
    try:
        view = await services.customers.info(id)
    except NotFoundError as error:
        return not_found_page(templates, request, session, error)
    context = {
        "nav": "customers",
        "customer": view.customer,
        "spend": view.spend,
        "has_default": services.catalog.default_budget_id is not None,
        "has_custom_limits": bool(
            view.customer.budget_id and await private_budget_ids(services, [view.customer.budget_id])
        ),
        "errors": {},
    }
    return render(templates, request, session, "customer_delete.html", context)


@router.post("/customers/delete", response_class=HTMLResponse)
async def delete_customer(
    request: Request, services: ServicesDep, templates: TemplatesDep, session: AdminSession, form: CheckedForm, id: str
) -> Response:
    try:
        await services.customers.delete([id])
    except NotFoundError as error:
        return not_found_page(templates, request, session, error)
    return redirect("/ui/customers?" + notice_query(session, "customer-deleted", id))
