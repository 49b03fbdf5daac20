"""The management API: customers, budgets and spend reports, every route behind the admin key.

Wire-compatible with LiteLLM's (paths, bodies, response shapes, status codes), with CONTRACT §5's differences: one
error envelope everywhere, 404 for unknown budgets, `/customer/update` taking budget fields without touching shared
tiers, `/customer/unblock` clearing the flag. Handlers stay thin: every rule lives in `haimaker.services`, which the
admin UI calls too.

    api/customers.py   /customer/* and the /end_user/* aliases
    api/budgets.py     /budget/*
    api/spend.py       /spend/logs, /customer/daily/activity, /global/spend/end_users
    api/schemas.py     request bodies          api/wire.py   response shapes
"""

from __future__ import annotations

from fastapi import Depends, FastAPI

from haimaker.api import budgets, customers, spend
from haimaker.api.deps import require_admin


def include_management_routes(api: FastAPI) -> None:
    """Add the management routes to the app; each answers 401/403 without a valid admin key."""
    for module in (customers, budgets, spend):
        api.include_router(module.router, dependencies=[Depends(require_admin)])
