"""Domain records the repositories return: frozen, slotted dataclasses, never ORM rows.

Money fields are nano-dollars (`money.Nanos`); datetimes are timezone-aware UTC.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from haimaker.money import Nanos


@dataclass(frozen=True, slots=True)
class Budget:
    """A budget row: limits and a reset period. Shared by many customers, it is a pricing tier."""

    budget_id: str
    max_budget: Nanos | None = None
    soft_budget: Nanos | None = None
    max_parallel_requests: int | None = None
    tpm_limit: int | None = None
    rpm_limit: int | None = None
    tpd_limit: int | None = None
    model_max_budget: dict[str, Any] | None = None
    budget_duration: str | None = None
    budget_reset_at: datetime | None = None
    created_at: datetime | None = None
    created_by: str = "default_user_id"
    updated_at: datetime | None = None
    updated_by: str = "default_user_id"


@dataclass(frozen=True, slots=True)
class Customer:
    """An end user of the proxy's caller. Spend lives here; limits live on its budget."""

    user_id: str
    alias: str | None = None
    spend: Nanos = 0
    blocked: bool = False
    allowed_model_region: str | None = None
    default_model: str | None = None
    models: tuple[str, ...] = ()
    budget_id: str | None = None
    # The budget period this spend belongs to: when `now >= spend_reset_at`, spend is due to reset.
    spend_reset_at: datetime | None = None
    created_at: datetime | None = None


KEY_TYPES = ("default", "llm_api", "management", "read_only")


@dataclass(frozen=True, slots=True)
class VirtualKey:
    """A proxy key (LiteLLM's virtual key): stored only as its SHA-256 hex `token`, with its own limits and spend.

    `key_type` is its role: `default` and `llm_api` call LLM routes only, `management` the admin API only,
    `read_only` the admin API's reads and the UI without writes. `customer_id` (haimaker's) binds every request made
    with the key to that customer; `end_user_budget_id` is the budget of customers first seen through the key.
    Money fields are nano-dollars; `model_max_budget` / `model_rpm_limit` / `model_tpm_limit` keep LiteLLM's JSON.
    """

    token: str
    key_name: str = "sk-..."
    key_alias: str | None = None
    expires: datetime | None = None
    models: tuple[str, ...] = ()
    spend: Nanos = 0
    max_budget: Nanos | None = None
    soft_budget: Nanos | None = None
    budget_duration: str | None = None
    budget_reset_at: datetime | None = None
    rpm_limit: int | None = None
    tpm_limit: int | None = None
    max_parallel_requests: int | None = None
    model_max_budget: dict[str, Any] | None = None
    model_rpm_limit: dict[str, int] | None = None
    model_tpm_limit: dict[str, int] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    blocked: bool = False
    key_type: str = "default"
    allowed_routes: tuple[str, ...] = ()
    end_user_budget_id: str | None = None
    customer_id: str | None = None
    user_id: str | None = None
    team_id: str | None = None
    created_at: datetime | None = None
    created_by: str = "default_user_id"
    updated_at: datetime | None = None
    updated_by: str = "default_user_id"


@dataclass(frozen=True, slots=True)
class SpendLog:
    """One charged (or failed) request."""

    request_id: str
    end_user: str
    model: str
    model_id: str
    model_group: str
    custom_llm_provider: str
    call_type: str
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    spend: Nanos
    start_time: datetime
    end_time: datetime
    status: str = "success"
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    api_key: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DailySpend:
    """One row of the daily rollup per (customer, date, model)."""

    end_user_id: str
    date: str  # YYYY-MM-DD (UTC)
    model: str
    custom_llm_provider: str
    prompt_tokens: int
    completion_tokens: int
    cache_read_input_tokens: int
    cache_creation_input_tokens: int
    spend: Nanos
    api_requests: int
    successful_requests: int
    failed_requests: int
