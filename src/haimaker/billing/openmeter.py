"""OpenMeter: usage as CloudEvents, `POST /api/v1/events`.

https://openmeter.io/docs/concepts/usage-events: `specversion` "1.0", `type` (what meters match), `id`, `source`,
`subject` (the customer), `time` (RFC 3339), `data`. A batch is a JSON array sent as
`application/cloudevents-batch+json` (CloudEvents' JSON batch format). OpenMeter deduplicates on (`source`, `id`):
the request id is the `id`, so a resent event counts once. OpenMeter Cloud takes `Authorization: Bearer <token>`; a
self-hosted one without a key gets no header.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC
from typing import Final

import orjson

from haimaker.billing.delivery import BatchSink, customer_of, usage_properties
from haimaker.storage.outbox_repo import UsageEvent

EVENTS_PATH: Final = "/api/v1/events"
BATCH_CONTENT_TYPE: Final = "application/cloudevents-batch+json"
DEFAULT_EVENT_TYPE: Final = "llm_usage"


class OpenMeterSink(BatchSink):
    def request(self, events: Sequence[UsageEvent]) -> tuple[str, dict[str, str], bytes]:
        body = [
            {
                "specversion": "1.0",
                "id": event.request_id,
                "source": self.settings.source,
                "type": self.settings.event_name or DEFAULT_EVENT_TYPE,
                "subject": customer_of(self.settings, event),
                "time": event.start_time.astimezone(UTC).isoformat().replace("+00:00", "Z"),
                "datacontenttype": "application/json",
                "data": usage_properties(event),
            }
            for event in events
        ]
        headers = {"Content-Type": BATCH_CONTENT_TYPE}
        if self.settings.api_key:
            headers["Authorization"] = f"Bearer {self.settings.api_key}"
        return self.settings.base_url + EVENTS_PATH, headers, orjson.dumps(body)
