"""`Cooldowns`: when a failing deployment is skipped and for how long (LiteLLM's rules), with a fake clock.

Guards a deployment cooled by a client's own mistake (400), never cooled by a failure rate past 50%, cooled past its
`cooldown_time`, or a lone deployment refused for a hiccup.
"""

from __future__ import annotations

from haimaker.clock import FakeClock
from haimaker.errors import BadGatewayError, GatewayTimeoutError, UpstreamStatusError
from haimaker.providers.cooldowns import Cooldowns


def _cooldowns(
    clock: FakeClock,
    *,
    allowed_fails: int | None = None,
    allowed_fails_policy: dict[str, int] | None = None,
    disabled: bool = False,
) -> Cooldowns:
    return Cooldowns(
        clock.monotonic,
        cooldown_time_s=5,
        allowed_fails=allowed_fails,
        allowed_fails_policy=allowed_fails_policy,
        disabled=disabled,
    )


def test_the_default_rule_cools_after_half_the_calls_of_the_minute_fail() -> None:
    clock = FakeClock()
    cooldowns = _cooldowns(clock)
    for _ in range(2):
        cooldowns.record_success("a")
    cooled = [cooldowns.record_failure("a", BadGatewayError("down"), group_size=2) for _ in range(3)]

    assert cooled == [False, False, True], "3 of 5 calls failed: over 50% with the minimum of 5 calls"
    assert cooldowns.is_cooling("a")
    clock.advance(5)
    assert not cooldowns.is_cooling("a")


def test_a_400_never_counts_towards_a_cooldown() -> None:
    cooldowns = _cooldowns(FakeClock(), allowed_fails=0)
    assert not cooldowns.record_failure("a", UpstreamStatusError("bad", status_code=400), group_size=2)
    assert not cooldowns.is_cooling("a")


def test_an_auth_failure_cools_at_once_by_default() -> None:
    cooldowns = _cooldowns(FakeClock())
    assert cooldowns.record_failure("a", UpstreamStatusError("key", status_code=401), group_size=2)


def test_allowed_fails_counts_failures_per_minute() -> None:
    clock = FakeClock()
    cooldowns = _cooldowns(clock, allowed_fails=2)
    assert not cooldowns.record_failure("a", BadGatewayError("x"), group_size=2)
    assert not cooldowns.record_failure("a", BadGatewayError("x"), group_size=2)
    clock.advance(60)  # a new minute: the count starts again
    assert not cooldowns.record_failure("a", BadGatewayError("x"), group_size=2)
    assert not cooldowns.record_failure("a", BadGatewayError("x"), group_size=2)
    assert cooldowns.record_failure("a", BadGatewayError("x"), group_size=2)


def test_allowed_fails_policy_counts_each_error_class_on_its_own() -> None:
    cooldowns = _cooldowns(FakeClock(), allowed_fails_policy={"TimeoutErrorAllowedFails": 1})
    assert not cooldowns.record_failure("a", GatewayTimeoutError("slow"), group_size=1)
    assert cooldowns.record_failure("a", GatewayTimeoutError("slow"), group_size=1), "a policy cools a lone one too"


def test_a_lone_deployment_is_not_cooled_by_default() -> None:
    cooldowns = _cooldowns(FakeClock())
    limited = UpstreamStatusError("slow down", status_code=429)
    assert not any(cooldowns.record_failure("a", limited, group_size=1) for _ in range(10))


def test_disabled_cooldowns_never_cool() -> None:
    cooldowns = _cooldowns(FakeClock(), disabled=True)
    assert not cooldowns.record_failure("a", UpstreamStatusError("slow down", status_code=429), group_size=3)


def test_remaining_is_the_soonest_end() -> None:
    clock = FakeClock()
    cooldowns = _cooldowns(clock)
    cooldowns.record_failure("a", UpstreamStatusError("slow down", status_code=429), group_size=2)
    clock.advance(2)
    cooldowns.record_failure("b", UpstreamStatusError("slow down", status_code=429), group_size=2)

    assert cooldowns.remaining_s(["a", "b"]) == 3
    assert cooldowns.cooling(["a", "b", "c"]) == ["a", "b"]
