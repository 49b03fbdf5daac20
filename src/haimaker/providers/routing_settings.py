"""The router's settings, read once from the config: retries, fallbacks, cooldowns and the routing strategy.

LiteLLM reads the fallback and cooldown keys from `router_settings` and from `litellm_settings`; `router_settings`
wins key by key. Defaults are LiteLLM's (`litellm/constants.py`): 2 retries, 5 s cooldowns, at most 5 fallbacks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from haimaker.config.schema import Config, FallbackList

DEFAULT_NUM_RETRIES: Final = 2
DEFAULT_COOLDOWN_TIME_S: Final = 5.0  # LiteLLM's DEFAULT_COOLDOWN_TIME_SECONDS
DEFAULT_LATENCY_TTL_S: Final = 3600.0  # LiteLLM's lowest-latency `ttl`
# The group a fallback entry names to apply to every group without its own (LiteLLM's generic fallback key).
ANY_GROUP: Final = "*"


@dataclass(frozen=True, slots=True)
class RoutingSettings:
    """What the `Router` needs from the config (frozen; built by `routing_settings`)."""

    num_retries: int = DEFAULT_NUM_RETRIES
    fallbacks: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    context_window_fallbacks: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    max_fallbacks: int = 5
    retry_policy: Mapping[str, int] = field(default_factory=dict)
    min_retry_wait_s: float = 0.0  # `router_settings.retry_after`
    allowed_fails: int | None = None
    allowed_fails_policy: Mapping[str, int] = field(default_factory=dict)
    cooldown_time_s: float = DEFAULT_COOLDOWN_TIME_S
    disable_cooldowns: bool = False
    routing_strategy: str | None = None
    latency_ttl_s: float = DEFAULT_LATENCY_TTL_S
    lowest_latency_buffer: float = 0.0
    pre_call_checks: bool = False  # only echoed in the "No deployments available" message, as LiteLLM does
    # `model_info.max_input_tokens` by deployment id (the price table's otherwise): for context-window fallbacks.
    max_input_tokens: Mapping[str, int] = field(default_factory=dict)

    def fallbacks_of(self, group: str) -> tuple[str, ...]:
        """The groups to try after `group` fails (its own entry, else the generic `*` one)."""
        own = self.fallbacks.get(group)
        return own if own is not None else self.fallbacks.get(ANY_GROUP, ())

    def context_window_fallbacks_of(self, group: str) -> tuple[str, ...]:
        own = self.context_window_fallbacks.get(group)
        return own if own is not None else self.context_window_fallbacks.get(ANY_GROUP, ())


def routing_settings(config: Config) -> RoutingSettings:
    """The router's settings from `router_settings`, then `litellm_settings` (LiteLLM's two places)."""
    router, litellm = config.router_settings, config.litellm_settings
    num_retries = router.num_retries
    if num_retries is None:
        num_retries = litellm.num_retries if litellm.num_retries is not None else DEFAULT_NUM_RETRIES
    fallbacks = _fallback_map(router.fallbacks if router.fallbacks is not None else litellm.fallbacks)
    default_fallbacks = router.default_fallbacks if router.default_fallbacks is not None else litellm.default_fallbacks
    if default_fallbacks and ANY_GROUP not in fallbacks:
        fallbacks[ANY_GROUP] = tuple(default_fallbacks)
    context = router.context_window_fallbacks
    if context is None:
        context = litellm.context_window_fallbacks
    cooldown_time = router.cooldown_time if router.cooldown_time is not None else litellm.cooldown_time
    args = router.routing_strategy_args
    max_input_tokens: dict[str, int] = {}
    for entry in config.model_list:
        if entry.model_info.max_input_tokens is not None and entry.model_info.id is not None:
            max_input_tokens[entry.model_info.id] = entry.model_info.max_input_tokens
    return RoutingSettings(
        num_retries=num_retries,
        fallbacks=fallbacks,
        context_window_fallbacks=_fallback_map(context),
        max_fallbacks=router.max_fallbacks,
        retry_policy=dict(router.retry_policy or {}),
        min_retry_wait_s=router.retry_after,
        allowed_fails=router.allowed_fails if router.allowed_fails is not None else litellm.allowed_fails,
        allowed_fails_policy=dict(router.allowed_fails_policy or {}),
        cooldown_time_s=cooldown_time if cooldown_time is not None else DEFAULT_COOLDOWN_TIME_S,
        disable_cooldowns=router.disable_cooldowns,
        routing_strategy=router.routing_strategy,
        latency_ttl_s=float(args.get("ttl", DEFAULT_LATENCY_TTL_S)),
        lowest_latency_buffer=float(args.get("lowest_latency_buffer", 0.0)),
        pre_call_checks=bool(router.enable_pre_call_checks),
        max_input_tokens=max_input_tokens,
    )


def _fallback_map(entries: FallbackList | None) -> dict[str, tuple[str, ...]]:
    merged: dict[str, tuple[str, ...]] = {}
    for entry in entries or []:
        for group, targets in entry.items():
            merged[group] = tuple(target for target in targets if target != group)
    return merged
