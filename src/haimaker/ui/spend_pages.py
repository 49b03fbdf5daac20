"""The Spend page: total and per-model spend over a chosen range, the top customers, as SVG charts and tables.

Numbers come from the spend service (`services.spend`), the one that answers `/spend/logs` and
`/global/spend/end_users`, so the page and the API always agree. Models are named as configured (`model_name`), not
by the upstream model id spend is recorded under.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Final

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from haimaker.api.deps import AppStateDep, ServicesDep
from haimaker.app_state import AppState
from haimaker.errors import ProxyError
from haimaker.money import Nanos
from haimaker.providers.router import Router
from haimaker.ui.charts import daily_spend_chart, ranked_bars_chart
from haimaker.ui.deps import AdminSession, TemplatesDep
from haimaker.ui.rendering import render

router = APIRouter(prefix="/ui", include_in_schema=False)

RANGES: Final = (("7d", "7 days"), ("30d", "30 days"), ("90d", "90 days"))
_RANGE_DAYS: Final = {"7d": 7, "30d": 30, "90d": 90}
TOP_SHOWN: Final = 10
_TOP_LIMIT: Final = 100  # the spend service returns at most this many top customers


def chosen_range(today: date, range_code: str | None, start: str | None, end: str | None) -> tuple[date, date, str]:
    """(start, end, code) from the query: explicit dates win over a preset; 30 days by default.

    Raises:
        ValueError: a date that is not YYYY-MM-DD.
    """
    if start or end:
        first = date.fromisoformat(start) if start else today - timedelta(days=29)
        last = date.fromisoformat(end) if end else today
        return first, last, ""
    code = range_code if range_code in _RANGE_DAYS else "30d"
    return today - timedelta(days=_RANGE_DAYS[code] - 1), today, code


def model_names_by_upstream(router: Router) -> dict[str, str]:
    """The configured `model_name` of each upstream model id, the model spend is recorded under (`gpt-4o-mini` of
    `openai/gpt-4o-mini`); model names that call the same upstream model read together (`small / cheap`). A model
    no longer configured keeps its upstream id."""
    names: dict[str, list[str]] = {}
    for name in router.model_names:
        for deployment in router.group(name):
            listed = names.setdefault(deployment.upstream_model, [])
            if name not in listed:
                listed.append(name)
    return {upstream: " / ".join(listed) for upstream, listed in names.items()}


def ledger_warning(state: AppState) -> str | None:
    """A warning when the figures below may be incomplete: the store is lost, or charges could not be written."""
    if state.store_monitor.is_lost:
        return "The spend store is lost: new charges are not being recorded in it (see /health/readiness)."
    dead = state.dead_letter_count()
    if dead:
        return f"{dead} charge(s) could not be recorded and are missing below (see /spend/dead_letters)."
    return None


@router.get("/spend", response_class=HTMLResponse)
async def spend_page(
    request: Request,
    state: AppStateDep,
    services: ServicesDep,
    templates: TemplatesDep,
    session: AdminSession,
    range: str | None = None,
    start: str | None = None,
    end: str | None = None,
) -> Response:
    today = state.clock.now().astimezone(UTC).date()
    range_error = None
    try:
        first, last, code = chosen_range(today, range, start, end)
    except ValueError:
        range_error = "Dates must be YYYY-MM-DD."
        first, last, code = chosen_range(today, None, None, None)
    try:
        days = await services.spend.daily_summary(first, last)
    except ProxyError as exc:  # e.g. the end before the start: the service's own message
        range_error = exc.message
        first, last, code = chosen_range(today, None, None, None)
        days = await services.spend.daily_summary(first, last)
    per_model: dict[str, Nanos] = {}
    model_names = model_names_by_upstream(services.router)
    for day in days:
        for model, nanos in day.models.items():
            name = model_names.get(model, model)
            per_model[name] = per_model.get(name, 0) + nanos
    by_model = sorted(per_model.items(), key=lambda item: (-item[1], item[0]))
    top = await services.spend.top_end_users(
        start=datetime.combine(first, time(0), tzinfo=UTC),
        end=datetime.combine(last + timedelta(days=1), time(0), tzinfo=UTC),
    )
    total = sum(day.spend for day in days)
    points = [(day.day.isoformat(), day.spend) for day in days]
    context = {
        "nav": "spend",
        "ledger_warning": ledger_warning(state),
        "ranges": RANGES,
        "range": code,
        "range_error": range_error,
        "start": first.isoformat(),
        "end": last.isoformat(),
        "total": total,
        "has_spend": bool(by_model or top or total),
        "by_model": by_model,
        "top": top[:TOP_SHOWN],
        "top_count": f"{len(top)}+" if len(top) >= _TOP_LIMIT else str(len(top)),
        "daily_chart": daily_spend_chart(points, title="Spend per day"),
        "model_chart": ranked_bars_chart(by_model, title="Spend per model"),
        "top_chart": ranked_bars_chart([(user, nanos) for user, _, nanos in top[:TOP_SHOWN]], title="Top customers"),
    }
    return render(templates, request, session, "spend.html", context)
