"""`retries.py`: which failures are retried, how many times, after how long, and which fall back.

Guards a context-length refusal retried or sent to the generic fallbacks, a malformed request falling back, a
`retry_policy` count ignored, and a backoff past its cap.
"""

from __future__ import annotations

import random

import pytest

from haimaker.errors import BadGatewayError, GatewayTimeoutError, RateLimitError, UpstreamStatusError
from haimaker.providers.retries import error_class, is_context_window_error, may_fall_back, retries_for, retry_delay_s


@pytest.mark.parametrize(
    "message",
    [
        "This model's maximum context length is 8192 tokens. However, your messages resulted in 9000 tokens.",
        "prompt is too long: 210000 tokens > 200000 maximum",
        "Input is too long for requested model.",
    ],
)
def test_context_length_refusals_are_recognised(message: str) -> None:
    assert is_context_window_error(UpstreamStatusError(message, status_code=400))


def test_other_400s_and_5xx_are_not_context_errors() -> None:
    assert not is_context_window_error(UpstreamStatusError("Invalid 'temperature'", status_code=400))
    assert not is_context_window_error(BadGatewayError("Upstream error (HTTP 500): context length"))


@pytest.mark.parametrize(("status", "falls_back"), [(400, False), (422, False), (401, True), (404, True), (429, True)])
def test_only_malformed_requests_fall_back_nowhere(status: int, falls_back: bool) -> None:
    assert may_fall_back(UpstreamStatusError("x", status_code=status)) is falls_back


def test_error_classes_are_litellms_names() -> None:
    assert error_class(GatewayTimeoutError("slow")) == "TimeoutError"
    assert error_class(RateLimitError("no deployments")) == "RateLimitError"
    assert error_class(UpstreamStatusError("key", status_code=401)) == "AuthenticationError"
    assert error_class(BadGatewayError("down")) == "InternalServerError"


def test_retry_policy_replaces_num_retries_for_its_class_only() -> None:
    policy = {"AuthenticationErrorRetries": 1, "TimeoutErrorRetries": 0}
    assert retries_for(UpstreamStatusError("key", status_code=401), 3, policy) == 1
    assert retries_for(GatewayTimeoutError("slow"), 3, policy) == 0
    assert retries_for(BadGatewayError("down"), 3, policy) == 3
    assert retries_for(UpstreamStatusError("bad", status_code=400), 3, policy) == 0
    assert retries_for(UpstreamStatusError("key", status_code=401), 3, {}) == 0


def test_backoff_doubles_from_half_a_second_and_stops_at_eight() -> None:
    rng = random.Random(1)
    error = BadGatewayError("down")
    waits = [retry_delay_s(n, error, rng) for n in range(6)]
    for wait, base in zip(waits, [0.5, 1, 2, 4, 8, 8], strict=True):
        assert base <= wait <= base + 0.75


def test_retry_after_router_setting_is_the_least_wait() -> None:
    assert retry_delay_s(0, BadGatewayError("down"), random.Random(1), min_wait_s=3) >= 3
