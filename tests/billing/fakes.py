"""Fake billing systems on 127.0.0.1 that speak the real request formats, check them strictly, dedupe as the real
services do, and fail on demand.

    with FakeStripe(api_key=...) as stripe:
        stripe.fail("500", times=3)      # the next 3 requests answer 500
        stripe.fail("hang")              # every request hangs until stop() (the client times out)
        stripe.fail("accept_then_hang")  # store the events, then never answer (the answer is lost)
        stripe.recover()

Every request that breaks the documented format is answered 400 and listed in `violations` (tests assert it stays
empty); `events` holds each distinct event once, `deliveries` counts every accepted event including duplicates.
Formats: Stripe https://docs.stripe.com/api/billing/meter-event/create, Lago
https://getlago.com/docs/api-reference/events/batch, OpenMeter https://openmeter.io/docs/concepts/usage-events.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import socket
import threading
import time
from collections import defaultdict
from datetime import datetime
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qsl

import orjson
from aiohttp import web


class _Refused(Exception):
    def __init__(self, status: int, body: dict[str, Any], violation: str | None = None) -> None:
        self.status = status
        self.body = body
        self.violation = violation


def _violation(message: str) -> _Refused:
    return _Refused(400, {"error": {"message": message, "type": "invalid_request_error"}}, message)


class FakeBilling:
    """Lifecycle (own thread and loop), failure modes, strict-check bookkeeping and counting."""

    path = "/"

    def __init__(self, *, api_key: str | None) -> None:
        self.api_key = api_key
        self.events: dict[str, dict[str, Any]] = {}  # distinct events by dedupe key
        self.deliveries = 0
        self.requests = 0
        self.violations: list[str] = []
        self._mode: str | None = None
        self._times: int | None = None
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None
        self._handlers: set[asyncio.Task[Any]] = set()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- failure modes ------------------------------------------------------------------------------------------
    def fail(self, mode: str, *, times: int | None = None) -> None:
        """Fail the next `times` requests (None: until `recover()`) with `mode`: "500", "hang", "accept_then_hang"."""
        with self._lock:
            self._mode, self._times = mode, times

    def recover(self) -> None:
        with self._lock:
            self._mode, self._times = None, None

    def _take_mode(self) -> str | None:
        with self._lock:
            mode = self._mode
            if mode is not None and self._times is not None:
                self._times -= 1
                if self._times <= 0:
                    self._mode, self._times = None, None
            return mode

    # -- counting ---------------------------------------------------------------------------------------------
    def totals(self) -> dict[str, int]:
        """Spend in nano-dollars per customer, over distinct events."""
        result: defaultdict[str, int] = defaultdict(int)
        with self._lock:
            for event in self.events.values():
                result[self.customer_of(event)] += self.spend_of(event)
        return dict(result)

    def customer_of(self, event: dict[str, Any]) -> str:
        raise NotImplementedError

    def spend_of(self, event: dict[str, Any]) -> int:
        raise NotImplementedError

    # -- serving ------------------------------------------------------------------------------------------------
    async def handle(self, request: web.Request, body: bytes) -> web.Response:
        """Check and apply one request (under no failure mode); raise `_Refused` to refuse it."""
        raise NotImplementedError

    def _check_auth(self, request: web.Request) -> None:
        if self.api_key is None:
            if "Authorization" in request.headers:
                raise _violation("unexpected Authorization header")
            return
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            # Echoes what it was given, as some services do: the proxy must scrub it from its status page and logs.
            presented = request.headers.get("Authorization", "")
            raise _Refused(401, {"error": {"message": f"Invalid API key provided: {presented}", "type": "auth"}})

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            with self._lock:
                self.requests += 1
            if request.method != "POST" or request.path != self.path:
                with self._lock:
                    self.violations.append(f"{request.method} {request.path}")
                return web.json_response({"error": {"message": "not found"}}, status=404)
            body = await request.read()
            mode = self._take_mode()
            if mode == "500":
                return web.json_response({"error": {"message": "injected failure"}}, status=500)
            if mode == "hang":
                await asyncio.sleep(3600)
            try:
                response = await self.handle(request, body)
            except _Refused as refused:
                if refused.violation is not None:
                    with self._lock:
                        self.violations.append(refused.violation)
                return web.json_response(refused.body, status=refused.status)
            if mode == "accept_then_hang":
                await asyncio.sleep(3600)  # applied, but the answer never comes
            return response
        finally:
            self._handlers.discard(task)

    async def _serve(self, ready: threading.Event) -> None:
        self._stop = asyncio.Event()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.5, access_log=None)
        await runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        await web.SockSite(runner, sock).start()
        ready.set()
        try:
            await self._stop.wait()
        finally:
            for task in list(self._handlers):
                task.cancel()
            if self._handlers:
                await asyncio.wait(list(self._handlers), timeout=2.0)
            await runner.cleanup()

    def __enter__(self) -> Self:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._serve(ready))
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name=f"fake-{type(self).__name__}", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("fake billing server did not start")
        return self

    def __exit__(self, *exc: object | TracebackType) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)


def _int_text(value: str) -> bool:
    return re.fullmatch(r"-?\d+", value) is not None


class FakeStripe(FakeBilling):
    """`POST /v1/billing/meter_events`: form fields checked, `Idempotency-Key` replays, `identifier` unique."""

    path = "/v1/billing/meter_events"

    def __init__(self, *, api_key: str, event_name: str) -> None:
        super().__init__(api_key=api_key)
        self.event_name = event_name
        self._idempotent: dict[str, tuple[bytes, int, dict[str, Any]]] = {}
        self.replays = 0  # requests answered from the idempotency cache

    def customer_of(self, event: dict[str, Any]) -> str:
        return str(event["payload[stripe_customer_id]"])

    def spend_of(self, event: dict[str, Any]) -> int:
        return int(event["payload[value]"])

    async def handle(self, request: web.Request, body: bytes) -> web.Response:
        self._check_auth(request)
        if request.headers.get("Content-Type") != "application/x-www-form-urlencoded":
            raise _violation(f"content type {request.headers.get('Content-Type')!r}")
        key = request.headers.get("Idempotency-Key")
        if key is not None:
            with self._lock:
                known = self._idempotent.get(key)
            if known is not None:
                if known[0] != body:
                    raise _violation("Keys for idempotent requests can only be used with the same parameters")
                with self._lock:
                    self.replays += 1
                return web.json_response(known[2], status=known[1], headers={"Idempotent-Replayed": "true"})
        try:
            pairs = parse_qsl(body.decode(), keep_blank_values=True, strict_parsing=True)
        except ValueError:
            raise _violation("body is not form-encoded") from None
        form = dict(pairs)
        expected = {"event_name", "payload[stripe_customer_id]", "payload[value]", "identifier", "timestamp"}
        if len(form) != len(pairs) or set(form) != expected:
            raise _violation(f"form fields {sorted(form)}")
        if form["event_name"] != self.event_name:
            raise _violation(f"event_name {form['event_name']!r}")
        if not form["identifier"] or len(form["identifier"]) > 100 or not form["payload[stripe_customer_id]"]:
            raise _violation("identifier or customer missing")
        if not _int_text(form["payload[value]"]) or not _int_text(form["timestamp"]):
            raise _violation("value or timestamp not an integer")
        now = time.time()
        if not now - 35 * 86400 <= int(form["timestamp"]) <= now + 300:
            raise _violation("timestamp outside the past 35 days / next 5 minutes")
        answer: tuple[int, dict[str, Any]]
        with self._lock:
            if form["identifier"] in self.events:
                answer = (400, {"error": {"type": "invalid_request_error", "message": "duplicate identifier"}})
            else:
                self.events[form["identifier"]] = form
                self.deliveries += 1
                answer = (200, {"object": "billing.meter_event", "identifier": form["identifier"]})
            if key is not None:
                self._idempotent[key] = (body, answer[0], answer[1])
        return web.json_response(answer[1], status=answer[0])


class FakeLago(FakeBilling):
    """`POST /api/v1/events/batch`: at most 100 events, validated whole; a known `transaction_id` is a 422."""

    path = "/api/v1/events/batch"

    def __init__(self, *, api_key: str, code: str, customer_field: str = "external_subscription_id") -> None:
        super().__init__(api_key=api_key)
        self.code = code
        self.customer_field = customer_field

    def customer_of(self, event: dict[str, Any]) -> str:
        return str(event[self.customer_field])

    def spend_of(self, event: dict[str, Any]) -> int:
        return int(event["properties"]["spend_nanos"])

    async def handle(self, request: web.Request, body: bytes) -> web.Response:
        self._check_auth(request)
        if request.headers.get("Content-Type") != "application/json":
            raise _violation(f"content type {request.headers.get('Content-Type')!r}")
        payload = orjson.loads(body)
        events = payload.get("events") if isinstance(payload, dict) and set(payload) == {"events"} else None
        if not isinstance(events, list) or not 1 <= len(events) <= 100:
            raise _violation("body must be {'events': [1..100 events]}")
        keys = {"transaction_id", self.customer_field, "code", "timestamp", "properties"}
        for event in events:
            if not isinstance(event, dict) or set(event) != keys:
                raise _violation(f"event fields {sorted(event) if isinstance(event, dict) else event!r}")
            if event["code"] != self.code or not isinstance(event["timestamp"], int | float):
                raise _violation("code or timestamp")
            if not isinstance(event["properties"], dict) or not isinstance(event["properties"].get("spend_nanos"), int):
                raise _violation("properties.spend_nanos")
        ids = [event["transaction_id"] for event in events]
        with self._lock:
            if len(set(ids)) != len(ids) or any(i in self.events for i in ids):
                raise _Refused(
                    422,
                    {
                        "status": 422,
                        "error": "Unprocessable Entity",
                        "code": "validation_errors",
                        "error_details": {"transaction_id": ["value_already_exist"]},
                    },
                )
            for event in events:
                self.events[event["transaction_id"]] = event
            self.deliveries += len(events)
        return web.json_response({"events": events})


class FakeOpenMeter(FakeBilling):
    """`POST /api/v1/events`: CloudEvents (one, or a batch array), deduplicated on (`source`, `id`); 204."""

    path = "/api/v1/events"

    def __init__(self, *, api_key: str | None, event_type: str) -> None:
        super().__init__(api_key=api_key)
        self.event_type = event_type
        self.refuse_subjects: set[str] = set()

    def customer_of(self, event: dict[str, Any]) -> str:
        return str(event["subject"])

    def spend_of(self, event: dict[str, Any]) -> int:
        return int(event["data"]["spend_nanos"])

    async def handle(self, request: web.Request, body: bytes) -> web.Response:
        self._check_auth(request)
        content_type = request.headers.get("Content-Type")
        payload = orjson.loads(body)
        if content_type == "application/cloudevents-batch+json" and isinstance(payload, list) and payload:
            events = payload
        elif content_type == "application/cloudevents+json" and isinstance(payload, dict):
            events = [payload]
        else:
            raise _violation(f"content type {content_type!r} with that body")
        required = {"specversion", "id", "source", "type", "subject", "time", "data"}
        for event in events:
            if not isinstance(event, dict) or not required <= set(event) or event["specversion"] != "1.0":
                raise _violation("not a CloudEvent 1.0 with id, source, type, subject, time, data")
            if event["type"] != self.event_type or not event["id"] or not isinstance(event["data"], dict):
                raise _violation("type, id or data")
            datetime.fromisoformat(event["time"])  # RFC 3339
            if event["subject"] in self.refuse_subjects:
                raise _Refused(400, {"title": "Bad Request", "detail": f"invalid subject {event['subject']}"})
        with self._lock:
            for event in events:
                key = f"{event['source']}\n{event['id']}"
                if key not in self.events:
                    self.events[key] = event
                self.deliveries += 1
        return web.Response(status=204)


class FakeWebhook(FakeBilling):
    """A receiver that checks `X-Haimaker-Signature` and counts each event `id` once."""

    path = "/hooks/usage"

    def __init__(self, *, secret: str) -> None:
        super().__init__(api_key=None)
        self.secret = secret
        self.batch_ids: set[str] = set()

    def customer_of(self, event: dict[str, Any]) -> str:
        return str(event["customer"])

    def spend_of(self, event: dict[str, Any]) -> int:
        return int(event["spend_nanos"])

    async def handle(self, request: web.Request, body: bytes) -> web.Response:
        if request.headers.get("Content-Type") != "application/json":
            raise _violation("content type")
        batch_id = request.headers.get("X-Haimaker-Event-Id", "")
        if not re.fullmatch(r"[0-9a-f]{64}", batch_id):
            raise _violation("X-Haimaker-Event-Id")
        match = re.fullmatch(r"t=(\d+),v1=([0-9a-f]{64})", request.headers.get("X-Haimaker-Signature", ""))
        if match is None:
            raise _violation("X-Haimaker-Signature missing or malformed")
        expected = hmac.new(self.secret.encode(), match[1].encode() + b"." + body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, match[2]) or abs(time.time() - int(match[1])) > 300:
            raise _violation("bad signature")
        payload = orjson.loads(body)
        with self._lock:
            self.batch_ids.add(batch_id)
            for event in payload["events"]:
                self.events.setdefault(event["id"], event)
                self.deliveries += 1
        return web.json_response({"received": len(payload["events"])})


def wait_for(condition: Any, timeout_s: float = 20.0, interval_s: float = 0.05) -> None:
    """Poll `condition()` until true; fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(interval_s)
