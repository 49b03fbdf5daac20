"""The default end-user budget (`litellm_settings.max_end_user_budget_id`): made to exist at start-up, or refused for.

Every customer without a budget of its own rides the default budget. At start-up `ensure_default_budget` looks for it
in the catalog (loaded from the store):

- it exists: kept as stored. A `default_end_user_budget` declaration in the config is not applied over it (the row
  may have been changed with POST /budget/update since), and the log says so when the two differ;
- it is missing and the config declares it: created in the store under that id with the declared fields. Instances
  starting together race on the insert; the losers read the winner's row;
- it is missing and undeclared: the proxy starts (it must run to create it with POST /budget/new), and one warning
  says how. Until it exists, `BudgetEngine.check_access` refuses the customers that would ride it with a 503 saying
  the same (`missing_default_budget_message`): billing-grade, they are never served unlimited.
"""

from __future__ import annotations

import logging
from datetime import datetime

from haimaker.config.schema import DefaultEndUserBudget, LiteLLMSettings
from haimaker.errors import DuplicateError
from haimaker.money import usd_to_nanos
from haimaker.periods import NextReset
from haimaker.state.catalog import Catalog
from haimaker.storage.budgets_repo import BudgetRepository
from haimaker.storage.records import Budget

logger = logging.getLogger("haimaker.budgets")

_COMPARED = ("max_budget", "soft_budget", "rpm_limit", "tpm_limit", "max_parallel_requests", "budget_duration")


def missing_default_budget_message(budget_id: str) -> str:
    """How to make the configured default budget exist: the request that creates it, or the config that declares it."""
    return (
        f"The default end-user budget {budget_id!r} (litellm_settings.max_end_user_budget_id) does not exist, so "
        "customers without a budget of their own cannot be served. Create it: curl -X POST <proxy>/budget/new "
        '-H "x-litellm-api-key: $LITELLM_MASTER_KEY" -H "Content-Type: application/json" '
        f'-d \'{{"budget_id": "{budget_id}", "max_budget": 10, "budget_duration": "30d"}}\', '
        "or declare it under litellm_settings.default_end_user_budget (max_budget, soft_budget, rpm_limit, tpm_limit, "
        "max_parallel_requests, budget_duration) and restart."
    )


def declared_budget(budget_id: str, declared: DefaultEndUserBudget, now: datetime, next_reset: NextReset) -> Budget:
    """The budget row a declaration stands for: money in nano-dollars, the first reset from `now`."""
    duration = declared.budget_duration
    return Budget(
        budget_id=budget_id,
        max_budget=None if declared.max_budget is None else usd_to_nanos(declared.max_budget),
        soft_budget=None if declared.soft_budget is None else usd_to_nanos(declared.soft_budget),
        rpm_limit=declared.rpm_limit,
        tpm_limit=declared.tpm_limit,
        max_parallel_requests=declared.max_parallel_requests,
        budget_duration=duration,
        budget_reset_at=None if duration is None else next_reset(duration, now),
    )


async def ensure_default_budget(
    settings: LiteLLMSettings, repo: BudgetRepository, catalog: Catalog, now: datetime, next_reset: NextReset
) -> None:
    """Create the configured default budget from its declaration when the store lacks it; warn when it cannot."""
    budget_id = settings.max_end_user_budget_id
    if budget_id is None:
        return
    declared = settings.default_end_user_budget
    stored = catalog.budgets.get(budget_id)
    if stored is not None:
        if declared is not None:
            _say_declaration_not_applied(stored, declared_budget(budget_id, declared, now, next_reset))
        return
    if declared is None:
        logger.warning(
            "%s Until then those customers' LLM requests answer 503.", missing_default_budget_message(budget_id)
        )
        return
    try:
        created = await repo.create(declared_budget(budget_id, declared, now, next_reset))
    except DuplicateError:
        # Another instance created it between our catalog load and this insert: theirs is the one.
        raced = await repo.get(budget_id)
        if raced is None:  # created and deleted again meanwhile: nothing sensible left but to say so
            logger.warning("%s", missing_default_budget_message(budget_id))
            return
        created = raced
        logger.info("default end-user budget %r was created by another instance at the same time", budget_id)
    else:
        logger.info("created the default end-user budget %r from litellm_settings.default_end_user_budget", budget_id)
    catalog.put_budget(created)


def _say_declaration_not_applied(stored: Budget, declared: Budget) -> None:
    differing = [name for name in _COMPARED if getattr(stored, name) != getattr(declared, name)]
    if not differing:
        logger.info("default end-user budget %r exists in the store as the config declares it", stored.budget_id)
        return
    logger.warning(
        "default end-user budget %r exists in the store and differs from litellm_settings.default_end_user_budget "
        "(%s): the stored budget applies; the declaration only creates a missing budget. Change the stored one with "
        "POST /budget/update.",
        stored.budget_id,
        ", ".join(differing),
    )
