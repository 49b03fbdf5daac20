"""The machinery shared by the fake upstreams: lifecycle, recording, behaviour selection, JSON and SSE replies.

A subclass supplies the routes and authentication (`FakeOpenAI`, `FakeAzureOpenAI` in `openai_upstream.py`).

Invariants: every request is recorded before it is answered; `stop()` cancels handlers that are still waiting
(hanging or delayed) before the sockets close, so shutdown is quick and leaks nothing. A handler cancelled because
its client went away is counted in `disconnects` (and in `streams_cancelled` when it was streaming); handlers
cancelled by `stop()` are not. A client that hangs up is noticed at once, because the server runs with aiohttp's
`handler_cancellation`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import socket
import ssl
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from types import TracebackType
from typing import Any, ClassVar, Self

import orjson
from aiohttp import web

from . import wire
from .behavior import Behavior, count_words, openai_error_body
from .recording import COUNTER_NAMES, Counters, RecordedRequest, Stats

BEHAVIOR_HEADER = "x-fake-behavior"
BEHAVIOR_FIELD = "fake_behavior"
DEFAULT_API_KEY = "sk-fake-upstream-0123456789abcdef"
DEFAULT_MODELS = ("gpt-3.5-turbo", "gpt-4o", "gpt-4o-mini", "text-embedding-3-small")

_SSE_HEADERS = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class _ClientGone(Exception):
    """The client closed the connection while we were writing to it."""


class FakeUpstream:
    """Shared machinery: server lifecycle, recording, behaviour selection, counters and JSON/SSE replies."""

    kind: ClassVar[str] = "upstream"

    def __init__(
        self,
        *,
        api_key: str | None = DEFAULT_API_KEY,
        behavior: Behavior | None = None,
        models: Iterable[str] | None = None,
        embedding_dimensions: int = 8,
        reveal_key_in_errors: bool = True,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        """Configure (but do not start) a fake.

        Args:
            api_key: the key the fake accepts; `None` accepts any request, authenticated or not.
            behavior: the default behaviour of generation requests.
            models: models the fake knows; others get 404 `model_not_found`. `None` accepts any model and lists
                `DEFAULT_MODELS`.
            embedding_dimensions: length of embedding vectors when the request gives no `dimensions`.
            reveal_key_in_errors: put the whole presented key in 401 messages (a worst-case upstream, so tests can
                prove the proxy never passes them on); `False` masks it like api.openai.com.
            tls: serve HTTPS with this server context (e.g. a certificate from `support.certificates`).
        """
        self.api_key = api_key
        self.tls = tls
        self.models: tuple[str, ...] | None = tuple(models) if models is not None else None
        self.embedding_dimensions = embedding_dimensions
        self.reveal_key_in_errors = reveal_key_in_errors
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._behavior = behavior or Behavior()
        self._model_behaviors: dict[str, Behavior] = {}
        self._script: collections.deque[Behavior] = collections.deque()
        self._counters = Counters()
        self._created = int(time.time())
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._handlers: set[asyncio.Task[Any]] = set()
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._thread_stop: asyncio.Event | None = None

    # ---- configuration -------------------------------------------------------------------------------------

    @property
    def behavior(self) -> Behavior:
        """The default behaviour (used when no script entry, model behaviour or override applies)."""
        with self._lock:
            return self._behavior

    @behavior.setter
    def behavior(self, value: Behavior) -> None:
        with self._lock:
            self._behavior = value

    def set_model_behavior(self, model: str, behavior: Behavior | None) -> None:
        """Use `behavior` for requests naming `model` (the deployment on Azure); `None` removes it."""
        with self._lock:
            if behavior is None:
                self._model_behaviors.pop(model, None)
            else:
                self._model_behaviors[model] = behavior

    def script(self, *behaviors: Behavior) -> None:
        """Queue one-shot behaviours: each generation request consumes the next one (e.g. 503, then OK)."""
        with self._lock:
            self._script.extend(behaviors)

    @property
    def scripted_remaining(self) -> int:
        """How many scripted behaviours are still queued."""
        with self._lock:
            return len(self._script)

    def reset(self) -> None:
        """Forget recorded requests, scripts, model behaviours and counters; restore the default behaviour."""
        with self._lock:
            self.requests.clear()
            self._script.clear()
            self._model_behaviors.clear()
            self._behavior = Behavior()
        counters = self._counters
        with counters.cond:
            for name in COUNTER_NAMES:
                setattr(counters, name, 0)

    def _choose_behavior(self, model: str | None, override: Mapping[str, Any] | None) -> Behavior:
        with self._lock:
            if self._script:
                chosen = self._script.popleft()
            elif model is not None and model in self._model_behaviors:
                chosen = self._model_behaviors[model]
            else:
                chosen = self._behavior
        return chosen.merged(override) if override else chosen

    # ---- inspection ----------------------------------------------------------------------------------------

    @property
    def last_request(self) -> RecordedRequest:
        """The most recent request (raises `IndexError` when none came)."""
        return self.requests[-1]

    def requests_to(self, suffix: str) -> list[RecordedRequest]:
        """Recorded requests whose path ends with `suffix` (e.g. `"/chat/completions"`)."""
        return [r for r in list(self.requests) if r.path.endswith(suffix)]

    @property
    def stats(self) -> Stats:
        """A consistent snapshot of the counters.

        A handler finishes just after its client has read the end of the response, so counters about the end of
        a request (`streams_completed`, `in_flight`, …) may lag the client by a moment: wait with `wait_until`
        (or a `wait_*` helper) instead of reading them right after the response.
        """
        c = self._counters
        with c.cond:
            return Stats(
                requests=len(self.requests),
                in_flight=c.in_flight,
                open_streams=c.open_streams,
                streams_started=c.streams_started,
                streams_completed=c.streams_completed,
                streams_cancelled=c.streams_cancelled,
                streams_killed=c.streams_killed,
                disconnects=c.disconnects,
            )

    @property
    def open_streams(self) -> int:
        """Streaming responses currently being written."""
        return self.stats.open_streams

    @property
    def streams_cancelled(self) -> int:
        """Streams whose client went away before the stream ended."""
        return self.stats.streams_cancelled

    @property
    def disconnects(self) -> int:
        """Requests (streaming or not, hanging included) whose client went away before the answer was complete."""
        return self.stats.disconnects

    def wait_until_sync(self, predicate: Callable[[Stats], bool], timeout_s: float = 5.0) -> Stats:
        """Block until `predicate(stats)` holds; raise `TimeoutError` after `timeout_s`.

        Raises:
            RuntimeError: the fake runs on the calling thread's loop, which blocking would freeze (await instead).
        """
        if self._loop is not None and self._thread is None and _running_loop() is self._loop:
            raise RuntimeError("this fake runs on the current event loop: use `await fake.wait_until(...)`")
        c = self._counters
        deadline = time.monotonic() + timeout_s
        with c.cond:
            while True:
                snapshot = self.stats
                if predicate(snapshot):
                    return snapshot
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"fake upstream condition not met within {timeout_s}s: {snapshot}")
                c.cond.wait(remaining)

    async def wait_until(self, predicate: Callable[[Stats], bool], timeout_s: float = 5.0) -> Stats:
        """Await until `predicate(stats)` holds; raise `TimeoutError` after `timeout_s`.

        Polls, so it works whether the fake runs on this loop or in its own thread.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            snapshot = self.stats
            if predicate(snapshot):
                return snapshot
            if time.monotonic() >= deadline:
                raise TimeoutError(f"fake upstream condition not met within {timeout_s}s: {snapshot}")
            await asyncio.sleep(0.005)

    async def wait_stream_cancelled(self, timeout_s: float = 5.0, *, count: int = 1) -> Stats:
        """Await until at least `count` streams have been abandoned by their client."""
        return await self.wait_until(lambda s: s.streams_cancelled >= count, timeout_s)

    def wait_stream_cancelled_sync(self, timeout_s: float = 5.0, *, count: int = 1) -> Stats:
        """Block until at least `count` streams have been abandoned by their client."""
        return self.wait_until_sync(lambda s: s.streams_cancelled >= count, timeout_s)

    async def wait_disconnected(self, timeout_s: float = 5.0, *, count: int = 1) -> Stats:
        """Await until at least `count` requests (hanging ones included) have lost their client."""
        return await self.wait_until(lambda s: s.disconnects >= count, timeout_s)

    def wait_disconnected_sync(self, timeout_s: float = 5.0, *, count: int = 1) -> Stats:
        """Block until at least `count` requests have lost their client."""
        return self.wait_until_sync(lambda s: s.disconnects >= count, timeout_s)

    async def wait_idle(self, timeout_s: float = 5.0) -> Stats:
        """Await until no request is being handled."""
        return await self.wait_until(lambda s: s.in_flight == 0, timeout_s)

    def wait_idle_sync(self, timeout_s: float = 5.0) -> Stats:
        """Block until no request is being handled."""
        return self.wait_until_sync(lambda s: s.in_flight == 0, timeout_s)

    # ---- addresses -----------------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the fake upstream is not running")
        return self._port

    @property
    def url(self) -> str:
        """`http://127.0.0.1:<port>` (no path; `https` when serving TLS)."""
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    # ---- lifecycle -----------------------------------------------------------------------------------------

    def _routes(self) -> list[web.RouteDef]:
        raise NotImplementedError

    async def start(self) -> None:
        """Start serving on the running loop, on a free port of 127.0.0.1."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.add_routes(self._routes())
        runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=1.0, access_log=None)
        await runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", 0))
            self._port = sock.getsockname()[1]
            site = web.SockSite(runner, sock, ssl_context=self.tls)
            await site.start()
        except BaseException:
            sock.close()
            await runner.cleanup()
            raise
        self._runner = runner
        self._stopping = False
        self._loop = asyncio.get_running_loop()

    async def stop(self) -> None:
        """Stop serving: cancel waiting handlers, close every connection and the listening socket."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        self._stopping = True
        for task in list(self._handlers):
            task.cancel()
        if self._handlers:
            await asyncio.wait(list(self._handlers), timeout=2.0)
        await runner.cleanup()

    @classmethod
    @contextlib.asynccontextmanager
    async def running(cls, **kwargs: Any) -> AsyncIterator[Self]:
        """Run a fake on the current event loop for the duration of the block."""
        fake = cls(**kwargs)
        await fake.start()
        try:
            yield fake
        finally:
            await fake.stop()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def __enter__(self) -> Self:
        """Run the fake in a background thread with its own event loop."""
        if self._thread is not None:
            raise RuntimeError("the fake upstream is already running in a thread")
        ready = threading.Event()
        failure: list[BaseException] = []

        async def serve() -> None:
            self._thread_stop = asyncio.Event()
            try:
                await self.start()
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                return
            ready.set()
            try:
                await self._thread_stop.wait()
            finally:
                await self.stop()

        self._thread = threading.Thread(target=asyncio.run, args=(serve(),), name=f"fake-{self.kind}", daemon=True)
        self._thread.start()
        if not ready.wait(10.0):
            raise RuntimeError("the fake upstream did not start within 10s")
        if failure:
            self._thread.join()
            self._thread = None
            raise failure[0]
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        thread, self._thread = self._thread, None
        if thread is None:
            return
        if self._loop is not None and self._thread_stop is not None:
            self._loop.call_soon_threadsafe(self._thread_stop.set)
        thread.join(10.0)
        if thread.is_alive():
            raise RuntimeError("the fake upstream thread did not stop within 10s")

    # ---- request handling ----------------------------------------------------------------------------------

    async def _record(self, request: web.Request) -> RecordedRequest:
        raw = await request.read()
        body: Any = None
        if raw:
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError:
                body = None
        recorded = RecordedRequest(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers={k.lower(): v for k, v in request.headers.items()},
            raw_body=raw,
            body=body,
            peer=_peer(request),
        )
        with self._lock:
            self.requests.append(recorded)
        return recorded

    def _json(self, status: int, payload: Mapping[str, Any], headers: Mapping[str, str] | None = None) -> web.Response:
        response = web.Response(status=status, body=orjson.dumps(payload), content_type="application/json")
        response.headers["x-request-id"] = "req_" + wire.make_id("")[:24]
        if headers:
            response.headers.update(headers)
        return response

    async def _guarded(self, handle: Callable[[], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        """Run one handler: track it for `stop()`, count it in flight, and count client disconnects."""
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._counters.bump(in_flight=1)
        try:
            return await handle()
        except asyncio.CancelledError:
            if not self._stopping:
                self._counters.bump(disconnects=1)
            raise
        finally:
            self._counters.bump(in_flight=-1)
            self._handlers.discard(task)

    async def _wait(self, seconds: float) -> None:
        if seconds > 0:
            await asyncio.sleep(seconds)

    async def _hang(self) -> None:
        await asyncio.Event().wait()

    def _override(self, recorded: RecordedRequest) -> dict[str, Any] | None:
        header = recorded.headers.get(BEHAVIOR_HEADER)
        if header:
            parsed = orjson.loads(header)
            if isinstance(parsed, dict):
                return parsed
        if isinstance(recorded.body, dict):
            field_value = recorded.body.get(BEHAVIOR_FIELD)
            if isinstance(field_value, dict):
                return field_value
        return None

    async def _generate(
        self,
        request: web.Request,
        recorded: RecordedRequest,
        endpoint: str,
        model: str | None,
        azure: bool,
        behavior_key: str | None,
    ) -> web.StreamResponse:
        """Answer an authenticated generation request according to the chosen behaviour.

        `behavior_key` selects a per-model behaviour: the requested model, or the deployment on Azure.
        """
        body = recorded.body
        if not isinstance(body, dict):
            return self._json(
                400,
                openai_error_body(
                    400,
                    "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your "
                    "HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid "
                    "JSON.)",
                ),
            )
        try:
            behavior = self._choose_behavior(behavior_key, self._override(recorded))
        except (ValueError, TypeError, orjson.JSONDecodeError) as exc:
            return self._json(400, openai_error_body(400, f"bad fake behaviour override: {exc}"))
        await self._wait(behavior.delay_s)
        if behavior.hang:
            await self._hang()
        if behavior.status is not None:
            return self._json(behavior.status, behavior.error_json(behavior.status), behavior.headers)
        invalid = self._validate(endpoint, body, model)
        if invalid is not None:
            return invalid
        if behavior.raw_body is not None:
            return web.Response(status=200, body=behavior.raw_body.encode(), content_type="application/json")
        response_model = behavior.response_model or model or "unknown"
        if endpoint == "embeddings":
            inputs = wire.embedding_inputs(body.get("input"))
            dimensions = body.get("dimensions") or self.embedding_dimensions
            tokens = behavior.prompt_tokens if behavior.prompt_tokens is not None else count_words(body.get("input"))
            payload = wire.embeddings(
                response_model, inputs, int(dimensions), str(body.get("encoding_format") or "float"), tokens
            )
            return self._json(200, _with_usage(payload, behavior), behavior.headers)
        prompt = body.get("messages") if endpoint == "chat" else body.get("prompt")
        plan = wire.plan_completion(body, behavior, prompt)
        prefix = "chatcmpl-" if endpoint == "chat" else "cmpl-"
        meta = wire.new_meta(prefix, response_model, azure=azure)
        if not body.get("stream"):
            payload = wire.chat_completion(meta, plan) if endpoint == "chat" else wire.text_completion(meta, plan)
            payload = _with_usage(payload, behavior)
            if behavior.padding_bytes:
                return await self._padded(request, payload, behavior.padding_bytes)
            return self._json(200, payload, behavior.headers)
        stream_options = body.get("stream_options")
        asked = isinstance(stream_options, dict) and bool(stream_options.get("include_usage"))
        send_usage = behavior.stream_usage == "always" or (behavior.stream_usage == "requested" and asked)
        make = wire.chat_stream if endpoint == "chat" else wire.text_stream
        events = make(meta, plan, chunks=behavior.chunks, send_usage=send_usage)
        if behavior.usage is not None:
            events = (
                _with_usage(event, behavior) if isinstance(event.get("usage"), dict) else event for event in events
            )
        return await self._stream(request, events, behavior)

    async def _padded(self, request: web.Request, payload: dict[str, Any], size: int) -> web.StreamResponse:
        """The JSON `payload` with a `padding` string of `size` bytes, chunked in 1 MB writes (never held whole)."""
        response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        piece = b"x" * (1024 * 1024)
        try:
            await response.write(orjson.dumps(payload)[:-1] + b',"padding":"')
            left = size
            while left > 0:
                await response.write(piece[: min(left, len(piece))])
                left -= len(piece)
            await response.write(b'"}')
            await response.write_eof()
        except ConnectionError:
            self._counters.bump(disconnects=1)
        return response

    async def _stream(
        self, request: web.Request, events: Iterator[dict[str, Any]], behavior: Behavior
    ) -> web.StreamResponse:
        response = web.StreamResponse(status=200, headers={**_SSE_HEADERS, **behavior.headers})
        response.headers["x-request-id"] = "req_" + wire.make_id("")[:24]
        self._counters.bump(open_streams=1, streams_started=1)
        outcome = "cancelled"
        try:
            await response.prepare(request)
            sent = 0
            for payload in events:
                if behavior.die_after_chunks is not None and sent >= behavior.die_after_chunks:
                    outcome = "killed"
                    self._kill(request)
                    return response
                if sent:
                    await self._wait(behavior.chunk_delay_s)
                await self._write(response, wire.encode_sse(payload))
                sent += 1
                if sent == 1 and behavior.endless_event_bytes is not None:
                    await self._endless_event(response, behavior.endless_event_bytes)
                if sent == 1 and behavior.stream_error is not None:
                    await self._write(response, wire.encode_sse({"error": dict(behavior.stream_error)}))
                    await response.write_eof()
                    outcome = "completed"
                    return response
            if behavior.die_after_chunks is not None and sent >= behavior.die_after_chunks:
                outcome = "killed"
                self._kill(request)
                return response
            await self._write(response, wire.SSE_DONE)
            await response.write_eof()
            outcome = "completed"
            return response
        except _ClientGone:
            return response
        except asyncio.CancelledError:
            if self._stopping:
                outcome = "stopped"
            raise
        finally:
            deltas = {"open_streams": -1}
            if outcome == "completed":
                deltas["streams_completed"] = 1
            elif outcome == "killed":
                deltas["streams_killed"] = 1
            elif outcome == "cancelled":
                deltas["streams_cancelled"] = 1
            self._counters.bump(**deltas)

    async def _endless_event(self, response: web.StreamResponse, size: int) -> None:
        """One `data:` line of `size` bytes that never ends (no blank line), then wait for the client to go."""
        piece = b"x" * (1024 * 1024)
        await self._write(response, b'data: {"pad":"')
        left = size
        while left > 0:
            await self._write(response, piece[: min(left, len(piece))])
            left -= len(piece)
        await self._hang()

    async def _write(self, response: web.StreamResponse, data: bytes) -> None:
        try:
            await response.write(data)
        except ConnectionError as exc:
            self._counters.bump(disconnects=1)
            raise _ClientGone from exc

    def _kill(self, request: web.Request) -> None:
        """Close the connection abruptly: the chunked body never gets its terminating chunk."""
        transport = request.transport
        if transport is not None:
            transport.close()

    def _validate(self, endpoint: str, body: dict[str, Any], model: str | None) -> web.Response | None:
        if model is None:
            return self._json(400, openai_error_body(400, "you must provide a model parameter", code=None))
        if self.models is not None and model not in self.models:
            return self._json(
                404,
                openai_error_body(404, f"The model `{model}` does not exist or you do not have access to it."),
            )
        required = {"chat": "messages", "completions": "prompt", "embeddings": "input"}[endpoint]
        if required not in body:
            return self._json(
                400,
                openai_error_body(400, f"Missing required parameter: '{required}'.", code="missing_required_parameter"),
            )
        return None

    def _mask(self, key: str) -> str:
        if self.reveal_key_in_errors or len(key) < 12:
            return key
        return f"{key[:8]}{'*' * (len(key) - 12)}{key[-4:]}"


def _with_usage(payload: dict[str, Any], behavior: Behavior) -> dict[str, Any]:
    """`payload` with the behaviour's verbatim `usage`, or without any `usage` (`omit_usage`)."""
    if behavior.omit_usage:
        return {k: v for k, v in payload.items() if k != "usage"}
    if behavior.usage is not None:
        return {**payload, "usage": dict(behavior.usage)}
    return payload


def _peer(request: web.Request) -> str:
    """The client's address and port: requests sharing it came over one (kept-alive) connection."""
    transport = request.transport
    peer = transport.get_extra_info("peername") if transport is not None else None
    return f"{peer[0]}:{peer[1]}" if peer else ""
