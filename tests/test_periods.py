from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from haimaker.errors import BadRequestError
from haimaker.periods import (
    Duration,
    next_reset_at,
    parse_duration,
    validate_duration,
    validate_reset_time,
    validate_timezone,
)

DAY = 86_400


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", Duration(30, "s", 30)),
        ("1m", Duration(1, "m", 60)),
        ("30m", Duration(30, "m", 1800)),
        ("1h", Duration(1, "h", 3600)),
        ("1hr", Duration(1, "h", 3600)),
        ("24h", Duration(24, "h", DAY)),
        ("1d", Duration(1, "d", DAY)),
        ("7d", Duration(7, "d", 7 * DAY)),
        ("30d", Duration(30, "d", 30 * DAY)),
        ("30days", Duration(30, "d", 30 * DAY)),
        ("1w", Duration(1, "w", 7 * DAY)),
        ("2w", Duration(2, "w", 14 * DAY)),
        ("1mo", Duration(1, "mo", 30 * DAY)),
        ("1month", Duration(1, "mo", 30 * DAY)),
        ("1min", Duration(1, "m", 60)),
        ("hourly", Duration(1, "h", 3600)),
        ("daily", Duration(24, "h", DAY)),
        ("weekly", Duration(7, "d", 7 * DAY)),
        ("monthly", Duration(30, "d", 30 * DAY)),
    ],
)
def test_parse_duration_accepts_litellm_formats(text: str, expected: Duration) -> None:
    assert parse_duration(text) == expected
    assert validate_duration(text) == text


@pytest.mark.parametrize("text", ["", "30", "abc", "0d", "0s", "2mo", "12mo", "0mo", "h1", "-1d", " 1d", "1H", "d"])
def test_parse_duration_rejects_invalid_formats(text: str) -> None:
    with pytest.raises(BadRequestError) as info:
        parse_duration(text)
    assert info.value.param == "budget_duration"
    assert info.value.status_code == 400
    assert info.value.message == (f"Invalid budget_duration '{text}'. Use a format like '1h', '24h', '7d', or '30d'.")


def test_validate_duration_passes_none_through() -> None:
    assert validate_duration(None) is None


def test_validate_duration_rejects_non_strings() -> None:
    with pytest.raises(BadRequestError):
        validate_duration(30)  # type: ignore[arg-type]


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


@pytest.mark.parametrize(
    ("duration", "now", "expected"),
    [
        # seconds and minutes align to multiples of N within the minute / hour
        ("30s", utc(2026, 3, 4, 10, 15, 7), utc(2026, 3, 4, 10, 15, 30)),
        ("30s", utc(2026, 3, 4, 10, 15, 42), utc(2026, 3, 4, 10, 16, 0)),
        ("30s", utc(2026, 3, 4, 23, 59, 45), utc(2026, 3, 5, 0, 0, 0)),
        ("30m", utc(2026, 3, 4, 10, 15, 7), utc(2026, 3, 4, 10, 30)),
        ("30m", utc(2026, 3, 4, 10, 45), utc(2026, 3, 4, 11, 0)),
        ("90m", utc(2026, 3, 4, 10, 10), utc(2026, 3, 4, 11, 30)),
        # hours align within the day
        ("1h", utc(2026, 3, 4, 10, 15), utc(2026, 3, 4, 11, 0)),
        ("1h", utc(2026, 3, 4, 23, 0, 1), utc(2026, 3, 5, 0, 0)),
        ("6h", utc(2026, 3, 4, 10, 15), utc(2026, 3, 4, 12, 0)),
        ("24h", utc(2026, 3, 4, 10, 15), utc(2026, 3, 5, 0, 0)),
        ("daily", utc(2026, 3, 4, 10, 15), utc(2026, 3, 5, 0, 0)),
        # the LiteLLM quirk past midnight: midnight + (N mod 24)h of the next day
        ("30h", utc(2026, 3, 4, 10, 15), utc(2026, 3, 5, 6, 0)),
        ("30h", utc(2026, 3, 4, 0, 0, 1), utc(2026, 3, 5, 6, 0)),
        ("5h", utc(2026, 3, 4, 22, 10), utc(2026, 3, 5, 1, 0)),
        # days
        ("1d", utc(2026, 3, 4, 10, 15), utc(2026, 3, 5, 0, 0)),
        ("2d", utc(2026, 3, 4, 10, 15), utc(2026, 3, 6, 0, 0)),
        ("2w", utc(2026, 3, 4, 10, 15), utc(2026, 3, 18, 0, 0)),
        # 2026-03-04 is a Wednesday; weeks reset on Monday
        ("7d", utc(2026, 3, 4, 10, 15), utc(2026, 3, 9, 0, 0)),
        ("1w", utc(2026, 3, 4, 10, 15), utc(2026, 3, 9, 0, 0)),
        ("weekly", utc(2026, 3, 8, 23, 59), utc(2026, 3, 9, 0, 0)),
        ("7d", utc(2026, 3, 9, 0, 0, 1), utc(2026, 3, 16, 0, 0)),
        # months reset on the 1st
        ("30d", utc(2026, 3, 4, 10, 15), utc(2026, 4, 1, 0, 0)),
        ("1mo", utc(2026, 3, 4, 10, 15), utc(2026, 4, 1, 0, 0)),
        ("monthly", utc(2026, 1, 31, 12, 0), utc(2026, 2, 1, 0, 0)),
    ],
)
def test_next_reset_at_in_utc(duration: str, now: datetime, expected: datetime) -> None:
    assert next_reset_at(duration, now) == expected


@pytest.mark.parametrize(
    ("duration", "expected"),
    [
        ("30s", utc(2026, 1, 1, 0, 0, 0)),
        ("1h", utc(2026, 1, 1, 0, 0)),
        ("24h", utc(2026, 1, 1, 0, 0)),
        ("1d", utc(2026, 1, 1, 0, 0)),
        ("7d", utc(2026, 1, 5, 0, 0)),  # 2026-01-05 is a Monday
        ("30d", utc(2026, 1, 1, 0, 0)),
        ("1mo", utc(2026, 1, 1, 0, 0)),
    ],
)
def test_budget_resets_at_year_boundary(duration: str, expected: datetime) -> None:
    assert next_reset_at(duration, utc(2025, 12, 31, 23, 59, 50)) == expected


@pytest.mark.parametrize(
    ("duration", "now", "expected"),
    [
        ("30s", utc(2026, 3, 4, 10, 15, 30), utc(2026, 3, 4, 10, 16, 0)),
        ("30m", utc(2026, 3, 4, 10, 30), utc(2026, 3, 4, 11, 0)),
        ("1h", utc(2026, 3, 4, 11, 0), utc(2026, 3, 4, 12, 0)),
        ("24h", utc(2026, 3, 5, 0, 0), utc(2026, 3, 6, 0, 0)),
        ("1d", utc(2026, 3, 5, 0, 0), utc(2026, 3, 6, 0, 0)),
        ("7d", utc(2026, 3, 9, 0, 0), utc(2026, 3, 16, 0, 0)),
        ("30d", utc(2026, 4, 1, 0, 0), utc(2026, 5, 1, 0, 0)),
        ("1mo", utc(2026, 12, 1, 0, 0), utc(2027, 1, 1, 0, 0)),
    ],
)
def test_now_exactly_on_a_boundary_resets_at_the_next_one(duration: str, now: datetime, expected: datetime) -> None:
    assert next_reset_at(duration, now) == expected


@pytest.mark.parametrize(
    ("duration", "now", "expected"),
    [
        # 10:15 UTC on 2026-03-04 is 09:15 in Berlin (CET, +01:00)
        ("1d", utc(2026, 3, 4, 8, 15), utc(2026, 3, 4, 8, 30)),
        ("1d", utc(2026, 3, 4, 8, 30), utc(2026, 3, 5, 8, 30)),
        ("24h", utc(2026, 3, 4, 10, 15), utc(2026, 3, 5, 8, 30)),
        ("2d", utc(2026, 3, 4, 10, 15), utc(2026, 3, 6, 8, 30)),
        ("7d", utc(2026, 3, 4, 10, 15), utc(2026, 3, 9, 8, 30)),
        ("7d", utc(2026, 3, 9, 8, 0), utc(2026, 3, 9, 8, 30)),  # Monday before 09:30 local
        ("30d", utc(2026, 3, 4, 10, 15), utc(2026, 4, 1, 7, 30)),  # CEST (+02:00) by April
        ("1mo", utc(2026, 12, 20, 10, 15), utc(2027, 1, 1, 8, 30)),
        ("1h", utc(2026, 3, 4, 10, 15), utc(2026, 3, 4, 11, 0)),
    ],
)
def test_reset_time_and_timezone_shift_day_week_and_month_resets(
    duration: str, now: datetime, expected: datetime
) -> None:
    assert next_reset_at(duration, now, timezone="Europe/Berlin", reset_time="09:30") == expected


def test_day_reset_follows_local_midnight_in_a_non_utc_timezone() -> None:
    tokyo = ZoneInfo("Asia/Tokyo")
    now = datetime(2026, 3, 4, 23, 30, tzinfo=tokyo)  # 14:30 UTC
    assert next_reset_at("1d", now, timezone="Asia/Tokyo") == utc(2026, 3, 4, 15, 0)
    assert next_reset_at("1mo", now, timezone="Asia/Tokyo") == utc(2026, 3, 31, 15, 0)
    # half-hour offsets: India is +05:30, so a 1h boundary is at :30 UTC
    assert next_reset_at("1h", utc(2026, 3, 4, 10, 15), timezone="Asia/Kolkata") == utc(2026, 3, 4, 10, 30)


def test_result_is_aware_utc_for_aware_non_utc_input() -> None:
    now = datetime(2026, 3, 4, 10, 15, tzinfo=ZoneInfo("America/New_York"))
    result = next_reset_at("1d", now, timezone="America/New_York")
    assert result.tzinfo is UTC
    assert result == datetime(2026, 3, 5, 0, 0, tzinfo=ZoneInfo("America/New_York"))


DURATIONS = ["1s", "30s", "1m", "7m", "30m", "90m", "1h", "5h", "6h", "24h", "30h", "48h", "1d", "2d", "7d", "1w", "3w"]
DURATIONS += ["30d", "1mo", "hourly", "daily", "weekly", "monthly"]


@pytest.mark.parametrize("timezone", ["UTC", "America/New_York", "Europe/Berlin", "Australia/Lord_Howe"])
@pytest.mark.parametrize("duration", DURATIONS)
def test_reset_is_always_after_now_including_boundaries_and_dst_changes(duration: str, timezone: str) -> None:
    # Walk through both 2026 DST changes of the US and the EU in 15-minute steps (every instant is a boundary
    # for the minute/hour durations) plus a month end and a year end.
    starts = [utc(2026, 3, 8, 4), utc(2026, 3, 29, 0), utc(2026, 10, 25, 0), utc(2026, 11, 1, 4), utc(2026, 12, 31, 20)]
    for start in starts:
        for step in range(4 * 8):
            now = start + timedelta(minutes=15 * step)
            for probe in (now, now + timedelta(microseconds=1), now - timedelta(microseconds=1)):
                result = next_reset_at(duration, probe, timezone=timezone, reset_time="02:30")
                assert result > probe, (duration, timezone, probe, result)
                assert result.tzinfo is UTC
                assert result - probe <= timedelta(days=32 if duration not in ("3w",) else 22), (duration, probe)


def test_next_reset_at_rejects_naive_now() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        next_reset_at("1d", datetime(2026, 3, 4, 10, 15))


def test_next_reset_at_rejects_bad_duration_timezone_and_reset_time() -> None:
    now = utc(2026, 3, 4)
    with pytest.raises(BadRequestError) as duration_error:
        next_reset_at("2mo", now)
    assert duration_error.value.param == "budget_duration"
    with pytest.raises(BadRequestError) as zone_error:
        next_reset_at("1d", now, timezone="Mars/Olympus_Mons")
    assert zone_error.value.param == "timezone"
    with pytest.raises(BadRequestError) as time_error:
        next_reset_at("1d", now, reset_time="24:00")
    assert time_error.value.param == "reset_time"


@pytest.mark.parametrize("value", ["00:00", "09:30", "23:59"])
def test_validate_reset_time_accepts_hh_mm(value: str) -> None:
    assert validate_reset_time(value) == value


@pytest.mark.parametrize("value", ["", "9:30", "24:00", "12:60", "12:30:00", "noon"])
def test_validate_reset_time_rejects_other_formats(value: str) -> None:
    with pytest.raises(BadRequestError):
        validate_reset_time(value)


def test_validate_timezone() -> None:
    assert validate_timezone("Europe/Berlin") == "Europe/Berlin"
    for bad in ("", "Not/AZone", "../etc/passwd"):
        with pytest.raises(BadRequestError):
            validate_timezone(bad)


@pytest.mark.parametrize("text", ["999999999d", "999999999w", "99999999999999999999s", "36501d", "9" * 5000 + "d"])
def test_a_duration_past_the_limit_is_a_bad_request_not_an_overflow(text: str) -> None:
    # 999999999d used to parse, then overflow `datetime` (an OverflowError, a 500) when the reset was computed.
    with pytest.raises(BadRequestError) as caught:
        next_reset_at(text, datetime(2026, 5, 1, tzinfo=UTC))
    assert caught.value.param == "budget_duration"
    with pytest.raises(BadRequestError):
        validate_duration(text)


def test_the_longest_duration_resets_within_datetime_range() -> None:
    assert parse_duration("36500d").seconds == 36_500 * DAY
    now = datetime(2026, 5, 1, tzinfo=UTC)
    assert next_reset_at("36500d", now) == datetime(2126, 4, 7, tzinfo=UTC)
    assert parse_duration("0001d") == Duration(1, "d", DAY)
