"""What a failed attempt leads to: another attempt (after how long), a fallback group, or the client.

LiteLLM's semantics (`litellm/router.py`, `utils.py::calculate_retry_after`):

- an error is retried (`num_retries`, or `retry_policy`'s count for its error class) when it is retryable: 408, 429,
  5xx, timeouts and connection failures; a `retry_policy` count for another class (e.g. `AuthenticationErrorRetries`)
  makes that class retryable too;
- a retry that can go to another deployment goes at once; one that must wait for the same deployment waits
  `0.5 s * 2^n` (at most 8 s) plus up to 0.75 s of jitter, or the upstream's `retry-after` (plus jitter) when it asks
  for between 0 and 60 s;
- once the group's retries are spent, the `fallbacks` groups are tried in order, each with its own retries; a request
  that is malformed (400, 413, 422) falls back nowhere; a prompt over the context window goes only to the
  `context_window_fallbacks`.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Final

from haimaker.errors import GatewayTimeoutError, ProxyError, RateLimitError

INITIAL_RETRY_DELAY_S: Final = 0.5
MAX_RETRY_DELAY_S: Final = 8.0
JITTER_S: Final = 0.75
MAX_RETRY_AFTER_S: Final = 60.0  # a longer `retry-after` is not waited for: the backoff applies instead

# How upstreams word "the prompt is longer than the context window" (OpenAI, Azure, Anthropic, Gemini, Bedrock,
# vLLM), as LiteLLM's exception mapping recognises them.
_CONTEXT_WINDOW_MARKS: Final = (
    "context_length_exceeded",
    "context length",
    "context window",
    "maximum context",
    "prompt is too long",
    "input is too long",
    "too many input tokens",
    "exceeds the maximum number of tokens",
    "input token count",
    "reduce the length of the messages",
)
_MALFORMED: Final = frozenset({400, 413, 422})


def is_context_window_error(error: ProxyError) -> bool:
    """The upstream refused the prompt as longer than the model's context window."""
    if error.status_code not in (400, 413):
        return False
    text = f"{error.code} {error.error_type} {error.message}".lower()
    return any(mark in text for mark in _CONTEXT_WINDOW_MARKS)


def may_fall_back(error: ProxyError) -> bool:
    """Whether the generic `fallbacks` apply: any failure but a malformed request (LiteLLM's 400 rule)."""
    return error.status_code not in _MALFORMED


def error_class(error: ProxyError) -> str:
    """LiteLLM's exception class for an error, as `retry_policy` and `allowed_fails_policy` name them."""
    status = error.status_code
    if isinstance(error, GatewayTimeoutError) or status == 408:
        return "TimeoutError"
    if status == 429 or isinstance(error, RateLimitError):
        return "RateLimitError"
    if status == 400:
        return "BadRequestError"
    if status == 401:
        return "AuthenticationError"
    if status == 404:
        return "NotFoundError"
    if status == 503:
        return "ServiceUnavailableError"
    if status >= 500:
        # Our 502 stands for every upstream 5xx and connection failure: LiteLLM's InternalServerError.
        return "InternalServerError"
    return "BadRequestError"


def retries_for(error: ProxyError, num_retries: int, retry_policy: Mapping[str, int]) -> int:
    """How many retries this error gets in its group: the policy's count for its class, else `num_retries` for a
    retryable error, else none."""
    if retry_policy:
        count = retry_policy.get(f"{error_class(error)}Retries")
        if count is not None:
            return count
        if error.is_retryable:
            return retry_policy.get("DefaultRetries", num_retries)
        return 0
    return num_retries if error.is_retryable else 0


def retry_delay_s(retry: int, error: ProxyError, rng: random.Random, *, min_wait_s: float = 0.0) -> float:
    """The wait before retry number `retry` (0-based) on the same deployment: backoff, or the `retry-after`."""
    jitter = JITTER_S * rng.random()
    retry_after = _retry_after_s(error)
    if retry_after is not None and 0 < retry_after <= MAX_RETRY_AFTER_S:
        return retry_after + jitter
    backoff = max(INITIAL_RETRY_DELAY_S * 2.0**retry, min_wait_s)
    return min(backoff, MAX_RETRY_DELAY_S) + jitter


def _retry_after_s(error: ProxyError) -> float | None:
    value = error.headers.get("retry-after")
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return None  # an HTTP date: rare from LLM APIs; the backoff applies
