"""The management API: customers, budgets and spend reports, every route behind the admin key.

Wire-compatible with LiteLLM's (paths, bodies, response shapes, status codes), with CONTRACT §5's differences: one
error envelope everywhere, 404 for unknown budgets, `/customer/update` taking budget fields without touching shared
tiers, `/customer/unblock` clearing the flag. Handlers stay thin: every rule lives in `haimaker.services`, which the
admin UI calls too.

    api/customers.py   /customer/* and the /end_user/* aliases
    api/budgets.py     /budget/*
    api/spend.py       /spend/logs, /customer/daily/activity, /global/spend/end_users
    api/dead_letters.py /spend/dead_letters (charges the store could not hold)
    api/keys.py        /key/* (virtual keys)
    api/billing.py     /billing/export/status (usage export)
    api/schemas.py     request bodies          api/wire.py   response shapes
"""

from __future__ import annotations

from fastapi import Depends, FastAPI

from haimaker.api import billing, budgets, customers, dead_letters, keys, spend
from haimaker.api.deps import require_admin
from haimaker.api.schemas import COMMON_ERRORS, error_responses


def include_management_routes(api: FastAPI) -> None:
    """Add the management routes to the app; each answers 401/403 without a valid admin key.

    The OpenAPI document lists every status a route can answer (the common ones here, the route's own on the route),
    each with the error envelope; tests/api/test_openapi_fuzz.py holds the app to it.
    """
    for module in (customers, budgets, spend, dead_letters, keys, billing):
        api.include_router(
            module.router, dependencies=[Depends(require_admin)], responses=error_responses(*COMMON_ERRORS)
        )
