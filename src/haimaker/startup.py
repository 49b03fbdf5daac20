"""What a started proxy says about itself: one line when it is ready, one when it has stopped.

The ready line names where it listens (and the UI), the store (a SQLite file's path, or PostgreSQL's host and
database: never a user or password), Redis if any (host only), the models and the default budget; the stopped line
how many spend records were written. Both are INFO on the `haimaker` logger, which the CLI prints.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit

from sqlalchemy.engine import make_url

from haimaker import __version__
from haimaker.money import nanos_to_usd
from haimaker.storage.engine import normalize_database_url

if TYPE_CHECKING:
    from haimaker.app_state import AppState

# Set by the server runner (`server.py`) for the processes it starts: the URL clients reach them at.
LISTEN_ENV: Final = "HAIMAKER_LISTEN"


def ready_line(state: AppState) -> str:
    settings = state.settings
    listen = os.environ.get(LISTEN_ENV)
    where = f"on {listen} (UI {listen}/ui)" if listen else "(in process)"
    models = state.router.model_names
    deployments = sum(len(state.router.group(name)) for name in models)
    return (
        f"haimaker {__version__} ready {where}; store: {describe_store(settings.database_url, settings.config_dir)}; "
        f"Redis: {describe_redis(settings.redis_url)}; {plural(len(models), 'model')} "
        f"({plural(deployments, 'deployment')}); default budget: {_describe_default_budget(state)}"
    )


def stopped_line(written: int) -> str:
    return f"haimaker stopped; {plural(written, 'spend record')} written this run"


def describe_store(database_url: str | None, config_dir: Path) -> str:
    url = make_url(normalize_database_url(database_url, config_dir=config_dir))
    if url.get_backend_name() == "sqlite":
        return f"SQLite {url.database}"
    port = f":{url.port}" if url.port else ""
    return f"PostgreSQL {url.host}{port}/{url.database}"


def describe_redis(redis_url: str | None) -> str:
    if not redis_url:
        return "none (limits in this process)"
    url = urlsplit(redis_url)
    port = f":{url.port}" if url.port else ""
    return f"{url.hostname}{port}"


def _describe_default_budget(state: AppState) -> str:
    catalog = state.engine.catalog
    budget_id = catalog.default_budget_id
    if budget_id is None:
        return "none"
    budget = catalog.budgets.get(budget_id)
    if budget is None:
        return f"{budget_id} (missing: its customers are refused until it is created)"
    limits = []
    if budget.max_budget is not None:
        period = f" per {budget.budget_duration}" if budget.budget_duration else ""
        limits.append(f"${nanos_to_usd(budget.max_budget):g}{period}")
    if budget.rpm_limit is not None:
        limits.append(f"{budget.rpm_limit} rpm")
    if budget.tpm_limit is not None:
        limits.append(f"{budget.tpm_limit} tpm")
    return f"{budget_id} ({', '.join(limits) or 'no limits'})"


def plural(count: int, noun: str) -> str:
    """`1 model`, `2 models`."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"
