"""Budgets (pricing tiers): the admin use-cases, and the one validation of budget fields.

Budget fields arrive as the wire carries them (money as USD numbers, `budget_duration` strings), from the management
API or an admin form. `BudgetService.changes` validates them and turns them into repository changes: nano-dollars,
and a `budget_reset_at` derived from the duration in `litellm_settings.timezone` / `budget_reset_time` unless the
caller gives one. Every write reaches the hot state through `Services.changed` before the method returns.

Invariants:
- The budget named by `litellm_settings.max_end_user_budget_id` cannot be deleted while it is configured: every
  customer without a budget of its own rides it, and startup refuses a default budget that does not exist.
- Deleting a budget leaves its customers without one (they fall back to the default budget); their spend stays.
- Nothing here reads or writes a budget's customers one by one (issue 15): deleting a budget is one DELETE, whose
  foreign key (ON DELETE SET NULL) unlinks every customer in the same statement, and editing a tier writes its one
  row, which its customers read through their `budget_id`. Either costs the same for 10 customers or 10 million.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, Final

from haimaker.errors import BadRequestError, NotFoundError
from haimaker.ids import checked_text
from haimaker.money import Nanos, usd_to_nanos
from haimaker.periods import validate_duration
from haimaker.storage.records import Budget

if TYPE_CHECKING:
    from haimaker.services.container import Services

# The fields a budget row carries that an admin may set.
BUDGET_FIELDS: Final = (
    "max_budget",
    "soft_budget",
    "max_parallel_requests",
    "tpm_limit",
    "rpm_limit",
    "tpd_limit",
    "model_max_budget",
    "budget_duration",
    "budget_reset_at",
)
MONEY_FIELDS: Final = frozenset({"max_budget", "soft_budget"})
# Money is stored as a BIGINT of nano-dollars (at most ~9.2e9 USD); refuse what would not fit.
MAX_USD: Final = Decimal(1_000_000_000)
# A reset instant is a real date: the bounds leave room to add any period (at most a century, `periods.py`)
# without leaving `datetime`'s range.
EARLIEST_RESET: Final = datetime(1970, 1, 1, tzinfo=UTC)
LATEST_RESET: Final = datetime(9000, 1, 1, tzinfo=UTC)
_MODEL_BUDGET_KEYS: Final = frozenset(
    {"max_budget", "budget_limit", "budget_duration", "time_period", "tpm_limit", "rpm_limit"}
)


def usd_amount(name: str, value: object) -> Nanos:
    """A non-negative, finite USD amount as nano-dollars.

    Raises:
        BadRequestError: not a number, negative, not finite, or too large to store.
    """
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError):
        number = Decimal("NaN")
    if isinstance(value, bool) or not number.is_finite() or number < 0:
        raise BadRequestError(f"{name} must be a non-negative finite number. Received: {value}", param=name)
    if number > MAX_USD:
        raise BadRequestError(f"{name} must be at most {MAX_USD} USD. Received: {value}", param=name)
    return usd_to_nanos(number)


def as_utc(value: datetime, *, param: str | None = None) -> datetime:
    """Datetimes from clients without an offset are taken as UTC.

    Raises:
        BadRequestError: the instant lies outside `datetime`'s range once in UTC (year 1 or 9999 with an offset).
    """
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise BadRequestError(f"{param or 'The datetime'} {value.isoformat()} is out of range.", param=param) from None


def reset_instant(value: datetime) -> datetime:
    """A `budget_reset_at` from a client, in UTC, within `EARLIEST_RESET`..`LATEST_RESET`.

    Raises:
        BadRequestError: out of that range.
    """
    at = as_utc(value, param="budget_reset_at")
    if not EARLIEST_RESET <= at < LATEST_RESET:
        raise BadRequestError(
            f"budget_reset_at must be from {EARLIEST_RESET.year} to {LATEST_RESET.year - 1} (UTC). "
            f"Received: {value.isoformat()}",
            param="budget_reset_at",
        )
    return at


def _checked_model_max_budget(value: Mapping[str, Any]) -> dict[str, Any]:
    for model, limits in value.items():
        if not isinstance(limits, Mapping) or set(limits) - _MODEL_BUDGET_KEYS:
            raise BadRequestError(
                f"Invalid model_max_budget: the entry for {model!r} must be an object with max_budget, "
                "budget_duration, tpm_limit and rpm_limit.",
                param="model_max_budget",
            )
        for key in ("max_budget", "budget_limit"):
            if limits.get(key) is not None:
                usd_amount(f"model_max_budget.{model}.{key}", limits[key])
        for key in ("budget_duration", "time_period"):
            if limits.get(key) is not None:
                validate_duration(checked_text(str(limits[key]), param=f"model_max_budget.{model}.{key}"))
        for key in ("tpm_limit", "rpm_limit"):
            limit = limits.get(key)
            if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or not 0 <= limit < 2**63):
                raise BadRequestError(
                    f"model_max_budget.{model}.{key} must be a non-negative integer. Received: {limit}",
                    param="model_max_budget",
                )
    return dict(value)


class BudgetService:
    """Create, read, update and delete budgets; keeps the catalog in step."""

    def __init__(self, services: Services) -> None:
        self._services = services

    def changes(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        """Validate wire-level budget fields and return repository changes (None values clear a field).

        `budget_reset_at` follows `budget_duration` when the caller sets a duration without a reset instant, and is
        cleared with it (`budget_duration: null`).

        Raises:
            BadRequestError: an invalid amount, duration or model_max_budget.
        """
        changes: dict[str, Any] = {}
        for name in BUDGET_FIELDS:
            if name not in fields:
                continue
            value = fields[name]
            if value is not None:
                if name in MONEY_FIELDS:
                    value = usd_amount(name, value)
                elif name == "budget_duration":
                    value = validate_duration(checked_text(value, param=name))
                elif name == "model_max_budget":
                    value = _checked_model_max_budget(value)
                elif name == "budget_reset_at":
                    value = reset_instant(value)
            changes[name] = value
        if "budget_duration" in changes and changes.get("budget_reset_at") is None:
            duration = changes["budget_duration"]
            now = self._services.clock.now()
            changes["budget_reset_at"] = None if duration is None else self._services.next_reset(duration, now)
        return changes

    async def create(self, fields: Mapping[str, Any]) -> Budget:
        """Create a budget from wire-level fields; `budget_id` defaults to a new uuid4.

        Raises:
            DuplicateError: the id is taken.
        """
        budget_id = checked_text(fields.get("budget_id") or str(uuid.uuid4()), param="budget_id")
        budget = replace(Budget(budget_id=budget_id), **self.changes(fields))
        created = await self._services.budgets_repo.create(budget)
        self._services.budget_changed(created.budget_id, created)
        return created

    async def create_private(self, base: Budget | None, changes: Mapping[str, Any]) -> Budget:
        """A new budget for one customer: a copy of `base` (if any) with already validated `changes` applied."""
        budget_id = str(uuid.uuid4())
        if base is None:
            budget = replace(Budget(budget_id=budget_id), **changes)
        else:
            budget = replace(base, budget_id=budget_id, created_at=None, updated_at=None, **changes)
        created = await self._services.budgets_repo.create(budget)
        self._services.budget_changed(created.budget_id, created)
        return created

    async def update(self, fields: Mapping[str, Any]) -> Budget:
        """Write the budget fields present in `fields` (explicit nulls clear) to `fields["budget_id"]`.

        Raises:
            BadRequestError: no budget_id, or an invalid field.
            NotFoundError: no such budget.
        """
        budget_id = fields.get("budget_id")
        if not budget_id:
            raise BadRequestError("budget_id is required", param="budget_id")
        checked_text(budget_id, param="budget_id")
        return await self.apply(budget_id, self.changes(fields))

    async def apply(self, budget_id: str, changes: Mapping[str, Any]) -> Budget:
        """Write already validated changes to a budget and publish it."""
        updated = await self._services.budgets_repo.update(budget_id, changes)
        if updated is None:
            raise _unknown(budget_id)
        self._services.budget_changed(budget_id, updated)
        return updated

    async def get(self, budget_id: str) -> Budget | None:
        return await self._services.budgets_repo.get(checked_text(budget_id, param="budget_id"))

    async def get_many(self, budget_ids: Iterable[str]) -> list[Budget]:
        """The budgets named, in the order given.

        Raises:
            BadRequestError: no ids.
            NotFoundError: some ids do not exist.
        """
        wanted = [checked_text(budget_id, param="budgets") for budget_id in dict.fromkeys(budget_ids)]
        if not wanted:
            raise BadRequestError(f"Specify list of budget id's to query. Passed in={wanted}", param="budgets")
        found = await self._services.budgets_repo.get_many(wanted)
        missing = sorted(set(wanted) - {b.budget_id for b in found})
        if missing:
            raise NotFoundError(f"Budget id(s)={', '.join(missing)} do not exist in db", param="budgets")
        return found

    async def list_all(self) -> list[Budget]:
        return await self._services.budgets_repo.list_all()

    async def delete(self, budget_id: str) -> Budget:
        """Delete a budget; its customers fall back to the default budget.

        Raises:
            BadRequestError: it is the configured default budget.
            NotFoundError: no such budget.
        """
        checked_text(budget_id, param="id")
        if budget_id == self._services.catalog.default_budget_id:
            raise BadRequestError(
                f"Budget '{budget_id}' is the default budget of every customer without one "
                "(litellm_settings.max_end_user_budget_id). Remove it from the config before deleting it.",
                param="id",
            )
        deleted = await self._services.budgets_repo.delete(budget_id)
        if deleted is None:
            raise _unknown(budget_id, param="id")
        self._services.budget_changed(budget_id, None)
        return deleted


def _unknown(budget_id: str, *, param: str = "budget_id") -> NotFoundError:
    return NotFoundError(f"Budget with id '{budget_id}' does not exist.", param=param)
