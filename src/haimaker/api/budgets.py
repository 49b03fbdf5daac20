"""`/budget/*`: thin handlers over `services.budgets`. Budgets render as LiteLLM's raw rows."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response

from haimaker.api.deps import ServicesDep
from haimaker.api.responses import json_response
from haimaker.api.schemas import BudgetDeleteRequest, BudgetNewRequest, BudgetRequest, Id, error_responses, set_fields
from haimaker.api.wire import budget_row, budget_settings

router = APIRouter(tags=["budget management"])


@router.post("/budget/new", responses=error_responses(400, 422))
async def new_budget(body: BudgetNewRequest, services: ServicesDep) -> Response:
    """Create a budget (pricing tier); without `budget_id` one is generated. `{}` makes an empty budget."""
    return json_response(budget_row(await services.budgets.create(set_fields(body))))


@router.post("/budget/update", responses=error_responses(400, 404, 422))
async def update_budget(body: BudgetNewRequest, services: ServicesDep) -> Response:
    """Write the fields sent (explicit nulls clear); applies to every customer on the budget at once."""
    return json_response(budget_row(await services.budgets.update(set_fields(body))))


@router.post("/budget/info", responses=error_responses(400, 404, 422))
async def budget_info(body: BudgetRequest, services: ServicesDep) -> Response:
    """The budgets named in `budgets`, in that order."""
    return json_response([budget_row(budget) for budget in await services.budgets.get_many(body.budgets)])


@router.get("/budget/list")
async def list_budgets(services: ServicesDep) -> Response:
    """Every budget, ordered by id."""
    return json_response([budget_row(budget) for budget in await services.budgets.list_all()])


@router.get("/budget/settings", responses=error_responses(422))
async def budget_settings_of(budget_id: Annotated[Id, Query()], services: ServicesDep) -> Response:
    """The configurable fields of a budget with their values and descriptions (the admin UI's form)."""
    return json_response(budget_settings(await services.budgets.get(budget_id)))


@router.post("/budget/delete", responses=error_responses(400, 404, 422))
async def delete_budget(body: BudgetDeleteRequest, services: ServicesDep) -> Response:
    """Delete a budget; its customers fall back to the default budget. Returns the deleted row."""
    return json_response(budget_row(await services.budgets.delete(body.id)))
