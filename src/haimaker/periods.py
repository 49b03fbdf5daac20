"""Budget periods: parsing `budget_duration` strings and computing the instant a budget next resets.

This module is the only place that knows how a period string maps to seconds and to reset instants,
and it follows LiteLLM 1.110.2 (`duration_parser.py`) so configs and stored rows carry over unchanged.

Grammar: a leading `<int><unit>` prefix, unit one of `s`, `m`, `h`, `d`, `w`, `mo` (the regex matches a
prefix, so "1hr" is one hour and "30days" thirty days; "mo" is tried before "m", so "1month" is a month
and "1min" a minute), or one of the words `hourly` (1h), `daily` (24h), `weekly` (7d), `monthly` (30d).
A duration must be longer than zero seconds and at most `MAX_DURATION_DAYS` (100 years: no budget period is
longer, and every reset instant then stays far inside `datetime`'s range, year 9999), and `1mo` is the only month
duration.

Reset instants are "standardized" (aligned to the calendar in a timezone, not counted from creation):

    Ns, Nm, Nh   the next wall-clock boundary: seconds/minutes aligned to multiples of N within the
                 minute/hour, hours to multiples of N within the day (30s -> :00/:30, 1h -> next full hour).
                 Arithmetic that runs past midnight continues on the next day exactly as LiteLLM does it:
                 midnight + (next_hour mod 24), so 30h at any time of day resets at 06:00 tomorrow and
                 5h at 22:10 resets at 01:00 tomorrow (not at a multiple of 5).
    24h, 1d      the next `reset_time` (HH:MM, default midnight).
    7d, 1w       the next Monday at `reset_time`.
    30d, 1mo     the next 1st of a month at `reset_time`.
    other Nd     today's `reset_time` + N days;  other Nw: today's `reset_time` + 7N days.

"Next" always means strictly after `now`: a time exactly on a boundary resets at the following one.
Reset instants are computed on the wall clock of `timezone` and returned as aware UTC datetimes; a
boundary that a DST change makes ambiguous or skips is resolved by `zoneinfo` (fold 0) and, if that
would not be after `now`, by moving on to the following boundary.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from haimaker.errors import BadRequestError

__all__ = [
    "MAX_DURATION_DAYS",
    "Duration",
    "next_reset_at",
    "parse_age",
    "parse_duration",
    "validate_duration",
    "validate_reset_time",
    "validate_timezone",
]

_DURATION_RE: Final = re.compile(r"(\d+)(mo|[smhdw]?)")
_RESET_TIME_RE: Final = re.compile(r"([01]\d|2[0-3]):([0-5]\d)")
_UNIT_SECONDS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800, "mo": 30 * 86_400}
_ALIASES: Final = {"hourly": (1, "h"), "daily": (24, "h"), "weekly": (7, "d"), "monthly": (30, "d")}
MAX_DURATION_DAYS: Final = 36_500
_MAX_DURATION_SECONDS: Final = MAX_DURATION_DAYS * 86_400
# More digits than any duration up to the limit has (in seconds): refused before `int()` reads them.
_MAX_AMOUNT_DIGITS: Final = len(str(_MAX_DURATION_SECONDS))
# Candidates start at most one period before `now`, and a DST change delays the first one after `now` by
# at most a few steps; the bound only turns a logic error into an exception instead of a hang.
_MAX_CANDIDATES: Final = 10_000


@dataclass(frozen=True, slots=True)
class Duration:
    """A parsed `budget_duration`.

    `seconds` is nominal for months (30 days); reset instants come from `next_reset_at`, not from adding
    `seconds`.
    """

    amount: int
    unit: str
    seconds: int


def _invalid(value: object) -> BadRequestError:
    return BadRequestError(
        f"Invalid budget_duration '{value}'. Use a format like '1h', '24h', '7d', or '30d'.",
        param="budget_duration",
    )


def parse_duration(value: str) -> Duration:
    """Parse a `budget_duration` string.

    Raises:
        BadRequestError: the string does not parse, is zero seconds long, or is a month count other than 1.
    """
    if not isinstance(value, str):
        raise _invalid(value)
    alias = _ALIASES.get(value)
    if alias is not None:
        amount, unit = alias
    else:
        match = _DURATION_RE.match(value)
        if match is None or not match.group(2):
            raise _invalid(value)
        digits = match.group(1).lstrip("0")
        if len(digits) > _MAX_AMOUNT_DIGITS:
            raise _too_long(value)
        amount, unit = int(digits or "0"), match.group(2)
    if amount <= 0 or (unit == "mo" and amount != 1):
        raise _invalid(value)
    seconds = amount * _UNIT_SECONDS[unit]
    if seconds > _MAX_DURATION_SECONDS:
        raise _too_long(value)
    return Duration(amount=amount, unit=unit, seconds=seconds)


def _too_long(value: str) -> BadRequestError:
    return BadRequestError(
        f"Invalid budget_duration '{value}': at most {MAX_DURATION_DAYS} days.", param="budget_duration"
    )


def parse_age(value: str) -> timedelta:
    """An age limit such as LiteLLM's `maximum_spend_logs_retention_period` ("30d", "12h", "6mo"): the
    `budget_duration` grammar, where any number of months is allowed and a month counts 30 days.

    Raises:
        ValueError: the string does not parse, or is zero long, or longer than `MAX_DURATION_DAYS`.
    """
    match = _DURATION_RE.match(value) if isinstance(value, str) else None
    try:
        if match is None or match.group(2) != "mo":
            return timedelta(seconds=parse_duration(value).seconds)
        digits = match.group(1).lstrip("0")
        months = int(digits) if digits and len(digits) <= _MAX_AMOUNT_DIGITS else 0
        if not 0 < months * 30 <= MAX_DURATION_DAYS:
            raise _invalid(value)
        return timedelta(days=30 * months)
    except BadRequestError:
        raise ValueError(f"invalid duration {value!r}: use a format like '12h', '30d' or '6mo'") from None


def validate_duration(value: str | None) -> str | None:
    """Return `value` unchanged if it is a valid `budget_duration` (or None); raise `BadRequestError` if not."""
    if value is None:
        return None
    parse_duration(value)
    return value


def validate_timezone(name: str) -> str:
    """Return `name` if it is a known IANA timezone; raise `BadRequestError` if not."""
    _zone(name)
    return name


def validate_reset_time(value: str) -> str:
    """Return `value` if it is a time of day as HH:MM (24-hour); raise `BadRequestError` if not."""
    _reset_time(value)
    return value


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        message = f"Unknown timezone '{name}'. Use an IANA name like 'UTC' or 'Europe/Berlin'."
        raise BadRequestError(message, param="timezone") from None


def _reset_time(value: str) -> time:
    match = _RESET_TIME_RE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        message = f"Invalid reset_time '{value}'. Use HH:MM, like '00:00' or '09:30'."
        raise BadRequestError(message, param="reset_time")
    return time(int(match.group(1)), int(match.group(2)))


def next_reset_at(duration: str, now: datetime, *, timezone: str = "UTC", reset_time: str = "00:00") -> datetime:
    """The first reset instant of a `duration` budget strictly after `now`, as an aware UTC datetime.

    Args:
        duration: a `budget_duration` string (see the module docstring for the rules).
        now: the current instant; must be timezone-aware.
        timezone: IANA timezone whose wall clock the boundaries are aligned to.
        reset_time: HH:MM time of day at which day, week and month budgets reset.

    Raises:
        BadRequestError: invalid duration, timezone or reset_time.
        ValueError: `now` is naive.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    parsed = parse_duration(duration)
    zone = _zone(timezone)
    at = _reset_time(reset_time)
    now_utc = now.astimezone(UTC)
    local = now_utc.astimezone(zone)
    amount, unit = parsed.amount, parsed.unit

    if unit in ("s", "m") or (unit == "h" and amount != 24):
        return _first_after(now_utc, local, lambda current: _next_clock_boundary(current, amount, unit))

    today_at = datetime.combine(local.date(), at, tzinfo=zone)
    if unit == "h" or (unit == "d" and amount == 1):  # 24h, 1d, daily
        return _first_after(now_utc, today_at, lambda c: c + timedelta(days=1), include_start=True)
    if (unit == "d" and amount == 7) or (unit == "w" and amount == 1):  # 7d, 1w, weekly
        monday_at = today_at - timedelta(days=local.weekday())
        return _first_after(now_utc, monday_at, lambda c: c + timedelta(days=7), include_start=True)
    if unit == "mo" or (unit == "d" and amount == 30):  # 30d, 1mo, monthly
        first_at = today_at.replace(day=1)
        return _first_after(now_utc, first_at, _next_month, include_start=True)
    days = amount * 7 if unit == "w" else amount
    # amount >= 2 days, so today's reset time + N days is always after now (DST shifts are at most hours).
    return _first_after(now_utc, today_at + timedelta(days=days), lambda c: c + timedelta(days=1), include_start=True)


NextReset = Callable[[str, datetime], datetime]
"""`(budget_duration, now) -> the next reset instant`, with the configured timezone and reset time bound in."""


def next_reset_function(timezone: str, reset_time: str) -> NextReset:
    """Bind the configured timezone and time of day (`litellm_settings.timezone`, `budget_reset_time`) to
    `next_reset_at`: what the counter stores, the services and the reset job call."""

    def compute(duration: str, now: datetime) -> datetime:
        return next_reset_at(duration, now, timezone=timezone, reset_time=reset_time)

    return compute


def _next_month(current: datetime) -> datetime:
    if current.month == 12:
        return current.replace(year=current.year + 1, month=1)
    return current.replace(month=current.month + 1)


def _next_clock_boundary(current: datetime, amount: int, unit: str) -> datetime:
    """LiteLLM's aligned step: the next multiple of `amount` in the unit, carrying into larger units."""
    hour, minute, second = current.hour, current.minute, current.second
    if unit == "s":
        second = second + amount - second % amount
        minute += second // 60
        second %= 60
        hour += minute // 60
        minute %= 60
    elif unit == "m":
        minute = minute + amount - minute % amount
        second = 0
        hour += minute // 60
        minute %= 60
    else:
        hour = hour + amount - hour % amount
        minute = second = 0
    # Past midnight LiteLLM keeps only `hour % 24` on the next day (so 30h -> 06:00 tomorrow).
    day = current.replace(hour=0, minute=0, second=0, microsecond=0)
    if hour >= 24:
        day += timedelta(days=1)
        hour %= 24
    # `replace` keeps `fold`, so inside a repeated (DST fall-back) hour we stay on the same side.
    return day.replace(hour=hour, minute=minute, second=second, fold=current.fold)


def _first_after(
    now_utc: datetime,
    start: datetime,
    step: Callable[[datetime], datetime],
    *,
    include_start: bool = False,
) -> datetime:
    """Walk wall-clock candidates from `start` until one is strictly after `now_utc`; return it in UTC."""
    candidate = start if include_start else step(start)
    for _ in range(_MAX_CANDIDATES):
        as_utc = candidate.astimezone(UTC)
        if as_utc > now_utc:
            return as_utc
        candidate = step(candidate)
    raise RuntimeError("no reset instant found after now")  # pragma: no cover - unreachable for valid input
