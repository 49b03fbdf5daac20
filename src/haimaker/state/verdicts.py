"""The errors and headers that admission answers with, shared by every `CounterStore`.

Messages and headers are LiteLLM's (clients match on them): see CONTRACT §2.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

from haimaker.errors import BudgetExceededError, RateLimitError
from haimaker.money import Nanos, nanos_to_usd
from haimaker.state.counters import WINDOW_S, Limits


def rate_limited(limits: Limits, limit_type: str, limit: int, window_start: float, now: float) -> RateLimitError:
    """429 for a subject over rpm/tpm/parallel: `retry-after` is the true wait, at least 1 s."""
    if limit_type == "parallel_requests":
        wait_s, reset_ts = 1, now + 1
    else:
        reset_ts = window_start + WINDOW_S
        wait_s = max(1, math.ceil(reset_ts - now))
    reset_at = datetime.fromtimestamp(reset_ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return RateLimitError(
        f"Rate limit exceeded for {limits.kind}: {limits.label or limits.customer_id}. Limit type: {limit_type}. "
        f"Current limit: {limit}, Remaining: 0. Limit resets at: {reset_at}",
        headers={
            "retry-after": str(wait_s),
            "rate_limit_type": limit_type,
            "reset_at": reset_at,
            "x-should-retry": "false",
        },
    )


def budget_exceeded(status_code: int, limits: Limits, spend: Nanos, estimate: Nanos | None) -> BudgetExceededError:
    estimated = f"Estimated request cost: {nanos_to_usd(estimate)}, " if estimate is not None else ""
    who = f"Key={limits.label}" if limits.kind != "end_user" else f"EndUser={limits.customer_id}"
    return BudgetExceededError(
        f"Budget has been exceeded! {who} Current cost: {nanos_to_usd(spend)}, "
        f"{estimated}Max budget: {nanos_to_usd(limits.max_budget or 0)}",
        status_code=status_code,
        headers={"x-should-retry": "false"},
    )


def rate_limit_headers(limits: Limits, window_requests: int, window_tokens: int) -> tuple[tuple[str, str], ...]:
    headers: list[tuple[str, str]] = []
    prefix = f"x-ratelimit-{limits.kind}"
    if limits.rpm_limit is not None:
        headers.append((f"{prefix}-limit-requests", str(limits.rpm_limit)))
        headers.append((f"{prefix}-remaining-requests", str(max(0, limits.rpm_limit - window_requests))))
    if limits.tpm_limit is not None:
        headers.append((f"{prefix}-limit-tokens", str(limits.tpm_limit)))
        headers.append((f"{prefix}-remaining-tokens", str(max(0, limits.tpm_limit - window_tokens))))
    return tuple(headers)
