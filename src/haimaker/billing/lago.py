"""Lago usage events: `POST /api/v1/events/batch`, JSON, up to 100 events per request.

https://getlago.com/docs/api-reference/events/batch: `{"events": [{"transaction_id", "external_subscription_id" (or
`external_customer_id`), "code", "timestamp", "properties"}]}`, `Authorization: Bearer <api key>`. The request id
is the `transaction_id`, Lago's idempotency key for an event. A Lago that refuses a known `transaction_id` (422,
`value_already_exist`) has the event already: acknowledged. Lago validates a batch whole, so a refused batch is split
(`delivery.BatchSink`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import orjson

from haimaker.billing.delivery import Attempt, BatchSink, customer_of, usage_properties
from haimaker.storage.outbox_repo import UsageEvent

EVENTS_BATCH_PATH: Final = "/api/v1/events/batch"


class LagoSink(BatchSink):
    def request(self, events: Sequence[UsageEvent]) -> tuple[str, dict[str, str], bytes]:
        body = {
            "events": [
                {
                    "transaction_id": event.request_id,
                    self.settings.customer_field: customer_of(self.settings, event),
                    "code": self.settings.event_name,
                    # Unix seconds with the fraction: Lago takes a number (its own example sends `date +%s`).
                    "timestamp": round(event.start_time.timestamp(), 6),
                    "properties": usage_properties(event),
                }
                for event in events
            ]
        }
        headers = {"Authorization": f"Bearer {self.settings.api_key}", "Content-Type": "application/json"}
        return self.settings.base_url + EVENTS_BATCH_PATH, headers, orjson.dumps(body)

    def is_duplicate(self, attempt: Attempt) -> bool:
        return attempt.status == 422 and b"value_already_exist" in attempt.body and b"transaction_id" in attempt.body
