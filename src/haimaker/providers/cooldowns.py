"""Deployment cooldowns: a deployment that keeps failing is skipped for `cooldown_time` seconds.

LiteLLM's rules (`router_utils/cooldown_handlers.py`), per deployment, per instance:

- only some failures count towards a cooldown: 429, 401, 402, 404, 408 and every 5xx, timeout or connection
  failure; other 4xx are the request's fault, not the deployment's;
- with `allowed_fails` or `allowed_fails_policy` set: more than that many such failures within a minute cool it down;
- otherwise (LiteLLM's default): a 429 cools it down at once, and so does a failure rate over 50% once the minute has
  5 calls, or any error a client should not retry (401, 404); a group of one deployment is never cooled down by
  default, so a lone deployment's hiccup does not turn into 5 s of refusals.

Invariants: the state of one deployment is a few numbers in one minute bucket; nothing here awaits; time comes from
the injected monotonic clock.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from haimaker.errors import ProxyError
from haimaker.providers.retries import error_class

FAILURE_RATE_THRESHOLD: Final = 0.5  # LiteLLM's DEFAULT_FAILURE_THRESHOLD_PERCENT
FAILURE_RATE_MIN_CALLS: Final = 5  # LiteLLM's DEFAULT_FAILURE_THRESHOLD_MINIMUM_REQUESTS
_COOLING_4XX: Final = frozenset({401, 402, 404, 408, 429})


@dataclass(slots=True)
class _Minute:
    minute: int = -1
    successes: int = 0
    failures: int = 0  # the failures that count towards a cooldown
    failures_by_class: dict[str, int] | None = None


class Cooldowns:
    """Which deployments are cooling down, from the outcome of each call."""

    def __init__(
        self,
        monotonic: Callable[[], float],
        *,
        cooldown_time_s: float,
        allowed_fails: int | None = None,
        allowed_fails_policy: Mapping[str, int] | None = None,
        disabled: bool = False,
    ) -> None:
        self._monotonic = monotonic
        self._cooldown_time_s = cooldown_time_s
        self._allowed_fails = allowed_fails
        self._policy = dict(allowed_fails_policy or {})
        self._disabled = disabled
        self._minutes: dict[str, _Minute] = {}
        self._until: dict[str, float] = {}

    def is_cooling(self, model_id: str) -> bool:
        until = self._until.get(model_id)
        if until is None:
            return False
        if self._monotonic() < until:
            return True
        del self._until[model_id]
        return False

    def remaining_s(self, model_ids: list[str]) -> float:
        """The least time until one of `model_ids` is out of cooldown (0 if one is already)."""
        now = self._monotonic()
        return max(0.0, min((self._until.get(model_id, now) - now for model_id in model_ids), default=0.0))

    def cooling(self, model_ids: list[str]) -> list[str]:
        return [model_id for model_id in model_ids if self.is_cooling(model_id)]

    def record_success(self, model_id: str) -> None:
        self._minute(model_id).successes += 1

    def record_failure(self, model_id: str, error: ProxyError, *, group_size: int) -> bool:
        """Count a failed call; True when it put the deployment in cooldown."""
        status = error.status_code
        if self._disabled or (400 <= status < 500 and status not in _COOLING_4XX):
            return False
        bucket = self._minute(model_id)
        bucket.failures += 1
        if self._should_cool(bucket, error, group_size):
            self._until[model_id] = self._monotonic() + self._cooldown_time_s
            return True
        return False

    def _should_cool(self, bucket: _Minute, error: ProxyError, group_size: int) -> bool:
        name = error_class(error)
        allowed = self._policy.get(f"{name}AllowedFails")
        if allowed is not None:
            counts = bucket.failures_by_class = bucket.failures_by_class or {}
            counts[name] = counts.get(name, 0) + 1
            return counts[name] > allowed
        if self._policy or self._allowed_fails is not None:
            # LiteLLM: a lone deployment is cooled only by a policy naming this error class.
            return group_size > 1 and self._allowed_fails is not None and bucket.failures > self._allowed_fails
        if group_size <= 1:
            return False
        if error.status_code == 429:
            return True
        calls = bucket.successes + bucket.failures
        if calls >= FAILURE_RATE_MIN_CALLS and bucket.failures / calls > FAILURE_RATE_THRESHOLD:
            return True
        return error.status_code in (401, 404)  # an error no retry fixes (LiteLLM's `should_retry` is False)

    def _minute(self, model_id: str) -> _Minute:
        minute = int(self._monotonic() // 60)
        bucket = self._minutes.get(model_id)
        if bucket is None or bucket.minute != minute:
            bucket = self._minutes[model_id] = _Minute(minute)
        return bucket
