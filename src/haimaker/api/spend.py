"""Spend reports: `/spend/logs`, `/customer/daily/activity` (alias `/end_user/daily/activity`) and
`/global/spend/end_users`. Thin handlers over `services.spend`."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response

from haimaker.api.deps import ServicesDep
from haimaker.api.responses import json_response
from haimaker.api.schemas import GlobalEndUsersSpend, ListText, Name, Page, error_responses
from haimaker.api.wire import activity_report, day_summary_row, spend_log_row
from haimaker.money import nanos_to_usd
from haimaker.services.budgets import as_utc

router = APIRouter(tags=["Budget & Spend Tracking"])

DateQuery = Annotated[date | None, Query(description="YYYY-MM-DD (UTC), inclusive")]


@router.get("/spend/logs", responses=error_responses(400, 422))
async def spend_logs(
    services: ServicesDep,
    api_key: Name | None = None,
    user_id: Annotated[Name | None, Query(description="The key owner (`user` column), not the customer")] = None,
    request_id: Name | None = None,
    end_user: Annotated[Name | None, Query(description="The customer id")] = None,
    start_date: DateQuery = None,
    end_date: DateQuery = None,
    summarize: bool = True,
) -> Response:
    """Spend-log rows, newest first (at most 10 000); with both dates and `summarize`, per-day totals instead."""
    if start_date is not None and end_date is not None and summarize:
        days = await services.spend.daily_summary(
            start_date, end_date, end_user=end_user, request_id=request_id, api_key=api_key, user_id=user_id
        )
        return json_response([day_summary_row(day) for day in days])
    logs = await services.spend.logs(
        end_user=end_user,
        request_id=request_id,
        api_key=api_key,
        user_id=user_id,
        start_date=start_date,
        end_date=end_date,
    )
    return json_response([spend_log_row(log) for log in logs])


@router.get("/customer/daily/activity", responses=error_responses(400, 422))
@router.get("/end_user/daily/activity", include_in_schema=False, responses=error_responses(400, 422))
async def customer_daily_activity(
    services: ServicesDep,
    end_user_ids: Annotated[ListText | None, Query(description="Comma-separated customer ids")] = None,
    exclude_end_user_ids: Annotated[ListText | None, Query(description="Comma-separated customer ids")] = None,
    start_date: DateQuery = None,
    end_date: DateQuery = None,
    model: Name | None = None,
    api_key: Annotated[Name | None, Query(description="Accepted for compatibility; the rollup has no keys")] = None,
    page: Annotated[Page, Query()] = 1,
    page_size: Annotated[int, Query(ge=1, le=1000, description="Days per page")] = 10,
) -> Response:
    """Customers' spend and tokens per day, newest first, broken down by model and provider, and by customer for the
    customers `end_user_ids` names (without it a day sums every customer, and `entities` is empty)."""
    report = await services.spend.daily_activity(
        end_user_ids=_ids(end_user_ids),
        exclude_end_user_ids=_ids(exclude_end_user_ids),
        start_date=start_date,
        end_date=end_date,
        model=model,
        page=page,
        page_size=page_size,
    )
    return json_response(activity_report(report))


@router.post("/global/spend/end_users", include_in_schema=False, responses=error_responses(400, 422))
async def top_end_users(services: ServicesDep, body: GlobalEndUsersSpend | None = None) -> Response:
    """The 100 customers who spent most over the whole UTC days `[startTime, endTime)` touches (default: the last
    30 days)."""
    body = body or GlobalEndUsersSpend()
    rows = await services.spend.top_end_users(
        start=as_utc(body.startTime, param="startTime") if body.startTime is not None else None,
        end=as_utc(body.endTime, param="endTime") if body.endTime is not None else None,
        api_key=body.api_key,
    )
    return json_response(
        [{"end_user": user, "total_count": count, "total_spend": nanos_to_usd(spend)} for user, count, spend in rows]
    )


def _ids(value: str | None) -> list[str] | None:
    if value is None:
        return None
    ids = [part.strip() for part in value.split(",") if part.strip()]
    return ids or None
