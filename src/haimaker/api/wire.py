"""The JSON shapes of the management API, LiteLLM's field for field.

Money leaves as USD floats (`money.nanos_to_usd`, the one conversion) and datetimes as ISO 8601 UTC with a `Z`.
Budgets render as LiteLLM's raw `LiteLLM_BudgetTable` rows (its relation keys present and null), customers as its
`CustomerResponse`, spend logs as `LiteLLM_SpendLogs` rows, daily activity as `SpendAnalyticsPaginatedResponse`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

from haimaker.money import nanos_to_usd, optional_nanos_to_usd
from haimaker.services.customers import CustomerView
from haimaker.services.keys import key_status
from haimaker.services.spend import KEY_OWNER, ActivityReport, DailyActivity, DaySummary, SpendMetrics
from haimaker.storage.records import Budget, SpendLog, VirtualKey

BUDGET_RELATIONS: Final = (
    "organization",
    "keys",
    "end_users",
    "tags",
    "team_membership",
    "organization_membership",
    "projects",
    "model_access_groups",
)
# `/budget/settings`: LiteLLM's configurable fields, in its order, with its descriptions.
BUDGET_SETTINGS: Final = (
    ("max_budget", "Float", "Requests will fail if this budget (in USD) is exceeded."),
    ("soft_budget", "Float", "Requests will NOT fail if this is exceeded. Will fire alerting though."),
    ("max_parallel_requests", "Integer", "Max concurrent requests allowed for this budget id."),
    ("tpm_limit", "Integer", "Max tokens per minute, allowed for this budget id."),
    ("rpm_limit", "Integer", "Max requests per minute, allowed for this budget id."),
    ("tpd_limit", "Integer", "Max tokens per day, allowed for this budget id."),
    ("budget_duration", "String", "Max duration budget should be set for (e.g. '1hr', '1d', '28d')"),
    (
        "model_max_budget",
        "Object",
        "Max budget for each model (e.g. {'gpt-4o': {'max_budget': '0.0000001', 'budget_duration': '1d', "
        "'tpm_limit': 1000, 'rpm_limit': 1000}})",
    ),
)


def iso(value: datetime | None) -> str | None:
    """ISO 8601 in UTC with a `Z`, as pydantic renders LiteLLM's datetimes."""
    if value is None:
        return None
    return value.isoformat().replace("+00:00", "Z")


def budget_row(budget: Budget) -> dict[str, Any]:
    """A budget as LiteLLM's raw row."""
    row: dict[str, Any] = {
        "budget_id": budget.budget_id,
        "max_budget": optional_nanos_to_usd(budget.max_budget),
        "soft_budget": optional_nanos_to_usd(budget.soft_budget),
        "max_parallel_requests": budget.max_parallel_requests,
        "tpm_limit": budget.tpm_limit,
        "rpm_limit": budget.rpm_limit,
        "tpd_limit": budget.tpd_limit,
        "model_max_budget": budget.model_max_budget,
        "budget_duration": budget.budget_duration,
        "budget_reset_at": iso(budget.budget_reset_at),
        "allowed_models": [],
        "temp_budget_increase": None,
        "temp_budget_expiry": None,
        "created_at": iso(budget.created_at),
        "created_by": budget.created_by,
        "updated_at": iso(budget.updated_at),
        "updated_by": budget.updated_by,
    }
    row.update(dict.fromkeys(BUDGET_RELATIONS))
    return row


def customer_row(view: CustomerView) -> dict[str, Any]:
    """A customer as LiteLLM's `CustomerResponse`. `litellm_budget_table` is the budget in force: its own, else the
    default budget (`litellm_settings.max_end_user_budget_id`), which `budget_is_default` (haimaker's) then says, so a
    customer's limits can be read through the API; `budget_id` stays the customer's own link."""
    customer = view.customer
    return {
        "user_id": customer.user_id,
        "blocked": customer.blocked,
        "alias": customer.alias,
        "spend": nanos_to_usd(view.spend),
        "allowed_model_region": customer.allowed_model_region,
        "default_model": customer.default_model,
        "models": list(customer.models),
        "budget_id": customer.budget_id,
        "litellm_budget_table": budget_row(view.budget) if view.budget is not None else None,
        "budget_is_default": view.budget_is_default,
        "object_permission_id": None,
        "object_permission": None,
    }


def budget_settings(budget: Budget | None) -> list[dict[str, Any]]:
    """`/budget/settings`: one LiteLLM `ConfigList` entry per configurable field (values null for an unknown id)."""
    row = budget_row(budget) if budget is not None else {}
    return [
        {
            "field_name": name,
            "field_type": field_type,
            "field_description": description,
            "field_value": row.get(name),
            "stored_in_db": True,
            "field_default_value": None,
            "premium_field": False,
            "nested_fields": None,
            "field_options": None,
            "field_tab": None,
            "source": "unset",
            "editable": True,
        }
        for name, field_type, description in BUDGET_SETTINGS
    ]


def spend_log_row(log: SpendLog) -> dict[str, Any]:
    """A spend log as LiteLLM's `LiteLLM_SpendLogs` row; `user` is the key owner, `end_user` the customer."""
    usage = {
        "prompt_tokens": log.prompt_tokens,
        "completion_tokens": log.completion_tokens,
        "total_tokens": log.total_tokens,
        "cache_read_input_tokens": log.cache_read_input_tokens,
        "cache_creation_input_tokens": log.cache_creation_input_tokens,
    }
    metadata = {**log.metadata, "user_api_key_end_user_id": log.end_user or None, "usage_object": usage}
    return {
        "request_id": log.request_id,
        "call_type": log.call_type,
        "api_key": log.api_key,
        "spend": nanos_to_usd(log.spend),
        "total_tokens": log.total_tokens,
        "prompt_tokens": log.prompt_tokens,
        "completion_tokens": log.completion_tokens,
        "startTime": iso(log.start_time),
        "endTime": iso(log.end_time),
        "request_duration_ms": int((log.end_time - log.start_time).total_seconds() * 1000),
        "completionStartTime": None,
        "model": log.model,
        "model_id": log.model_id,
        "model_group": log.model_group,
        "custom_llm_provider": log.custom_llm_provider,
        "api_base": "",
        "user": KEY_OWNER,
        "metadata": metadata,
        "cache_hit": "False",
        "cache_key": "",
        "request_tags": [],
        "team_id": None,
        "organization_id": None,
        "end_user": log.end_user,
        "requester_ip_address": None,
        "messages": {},
        "response": {},
        "session_id": None,
        "status": log.status,
        "litellm_call_id": log.request_id,
        "proxy_server_request": {},
        "mcp_namespaced_tool_name": None,
        "agent_id": None,
    }


def day_summary_row(summary: DaySummary) -> dict[str, Any]:
    """`/spend/logs` with a date range: one day's spend, by key owner and by model."""
    return {
        "startTime": summary.day.isoformat(),
        "spend": nanos_to_usd(summary.spend),
        "users": {user: nanos_to_usd(spend) for user, spend in summary.users.items()},
        "models": {model: nanos_to_usd(spend) for model, spend in summary.models.items()},
    }


def metrics(m: SpendMetrics) -> dict[str, Any]:
    return {
        "spend": nanos_to_usd(m.spend),
        "prompt_tokens": m.prompt_tokens,
        "completion_tokens": m.completion_tokens,
        "cache_read_input_tokens": m.cache_read_input_tokens,
        "cache_creation_input_tokens": m.cache_creation_input_tokens,
        "total_tokens": m.total_tokens,
        "successful_requests": m.successful_requests,
        "failed_requests": m.failed_requests,
        "api_requests": m.api_requests,
    }


def _with_metadata(m: SpendMetrics, metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"metrics": metrics(m), "metadata": metadata or {}, "api_key_breakdown": {}}


def _day(day: DailyActivity, aliases: dict[str, str | None]) -> dict[str, Any]:
    models = {model: _with_metadata(m) for model, m in day.models.items()}
    return {
        "date": day.date,
        "metrics": metrics(day.metrics),
        "breakdown": {
            "mcp_servers": {},
            "models": models,
            # The rollup keeps the deployment's model only, so model groups repeat it (as LiteLLM does without one).
            "model_groups": models,
            "providers": {provider: _with_metadata(m) for provider, m in day.providers.items()},
            "endpoints": {},
            "api_keys": {},
            "entities": {
                user_id: _with_metadata(m, {"alias": aliases.get(user_id)}) for user_id, m in day.entities.items()
            },
        },
    }


def activity_report(report: ActivityReport) -> dict[str, Any]:
    """`/customer/daily/activity` as LiteLLM's `SpendAnalyticsPaginatedResponse`."""
    totals = report.totals
    return {
        "results": [_day(day, report.aliases) for day in report.days],
        "metadata": {
            "total_spend": nanos_to_usd(totals.spend),
            "total_prompt_tokens": totals.prompt_tokens,
            "total_completion_tokens": totals.completion_tokens,
            "total_tokens": totals.total_tokens,
            "total_api_requests": totals.api_requests,
            "total_successful_requests": totals.successful_requests,
            "total_failed_requests": totals.failed_requests,
            "total_cache_read_input_tokens": totals.cache_read_input_tokens,
            "total_cache_creation_input_tokens": totals.cache_creation_input_tokens,
            "page": report.page,
            "total_pages": report.total_pages,
            "has_more": report.has_more,
        },
    }


def key_row(key: VirtualKey, now: datetime) -> dict[str, Any]:
    """A virtual key as LiteLLM's `LiteLLM_VerificationToken` row: the token (hash) and masked name, never the key.

    haimaker's `customer_id` and `end_user_budget_id` are added; LiteLLM's fields haimaker has no use for (teams'
    aliases, config, permissions, rotation) are present with their defaults. `status` is LiteLLM's derived one.
    """
    return {
        "token": key.token,
        "key_name": key.key_name,
        "key_alias": key.key_alias,
        "spend": nanos_to_usd(key.spend),
        "max_budget": optional_nanos_to_usd(key.max_budget),
        "soft_budget": optional_nanos_to_usd(key.soft_budget),
        "expires": iso(key.expires),
        "models": list(key.models),
        "aliases": {},
        "config": {},
        "user_id": key.user_id,
        "team_id": key.team_id,
        "max_parallel_requests": key.max_parallel_requests,
        "metadata": key.metadata,
        "tpm_limit": key.tpm_limit,
        "rpm_limit": key.rpm_limit,
        "budget_duration": key.budget_duration,
        "budget_reset_at": iso(key.budget_reset_at),
        "allowed_cache_controls": [],
        "allowed_routes": list(key.allowed_routes),
        "key_type": key.key_type,
        "permissions": {},
        "model_spend": {},
        "model_max_budget": key.model_max_budget or {},
        "model_rpm_limit": key.model_rpm_limit,
        "model_tpm_limit": key.model_tpm_limit,
        "blocked": key.blocked,
        "litellm_budget_table": None,
        "budget_id": None,
        "org_id": None,
        "end_user_budget_id": key.end_user_budget_id,
        "customer_id": key.customer_id,
        "created_at": iso(key.created_at),
        "created_by": key.created_by,
        "updated_at": iso(key.updated_at),
        "updated_by": key.updated_by,
        "status": key_status(key, now),
    }
