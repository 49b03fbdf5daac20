"""Refused requests in the spend log: a customer refused at admission shows in its latest requests, with the reason.

A request that names a customer and is refused before any upstream call (budget exceeded, rpm/tpm/parallel limit,
blocked, model not allowed, region, the key's own limits) is written as a spend log with `status="failure"`, no
tokens, no spend and the model group asked for; its metadata carries the reason as LiteLLM's failure rows do
(`error_information`: `error_code`, `error_class`, `error_message`) plus our `error_type` and `status_code` (issue 14).

Invariants:
- Bounded writes: a client hammering a refusal costs at most one row per *window* (1 s) and per (customer, model, key,
  reason), whatever its rate. The first refusal of a quiet period is recorded at once (a report right after the
  response sees it); the ones that follow within the window are counted, and the count is written as one row when the
  window closes (`refused_requests` in its metadata: how many refusals the row stands for; the daily rollup counts
  each of them as a failed request). At most `max_open` windows are open at a time: past that, refusals of further
  (customer, ...) combinations are not recorded (counted in `dropped`, logged once per window), so a flood of
  distinct customer ids cannot turn into one row per request either.
- Never on the request's path beyond a dict lookup: rows go to the spend recorder's grouped writes (`record` never
  awaits); the windows are closed by `run()`, a background task the app's lifespan owns, which writes what is still
  counted when it stops, before the recorder drains.
- A refusal changes no spend and no counter, and creates no customer (the recorder skips refusal rows when it creates
  the customers of a group): a refused request was never admitted, and with a $0 default budget every stranger is
  refused, so creating them would let any key fill the customer table for free. `/customer/info` keeps answering 404
  for an id that was only ever refused; `/spend/logs?end_user=` shows its refusals.
- Messages are redacted (`Redactor.message`) before they are stored.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Protocol

from haimaker.clock import Clock
from haimaker.errors import ProxyError
from haimaker.providers.redaction import Redactor
from haimaker.storage.records import SpendLog
from haimaker.storage.spend_repo import REFUSED_REQUESTS_FIELD

logger = logging.getLogger("haimaker.refusals")

DEFAULT_WINDOW_S: Final = 1.0
DEFAULT_MAX_OPEN: Final = 1_000
# The spend log's model fields of a refusal: the group asked for, no deployment and no provider were chosen.
_NO_DEPLOYMENT: Final = ""


class SpendLogSink(Protocol):
    """Where refusal rows go: the spend recorder (`SpendRecorder.record`, which never awaits)."""

    def record(self, log: SpendLog) -> None: ...


@dataclass(frozen=True, slots=True)
class Refusal:
    """One refused request: who asked, for what, with which key (its hash), and why."""

    customer_id: str
    model: str
    call_type: str
    api_key: str
    error: ProxyError


_WindowKey = tuple[str, str, str, str, int]


@dataclass(slots=True)
class _Window:
    """The refusals of one (customer, model, key, reason) since its last row."""

    opened_at: float  # monotonic: when the last row was written
    call_type: str
    error: ProxyError  # the latest refusal's (its message can differ, e.g. rpm vs tpm)
    count: int = 0
    first_at: datetime | None = None
    last_at: datetime | None = None


def error_metadata(error: ProxyError, message: str) -> dict[str, Any]:
    """A failed request's reason in its spend log metadata: LiteLLM's `error_information`, our type and status."""
    return {
        "error_information": {
            "error_code": error.code,
            "error_class": type(error).__name__,
            "error_message": message,
            "llm_provider": "",
        },
        "error_type": error.error_type,
        "status_code": error.status_code,
    }


class RefusalLog:
    """Turns refused requests into a bounded number of failure spend logs (see the module docstring)."""

    def __init__(
        self,
        sink: SpendLogSink,
        clock: Clock,
        redactor: Redactor,
        *,
        window_s: float = DEFAULT_WINDOW_S,
        max_open: int = DEFAULT_MAX_OPEN,
    ) -> None:
        self._sink = sink
        self._clock = clock
        self._redactor = redactor
        self._window_s = window_s
        self._max_open = max_open
        self._windows: dict[_WindowKey, _Window] = {}
        self.dropped = 0  # refusals not recorded because `max_open` windows were open
        self._dropped_reported = 0

    @property
    def open_windows(self) -> int:
        return len(self._windows)

    def note(self, refusal: Refusal) -> None:
        """Record a refusal: a row at once if its window is closed, else one more in the window's count."""
        error = refusal.error
        key = (refusal.customer_id, refusal.model, refusal.api_key, error.error_type, error.status_code)
        window = self._windows.get(key)
        now = self._clock.now()
        if window is not None:
            window.count += 1
            window.error = error
            if window.first_at is None:
                window.first_at = now
            window.last_at = now
            return
        if len(self._windows) >= self._max_open:
            self.dropped += 1
            return
        self._windows[key] = _Window(opened_at=self._clock.monotonic(), call_type=refusal.call_type, error=error)
        self._write(key, refusal.call_type, error, 1, now, now)

    def close_windows(self, *, all_of_them: bool = False) -> int:
        """Write the count of every window open for `window_s` or more (every window with `all_of_them`); forget
        the windows that counted nothing. Returns how many rows were written."""
        written = 0
        monotonic = self._clock.monotonic()
        for key, window in list(self._windows.items()):
            if not all_of_them and monotonic - window.opened_at < self._window_s:
                continue
            if window.count == 0 or window.first_at is None or window.last_at is None:
                del self._windows[key]
                continue
            self._write(key, window.call_type, window.error, window.count, window.first_at, window.last_at)
            written += 1
            window.opened_at, window.count, window.first_at, window.last_at = monotonic, 0, None, None
        if all_of_them:
            self._windows.clear()
        self._report_dropped()
        return written

    async def run(self) -> None:
        """Close windows as they end (the app's background task); on stop, write what is still counted."""
        try:
            while True:
                # Twice a window: a window is written between one and one and a half windows after it opened.
                await asyncio.sleep(self._window_s / 2)
                self.close_windows()
        finally:
            # Never awaits (also runs when the task is cancelled): the recorder, stopped after this, writes them.
            self.close_windows(all_of_them=True)

    def _write(
        self, key: _WindowKey, call_type: str, error: ProxyError, count: int, first_at: datetime, last_at: datetime
    ) -> None:
        customer_id, model, api_key, _, _ = key
        metadata = error_metadata(error, self._redactor.message(error.message))
        metadata[REFUSED_REQUESTS_FIELD] = count
        self._sink.record(
            SpendLog(
                request_id=str(uuid.uuid4()),
                end_user=customer_id,
                model=model,
                model_id=_NO_DEPLOYMENT,
                model_group=model,
                custom_llm_provider=_NO_DEPLOYMENT,
                call_type=call_type,
                prompt_tokens=0,
                completion_tokens=0,
                total_tokens=0,
                spend=0,
                start_time=first_at,
                end_time=last_at,
                status="failure",
                api_key=api_key,
                metadata=metadata,
            )
        )

    def _report_dropped(self) -> None:
        if self.dropped > self._dropped_reported:
            logger.warning(
                "%d refused requests not written to the spend log: %d refusal windows are open (the bound)",
                self.dropped - self._dropped_reported,
                self._max_open,
            )
            self._dropped_reported = self.dropped
