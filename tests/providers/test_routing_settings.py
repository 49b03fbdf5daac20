"""`routing_settings` and the loader's fallback checks: LiteLLM's keys in both sections, defaults, and config errors.

Guards `litellm_settings.fallbacks` ignored, `router_settings` not winning over it, LiteLLM's defaults drifting
(2 retries, 5 s cooldown), and a fallback naming a group that does not exist reaching production silently.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from haimaker.config.loader import ConfigError, load_config
from haimaker.config.schema import Config
from haimaker.providers.routing_settings import routing_settings

MODELS = [
    {"model_name": name, "litellm_params": {"model": f"mock/{name}"}, "model_info": {"id": name}}
    for name in ("a", "b", "c")
]


def _settings(**sections: Any) -> Any:
    return routing_settings(Config.model_validate({"model_list": MODELS, **sections}))


def test_defaults_are_litellms() -> None:
    settings = _settings()
    assert (settings.num_retries, settings.cooldown_time_s, settings.max_fallbacks) == (2, 5.0, 5)
    assert settings.fallbacks_of("a") == ()


def test_litellm_settings_fallbacks_apply_and_router_settings_win() -> None:
    only_litellm = _settings(litellm_settings={"fallbacks": [{"a": ["b"]}], "num_retries": 4, "cooldown_time": 9})
    assert only_litellm.fallbacks_of("a") == ("b",)
    assert (only_litellm.num_retries, only_litellm.cooldown_time_s) == (4, 9)

    both = _settings(
        litellm_settings={"fallbacks": [{"a": ["b"]}], "num_retries": 4},
        router_settings={"fallbacks": [{"a": ["c"]}], "num_retries": 1},
    )
    assert both.fallbacks_of("a") == ("c",)
    assert both.num_retries == 1


def test_default_fallbacks_and_the_star_entry_cover_groups_without_their_own() -> None:
    settings = _settings(router_settings={"fallbacks": [{"a": ["b"]}], "default_fallbacks": ["c"]})
    assert settings.fallbacks_of("a") == ("b",)
    assert settings.fallbacks_of("b") == ("c",)


def test_max_input_tokens_come_from_model_info() -> None:
    models = [{**MODELS[0], "model_info": {"id": "a", "max_input_tokens": 4096}}]
    settings = routing_settings(Config.model_validate({"model_list": models}))
    assert settings.max_input_tokens == {"a": 4096}


def _problems(tmp_path: Path, config: dict[str, Any]) -> list[str]:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError) as raised:
        load_config(path, env={})
    return raised.value.problems


def test_a_fallback_to_an_unknown_group_is_a_config_error(tmp_path: Path) -> None:
    problems = _problems(
        tmp_path,
        {
            "model_list": MODELS,
            "router_settings": {"fallbacks": [{"a": ["nope"]}, {"ghost": ["b"]}], "default_fallbacks": ["zzz"]},
            "litellm_settings": {"context_window_fallbacks": [{"a": ["b"], "c": ["b"]}]},
        },
    )
    assert sorted(p.split(": ", 1)[0] for p in problems) == [
        "litellm_settings.context_window_fallbacks[0]",
        "router_settings.default_fallbacks",
        "router_settings.fallbacks[0].a",
        "router_settings.fallbacks[1]",
    ]


def test_an_unknown_strategy_or_policy_key_is_a_config_error(tmp_path: Path) -> None:
    problems = _problems(
        tmp_path,
        {
            "model_list": MODELS,
            "router_settings": {"routing_strategy": "cost-based", "retry_policy": {"RateLimitRetries": 2}},
        },
    )
    assert sorted(p.split(": ", 1)[0] for p in problems) == [
        "router_settings.retry_policy",
        "router_settings.routing_strategy",
    ]


def test_routing_keys_load_without_warnings(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    models = [{**MODELS[0], "litellm_params": {"model": "mock/a", "rpm": 10, "tpm": 1000, "weight": 2}}, *MODELS[1:]]
    config = {
        "model_list": models,
        "general_settings": {"master_key": "sk-x"},
        "router_settings": {
            "routing_strategy": "latency-based-routing",
            "routing_strategy_args": {"ttl": 60, "lowest_latency_buffer": 0.2},
            "fallbacks": [{"a": ["b"]}],
            "allowed_fails": 3,
            "cooldown_time": 10,
            "allowed_fails_policy": {"RateLimitErrorAllowedFails": 5},
            "retry_policy": {"DefaultRetries": 1},
        },
    }
    path.write_text(yaml.safe_dump(config))
    assert load_config(path, env={}).warnings == ()
