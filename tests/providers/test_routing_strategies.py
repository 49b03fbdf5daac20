"""`Strategy` and `DeploymentLoad`: each routing strategy's pick, deployment rpm/tpm windows, with a fake clock.

Guards weights ignored (or a weightless deployment still picked), least-busy counting calls that ended, latency
routing that never measures a new deployment or keeps stale samples forever, and rpm/tpm windows that never reset.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

from haimaker.clock import FakeClock
from haimaker.providers.base import Deployment
from haimaker.providers.routing_strategies import DeploymentLoad, Strategy


def _deployment(model_id: str, **params: Any) -> Deployment:
    return Deployment(
        model_id=model_id,
        model_name="m",
        provider="mock",
        upstream_model="m",
        api_base=None,
        api_key=None,
        api_version=None,
        timeout_s=10,
        stream_timeout_s=None,
        max_retries=None,
        region_name=None,
        price=None,
        max_output_tokens=None,
        params=params,
    )


def _strategy(name: str | None, clock: FakeClock | None = None, **kwargs: Any) -> Strategy:
    load = DeploymentLoad((clock or FakeClock()).monotonic)
    return Strategy(name, load, random.Random(3), **kwargs)


def _picks(strategy: Strategy, candidates: list[Deployment], n: int = 2000) -> Counter[str]:
    return Counter(strategy.pick(candidates).model_id for _ in range(n))


def test_round_robin_takes_the_first_candidate_of_the_rotated_group() -> None:
    a, b = _deployment("a"), _deployment("b")
    assert _strategy(None).pick([b, a]).model_id == "b"


def test_simple_shuffle_follows_weight() -> None:
    picks = _picks(_strategy("simple-shuffle"), [_deployment("a", weight=9), _deployment("b", weight=1)])
    assert 0.85 < picks["a"] / 2000 < 0.95


def test_unset_strategy_shuffles_by_rpm_when_deployments_set_it() -> None:
    picks = _picks(_strategy(None), [_deployment("a", rpm=100), _deployment("b", rpm=300)])
    assert 0.7 < picks["b"] / 2000 < 0.8


def test_a_deployment_without_the_weight_others_set_is_never_picked() -> None:
    picks = _picks(_strategy("simple-shuffle"), [_deployment("a", weight=1), _deployment("b")])
    assert picks == Counter({"a": 2000})


def test_simple_shuffle_without_weights_is_uniform() -> None:
    picks = _picks(_strategy("simple-shuffle"), [_deployment("a"), _deployment("b")])
    assert 0.45 < picks["a"] / 2000 < 0.55


def test_least_busy_picks_the_fewest_calls_in_flight() -> None:
    strategy = _strategy("least-busy")
    a, b = _deployment("a"), _deployment("b")
    strategy.load.start("a")
    strategy.load.start("a")
    strategy.load.start("b")
    assert strategy.pick([a, b]).model_id == "b"

    strategy.load.finish("a")
    strategy.load.finish("a")
    assert strategy.pick([a, b]).model_id == "a"


def test_latency_routing_measures_every_deployment_then_picks_the_fastest() -> None:
    clock = FakeClock()
    strategy = _strategy("latency-based-routing", clock)
    a, b = _deployment("a"), _deployment("b")
    strategy.load.add_latency("a", 0.2)
    assert strategy.pick([a, b]).model_id == "b", "b has no sample yet"

    strategy.load.add_latency("b", 0.9)
    assert _picks(strategy, [a, b], 50) == Counter({"a": 50})


def test_latency_buffer_spreads_over_the_near_fastest() -> None:
    strategy = _strategy("latency-based-routing", lowest_latency_buffer=0.5)
    a, b, c = _deployment("a"), _deployment("b"), _deployment("c")
    strategy.load.add_latency("a", 1.0)
    strategy.load.add_latency("b", 1.4)
    strategy.load.add_latency("c", 2.0)

    assert set(_picks(strategy, [a, b, c], 200)) == {"a", "b"}


def test_latency_samples_expire_after_the_ttl() -> None:
    clock = FakeClock()
    strategy = _strategy("latency-based-routing", clock, latency_ttl_s=60)
    a, b = _deployment("a"), _deployment("b")
    strategy.load.add_latency("a", 5.0)
    clock.advance(30)
    strategy.load.add_latency("b", 1.0)
    assert strategy.pick([a, b]).model_id == "b"

    clock.advance(45)  # a's sample is 75 s old: a counts as unmeasured again
    assert strategy.pick([a, b]).model_id == "a"


def test_usage_based_routing_picks_the_fewest_tokens_this_minute() -> None:
    strategy = _strategy("usage-based-routing-v2")
    strategy.load.add_tokens("a", 500)
    strategy.load.add_tokens("b", 100)
    assert strategy.pick([_deployment("a"), _deployment("b")]).model_id == "b"


def test_rpm_and_tpm_capacity_reset_when_the_minute_turns() -> None:
    clock = FakeClock()
    load = DeploymentLoad(clock.monotonic)
    rpm_bound, tpm_bound = _deployment("r", rpm=2), _deployment("t", tpm=100)
    load.start("r")
    load.start("r")
    load.add_tokens("t", 100)

    assert not load.has_capacity(rpm_bound)
    assert not load.has_capacity(tpm_bound)
    assert load.has_capacity(_deployment("free"))

    clock.advance(60)
    assert load.has_capacity(rpm_bound) and load.has_capacity(tpm_bound)
