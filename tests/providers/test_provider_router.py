"""`Router` and `build_deployments`: rotation over a model group, bounded retries, deployments from config.

Guards one deployment taking all the traffic, retries that are unbounded, retry client errors, or stay on
the failed deployment while another is healthy, and deployment ids or timeouts that drift from the config.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from haimaker.accounting.pricing import PriceTable
from haimaker.config.schema import Config
from haimaker.errors import BadGatewayError, GatewayTimeoutError, UnknownModelError, UpstreamStatusError
from haimaker.providers.base import Deployment, Route
from haimaker.providers.router import DEFAULT_TIMEOUT_S, Router, build_deployments
from tests.providers.router_fakes import ScriptedProvider, no_sleep


def _deployments(*entries: tuple[str, str]) -> list[Deployment]:
    """Deployments from (model_name, model_id) pairs, built through the real config path."""
    config = Config.model_validate(
        {
            "model_list": [
                {"model_name": name, "litellm_params": {"model": f"mock/{name}"}, "model_info": {"id": model_id}}
                for name, model_id in entries
            ]
        }
    )
    return build_deployments(config, PriceTable.bundled())


def _router(provider: ScriptedProvider, *entries: tuple[str, str], num_retries: int = 2) -> Router:
    return Router(_deployments(*entries), {"mock": provider}, num_retries=num_retries, sleep=no_sleep)


async def _open(router: Router, model: str) -> str:
    deployment, _ = await router.open(model, Route.CHAT, {"model": model}, False)
    return deployment.model_id


async def test_requests_rotate_over_the_group() -> None:
    provider = ScriptedProvider()
    router = _router(provider, ("m", "a"), ("m", "b"), ("m", "c"), ("other", "x"))

    served = [await _open(router, "m") for _ in range(6)]

    assert served == ["a", "b", "c", "a", "b", "c"]
    assert await _open(router, "other") == "x"


async def test_retryable_failure_moves_to_the_next_deployment() -> None:
    provider = ScriptedProvider({"a": BadGatewayError("down")})
    router = _router(provider, ("m", "a"), ("m", "b"))
    failed: list[tuple[str, int]] = []

    deployment, _ = await router.open(
        "m", Route.CHAT, {}, False, on_failed_attempt=lambda d, e: failed.append((d.model_id, e.status_code))
    )

    assert deployment.model_id == "b"
    assert provider.calls == ["a", "b"]
    assert failed == [("a", 502)]


@pytest.mark.parametrize("num_retries", [0, 1, 4])
async def test_attempts_are_bounded_by_num_retries(num_retries: int) -> None:
    provider = ScriptedProvider({"a": GatewayTimeoutError("slow"), "b": GatewayTimeoutError("slow")})
    router = _router(provider, ("m", "a"), ("m", "b"), num_retries=num_retries)

    with pytest.raises(GatewayTimeoutError):
        await _open(router, "m")

    assert len(provider.calls) == num_retries + 1


async def test_single_deployment_group_retries_the_same_deployment() -> None:
    provider = ScriptedProvider({"a": BadGatewayError("down")})
    router = _router(provider, ("m", "a"), num_retries=2)

    with pytest.raises(BadGatewayError):
        await _open(router, "m")
    assert provider.calls == ["a", "a", "a"]


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
async def test_client_errors_are_not_retried(status: int) -> None:
    provider = ScriptedProvider({"a": UpstreamStatusError("no", status_code=status)})
    router = _router(provider, ("m", "a"), ("m", "b"))

    with pytest.raises(UpstreamStatusError):
        await _open(router, "m")
    assert provider.calls == ["a"]


async def test_retryable_4xx_are_retried() -> None:
    limited = UpstreamStatusError("slow down", status_code=429)
    limited.is_retryable = True
    provider = ScriptedProvider({"a": limited})
    router = _router(provider, ("m", "a"), ("m", "b"))

    assert await _open(router, "m") == "b"


async def test_unknown_model_names_it_and_the_available_ones() -> None:
    router = _router(ScriptedProvider(), ("zeta", "z"), ("alpha", "a"))

    with pytest.raises(UnknownModelError) as raised:
        await _open(router, "gpt-5")

    assert raised.value.status_code == 400
    assert raised.value.param == "model"
    assert "model=gpt-5" in raised.value.message
    assert raised.value.message.endswith("Available models: alpha, zeta")


# ---- build_deployments -------------------------------------------------------------------------------------


def _built(config: dict[str, Any]) -> list[Deployment]:
    return build_deployments(Config.model_validate(config), PriceTable.bundled())


def test_deployment_ids_are_stable_and_distinct_without_model_info_id() -> None:
    config = {
        "model_list": [
            {"model_name": "m", "litellm_params": {"model": "openai/gpt-4o", "api_base": "http://a"}},
            {"model_name": "m", "litellm_params": {"model": "openai/gpt-4o", "api_base": "http://b"}},
        ]
    }
    first, second = _built(config)
    again = _built(config)

    assert first.model_id != second.model_id
    assert [d.model_id for d in again] == [first.model_id, second.model_id]


def test_timeouts_come_from_the_deployment_then_the_global_settings() -> None:
    entries = [
        {"model_name": "own", "litellm_params": {"model": "mock/x", "timeout": 3, "stream_timeout": 2}},
        {"model_name": "global", "litellm_params": {"model": "mock/x"}},
    ]
    own, global_ = _built({"model_list": entries, "litellm_settings": {"request_timeout": 9}})
    (default,) = _built({"model_list": entries[1:]})
    (router_level,) = _built({"model_list": entries[1:], "router_settings": {"timeout": 7}})

    assert (own.timeout_s, own.stream_timeout_s) == (3, 2)
    assert global_.timeout_s == 9
    assert default.timeout_s == DEFAULT_TIMEOUT_S
    assert router_level.timeout_s == 7


def test_provider_upstream_model_and_mock_settings_are_split_from_model() -> None:
    (deployment,) = _built(
        {
            "model_list": [
                {
                    "model_name": "public",
                    "litellm_params": {"model": "mock/org/model-v1", "mock_response": "hi", "mock_latency_ms": 250},
                }
            ]
        }
    )
    assert (deployment.provider, deployment.upstream_model) == ("mock", "org/model-v1")
    assert (deployment.mock_response, deployment.mock_latency_ms) == ("hi", 250)


def test_config_prices_override_the_table() -> None:
    (deployment,) = _built(
        {
            "model_list": [
                {
                    "model_name": "m",
                    "litellm_params": {
                        "model": "openai/gpt-4o",
                        "input_cost_per_token": 0.5,
                        "output_cost_per_token": 2,
                    },
                }
            ]
        }
    )
    assert deployment.price is not None
    assert deployment.price.input_cost_per_token == Decimal("0.5")
    assert deployment.price.output_cost_per_token == Decimal("2")


def test_known_models_are_priced_from_the_table_and_unknown_ones_are_not() -> None:
    known, unknown = _built(
        {
            "model_list": [
                {"model_name": "a", "litellm_params": {"model": "openai/gpt-4o"}},
                {"model_name": "b", "litellm_params": {"model": "openai/in-house-model"}},
            ]
        }
    )
    assert known.price is not None and known.price.input_cost_per_token > 0
    assert unknown.price is None
