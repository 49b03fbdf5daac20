"""The LLM routes as raw ASGI: bytes in, bytes out, no framework on the hot path.

FastAPI would validate, wrap and re-serialise every request; here the body is read once, handed to
the pipeline as bytes, and the upstream's bytes go back as they are. Streams watch for the client
hanging up so the upstream call is released at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import unquote

from haimaker.api.access_log import ATTRIBUTION_KEY
from haimaker.api.dialects import Dialect, Translated
from haimaker.api.errors import error_body, error_headers, internal_error
from haimaker.errors import BadRequestError, InvalidKeyError, PayloadTooLargeError, ProxyError
from haimaker.limits.auth_throttle import AuthThrottle
from haimaker.pipeline import JsonResult, Pipeline, StreamResult
from haimaker.providers.base import Route
from haimaker.server import HANGUP_SCOPE_KEY

logger = logging.getLogger("haimaker.api")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

LLM_ROUTES: dict[str, Route] = {}
for _prefix in ("", "/v1", "/openai", "/openai/v1"):
    LLM_ROUTES[f"{_prefix}/chat/completions"] = Route.CHAT
    LLM_ROUTES[f"{_prefix}/completions"] = Route.COMPLETIONS
    LLM_ROUTES[f"{_prefix}/embeddings"] = Route.EMBEDDINGS

_AZURE_PREFIX = "/openai/deployments/"


def azure_route(path: str) -> tuple[Route, str] | None:
    """`/openai/deployments/<model>/<route>` (what Azure OpenAI clients call) → (route, model)."""
    if not path.startswith(_AZURE_PREFIX):
        return None
    model, _, rest = path[len(_AZURE_PREFIX) :].partition("/")
    route = LLM_ROUTES.get("/" + rest)
    return (route, unquote(model)) if route is not None and model else None


MAX_BODY_BYTES = 32 * 1024 * 1024
_JSON = (b"content-type", b"application/json")
_SSE_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


class LLMEndpoint:
    def __init__(self, pipeline: Pipeline, throttle: AuthThrottle) -> None:
        self._pipeline = pipeline
        self._throttle = throttle

    async def __call__(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        route: Route,
        path_model: str | None = None,
        dialect: Dialect | None = None,
    ) -> None:
        """Serve one LLM call; with a `dialect` (`api/dialects.py`), the request and answer are that API's, and
        `route` is only the metrics label of a request refused before translation."""
        started = time.perf_counter()
        # An address throttled for wrong keys is refused before its body is read, the right key included.
        refusal = self._throttle.refusal_of(scope)
        if refusal is not None:
            self._pipeline.observe_error(route, None, refusal.status_code, started)
            await send_error(send, refusal, dialect)
            return
        translated: Translated | None = None
        try:
            raw = await _read_body(receive)
            headers = headers_of(scope)
            if dialect is not None:
                translated = dialect.translate_request(raw, headers)
                route, raw = translated.route, translated.body
        except ProxyError as exc:
            self._pipeline.observe_error(route, None, exc.status_code, started)
            await send_error(send, exc, dialect)
            return
        # From here on a client hang-up cancels the request wherever it is: waiting for the upstream's
        # first byte (a non-streaming call, or a slow time-to-first-token) as much as mid-relay. The
        # pipeline then releases the upstream call and the reservation (a cancelled call is not charged).
        async with _cancel_on_hangup(receive, scope):
            await self._serve(route, raw, headers, send, scope, started, path_model, dialect, translated)

    async def _serve(
        self,
        route: Route,
        raw: bytes,
        headers: dict[str, str],
        send: Send,
        scope: Scope,
        started: float,
        path_model: str | None,
        dialect: Dialect | None,
        translated: Translated | None,
    ) -> None:
        try:
            result = await self._pipeline.run(
                route,
                raw,
                headers,
                path_model=path_model,
                path=scope.get("path"),
                call_type=dialect.call_type if dialect is not None else None,
                attribution=scope.get(ATTRIBUTION_KEY),  # there only when the access log is on
            )
            if dialect is not None:
                request = translated.request if translated is not None else None
                result = (
                    dialect.translate_json(result, request)
                    if isinstance(result, JsonResult)
                    else dialect.translate_stream(result, request)
                )
        except ProxyError as exc:  # already counted by the pipeline
            if isinstance(exc, InvalidKeyError):
                self._throttle.record_failure(self._throttle.address_of(scope))
            await send_error(send, exc, dialect)
            return
        except Exception:
            logger.exception("unhandled error on %s", scope.get("path"))
            self._pipeline.observe_error(route, None, 500, started)
            await send_error(send, internal_error(), dialect)
            return
        if isinstance(result, JsonResult):
            await _send_json(send, result)
        else:
            await _send_stream(send, result)


def headers_of(scope: Scope) -> dict[str, str]:
    """The request headers as a lower-case-keyed dict (a repeated header keeps its last value).

    Values are decoded as UTF-8, which is what clients send: latin-1 would turn a customer id `naïve` sent in a
    header into `naÃ¯ve`, another customer than the same id in the body (issue 10). CPython's UTF-8 decoder takes
    an ASCII fast path, so the common case costs what latin-1 did. Bytes that are not UTF-8 are kept as lone
    surrogates (`surrogateescape`) instead of refusing the request: a header we never read (a client's latin-1
    `x-note`) stays harmless, while a header we do read as an id is refused by the id rule (`ids.py`, 400 naming
    it), and a key with such bytes matches no key (401). Names are tokens (ASCII) by HTTP's grammar.
    """
    return {key.decode("latin-1").lower(): value.decode("utf-8", "surrogateescape") for key, value in scope["headers"]}


async def _read_body(receive: Receive) -> bytes:
    message = await receive()
    body = message.get("body", b"")
    if not message.get("more_body"):
        return body  # type: ignore[no-any-return]
    parts = [body]
    size = len(body)
    while message.get("more_body"):
        message = await receive()
        if message["type"] == "http.disconnect":
            raise BadRequestError("Client disconnected while sending the request.")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise PayloadTooLargeError("Request body too large.")
        parts.append(chunk)
    return b"".join(parts)


def _encode_headers(headers: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]


async def send_error(send: Send, error: ProxyError, dialect: Dialect | None = None) -> None:
    body = error_body(error) if dialect is None else dialect.error_body(error)
    headers = error_headers(error)
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": error.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _send_json(send: Send, result: JsonResult) -> None:
    headers = _encode_headers(result.headers)
    headers.append(_JSON)
    headers.append((b"content-length", str(len(result.body)).encode()))
    await send({"type": "http.response.start", "status": result.status, "headers": headers})
    await send({"type": "http.response.body", "body": result.body})


async def _send_stream(send: Send, result: StreamResult) -> None:
    """Relay the stream; the relay's `finally` releases the upstream, also when a hang-up cancels us."""
    chunks = result.chunks
    try:
        await send(
            {"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS + _encode_headers(result.headers)}
        )
        async for chunk in chunks:
            if result.done():
                # The piece carrying [DONE] also ends the response: one write instead of two. The relay's rest
                # (settling, returning the upstream connection to its pool) runs without awaiting anything, so the
                # hang-up watcher cannot mistake the finished response for a disconnect first.
                await send({"type": "http.response.body", "body": chunk, "more_body": False})
                async for _ in chunks:
                    pass
                return
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    except OSError:
        pass  # the transport went away under us: same as a hang-up
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]


@asynccontextmanager
async def _cancel_on_hangup(receive: Receive, scope: Scope) -> AsyncIterator[None]:
    """Cancel the current task if the client disconnects before the block ends; swallow that cancellation.

    A cancellation from anywhere else (server shutdown) still propagates. Under our uvicorn protocol the server
    calls back when the connection is lost (`server.HANGUP_SCOPE_KEY`): nothing runs per request to watch for it.
    Other servers (granian): a watcher task waits in `receive()`, stopped before the block's last send can make
    `receive()` report the finished response as a disconnect.
    """
    task = asyncio.current_task()
    assert task is not None
    hung_up = False

    def on_hangup() -> None:
        nonlocal hung_up
        hung_up = True
        task.cancel()

    async def watch() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        on_hangup()

    told_by_server = HANGUP_SCOPE_KEY in scope
    watcher = None
    if told_by_server:
        scope[HANGUP_SCOPE_KEY] = on_hangup
    else:
        watcher = asyncio.create_task(watch())
    try:
        yield
    except asyncio.CancelledError:
        if not hung_up:
            raise
        task.uncancel()
    finally:
        if watcher is not None:
            watcher.cancel()
        if told_by_server:
            scope[HANGUP_SCOPE_KEY] = None
