"""The sinks' requests as their services document them, built from one outbox event (no network)."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

import orjson

from haimaker.billing.delivery import SinkClient
from haimaker.billing.lago import LagoSink
from haimaker.billing.openmeter import OpenMeterSink
from haimaker.billing.stripe import StripeSink
from haimaker.billing.webhook import WebhookSink
from haimaker.config.usage_export import UsageExportSink
from haimaker.storage.outbox_repo import OutboxPosition, UsageEvent

EVENT = UsageEvent(
    position=OutboxPosition(0, 1),
    request_id="chatcmpl-req-1",
    end_user="acme",
    model="gpt-4o",
    custom_llm_provider="openai",
    prompt_tokens=12,
    completion_tokens=30,
    total_tokens=42,
    spend=123_456_789,
    start_time=datetime(2026, 3, 1, 12, 30, 5, 250_000, tzinfo=UTC),
)


def _sink(**fields: Any) -> UsageExportSink:
    return UsageExportSink.model_validate(fields)


def test_stripe_sends_one_form_encoded_meter_event_keyed_by_the_request_id() -> None:
    client = SinkClient()
    try:
        settings = _sink(
            name="s",
            type="stripe",
            api_key="sk_test_x",
            event_name="tokens",
            value="total_tokens",
            customer_ids={"acme": "cus_123"},
        )
        form = dict(parse_qsl(StripeSink(settings, client).form(EVENT).decode(), strict_parsing=True))
    finally:
        client.close()
    assert form == {
        "event_name": "tokens",
        "payload[stripe_customer_id]": "cus_123",
        "payload[value]": "42",
        "identifier": "chatcmpl-req-1",
        "timestamp": str(int(EVENT.start_time.timestamp())),
    }


def test_lago_sends_the_batch_with_the_configured_customer_field() -> None:
    client = SinkClient()
    try:
        settings = _sink(name="l", type="lago", api_key="k", event_name="llm", customer_field="external_customer_id")
        url, headers, body = LagoSink(settings, client).request([EVENT])
    finally:
        client.close()
    assert url == "https://api.getlago.com/api/v1/events/batch"
    assert headers == {"Authorization": "Bearer k", "Content-Type": "application/json"}
    [event] = orjson.loads(body)["events"]
    assert event["transaction_id"] == "chatcmpl-req-1" and event["external_customer_id"] == "acme"
    assert event["code"] == "llm" and event["timestamp"] == EVENT.start_time.timestamp()
    assert event["properties"]["spend_nanos"] == 123_456_789 and event["properties"]["spend_usd"] == "0.123456789"


def test_openmeter_sends_a_cloudevents_batch_without_auth_when_self_hosted() -> None:
    client = SinkClient()
    try:
        settings = _sink(name="o", type="openmeter", api_base="http://openmeter:8888/")
        url, headers, body = OpenMeterSink(settings, client).request([EVENT])
    finally:
        client.close()
    assert url == "http://openmeter:8888/api/v1/events"
    assert headers == {"Content-Type": "application/cloudevents-batch+json"}
    [event] = orjson.loads(body)
    assert {k: event[k] for k in ("specversion", "id", "source", "type", "subject", "time")} == {
        "specversion": "1.0",
        "id": "chatcmpl-req-1",
        "source": "haimaker",
        "type": "llm_usage",
        "subject": "acme",
        "time": "2026-03-01T12:30:05.250000Z",
    }


def test_webhook_signs_the_exact_body_and_names_the_batch_the_same_way_every_time() -> None:
    client = SinkClient()
    try:
        settings = _sink(name="w", type="webhook", api_base="https://h.example/u", signing_secret="whsec_abc")
        sink = WebhookSink(settings, client)
        _, headers, body = sink.request([EVENT])
        _, again, _ = sink.request([EVENT])
    finally:
        client.close()
    timestamp, digest = headers["X-Haimaker-Signature"].removeprefix("t=").split(",v1=")
    assert digest == hmac.new(b"whsec_abc", f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    assert headers["X-Haimaker-Event-Id"] == again["X-Haimaker-Event-Id"]
    assert orjson.loads(body)["events"][0]["id"] == "chatcmpl-req-1"
