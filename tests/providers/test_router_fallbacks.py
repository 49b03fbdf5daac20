"""`Router` retries, backoff, fallbacks, cooldowns and deployment rpm/tpm, with a controlled clock and no sleeps.

Guards retries that skip the group for a fallback (LiteLLM retries in the group first), backoff that sleeps when
another deployment could be tried at once or ignores `retry-after`, fallbacks taken for malformed requests, leaving
the customer's region or reaching a group the caller may not use, a cooled-down deployment still picked while
another is healthy, and a deployment over its rpm still served.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import pytest

from haimaker.accounting.pricing import PriceTable
from haimaker.clock import FakeClock
from haimaker.config.schema import Config
from haimaker.errors import BadGatewayError, RateLimitError, UpstreamStatusError
from haimaker.providers.base import Route
from haimaker.providers.router import RouteAttempts, Router, build_deployments
from haimaker.providers.routing_settings import routing_settings
from tests.providers.router_fakes import ScriptedProvider


class Sleeps:
    """The router's injected sleep: records each wait instead of waiting."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


Entry = tuple[str, str] | tuple[str, str, dict[str, Any]]


def _config(entries: Sequence[Entry], **router_settings: Any) -> Config:
    """A config of (model_name, model_id[, extra litellm_params]) deployments on the mock provider."""
    model_list = []
    for entry in entries:
        name, model_id = entry[0], entry[1]
        extra = entry[2] if len(entry) > 2 else {}
        model_list.append(
            {"model_name": name, "litellm_params": {"model": f"mock/{name}", **extra}, "model_info": {"id": model_id}}
        )
    return Config.model_validate({"model_list": model_list, "router_settings": router_settings})


def _router(
    provider: ScriptedProvider,
    entries: Sequence[Entry],
    *,
    clock: FakeClock | None = None,
    sleeps: Sleeps | None = None,
    **router_settings: Any,
) -> Router:
    config = _config(entries, **router_settings)
    return Router(
        build_deployments(config, PriceTable.bundled()),
        {"mock": provider},
        settings=routing_settings(config),
        clock=clock or FakeClock(),
        sleep=sleeps or Sleeps(),
        rng=random.Random(7),
    )


async def _open(router: Router, model: str, **kwargs: Any) -> tuple[str, RouteAttempts]:
    attempts = RouteAttempts()
    deployment, _ = await router.open(model, Route.CHAT, {"model": model}, False, attempts=attempts, **kwargs)
    return deployment.model_id, attempts


def _limited(retry_after: str | None = None) -> UpstreamStatusError:
    error = UpstreamStatusError(
        "slow down", status_code=429, headers={"retry-after": retry_after} if retry_after else None
    )
    error.is_retryable = True
    return error


# ---- retries, then fallbacks -------------------------------------------------------------------------------


async def test_retries_stay_in_the_group_before_the_fallback_is_tried() -> None:
    provider = ScriptedProvider({"a1": BadGatewayError("down"), "a2": BadGatewayError("down")})
    router = _router(
        provider,
        [("a", "a1"), ("a", "a2"), ("b", "b1")],
        num_retries=2,
        fallbacks=[{"a": ["b"]}],
        disable_cooldowns=True,
    )

    served, attempts = await _open(router, "a")

    assert served == "b1"
    assert provider.calls == ["a1", "a2", "a1", "b1"]
    assert (attempts.retries, attempts.fallbacks) == (2, 1)
    assert attempts.headers() == [("x-litellm-attempted-retries", "2"), ("x-litellm-attempted-fallbacks", "1")]


async def test_fallbacks_are_tried_in_order_until_one_answers() -> None:
    provider = ScriptedProvider({"a1": BadGatewayError("down"), "b1": BadGatewayError("down")})
    router = _router(provider, [("a", "a1"), ("b", "b1"), ("c", "c1")], num_retries=0, fallbacks=[{"a": ["b", "c"]}])

    served, attempts = await _open(router, "a")

    assert served == "c1"
    assert provider.calls == ["a1", "b1", "c1"]
    assert attempts.fallbacks == 2


async def test_the_last_error_is_raised_when_every_fallback_fails() -> None:
    provider = ScriptedProvider({"a1": BadGatewayError("a down"), "b1": BadGatewayError("b down")})
    router = _router(provider, [("a", "a1"), ("b", "b1")], num_retries=0, fallbacks=[{"a": ["b"]}])

    with pytest.raises(BadGatewayError, match="b down"):
        await _open(router, "a")


async def test_default_fallbacks_apply_to_groups_without_their_own() -> None:
    provider = ScriptedProvider({"a1": BadGatewayError("down")})
    router = _router(provider, [("a", "a1"), ("z", "z1")], num_retries=0, default_fallbacks=["z"])

    assert (await _open(router, "a"))[0] == "z1"


async def test_a_malformed_request_falls_back_nowhere() -> None:
    provider = ScriptedProvider({"a1": UpstreamStatusError("bad field", status_code=400)})
    router = _router(provider, [("a", "a1"), ("b", "b1")], fallbacks=[{"a": ["b"]}])

    with pytest.raises(UpstreamStatusError):
        await _open(router, "a")
    assert provider.calls == ["a1"]


async def test_an_auth_failure_is_not_retried_but_falls_back() -> None:
    provider = ScriptedProvider({"a1": UpstreamStatusError("bad key", status_code=401)})
    router = _router(provider, [("a", "a1"), ("b", "b1")], num_retries=3, fallbacks=[{"a": ["b"]}])

    served, attempts = await _open(router, "a")

    assert served == "b1"
    assert provider.calls == ["a1", "b1"]
    assert attempts.retries == 0


async def test_a_fallback_the_caller_may_not_use_is_skipped() -> None:
    provider = ScriptedProvider({"a1": BadGatewayError("down")})
    router = _router(provider, [("a", "a1"), ("b", "b1"), ("c", "c1")], num_retries=0, fallbacks=[{"a": ["b", "c"]}])

    served, attempts = await _open(router, "a", allows_model=lambda name: name != "b")

    assert served == "c1"
    assert attempts.fallbacks == 1


async def test_a_fallback_stays_in_the_customers_region() -> None:
    provider = ScriptedProvider({"a-eu": BadGatewayError("down")})
    entries = [
        ("a", "a-eu", {"region_name": "eu"}),
        ("b", "b-us", {"region_name": "us"}),
        ("c", "c-us", {"region_name": "us"}),
        ("c", "c-eu", {"region_name": "eu"}),
    ]
    router = _router(provider, entries, num_retries=0, fallbacks=[{"a": ["b", "c"]}])

    served, _ = await _open(router, "a", region="eu")

    assert served == "c-eu"
    assert "b-us" not in provider.calls and "c-us" not in provider.calls


async def test_max_fallbacks_bounds_the_groups_tried() -> None:
    provider = ScriptedProvider({"a1": BadGatewayError("down"), "b1": BadGatewayError("down")})
    router = _router(
        provider, [("a", "a1"), ("b", "b1"), ("c", "c1")], num_retries=0, fallbacks=[{"a": ["b", "c"]}], max_fallbacks=1
    )

    with pytest.raises(BadGatewayError):
        await _open(router, "a")
    assert provider.calls == ["a1", "b1"]


# ---- context window --------------------------------------------------------------------------------------


async def test_an_upstream_context_length_error_goes_to_the_context_window_fallbacks_without_retries() -> None:
    too_long = UpstreamStatusError(
        "This model's maximum context length is 8192 tokens.", status_code=400, code="context_length_exceeded"
    )
    provider = ScriptedProvider({"small": too_long})
    router = _router(
        provider,
        [("s", "small"), ("s", "small-2"), ("big", "large"), ("other", "o1")],
        context_window_fallbacks=[{"s": ["big"]}],
        fallbacks=[{"s": ["other"]}],
    )

    served, attempts = await _open(router, "s")

    assert served == "large"
    assert provider.calls == ["small", "large"]
    assert attempts.retries == 0


async def test_a_prompt_over_every_known_context_window_falls_back_before_any_call() -> None:
    provider = ScriptedProvider()
    config = Config.model_validate(
        {
            "model_list": [
                {
                    "model_name": "s",
                    "litellm_params": {"model": "mock/s"},
                    "model_info": {"id": "s1", "max_input_tokens": 100},
                },
                {"model_name": "big", "litellm_params": {"model": "mock/big"}, "model_info": {"id": "b1"}},
            ],
            "router_settings": {"context_window_fallbacks": [{"s": ["big"]}]},
        }
    )
    router = Router(
        build_deployments(config, PriceTable.bundled()),
        {"mock": provider},
        settings=routing_settings(config),
        clock=FakeClock(),
        sleep=Sleeps(),
    )
    counted: list[int] = []

    async def prompt_tokens() -> int:
        counted.append(500)
        return 500

    served, _ = await _open(router, "s", prompt_tokens=prompt_tokens)

    assert served == "b1"
    assert provider.calls == ["b1"], "the small deployment was never called"
    assert counted == [500], "the prompt was counted once"


# ---- backoff ---------------------------------------------------------------------------------------------


async def test_a_retry_on_another_deployment_does_not_wait() -> None:
    sleeps = Sleeps()
    router = _router(ScriptedProvider({"a1": BadGatewayError("down")}), [("a", "a1"), ("a", "a2")], sleeps=sleeps)

    assert (await _open(router, "a"))[0] == "a2"
    assert sleeps.waits == []


async def test_retries_on_one_deployment_back_off_exponentially_with_jitter() -> None:
    sleeps = Sleeps()
    provider = ScriptedProvider(once={"a1": [BadGatewayError("down")] * 4})
    router = _router(provider, [("a", "a1")], sleeps=sleeps, num_retries=4)

    served, attempts = await _open(router, "a")

    assert served == "a1" and attempts.retries == 4
    for wait, base in zip(sleeps.waits, [0.5, 1.0, 2.0, 4.0], strict=True):
        assert base <= wait <= base + 0.75


async def test_backoff_is_capped_at_eight_seconds() -> None:
    sleeps = Sleeps()
    provider = ScriptedProvider(once={"a1": [BadGatewayError("down")] * 6})
    router = _router(provider, [("a", "a1")], sleeps=sleeps, num_retries=6)

    await _open(router, "a")

    assert max(sleeps.waits) <= 8.75
    assert sleeps.waits[-1] >= 8.0


async def test_retry_after_is_honoured_up_to_sixty_seconds() -> None:
    sleeps = Sleeps()
    provider = ScriptedProvider(once={"a1": [_limited("3"), _limited("600")]})
    router = _router(provider, [("a", "a1")], sleeps=sleeps, num_retries=2)

    await _open(router, "a")

    assert 3 <= sleeps.waits[0] <= 3.75
    assert sleeps.waits[1] <= 1.0 + 0.75, "a retry-after past 60 s falls back to the backoff"


async def test_retry_policy_counts_replace_num_retries_for_their_error_class() -> None:
    provider = ScriptedProvider({"a1": _limited(), "a2": _limited()})
    router = _router(
        provider,
        [("a", "a1"), ("a", "a2")],
        num_retries=1,
        retry_policy={"RateLimitErrorRetries": 4},
        disable_cooldowns=True,
    )

    with pytest.raises(UpstreamStatusError):
        await _open(router, "a")
    assert len(provider.calls) == 5


# ---- cooldowns -------------------------------------------------------------------------------------------


async def test_a_deployment_over_allowed_fails_is_skipped_until_its_cooldown_ends() -> None:
    clock = FakeClock()
    provider = ScriptedProvider({"a1": BadGatewayError("down")})
    router = _router(provider, [("a", "a1"), ("a", "a2")], clock=clock, allowed_fails=1, cooldown_time=30)

    for _ in range(4):
        await _open(router, "a")
    calls_while_cooling = provider.calls.count("a1")
    for _ in range(4):
        await _open(router, "a")
    assert provider.calls.count("a1") == calls_while_cooling == 2, "two failures, then no call while it cools"

    clock.advance(31)
    await _open(router, "a")
    await _open(router, "a")
    assert provider.calls.count("a1") == 3, "tried again once the cooldown ended"


async def test_a_429_cools_a_deployment_at_once_by_default() -> None:
    provider = ScriptedProvider(once={"a1": [_limited()]})
    router = _router(provider, [("a", "a1"), ("a", "a2")])

    served = [(await _open(router, "a"))[0] for _ in range(4)]

    assert served == ["a2"] * 4
    assert provider.calls.count("a1") == 1


async def test_every_deployment_cooling_is_a_429_no_deployments_available() -> None:
    clock = FakeClock()
    provider = ScriptedProvider({"a1": _limited(), "a2": _limited()})
    router = _router(provider, [("a", "a1"), ("a", "a2")], clock=clock, cooldown_time=5)
    with pytest.raises(UpstreamStatusError):
        await _open(router, "a")

    with pytest.raises(RateLimitError) as raised:
        await _open(router, "a")

    assert raised.value.status_code == 429
    assert raised.value.message.startswith("No deployments available for selected model, Try again in 5 seconds.")
    assert "All deployments for selected model are in cooldown." in raised.value.message
    assert "Passed model=a." in raised.value.message
    assert raised.value.headers["retry-after"] == "5"


async def test_all_deployments_cooling_falls_back() -> None:
    provider = ScriptedProvider(once={"a1": [_limited()], "a2": [_limited()]})
    router = _router(provider, [("a", "a1"), ("a", "a2"), ("b", "b1")], num_retries=1, fallbacks=[{"a": ["b"]}])
    await _open(router, "a")  # both a's cool down; b answers

    served, attempts = await _open(router, "a")

    assert served == "b1" and attempts.fallbacks == 1
    assert provider.calls[-1] == "b1" and provider.calls.count("a1") == provider.calls.count("a2") == 1


async def test_a_lone_deployment_is_not_cooled_down_by_default() -> None:
    provider = ScriptedProvider(once={"a1": [_limited()] * 3})
    router = _router(provider, [("a", "a1")], num_retries=0)
    for _ in range(3):
        with pytest.raises(UpstreamStatusError):
            await _open(router, "a")

    assert (await _open(router, "a"))[0] == "a1"


# ---- deployment rpm / tpm --------------------------------------------------------------------------------


async def test_a_deployment_over_its_rpm_is_skipped_until_the_minute_turns() -> None:
    clock = FakeClock()
    provider = ScriptedProvider()
    entries = [("a", "small", {"rpm": 2}), ("a", "large", {"rpm": 100})]
    router = _router(provider, entries, clock=clock, routing_strategy="least-busy")

    served = [(await _open(router, "a"))[0] for _ in range(20)]

    assert served.count("small") == 2

    clock.advance(60)
    more = [(await _open(router, "a"))[0] for _ in range(20)]
    assert more.count("small") == 2


async def test_every_deployment_over_its_rpm_is_a_429() -> None:
    router = _router(ScriptedProvider(), [("a", "a1", {"rpm": 1})])
    await _open(router, "a")

    with pytest.raises(RateLimitError) as raised:
        await _open(router, "a")

    assert raised.value.message.startswith("No deployments available for selected model, Try again in ")
    assert "Deployment over user-defined ratelimit." in raised.value.message


async def test_a_deployment_over_its_tpm_is_skipped() -> None:
    provider = ScriptedProvider()
    router = _router(provider, [("a", "a1", {"tpm": 1000}), ("a", "a2", {"tpm": 1000})], routing_strategy="least-busy")
    deployment = router.group("a")[0]
    router.record_usage(deployment, 1000)

    served = {(await _open(router, "a"))[0] for _ in range(5)}

    assert served == {"a2"}
