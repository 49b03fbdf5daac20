"""What a fake upstream saw: recorded requests and the stream/disconnect counters.

The counters live under one `threading.Condition`, because the server may run in a background thread while the
test reads them (or waits on them) from its own thread.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request as the fake received it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-cased names; the last value wins
    raw_body: bytes
    body: Any  # parsed JSON, or None when the body is empty or not JSON
    peer: str = ""  # "host:port" of the connection it came over
    received_at: float = field(default_factory=time.monotonic)

    @property
    def json(self) -> dict[str, Any]:
        """The body as a JSON object (raises if it was not one)."""
        if not isinstance(self.body, dict):
            raise TypeError(f"request body is not a JSON object: {self.raw_body[:80]!r}")
        return self.body


@dataclass(frozen=True, slots=True)
class Stats:
    """A snapshot of the fake's counters."""

    requests: int
    in_flight: int
    open_streams: int
    streams_started: int
    streams_completed: int
    streams_cancelled: int
    streams_killed: int
    disconnects: int


class Counters:
    """Thread-safe counters with waiters (the server may run in another thread than the test)."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.in_flight = 0
        self.open_streams = 0
        self.streams_started = 0
        self.streams_completed = 0
        self.streams_cancelled = 0
        self.streams_killed = 0
        self.disconnects = 0

    def bump(self, **deltas: int) -> None:
        with self.cond:
            for name, delta in deltas.items():
                setattr(self, name, getattr(self, name) + delta)
            self.cond.notify_all()


COUNTER_NAMES = (
    "open_streams",
    "streams_started",
    "streams_completed",
    "streams_cancelled",
    "streams_killed",
    "disconnects",
)
