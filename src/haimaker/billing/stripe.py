"""Stripe meter events: `POST /v1/billing/meter_events`, one event per request, form-encoded.

https://docs.stripe.com/api/billing/meter-event/create: `event_name` (the meter's), `payload[stripe_customer_id]`,
`payload[value]`, `identifier` (unique per event; Stripe enforces uniqueness over a rolling 24 h at least) and
`timestamp` (Unix seconds, within the past 35 days). Authentication `Authorization: Bearer sk_…`.

The request id is the `identifier` and also the `Idempotency-Key` header, so a retried request (the first one's
answer lost) is answered from Stripe's idempotency cache instead of counted again. A batch's events go out
`concurrency` at a time; each has its own outcome (no batch to split).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Final
from urllib.parse import urlencode

from haimaker.billing.delivery import Attempt, Delivery, SinkClient, customer_of, describe, usage_value
from haimaker.config.usage_export import UsageExportSink
from haimaker.providers.redaction import Redactor
from haimaker.storage.outbox_repo import Rejection, UsageEvent

METER_EVENTS_PATH: Final = "/v1/billing/meter_events"


class StripeSink:
    def __init__(self, settings: UsageExportSink, client: SinkClient) -> None:
        self.settings = settings
        self._client = client
        self._redactor = Redactor(settings.secrets)

    def form(self, event: UsageEvent) -> bytes:
        """The form body of one meter event (the same bytes on every attempt: Stripe refuses a reused
        idempotency key with different parameters)."""
        assert self.settings.event_name is not None  # required for stripe by the config schema
        return urlencode(
            {
                "event_name": self.settings.event_name,
                "payload[stripe_customer_id]": customer_of(self.settings, event),
                "payload[value]": str(usage_value(self.settings, event)),
                "identifier": event.request_id,
                "timestamp": str(int(event.start_time.timestamp())),
            }
        ).encode()

    async def _post(self, event: UsageEvent, slots: asyncio.Semaphore) -> Attempt:
        headers = {
            "Authorization": f"Bearer {self.settings.api_key}",
            "Content-Type": "application/x-www-form-urlencoded",
            "Idempotency-Key": event.request_id,
        }
        async with slots:
            return await self._client.post(
                self.settings.base_url + METER_EVENTS_PATH,
                headers,
                self.form(event),
                timeout_s=self.settings.timeout_s,
            )

    async def send(self, events: Sequence[UsageEvent]) -> Delivery:
        slots = asyncio.Semaphore(self.settings.concurrency)
        attempts = await asyncio.gather(*(self._post(event, slots) for event in events))
        delivery = Delivery()
        for event, attempt in zip(events, attempts, strict=True):
            if attempt.is_acknowledged:
                delivery.acknowledged.add(event.request_id)
            elif attempt.is_retryable:
                # The first to retry decides; events after it that went through are acknowledged anyway and
                # resent later under the same identifier (Stripe answers from its idempotency cache).
                delivery.retry_error = delivery.retry_error or describe(attempt, self._redactor)
            else:
                assert attempt.status is not None
                delivery.rejected.append(Rejection(event.request_id, attempt.status, describe(attempt, self._redactor)))
        return delivery
