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
from haimaker.state.catalog import Catalog, limits_of
from haimaker.state.counters import CounterStore, Demand, Limits, Reservation
from haimaker.state.keys import key_model_subject, key_subject
from haimaker.storage.records import Customer, VirtualKey

if TYPE_CHECKING:
    from haimaker.alerts import Alerter

# Our prompt count can differ slightly from the upstream's (message framing, tools); reserve a margin
# so that fail-closed mode stays below the budget.
_PROMPT_MARGIN_RATIO = 0.05
_PROMPT_MARGIN_TOKENS = 8
_KEY_LIMITS_CACHE_MAX = 100_000


@dataclass(frozen=True, slots=True)
class GroupPrice:
    """The most expensive price among a model group's deployments (reservations take the max)."""

    price: ModelPrice | None
    max_output_tokens: int | None


@dataclass(slots=True)
class Ticket:
    """An admitted request: who pays, what was reserved (the customer's, and its virtual key's)."""

    customer_id: str | None
    limits: Limits | None
    reservation: Reservation | None
    key_reservations: tuple[Reservation, ...] = ()
    # The virtual key's counter subject (its spend is counted even when the key has no limits of its own).
    key_subject: str | None = None
    # The budget a customer first seen through this request's key is created on (the key's `end_user_budget_id`).
    new_customer_budget_id: str | None = None
    # Settled or released: the customer's request no longer pins it in the working set.
    closed: bool = False

    def rate_headers(self, used_tokens: int | None = None) -> list[tuple[str, str]]:
        """The `x-ratelimit-*` headers of every subject admitted (the key's, then the customer's).

        With `used_tokens` (a whole answer), `-remaining-tokens` counts what the request actually used instead of its
        reservation (a request without `max_tokens` reserves thousands of tokens it rarely uses); a stream's headers
        leave before its usage is known and keep the reservation's count."""
        reservations = [*self.key_reservations, *([self.reservation] if self.reservation is not None else [])]
        if used_tokens is None:
            return [h for reservation in reservations for h in reservation.rate_headers]
        headers: list[tuple[str, str]] = []
        for reservation in reservations:
            for name, value in reservation.rate_headers:
                if name.endswith("-remaining-tokens"):
                    value = str(max(0, int(value) + reservation.tokens - used_tokens))
                headers.append((name, value))
        return headers


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
        self._key_limits_cache: dict[tuple[str, str], tuple[VirtualKey, tuple[Limits, ...]]] = {}

    def needs_prompt_count(self, customer_id: str, new_customer_budget_id: str | None = None) -> bool:
        """Whether admission will use a token estimate (skip tokenizing for unlimited customers)."""
        limits = self.catalog.limits_for(customer_id)
        if new_customer_budget_id in self.catalog.budgets and customer_id not in self.catalog.customers:
            limits = limits_of(customer_id, self.catalog.budgets[new_customer_budget_id])
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
        customer_id: str | None,
        model: str,
        group: GroupPrice,
        *,
        prompt_tokens: int,
        max_output_tokens: int | None,
        n: int,
        key: VirtualKey | None = None,
    ) -> Ticket:
        """Check and reserve the request's customer and virtual key together: one `admit_all`, all or nothing."""
        parts: list[tuple[Limits, Demand]] = []
        key_parts = self._key_limits(key, model) if key is not None else ()
        for own in key_parts:
            parts.append((own, self._demand(own, group, prompt_tokens, max_output_tokens, n)))
        customer: Customer | None = None
        limits: Limits | None = None
        if customer_id is not None:
            # From the cache, or read from the store (a customer idle long enough to be evicted, or never seen here).
            await self.catalog.lookup(customer_id)
            new_budget = key.end_user_budget_id if key is not None else None
            customer, limits = self.check_access(customer_id, model, group, new_customer_budget_id=new_budget)
            if customer is None and new_budget is not None and new_budget in self.catalog.budgets:
                # First seen through this key: the key's budget for new customers applies (and is stored with it). A
                # key whose budget was deleted since falls back to the default, never to no limits.
                limits = limits_of(customer_id, self.catalog.budgets[new_budget])
            if limits.has_any:
                parts.append((limits, self._demand(limits, group, prompt_tokens, max_output_tokens, n)))
        reservations = await self.store.admit_all(parts, fail_closed=self._fail_closed) if parts else []
        reservation = reservations[len(key_parts)] if len(reservations) > len(key_parts) else None
        budget_id = None
        if customer_id is not None and customer is None:
            # First sight: the customer exists from now on; the store row is written with its first charge.
            budget_id = key.end_user_budget_id if key is not None else None
            budget_id = budget_id if budget_id in self.catalog.budgets else None
            self.catalog.put_new_customer(
                Customer(user_id=customer_id, created_at=self._clock.now(), budget_id=budget_id)
            )
        if customer_id is not None:
            self.catalog.began(customer_id)
        return Ticket(
            customer_id,
            limits,
            reservation,
            tuple(reservations[: len(key_parts)]),
            key_subject(key.token) if key is not None else None,
            budget_id,
        )

    def _key_limits(self, key: VirtualKey, model: str) -> tuple[Limits, ...]:
        """`key_limits`, built once per key version and model (the catalog replaces a key's record on every write, so
        a cached entry for an older record is never used)."""
        cached = self._key_limits_cache.get((key.token, model))
        if cached is not None and cached[0] is key:
            return cached[1]
        parts = key_limits(key, model)
        if len(self._key_limits_cache) >= _KEY_LIMITS_CACHE_MAX:
            self._key_limits_cache.clear()  # bounded: a flood of model names cannot grow it
        self._key_limits_cache[(key.token, model)] = (key, parts)
        return parts

    def needs_key_prompt_count(self, key: VirtualKey, model: str) -> bool:
        """Whether the key's limits need a token estimate at admission."""
        return any(
            limits.tpm_limit is not None or (limits.max_budget is not None and self._reservation_enabled)
            for limits in self._key_limits(key, model)
        )

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

    def settle(
        self, ticket: Ticket, price: ModelPrice | None, usage: Usage, *, charge_customer: bool = True
    ) -> Settlement:
        """Charge the actual usage to the key and, unless `charge_customer` is off, the customer (never awaits)."""
        cost = cost_nanos(price, usage) if price is not None else 0
        self._close(ticket)
        for reservation in ticket.key_reservations:
            self.store.settle(reservation, cost, usage.total_tokens)
        if ticket.key_subject is not None and not any(
            r.customer_id == ticket.key_subject for r in ticket.key_reservations
        ):
            self.store.add_spend(ticket.key_subject, cost)  # a key without limits of its own: spend counted still
        if not charge_customer:
            if ticket.reservation is not None:
                self.store.release(ticket.reservation)
            return Settlement(cost, 0, False)
        if ticket.customer_id is None or ticket.limits is None:
            return Settlement(cost, 0, False)
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
        self._close(ticket)
        for reservation in ticket.key_reservations:
            self.store.release(reservation)
        if ticket.reservation is not None:
            self.store.release(ticket.reservation)

    def _close(self, ticket: Ticket) -> None:
        # Before the caller queues the charge, without an await in between: the working set's sweep cannot run in
        # between, so it sees the customer active or its charge queued (`state/working_set.py`).
        if not ticket.closed:
            ticket.closed = True
            if ticket.customer_id is not None:
                self.catalog.ended(ticket.customer_id)

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


ALL_PROXY_MODELS = "all-proxy-models"


def key_allows_model(key: VirtualKey, model: str) -> bool:
    """A key's `models`: empty or `all-proxy-models` = every model; else exact names, or a prefix ending in `*`."""
    if not key.models:
        return True
    for allowed in key.models:
        if allowed == model or allowed == ALL_PROXY_MODELS or allowed == "*":
            return True
        if allowed.endswith("*") and model.startswith(allowed[:-1]):
            return True
    return False


def key_limits(key: VirtualKey, model: str) -> tuple[Limits, ...]:
    """The counter subjects a request with this key must pass: the key's own limits, and its limits on `model`."""
    label = f"{key.key_alias or 'key'} ({key.key_name})"
    parts: list[Limits] = []
    own = Limits(
        customer_id=key_subject(key.token),
        budget_id=None,
        max_budget=key.max_budget,
        soft_budget=key.soft_budget,
        rpm_limit=key.rpm_limit,
        tpm_limit=key.tpm_limit,
        max_parallel_requests=key.max_parallel_requests,
        budget_duration=key.budget_duration,
        budget_reset_at=key.budget_reset_at,
        kind="api_key",
        label=label,
    )
    if own.has_any:
        parts.append(own)
    model_rpm = _model_limit(key.model_rpm_limit, model)
    model_tpm = _model_limit(key.model_tpm_limit, model)
    if model_rpm is not None or model_tpm is not None:
        parts.append(
            Limits(
                customer_id=key_model_subject(key.token, model),
                budget_id=None,
                max_budget=None,
                soft_budget=None,
                rpm_limit=model_rpm,
                tpm_limit=model_tpm,
                max_parallel_requests=None,
                budget_duration=None,
                budget_reset_at=None,
                kind="model_per_key",
                label=f"{label}:{model}",
            )
        )
    return tuple(parts)


def _model_limit(limits: dict[str, int] | None, model: str) -> int | None:
    if not limits:
        return None
    value = limits.get(model)
    return value if isinstance(value, int) and not isinstance(value, bool) else None
