"""The failed-key throttle: per client address, bounded, and never a free oracle while it refuses."""

from __future__ import annotations

import pytest

from haimaker.clock import FakeClock
from haimaker.errors import RateLimitError
from haimaker.limits.auth_throttle import AuthThrottle, client_address


def _throttle(clock: FakeClock, **overrides: float) -> AuthThrottle:
    options: dict[str, float] = {"max_failures": 3, "window_s": 10.0, "max_block_s": 40.0, "capacity": 100}
    options.update(overrides)
    return AuthThrottle(
        clock,
        max_failures=int(options["max_failures"]),
        window_s=options["window_s"],
        max_block_s=options["max_block_s"],
        capacity=int(options["capacity"]),
    )


def test_an_address_is_refused_after_max_failures_until_the_block_ends() -> None:
    clock = FakeClock()
    throttle = _throttle(clock)
    for _ in range(2):
        throttle.record_failure("10.0.0.1")
        assert throttle.refusal("10.0.0.1") is None
    throttle.record_failure("10.0.0.1")
    refused = throttle.refusal("10.0.0.1")
    assert isinstance(refused, RateLimitError)
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "10"
    clock.advance(9.5)
    again = throttle.refusal("10.0.0.1")
    assert again is not None and again.headers["retry-after"] == "1"
    clock.advance(0.5)
    assert throttle.refusal("10.0.0.1") is None


def test_other_addresses_are_not_refused() -> None:
    clock = FakeClock()
    throttle = _throttle(clock)
    for _ in range(3):
        throttle.record_failure("10.0.0.1")
    assert throttle.refusal("10.0.0.1") is not None
    assert throttle.refusal("10.0.0.2") is None
    assert throttle.refusal("127.0.0.1") is None
    assert throttle.refusal_of({"client": ("10.0.0.1", 4242), "headers": []}) is not None
    assert throttle.refusal_of({"client": ("10.0.0.2", 4242), "headers": []}) is None


def test_failures_spread_over_more_than_a_window_are_not_refused() -> None:
    clock = FakeClock()
    throttle = _throttle(clock)
    for _ in range(6):
        throttle.record_failure("10.0.0.1")
        clock.advance(6)  # two failures per 10 s window at most
        assert throttle.refusal("10.0.0.1") is None


def test_each_new_block_lasts_twice_as_long_up_to_the_cap() -> None:
    clock = FakeClock()
    throttle = _throttle(clock)
    seen: list[str] = []
    for _ in range(4):
        for _ in range(3):
            throttle.record_failure("10.0.0.1")
        refused = throttle.refusal("10.0.0.1")
        assert refused is not None
        seen.append(refused.headers["retry-after"])
        clock.advance(int(refused.headers["retry-after"]))
        assert throttle.refusal("10.0.0.1") is None
    assert seen == ["10", "20", "40", "40"]


def test_a_quiet_address_starts_again_from_the_shortest_block() -> None:
    clock = FakeClock()
    throttle = _throttle(clock)
    for _ in range(2):
        for _ in range(3):
            throttle.record_failure("10.0.0.1")
        refusal = throttle.refusal("10.0.0.1")
        assert refusal is not None
        clock.advance(int(refusal.headers["retry-after"]))
    clock.advance(41)  # a whole longest block without a failure
    for _ in range(3):
        throttle.record_failure("10.0.0.1")
    refusal = throttle.refusal("10.0.0.1")
    assert refusal is not None and refusal.headers["retry-after"] == "10"


def test_failures_while_refused_do_not_extend_the_block() -> None:
    clock = FakeClock()
    throttle = _throttle(clock)
    for _ in range(3):
        throttle.record_failure("10.0.0.1")
    clock.advance(5)
    throttle.record_failure("10.0.0.1")  # callers refuse before checking a key; recording anyway changes nothing
    refusal = throttle.refusal("10.0.0.1")
    assert refusal is not None and refusal.headers["retry-after"] == "5"


def test_the_table_is_bounded_and_forgets_the_oldest_address_first() -> None:
    clock = FakeClock()
    throttle = _throttle(clock, capacity=4, max_failures=1)
    for i in range(6):
        throttle.record_failure(f"10.0.0.{i}")
    assert len(throttle) == 4
    assert throttle.refusal("10.0.0.0") is None and throttle.refusal("10.0.0.1") is None
    assert all(throttle.refusal(f"10.0.0.{i}") is not None for i in range(2, 6))


def test_ipv6_addresses_of_one_slash_64_share_a_count() -> None:
    clock = FakeClock()
    throttle = _throttle(clock)
    throttle.record_failure("2001:db8:1:2::1")
    throttle.record_failure("2001:db8:1:2:aaaa::2")
    throttle.record_failure("2001:0db8:0001:0002:ffff:ffff:ffff:ffff")
    assert throttle.refusal("2001:db8:1:2::77") is not None
    assert throttle.refusal("2001:db8:1:3::1") is None


def test_zero_max_failures_turns_the_throttle_off() -> None:
    clock = FakeClock()
    throttle = _throttle(clock, max_failures=0)
    for _ in range(100):
        throttle.record_failure("10.0.0.1")
    assert throttle.refusal("10.0.0.1") is None
    assert len(throttle) == 0


@pytest.mark.parametrize(
    ("client", "headers", "trusted", "expected"),
    [
        (("10.0.0.9", 5000), [], frozenset(), "10.0.0.9"),
        # An untrusted peer cannot choose its address with a header.
        (("10.0.0.9", 5000), [(b"x-forwarded-for", b"1.2.3.4")], frozenset(), "10.0.0.9"),
        # Behind a trusted proxy: the right-most address that is not itself a trusted proxy.
        (("10.0.0.1", 5000), [(b"x-forwarded-for", b"6.6.6.6, 1.2.3.4")], frozenset({"10.0.0.1"}), "1.2.3.4"),
        (
            ("10.0.0.1", 5000),
            [(b"x-forwarded-for", b"6.6.6.6, 1.2.3.4, 10.0.0.2")],
            frozenset({"10.0.0.1", "10.0.0.2"}),
            "1.2.3.4",
        ),
        (("10.0.0.1", 5000), [], frozenset({"10.0.0.1"}), "10.0.0.1"),
        (None, [], frozenset(), ""),
    ],
)
def test_client_address(
    client: tuple[str, int] | None, headers: list[tuple[bytes, bytes]], trusted: frozenset[str], expected: str
) -> None:
    assert client_address({"client": client, "headers": headers}, trusted) == expected
