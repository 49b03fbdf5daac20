"""Pricing tiers and private budgets in the UI: which budget rows are listed as tiers, which are a customer's own.

The rule is `storage.budgets_repo.is_private_budget` (a UUID-shaped id, exactly one customer, not the default: the
rows `/customer/new` with limits makes, here and in LiteLLM). Private budgets are listed neither on the Budgets page
nor in the tier dropdowns; a customer's pages show them as its "custom limits".

Invariant: customer counts come from the store (`GROUP BY` in SQL, `BudgetRepository.list_tiers` and
`count_customers_by_budget`), never from the in-memory catalog, which holds only the customers active lately; and
listing the tiers never loads the private budgets.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from haimaker.services.container import Services
from haimaker.storage.budgets_repo import is_private_budget
from haimaker.storage.records import Budget


@dataclass(frozen=True, slots=True)
class Tier:
    """A budget listed as a pricing tier, with the number of customers linked to it."""

    budget: Budget
    customers: int
    is_default: bool


async def customer_counts(services: Services, budget_ids: Iterable[str] | None = None) -> dict[str, int]:
    """Customers linked to each budget (those among `budget_ids` if given), counted in the store."""
    return await services.budgets_repo.count_customers_by_budget(budget_ids)


async def list_tiers(services: Services) -> list[Tier]:
    """Every budget that is a tier (the default included), ordered by id."""
    default_id = services.catalog.default_budget_id
    listed = await services.budgets_repo.list_tiers(default_id)
    return [Tier(budget, customers, budget.budget_id == default_id) for budget, customers in listed]


async def private_budget_ids(services: Services, budget_ids: Iterable[str]) -> set[str]:
    """The private budgets among `budget_ids` (counted only for ids that could be private: UUIDs)."""
    default_id = services.catalog.default_budget_id
    candidates = {b for b in budget_ids if is_private_budget(b, 1, default_id)}
    if not candidates:
        return set()
    counts = await customer_counts(services, candidates)
    return {b for b in candidates if counts.get(b, 0) == 1}


async def tier_options(services: Services, current: str | None = None) -> list[tuple[str, str]]:
    """The options of a tier dropdown: the default budget once, as the empty choice, then every other tier.

    `current` (the budget the customer is on) is kept as an option even when private, labelled as custom limits,
    so that saving the form leaves it linked.
    """
    default_id = services.catalog.default_budget_id
    options = [("", f"Default budget ({default_id})" if default_id else "No budget (no limits)")]
    for tier in await list_tiers(services):
        if not tier.is_default:
            options.append((tier.budget.budget_id, tier.budget.budget_id))
    listed = {value for value, _ in options}
    if current and current != default_id and current not in listed:
        options.append((current, "Custom limits (this customer's own)"))
    return options


def example_tier(tiers: Iterable[Tier]) -> str:
    """The budget id the usage snippet links a customer to: a real tier, other than the default when there is one."""
    ids = [tier.budget.budget_id for tier in sorted(tiers, key=lambda tier: tier.is_default)]
    return ids[0] if ids else "my-free-tier"
