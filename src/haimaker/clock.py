"""Time, injected: every component asks a `Clock`, so tests can move time without sleeping."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    """Wall-clock time (timezone-aware UTC) and a monotonic counter for durations."""

    def now(self) -> datetime: ...

    def time(self) -> float:
        """Seconds since the epoch (cheap; used by rate windows on the hot path)."""
        ...

    def monotonic(self) -> float: ...


class SystemClock:
    """The real clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


class FakeClock:
    """A clock that only moves when told to (tests)."""

    def __init__(self, start: datetime | None = None) -> None:
        self._t = (start or datetime(2026, 1, 1, tzinfo=UTC)).timestamp()
        self._mono = 1000.0

    def now(self) -> datetime:
        return datetime.fromtimestamp(self._t, UTC)

    def time(self) -> float:
        return self._t

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        self._t += seconds
        self._mono += seconds

    def set(self, when: datetime) -> None:
        delta = when.timestamp() - self._t
        self.advance(delta)
