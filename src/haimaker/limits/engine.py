"""Admission and settlement for one customer request: the budget engine.

admit (before any upstream call): blocked → model allow-list → pricing required → the counter store's
atomic check-and-reserve of parallel/rpm/tpm/budget. settle (after): price the actual usage, replace
the reservation by it, queue the durable charge, fire soft-budget alerts. release: give everything back
when the upstream failed, so a failed request costs nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from haimaker.accounting.pricing import ModelPrice, Usage, cost_nanos, estimate_max_cost_nanos
from haimaker.clock import Clock
from haimaker.errors import (
    CustomerBlockedError,
    ModelAccessDeniedError,
    PermissionDeniedError,
    ServiceUnavailableError,
)
from haimaker.limits.default_budget import missing_default_budget_message
from haimaker.money import Nanos
from haimaker.state.catalog import Catalog
from haimaker.state.counters import CounterStore, Demand, Limits, Reservation
from haimaker.storage.records import Customer

if TYPE_CHECKING:
    from haimaker.alerts import Alerter

# Our prompt count can differ slightly from the upstream's (message framing, tools); reserve a margin
# so that fail-closed mode stays below the budget.
_PROMPT_MARGIN_RATIO = 0.05
_PROMPT_MARGIN_TOKENS = 8


@dataclass(frozen=True, slots=True)
class GroupPrice:
    """The most expensive price among a model group's deployments (reservations take the max)."""

    price: ModelPrice | None
    max_output_tokens: int | None


@dataclass(slots=True)
class Ticket:
    """An admitted request: who pays, what was reserved."""

    customer_id: str
    limits: Limits
    reservation: Reservation | None


@dataclass(frozen=True, slots=True)
class Settlement:
    cost: Nanos
    spend: Nanos
    over_soft_budget: bool


class BudgetEngine:
    def __init__(
        self,
        catalog: Catalog,
        store: CounterStore,
        clock: Clock,
        *,
        fail_closed: bool,
        reservation_enabled: bool,
        block_unpriced: bool,
        default_max_output_tokens: int,
        alerter: Alerter | None = None,
    ) -> None:
        self.catalog = catalog
        self.store = store
        self._clock = clock
        self._fail_closed = fail_closed
        self._reservation_enabled = reservation_enabled
        self._block_unpriced = block_unpriced
        self._default_max_output = default_max_output_tokens
        self.alerter = alerter

    def needs_prompt_count(self, customer_id: str) -> bool:
        """Whether admission will use a token estimate (skip tokenizing for unlimited customers)."""
        limits = self.catalog.limits_for(customer_id)
        return limits.tpm_limit is not None or (limits.max_budget is not None and self._reservation_enabled)

    def check_access(
        self, customer_id: str, model: str, group: GroupPrice, *, new_customer_budget_id: str | None = None
    ) -> tuple[Customer | None, Limits]:
        """The checks that need no counters: blocked, allow-list, pricing, default budget. Returns (customer, limits).

        `new_customer_budget_id` is the budget a customer seen for the first time gets instead of the default one (its
        key's `end_user_budget_id`).

        Raises:
            ServiceUnavailableError: the customer would ride the configured default budget, which does not exist
                (limits/default_budget.py): never served unlimited.
        """
        customer = self.catalog.customers.get(customer_id)
        if customer is not None:
            if customer.blocked:
                raise CustomerBlockedError(f"User blocked from making LLM API Calls. User={customer_id}")
            if customer.models and model not in customer.models:
                raise ModelAccessDeniedError(
                    f"The requested model '{model}' is not in the allowed models for this customer. Check the models "
                    "this customer can use and try again.",
                    param="model",
                )
        if self._block_unpriced and group.price is None:
            raise PermissionDeniedError(
                f"Model {model} has no pricing configured; requests to unpriced models are blocked "
                "(litellm_settings.block_requests_for_models_without_pricing).",
                error_type="model_cost_map_missing",
            )
        default_id = self.catalog.default_budget_id
        if default_id is not None and default_id not in self.catalog.budgets:
            own = customer.budget_id if customer is not None else new_customer_budget_id
            if own is None or own not in self.catalog.budgets:
                raise ServiceUnavailableError(missing_default_budget_message(default_id))
        return customer, self.catalog.limits_for(customer_id)

    async def admit(
        self,
        customer_id: str,
        model: str,
        group: GroupPrice,
        *,
        prompt_tokens: int,
        max_output_tokens: int | None,
        n: int,
    ) -> Ticket:
        customer, limits = self.check_access(customer_id, model, group)
        reservation = None
        if limits.has_any:
            demand = self._demand(limits, group, prompt_tokens, max_output_tokens, n)
            reservation = await self.store.admit(limits, demand, fail_closed=self._fail_closed)
        if customer is None:
            # First sight: the customer exists from now on; the store row is written with its first charge.
            self.catalog.put_customer(Customer(user_id=customer_id, created_at=self._clock.now()))
        return Ticket(customer_id, limits, reservation)

    def _demand(
        self, limits: Limits, group: GroupPrice, prompt_tokens: int, max_output_tokens: int | None, n: int
    ) -> Demand:
        prompt = prompt_tokens + int(prompt_tokens * _PROMPT_MARGIN_RATIO) + _PROMPT_MARGIN_TOKENS
        output = max_output_tokens or group.max_output_tokens or self._default_max_output
        tokens = prompt + output * max(1, n)
        cost = 0
        if group.price is not None and limits.max_budget is not None and self._reservation_enabled:
            cost = estimate_max_cost_nanos(group.price, prompt, output, max(1, n))
        return Demand(cost=cost, tokens=tokens)

    def settle(self, ticket: Ticket, price: ModelPrice | None, usage: Usage) -> Settlement:
        """Charge the actual usage (never awaits)."""
        cost = cost_nanos(price, usage) if price is not None else 0
        if ticket.reservation is not None:
            spend = self.store.settle(ticket.reservation, cost, usage.total_tokens)
        else:
            spend = self.store.add_spend(ticket.customer_id, cost)
        soft = ticket.limits.soft_budget
        over_soft = soft is not None and spend >= soft
        if self.alerter is not None:
            self.alerter.after_charge(ticket.limits, spend - cost, spend)
        return Settlement(cost, spend, over_soft)

    def release(self, ticket: Ticket) -> None:
        if ticket.reservation is not None:
            self.store.release(ticket.reservation)

    def forget_customer(self, customer_id: str) -> None:
        self.catalog.drop_customer(customer_id)
        self.store.forget(customer_id)


def group_price(prices: list[ModelPrice | None], max_outputs: list[int | None]) -> GroupPrice:
    """Combine a model group's deployment prices into the one reservations use."""
    known = [p for p in prices if p is not None]
    if not known:
        return GroupPrice(None, max((m for m in max_outputs if m), default=None))
    worst = known[0]
    for price in known[1:]:
        worst = replace(
            worst,
            input_cost_per_token=max(worst.input_cost_per_token, price.input_cost_per_token),
            output_cost_per_token=max(worst.output_cost_per_token, price.output_cost_per_token),
        )
    return GroupPrice(worst, max((m for m in max_outputs if m), default=None))
