"""Request bodies of the management API, as pydantic models (the admin API boundary).

Field names and types follow LiteLLM's (`NewCustomerRequest`, `BudgetNewRequest`, …) so its clients work unchanged.
Unknown fields are ignored, as LiteLLM does (its UI sends `metadata`, for one). Structural problems (wrong types,
`tpm_limit < 0`, a region other than "eu"/"us") are 422s here; rules that need the proxy's state or carry LiteLLM's
400 messages (amounts, durations, models, ids) are checked by the services. Handlers pass the services
`model_dump(exclude_unset=True)`: on update, a field sent as null differs from a field left out.

Every string that can reach the store is one of the types below (`Id`, `Name`, `Text`, and `FreeJson` for the
objects stored as JSON): `ids.text_problem` is their one rule (no NUL, no lone surrogate, bounded length), so a
value either store cannot hold is a 422 naming the field, never a 500 from the database. Query parameters use
the same types.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Final, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, model_validator
from pydantic_core import PydanticCustomError

from haimaker.ids import MAX_ID_CHARS, MAX_TEXT_CHARS, text_problem
from haimaker.services.customers import MAX_PAGE

_BIGINT: Final = 2**63 - 1
MAX_LIST_CHARS: Final = 64 * 1024
# Ids in one request: bulk enough for any admin, small enough to stay one short transaction.
MAX_IDS: Final = 10_000
_INT: Final = 2**31 - 1

Region = Literal["eu", "us"]


def _storable_text(value: str, max_chars: int) -> str:
    problem = text_problem(value, max_chars)
    if problem is not None:
        raise PydanticCustomError("unstorable_text", "the value {problem}", {"problem": problem})
    return value


def _storable(max_chars: int) -> AfterValidator:
    return AfterValidator(lambda value: _storable_text(value, max_chars))


def _storable_json(value: Any) -> Any:
    """Every key and string inside a JSON value (stored as JSON/jsonb, where PostgreSQL refuses NUL)."""
    if isinstance(value, str):
        _storable_text(value, MAX_ID_CHARS)
    elif isinstance(value, float) and not math.isfinite(value):
        # Python's JSON reader accepts Infinity and NaN; JSON columns cannot hold them (stored as null, or refused).
        raise PydanticCustomError("finite_number", "numbers must be finite")
    elif isinstance(value, Mapping):
        for key, item in value.items():
            _storable_json(key)
            _storable_json(item)
    elif isinstance(value, list):
        for item in value:
            _storable_json(item)
    return value


# A customer or budget id: 1 to 256 characters the stores can hold.
Id = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_CHARS), _storable(MAX_ID_CHARS)]
# A model name, a duration, a key or id used as a filter: at most 256 characters.
Name = Annotated[str, StringConstraints(max_length=MAX_ID_CHARS), _storable(MAX_ID_CHARS)]
# Free text shown to admins (an alias), or a search: at most 1024 characters.
Text = Annotated[str, StringConstraints(max_length=MAX_TEXT_CHARS), _storable(MAX_TEXT_CHARS)]
# A comma-separated list of ids in a query parameter (each id is checked after splitting).
ListText = Annotated[str, StringConstraints(max_length=MAX_LIST_CHARS), _storable(MAX_LIST_CHARS)]
FreeJson = Annotated[dict[str, Any], AfterValidator(_storable_json)]
Page = Annotated[int, Field(ge=1, le=MAX_PAGE)]


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
    budget_duration: Name | None = Field(
        default=None, description="Max duration budget should be set for (e.g. '1hr', '1d', '28d')", examples=["30d"]
    )


class _AllBudgetFields(_BudgetFields):
    tpd_limit: int | None = Field(
        default=None, ge=0, le=_BIGINT, description="Max tokens per day (stored, not enforced)."
    )
    model_max_budget: dict[Name, FreeJson] | None = Field(
        default=None,
        description="Max budget for each model (e.g. {'gpt-4o': {'max_budget': '0.0000001', 'budget_duration': '1d', "
        "'tpm_limit': 1000, 'rpm_limit': 1000}}); stored, not enforced.",
    )
    budget_reset_at: datetime | None = Field(default=None, description="Datetime when the budget is reset")


class NewCustomerRequest(_AllBudgetFields):
    """`POST /customer/new`. Any budget field gives the customer a private budget row."""

    user_id: Id = Field(examples=["my-customer-id"])
    alias: Text | None = None
    blocked: bool = False
    budget_id: Id | None = Field(default=None, description="Link to an existing budget (pricing tier).")
    spend: float | None = Field(default=None, description="Starting spend in USD.")
    allowed_model_region: Region | None = None
    default_model: Name | None = None
    models: list[Name] | None = Field(default=None, description="Models the customer may call; empty = any.")
    object_permission: dict[str, Any] | None = Field(default=None, description="Accepted for compatibility; ignored.")


class UpdateCustomerRequest(_BudgetFields):
    """`POST /customer/update`. Only the fields sent are applied; `budget_id: null` unlinks."""

    user_id: Id
    alias: Text | None = None
    blocked: bool | None = None
    budget_id: Id | None = None
    allowed_model_region: Region | None = None
    default_model: Name | None = None
    models: list[Name] | None = None
    object_permission: dict[str, Any] | None = Field(default=None, description="Accepted for compatibility; ignored.")


class DeleteCustomerRequest(_Body):
    user_ids: list[Id] = Field(min_length=1, max_length=MAX_IDS)


class BlockUsers(_Body):
    user_ids: list[Id] = Field(max_length=MAX_IDS)


class BudgetNewRequest(_AllBudgetFields):
    """`POST /budget/new` and `POST /budget/update` (where `budget_id` is required)."""

    # Name, not Id: an empty id on /budget/new asks for a generated one, as LiteLLM's UI sends it.
    budget_id: Name | None = Field(default=None, description="The unique budget id.")


class BudgetRequest(_Body):
    budgets: list[Id] = Field(max_length=MAX_IDS)


class BudgetDeleteRequest(_Body):
    id: Id


class GlobalEndUsersSpend(_Body):
    api_key: Name | None = None
    startTime: datetime | None = None  # LiteLLM's field names
    endTime: datetime | None = None


def set_fields(body: BaseModel) -> dict[str, Any]:
    """The fields the client sent (explicit nulls included), as plain values."""
    return body.model_dump(exclude_unset=True)


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str = Field(description="The HTTP status, as a string (as LiteLLM sends it).")


class ErrorEnvelope(BaseModel):
    """Every error of the proxy: the OpenAI error envelope."""

    error: ErrorDetail


_STATUS_DESCRIPTIONS: Final = {
    400: "Invalid value (amount, duration, date range), or an id that already exists.",
    401: "No admin key, or a wrong one.",
    403: "No master key is configured.",
    404: "The customer or budget named does not exist.",
    422: "The request does not match the schema (types, lengths, text a store cannot hold).",
    429: "Too many wrong keys from this address; see `retry-after`.",
    503: "The store did not answer in time.",
}
# Every management route can answer these (the admin key guard, the failed-key throttle, the store).
COMMON_ERRORS: Final = (401, 403, 429, 503)


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for error statuses, each with the error envelope's schema."""
    return {status: {"model": ErrorEnvelope, "description": _STATUS_DESCRIPTIONS[status]} for status in statuses}


# -- virtual keys (`/key/*`): LiteLLM's `GenerateKeyRequest`, `UpdateKeyRequest`, `RegenerateKeyRequest`,
# `KeyRequest` and `BlockKeyRequest`, with the fields haimaker keeps. Amounts, durations, custom key values and
# budget ids carry LiteLLM's 400 messages from `services.keys`.

KeyType = Literal["default", "llm_api", "management", "read_only"]
_Limit = Annotated[int, Field(ge=0, le=_BIGINT)]


class _KeyFields(_Body):
    key_alias: Text | None = Field(default=None, description="A unique, human-readable name for the key.")
    duration: Name | None = Field(
        default=None, description="How long the key is valid ('30s', '30m', '30h', '30d'); unset: never expires."
    )
    models: list[Name] | None = Field(default=None, description="Model names the key may call; empty = any.")
    spend: float | None = Field(default=None, description="The key's spend in its current period, in USD.")
    max_budget: float | None = Field(default=None, description="Requests fail once the key spends this (USD).")
    soft_budget: float | None = Field(default=None, description="An alert threshold (USD); requests go on.")
    budget_duration: Name | None = Field(
        default=None, description="The key's spend resets on this period ('1h', '1d', '30d').", examples=["30d"]
    )
    rpm_limit: int | None = Field(default=None, ge=0, le=_BIGINT, description="Requests per minute.")
    tpm_limit: int | None = Field(default=None, ge=0, le=_BIGINT, description="Tokens per minute.")
    max_parallel_requests: int | None = Field(default=None, ge=0, le=_INT, description="Concurrent requests.")
    model_max_budget: dict[Name, FreeJson] | None = Field(
        default=None, description="Per-model budgets, e.g. {'gpt-4o': {'budget_limit': 0.5, 'time_period': '1d'}}."
    )
    model_rpm_limit: dict[Name, _Limit] | None = Field(default=None, description="Per-model requests per minute.")
    model_tpm_limit: dict[Name, _Limit] | None = Field(default=None, description="Per-model tokens per minute.")
    metadata: FreeJson | None = None
    blocked: bool | None = None
    key_type: KeyType | None = Field(
        default=None,
        description="llm_api: LLM routes only; management: admin API only; read_only: admin reads and the UI "
        "without writes; default: LLM routes.",
    )
    allowed_routes: list[Name] | None = None
    end_user_budget_id: Name | None = Field(
        default=None, description="The budget of customers first seen through this key (must exist; '' clears)."
    )
    customer_id: Id | None = Field(
        default=None, description="haimaker: every request with this key is this customer's; another id is a 403."
    )
    user_id: Name | None = None
    team_id: Name | None = None


class GenerateKeyRequest(_KeyFields):
    """`POST /key/generate`."""

    key: Name | None = Field(default=None, description="A caller-chosen key: starts with 'sk-', 16+ characters.")


class UpdateKeyRequest(_KeyFields):
    """`POST /key/update`: the key by value or hash (`key`), else by `key_alias`; only the fields sent change."""

    key: Name | None = None

    @model_validator(mode="after")
    def _names_a_key(self) -> UpdateKeyRequest:
        if self.key is None and self.key_alias is None:
            raise ValueError("either key or key_alias must be provided")
        return self


class RegenerateKeyRequest(_KeyFields):
    """`POST /key/regenerate` and `POST /key/{key}/regenerate`."""

    key: Name | None = None
    new_key: Name | None = Field(default=None, description="The new value (starts with 'sk-'); unset: random.")


class KeyRequest(_Body):
    """`POST /key/delete`."""

    keys: list[Name] | None = Field(default=None, max_length=MAX_IDS, description="Keys or their hashes.")
    key_aliases: list[Text] | None = Field(default=None, max_length=MAX_IDS)

    @model_validator(mode="after")
    def _names_keys(self) -> KeyRequest:
        if not self.keys and not self.key_aliases:
            raise ValueError("At least one of 'keys' or 'key_aliases' must be provided.")
        return self


class BlockKeyRequest(_Body):
    """`POST /key/block` and `POST /key/unblock`."""

    key: Name = Field(description="The key (sk-...) or its hash.")
