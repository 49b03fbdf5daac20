"""What a sink is, and how a batch is delivered: one attempt's outcome, retryable or final, and the split of a
refused batch into single events so that one bad event is dead-lettered without taking its batch with it.

Outcome rules (every sink):
- 2xx: acknowledged.
- No answer (connection refused or reset, timeout), 5xx, 429, 408, 409, 425: retry later, the cursor stays.
- 401, 403, 404: also retried: they mean a wrong key or URL (the sink's configuration), not a bad event, and the
  events must wait for the fix rather than be dropped.
- Any other 4xx: the event is refused for good (dead letter). A refused batch of several events is sent again one
  event at a time, in order, to find which; a sink may say an event is already stored (`is_duplicate`): acknowledged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

from haimaker.clock import Clock, SystemClock
from haimaker.config.usage_export import UsageExportSink
from haimaker.providers.http1 import Http1Client, TransportError, TransportTimeout
from haimaker.providers.redaction import Redactor
from haimaker.storage.outbox_repo import Rejection, UsageEvent

_RETRY_STATUSES: Final = frozenset({401, 403, 404, 408, 409, 425, 429})
_MAX_ERROR_BYTES: Final = 4096


@dataclass(frozen=True, slots=True)
class Attempt:
    """One HTTP exchange: `status` None when no answer came (its `error` says why); `body` capped, not scrubbed."""

    status: int | None
    body: bytes = b""
    error: str = ""

    @property
    def is_acknowledged(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def is_retryable(self) -> bool:
        return self.status is None or self.status >= 500 or self.status in _RETRY_STATUSES


@dataclass(slots=True)
class Delivery:
    """A batch's fate: acknowledged request ids, refusals, and (when set) why the rest must be sent again."""

    acknowledged: set[str] = field(default_factory=set)
    rejected: list[Rejection] = field(default_factory=list)
    retry_error: str | None = None


class UsageSink(Protocol):
    """A destination of the export (stripe.py, lago.py, openmeter.py, webhook.py)."""

    settings: UsageExportSink

    async def send(self, events: Sequence[UsageEvent]) -> Delivery:
        """Deliver `events` (in outbox order); never raises for the sink's own failures."""
        ...


class SinkClient:
    """POSTs for the sinks over one pooled HTTP/1.1 client (`providers/http1.py`), owned by the exporter."""

    def __init__(self) -> None:
        self._client = Http1Client(max_connections_per_origin=16)

    async def post(self, url: str, headers: Mapping[str, str], body: bytes, *, timeout_s: float) -> Attempt:
        try:
            response = await self._client.post(url, headers, body, timeout_s=timeout_s)
            raw = await response.read(max_bytes=_MAX_ERROR_BYTES if response.status >= 300 else None)
        except TransportTimeout:
            return Attempt(None, error=f"no answer within {timeout_s:g}s")
        except TransportError as exc:
            return Attempt(None, error=f"connection failed: {exc or type(exc).__name__}")
        except OSError as exc:
            return Attempt(None, error=f"connection failed: {exc}")
        return Attempt(response.status, raw)

    def close(self) -> None:
        self._client.close()


def describe(attempt: Attempt, redactor: Redactor) -> str:
    """A failed attempt for the status page and logs, scrubbed of the sink's secrets."""
    if attempt.status is None:
        return redactor.message(attempt.error)
    detail = attempt.body[:500].decode("utf-8", "replace").strip()
    return redactor.message(f"HTTP {attempt.status}" + (f": {detail}" if detail else ""))


class BatchSink:
    """A sink that takes several events per request; subclasses build the request and may recognise duplicates."""

    def __init__(self, settings: UsageExportSink, client: SinkClient, clock: Clock | None = None) -> None:
        self.settings = settings
        self._client = client
        self._clock: Clock = clock or SystemClock()
        self.redactor = Redactor(settings.secrets)

    def request(self, events: Sequence[UsageEvent]) -> tuple[str, dict[str, str], bytes]:
        """The URL, headers and body that deliver `events`."""
        raise NotImplementedError

    def is_duplicate(self, attempt: Attempt) -> bool:
        """Whether a refusal of one event says the sink already holds it."""
        return False

    async def attempt(self, events: Sequence[UsageEvent]) -> Attempt:
        url, headers, body = self.request(events)
        return await self._client.post(url, headers, body, timeout_s=self.settings.timeout_s)

    async def send(self, events: Sequence[UsageEvent]) -> Delivery:
        first = await self.attempt(events)
        if first.is_acknowledged:
            return Delivery(acknowledged={event.request_id for event in events})
        if first.is_retryable:
            return Delivery(retry_error=describe(first, self.redactor))
        delivery = Delivery()
        for event in events:
            single = first if len(events) == 1 else await self.attempt([event])
            if single.is_acknowledged or (not single.is_retryable and self.is_duplicate(single)):
                delivery.acknowledged.add(event.request_id)
            elif single.is_retryable:
                delivery.retry_error = describe(single, self.redactor)
                break
            else:
                assert single.status is not None
                delivery.rejected.append(Rejection(event.request_id, single.status, describe(single, self.redactor)))
        return delivery


def customer_of(settings: UsageExportSink, event: UsageEvent) -> str:
    """The billing system's customer for an event: mapped in `customer_ids`, else haimaker's own id."""
    return settings.customer_ids.get(event.end_user, event.end_user)


def usage_value(settings: UsageExportSink, event: UsageEvent) -> int:
    """The figure a single-value sink (Stripe's `payload[value]`) counts."""
    if settings.value == "requests":
        return 1
    if settings.value == "spend_nanos":
        return event.spend
    value: int = getattr(event, settings.value)
    return value


def usage_properties(event: UsageEvent) -> dict[str, object]:
    """Every figure of an event, for sinks whose metric picks one (Lago properties, CloudEvent data, webhook)."""
    return {
        "spend_nanos": event.spend,
        "spend_usd": _usd(event.spend),
        "prompt_tokens": event.prompt_tokens,
        "completion_tokens": event.completion_tokens,
        "total_tokens": event.total_tokens,
        "model": event.model,
        "provider": event.custom_llm_provider,
    }


def _usd(nanos: int) -> str:
    # Exact decimal text: a float would round nano-dollars away.
    sign = "-" if nanos < 0 else ""
    whole, frac = divmod(abs(nanos), 10**9)
    return f"{sign}{whole}.{frac:09d}"
