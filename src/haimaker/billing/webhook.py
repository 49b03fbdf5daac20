"""A generic webhook: the events as JSON, signed with HMAC-SHA256 so the receiver can trust and dedupe them.

    POST <api_base>
    Content-Type: application/json
    X-Haimaker-Event-Id: <sha256 of the batch's request ids>   (the same on every attempt of the same batch)
    X-Haimaker-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(signing_secret, "<t>.<body>")>
    {"type": "llm_usage", "events": [{"id": <request id>, "customer": …, "time": …, "spend_nanos": …, …}]}

A receiver verifies the signature (and that `t` is recent), then counts each event `id` once: a batch may be
delivered again after a timeout or a restart, and a later batch may repeat ids of an earlier one. The signature
scheme (timestamp, dot, body) is the one Stripe's own webhooks use, so receivers know how to check it.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from datetime import UTC
from typing import Final

import orjson

from haimaker.billing.delivery import BatchSink, customer_of, usage_properties
from haimaker.storage.outbox_repo import UsageEvent

EVENT_ID_HEADER: Final = "X-Haimaker-Event-Id"
SIGNATURE_HEADER: Final = "X-Haimaker-Signature"
DEFAULT_EVENT_TYPE: Final = "llm_usage"


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The `X-Haimaker-Signature` value of a body sent at `timestamp`."""
    digest = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


class WebhookSink(BatchSink):
    def request(self, events: Sequence[UsageEvent]) -> tuple[str, dict[str, str], bytes]:
        body = orjson.dumps(
            {
                "type": self.settings.event_name or DEFAULT_EVENT_TYPE,
                "events": [
                    {
                        "id": event.request_id,
                        "customer": customer_of(self.settings, event),
                        "time": event.start_time.astimezone(UTC).isoformat().replace("+00:00", "Z"),
                        **usage_properties(event),
                    }
                    for event in events
                ],
            }
        )
        assert self.settings.signing_secret is not None  # required for webhook by the config schema
        batch_id = hashlib.sha256("\n".join(event.request_id for event in events).encode()).hexdigest()
        headers = {
            "Content-Type": "application/json",
            EVENT_ID_HEADER: batch_id,
            SIGNATURE_HEADER: signature(self.settings.signing_secret, int(self._clock.time()), body),
        }
        if self.settings.api_key:
            headers["Authorization"] = f"Bearer {self.settings.api_key}"
        return self.settings.base_url, headers, body
