"""Request bodies of the management API, as pydantic models (the admin API boundary).

Field names and types follow LiteLLM's (`NewCustomerRequest`, `BudgetNewRequest`, …) so its clients work unchanged.
Unknown fields are ignored, as LiteLLM does (its UI sends `metadata`, for one). Structural problems (wrong types,
`tpm_limit < 0`, a region other than "eu"/"us") are 422s here; rules that need the proxy's state or carry LiteLLM's
400 messages (amounts, durations, models, ids) are checked by the services. Handlers pass the services
`model_dump(exclude_unset=True)`: on update, a field sent as null differs from a field left out.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_ID_CHARS: Final = 256
_BIGINT: Final = 2**63 - 1
_INT: Final = 2**31 - 1

Region = Literal["eu", "us"]


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _BudgetFields(_Body):
    max_budget: float | None = Field(
        default=None, description="Requests will fail if this budget (in USD) is exceeded."
    )
    soft_budget: float | None = Field(
        default=None, description="Requests will NOT fail if this is exceeded. Will fire alerting though."
    )
    max_parallel_requests: int | None = Field(
        default=None, ge=0, le=_INT, description="Max concurrent requests allowed for this budget id."
    )
    tpm_limit: int | None = Field(
        default=None, ge=0, le=_BIGINT, description="Max tokens per minute, allowed for this budget id."
    )
    rpm_limit: int | None = Field(
        default=None, ge=0, le=_BIGINT, description="Max requests per minute, allowed for this budget id."
    )
    budget_duration: str | None = Field(
        default=None, description="Max duration budget should be set for (e.g. '1hr', '1d', '28d')", examples=["30d"]
    )


class _AllBudgetFields(_BudgetFields):
    tpd_limit: int | None = Field(
        default=None, ge=0, le=_BIGINT, description="Max tokens per day (stored, not enforced)."
    )
    model_max_budget: dict[str, dict[str, Any]] | None = Field(
        default=None,
        description="Max budget for each model (e.g. {'gpt-4o': {'max_budget': '0.0000001', 'budget_duration': '1d', "
        "'tpm_limit': 1000, 'rpm_limit': 1000}}); stored, not enforced.",
    )
    budget_reset_at: datetime | None = Field(default=None, description="Datetime when the budget is reset")


class NewCustomerRequest(_AllBudgetFields):
    """`POST /customer/new`. Any budget field gives the customer a private budget row."""

    user_id: str = Field(min_length=1, max_length=MAX_ID_CHARS, examples=["my-customer-id"])
    alias: str | None = None
    blocked: bool = False
    budget_id: str | None = Field(default=None, description="Link to an existing budget (pricing tier).")
    spend: float | None = Field(default=None, description="Starting spend in USD.")
    allowed_model_region: Region | None = None
    default_model: str | None = None
    models: list[str] | None = Field(default=None, description="Models the customer may call; empty = any.")
    object_permission: dict[str, Any] | None = Field(default=None, description="Accepted for compatibility; ignored.")


class UpdateCustomerRequest(_BudgetFields):
    """`POST /customer/update`. Only the fields sent are applied; `budget_id: null` unlinks."""

    user_id: str = Field(min_length=1, max_length=MAX_ID_CHARS)
    alias: str | None = None
    blocked: bool | None = None
    budget_id: str | None = None
    allowed_model_region: Region | None = None
    default_model: str | None = None
    models: list[str] | None = None
    object_permission: dict[str, Any] | None = Field(default=None, description="Accepted for compatibility; ignored.")


class DeleteCustomerRequest(_Body):
    user_ids: list[str] = Field(min_length=1)


class BlockUsers(_Body):
    user_ids: list[str]


class BudgetNewRequest(_AllBudgetFields):
    """`POST /budget/new` and `POST /budget/update` (where `budget_id` is required)."""

    budget_id: str | None = Field(default=None, max_length=MAX_ID_CHARS, description="The unique budget id.")


class BudgetRequest(_Body):
    budgets: list[str]


class BudgetDeleteRequest(_Body):
    id: str


class GlobalEndUsersSpend(_Body):
    api_key: str | None = None
    startTime: datetime | None = None  # LiteLLM's field names
    endTime: datetime | None = None


def set_fields(body: BaseModel) -> dict[str, Any]:
    """The fields the client sent (explicit nulls included), as plain values."""
    return body.model_dump(exclude_unset=True)
