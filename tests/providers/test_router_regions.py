"""`Router` region routing: a customer's `allowed_model_region` keeps its calls on deployments of that region.

Guards a call served outside its region (first pick, retry or failover), a deployment without `region_name` counted
as in every region, regions compared loosely (case, prefixes), an empty region served anyway instead of a 400, and
region traffic that stops rotating or disturbs the rotation of unrestricted calls.
"""

from __future__ import annotations

import pytest

from haimaker.accounting.pricing import PriceTable
from haimaker.config.schema import Config
from haimaker.errors import BadGatewayError, BadRequestError, UnknownModelError, UpstreamStatusError
from haimaker.providers.base import Route
from haimaker.providers.router import Router, build_deployments
from tests.providers.router_fakes import ScriptedProvider, no_sleep


def _router(provider: ScriptedProvider, *entries: tuple[str, str, str | None], num_retries: int = 2) -> Router:
    """A router over (model_name, model_id, region_name) deployments, built through the real config path."""
    config = Config.model_validate(
        {
            "model_list": [
                {
                    "model_name": name,
                    "litellm_params": {"model": f"mock/{name}", **({"region_name": region} if region else {})},
                    "model_info": {"id": model_id},
                }
                for name, model_id, region in entries
            ]
        }
    )
    deployments = build_deployments(config, PriceTable.bundled())
    return Router(deployments, {"mock": provider}, num_retries=num_retries, sleep=no_sleep)


async def _open(router: Router, model: str, region: str | None) -> str:
    deployment, _ = await router.open(model, Route.CHAT, {"model": model}, False, region=region)
    return deployment.model_id


MIXED = (("m", "us-1", "us"), ("m", "eu-1", "eu"), ("m", "none", None), ("m", "eu-2", "eu"), ("m", "us-2", "us"))


async def test_a_region_only_reaches_its_deployments_and_rotates_over_them() -> None:
    provider = ScriptedProvider()
    router = _router(provider, *MIXED)

    served = [await _open(router, "m", "eu") for _ in range(6)]

    assert served == ["eu-1", "eu-2"] * 3


async def test_no_region_rotates_over_the_whole_group_untouched_by_regional_calls() -> None:
    provider = ScriptedProvider()
    router = _router(provider, *MIXED)

    first = await _open(router, "m", None)
    await _open(router, "m", "us")
    await _open(router, "m", "eu")
    second = await _open(router, "m", None)

    assert [first, second] == ["us-1", "eu-1"]


async def test_failover_stays_in_the_region() -> None:
    provider = ScriptedProvider({"eu-1": BadGatewayError("down"), "eu-2": BadGatewayError("down")})
    router = _router(provider, *MIXED, num_retries=4)

    with pytest.raises(BadGatewayError):
        await _open(router, "m", "eu")

    assert set(provider.calls) == {"eu-1", "eu-2"}, "no attempt left the region, even with retries to spare"
    assert len(provider.calls) == 5


async def test_a_retry_moves_to_the_other_deployment_of_the_region() -> None:
    provider = ScriptedProvider({"us-1": BadGatewayError("down")})
    router = _router(provider, *MIXED)

    assert await _open(router, "m", "us") == "us-2"
    assert provider.calls == ["us-1", "us-2"]


async def test_a_client_error_is_not_retried_in_the_region() -> None:
    provider = ScriptedProvider({"us-1": UpstreamStatusError("bad", status_code=400)})
    router = _router(provider, *MIXED)

    with pytest.raises(UpstreamStatusError):
        await _open(router, "m", "us")

    assert provider.calls == ["us-1"]


async def test_a_region_without_deployments_is_a_400_naming_region_and_model_group() -> None:
    provider = ScriptedProvider()
    router = _router(provider, ("m", "us-1", "us"), ("m", "none", None), ("other", "eu-1", "eu"))

    with pytest.raises(BadRequestError) as raised:
        await _open(router, "m", "eu")

    assert raised.value.status_code == 400
    assert raised.value.param == "model"
    assert "model group 'm'" in raised.value.message
    assert "region 'eu'" in raised.value.message
    assert "Regions of this model group: us." in raised.value.message
    assert provider.calls == [], "nothing was sent upstream"


async def test_a_deployment_without_region_name_is_in_no_region() -> None:
    provider = ScriptedProvider()
    router = _router(provider, ("m", "none", None))

    with pytest.raises(BadRequestError, match="none set"):
        await _open(router, "m", "us")
    assert await _open(router, "m", None) == "none"


@pytest.mark.parametrize("region_name", ["EU", "eu-west-1", "europe", " eu"])
async def test_regions_match_exactly_as_litellm_compares_them(region_name: str) -> None:
    # LiteLLM's `is_region_allowed` is `litellm_params.region_name == allowed_model_region`: no case folding and no
    # inference from provider regions.
    provider = ScriptedProvider()
    router = _router(provider, ("m", "d", region_name))

    with pytest.raises(BadRequestError):
        await _open(router, "m", "eu")


async def test_an_unknown_model_is_still_the_unknown_model_error_with_a_region() -> None:
    router = _router(ScriptedProvider(), *MIXED)

    with pytest.raises(UnknownModelError):
        await _open(router, "nope", "eu")


async def test_a_region_without_deployments_is_refused_on_every_call() -> None:
    provider = ScriptedProvider()
    router = _router(provider, ("m", "us-1", "us"))

    for _ in range(3):
        with pytest.raises(BadRequestError):
            await _open(router, "m", "eu")
    assert await _open(router, "m", "us") == "us-1"
