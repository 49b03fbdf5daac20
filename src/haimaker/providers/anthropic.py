"""`anthropic/<model>`: the Anthropic Messages API behind the OpenAI chat route.

`POST {api_base or https://api.anthropic.com}/v1/messages` (the suffix appended unless the base already ends with
it, as LiteLLM's `ensure_api_route`) with `x-api-key` (the deployment's `api_key`, else `ANTHROPIC_API_KEY`) and
`anthropic-version: 2023-06-01`. The body is translated by `anthropic_translate.messages_request`; the answer comes
back in OpenAI's wire format: a `chat.completion`, or `chat.completion.chunk` events translated one Anthropic event at
a time (`AnthropicStreamTranslator`) and ending, like OpenAI's, with the usage chunk when `stream_options.include_usage`
asked for it and `data: [DONE]`.

Errors: a non-2xx answer is mapped by the shared transport (`http.status_error` reads Anthropic's
`{"type":"error","error":{"type","message"}}` like OpenAI's envelope): 4xx passed on with their status (429 retryable,
with its retry-after), 5xx and 529 `overloaded_error` as a retryable 502. An `event: error` mid-stream becomes an
OpenAI error event (`{"error": {...}}`, its `code` the status LiteLLM gives the Anthropic error type) and ends the
stream without `[DONE]`, so the pipeline settles it as failed.

Invariants: only chat is served (other routes are refused with a 400 before any call); a stream event is held
whole up to `sse.DEFAULT_MAX_EVENT_BYTES` and never longer; every translated stream is emitted as soon as the
Anthropic event that carries it is complete.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Any, Final

import orjson

from haimaker.errors import BadGatewayError, BadRequestError
from haimaker.providers.anthropic_translate import (
    JSON_TOOL_NAME,
    chat_completion,
    chat_id_of,
    finish_reason_of,
    messages_request,
    openai_usage,
    wants_json_text,
)
from haimaker.providers.base import Deployment, Route
from haimaker.providers.http import HttpResponse, HttpTransport, status_error
from haimaker.providers.redaction import Redactor
from haimaker.providers.sse import DEFAULT_MAX_EVENT_BYTES

ANTHROPIC_API_BASE: Final = "https://api.anthropic.com"
ANTHROPIC_VERSION: Final = "2023-06-01"
# LiteLLM's ANTHROPIC_ERROR_STATUS_CODE_MAP: the status an Anthropic error type stands for (stream error events).
_ERROR_STATUS: Final[Mapping[str, int]] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "overloaded_error": 503,
    "timeout_error": 504,
}


def messages_url(api_base: str | None) -> str:
    """The Messages endpoint under `api_base` (LiteLLM: `/v1/messages` appended unless already there)."""
    base = (api_base or ANTHROPIC_API_BASE).rstrip("/")
    return base if base.endswith("/v1/messages") else f"{base}/v1/messages"


class AnthropicProvider:
    """Serves OpenAI chat requests from Anthropic's Messages API."""

    def __init__(self, transport: HttpTransport, *, default_api_key: str | None = None) -> None:
        """`default_api_key`: the key of deployments that configure none (LiteLLM reads `ANTHROPIC_API_KEY`)."""
        self._transport = transport
        self._default_api_key = default_api_key

    def headers(self, deployment: Deployment) -> dict[str, str]:
        headers = {"content-type": "application/json", "anthropic-version": ANTHROPIC_VERSION}
        extra = deployment.params.get("extra_headers")
        if isinstance(extra, dict):
            headers.update({str(k): str(v) for k, v in extra.items()})
        key = deployment.api_key or self._default_api_key
        if key:
            headers["x-api-key"] = key
        return headers

    async def open(
        self, deployment: Deployment, route: Route, body: dict[str, Any], stream: bool
    ) -> AnthropicJson | AnthropicStream:
        if route is not Route.CHAT:
            raise BadRequestError(
                f"anthropic/ deployments serve chat completions only, not /{route.value}.", param="model"
            )
        payload = messages_request(
            body,
            deployment.upstream_model,
            default_max_tokens=deployment.max_output_tokens,
            drop_params=deployment.params.get("drop_params") is True,
        )
        timeout_s = (deployment.stream_timeout_s if stream else None) or deployment.timeout_s
        key = deployment.api_key or self._default_api_key
        response = await self._transport.post(
            messages_url(deployment.api_base),
            self.headers(deployment),
            orjson.dumps(payload),
            timeout_s=timeout_s,
            secrets=(key,) if key else (),
            verify=deployment.ssl_verify,
        )
        json_text = wants_json_text(body)
        if not stream:
            return AnthropicJson(response, deployment.upstream_model, json_text=json_text)
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        translator = AnthropicStreamTranslator(
            deployment.upstream_model, include_usage=include_usage, json_text=json_text
        )
        redactor = self._transport.redactor
        if key and not redactor.holds((key,)):
            redactor = Redactor([*redactor.secrets, key])
        relay = AnthropicStream(response, translator, redactor)
        await relay.prime()
        return relay

    async def aclose(self) -> None:
        """The transport is shared and closed by its owner."""


class AnthropicJson:
    """A whole Messages answer, read as a `chat.completion`."""

    __slots__ = ("_json_text", "_model", "_response", "status")

    def __init__(self, response: HttpResponse, model: str, *, json_text: bool) -> None:
        self._response = response
        self._model = model
        self._json_text = json_text
        self.status = response.status

    async def read(self) -> bytes:
        raw = await self._response.read()  # scrubbed of secrets by the transport
        try:
            answer = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise BadGatewayError("Upstream answer is not JSON.") from None
        if not isinstance(answer, dict) or answer.get("type") != "message":
            raise BadGatewayError("Upstream answer is not an Anthropic message.")
        return orjson.dumps(chat_completion(answer, self._model, json_text=self._json_text))

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        yield await self.read()

    def at_end(self) -> bool:
        return self._response.at_end()

    def close(self) -> None:
        self._response.close()


class AnthropicStream:
    """An Anthropic event stream relayed as OpenAI chunks as each event completes."""

    __slots__ = ("_first", "_pieces", "_redactor", "_response", "_translator", "status")

    def __init__(self, response: HttpResponse, translator: AnthropicStreamTranslator, redactor: Redactor) -> None:
        self._response = response
        self._translator = translator
        self._redactor = redactor
        self._pieces = self._translated()
        self._first = b""
        self.status = response.status

    async def prime(self) -> None:
        """Read up to the first translated event. An `event: error` before the message starts (overloaded at
        once) is raised as the error a non-2xx answer with that body is, so the router may retry or fall back
        (LiteLLM's `anthropic_error_frame_exception`)."""
        try:
            self._first = await anext(self._pieces, b"")
            opening = self._translator.opening_error
            if opening is not None:
                status, error = opening
                raise status_error(status, orjson.dumps({"type": "error", "error": error}), self._redactor)
        except BaseException:
            await self._pieces.aclose()
            self._response.close()
            raise

    async def read(self) -> bytes:
        parts = [piece async for piece in self.iter_chunks()]
        return b"".join(parts)

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        first, self._first = self._first, b""
        if first:
            yield first
        async for out in self._pieces:
            yield out

    async def _translated(self) -> AsyncGenerator[bytes, None]:
        async for piece in self._response.iter_chunks():
            out = self._translator.feed(piece)
            if out:
                yield out
            if self._translator.opening_error is not None:
                return
        rest = self._translator.flush()
        if rest:
            yield rest

    def at_end(self) -> bool:
        return self._response.at_end()

    def close(self) -> None:
        self._response.close()


class AnthropicStreamTranslator:
    """Anthropic's SSE events in, OpenAI `chat.completion.chunk` events out (bytes to bytes, any piece sizes)."""

    def __init__(self, model: str, *, include_usage: bool, json_text: bool = False) -> None:
        self._model = model
        self._include_usage = include_usage
        self._json_text = json_text
        self._buffer = bytearray()
        self._pending_cr = False
        self._id = "chatcmpl-unknown"
        self._created = int(time.time())
        self._usage: dict[str, Any] = {}
        self._tool_index: dict[int, int] = {}  # content block index -> OpenAI tool call index
        self._json_blocks: set[int] = set()  # blocks of the response_format tool, relayed as content
        self._ended = False
        self._started = False
        # (status, Anthropic error object) of an error event that came before message_start: raised, not relayed.
        self.opening_error: tuple[int, dict[str, Any]] | None = None

    def feed(self, data: bytes) -> bytes:
        """The OpenAI events for the Anthropic events `data` completes (maybe none).

        Raises:
            BadGatewayError: an event past the size cap, or one that is not JSON.
        """
        if self._ended:
            return b""
        if self._pending_cr:
            data, self._pending_cr = b"\r" + data, False
        if b"\r" in data:
            if data.endswith(b"\r"):  # maybe half of a CRLF: decided with the next piece
                data, self._pending_cr = data[:-1], True
            data = data.replace(b"\r\n", b"\n")
        # The held bytes have no event boundary: only the new ones (and the byte before them) are scanned.
        start = max(0, len(self._buffer) - 1)
        self._buffer += data
        end = self._buffer.rfind(b"\n\n", start)
        if end < 0:
            if len(self._buffer) > DEFAULT_MAX_EVENT_BYTES:
                raise BadGatewayError(f"Upstream sent a stream event larger than {DEFAULT_MAX_EVENT_BYTES} bytes.")
            return b""
        complete = bytes(self._buffer[:end])
        del self._buffer[: end + 2]
        out: list[bytes] = []
        for event in complete.split(b"\n\n"):
            if event.strip() and not self._ended:
                self._event(event, out)
        return b"".join(out)

    def flush(self) -> bytes:
        """The last event, when the upstream closed without a blank line after it."""
        rest, self._buffer = bytes(self._buffer), bytearray()
        out: list[bytes] = []
        if rest.strip() and not self._ended:
            self._event(rest, out)
        return b"".join(out)

    def _event(self, event: bytes, out: list[bytes]) -> None:
        lines = [line[5:].lstrip() for line in event.split(b"\n") if line.startswith(b"data:")]
        if not lines:
            return  # a comment or an `event:` line alone
        try:
            payload = orjson.loads(b"\n".join(lines))
        except orjson.JSONDecodeError:
            raise BadGatewayError("Upstream sent a stream event that is not JSON.") from None
        if not isinstance(payload, dict):
            raise BadGatewayError("Upstream sent a stream event that is not an object.")
        kind = payload.get("type")
        if kind == "message_start":
            self._start(payload.get("message"), out)
        elif kind == "content_block_start":
            self._block_start(payload, out)
        elif kind == "content_block_delta":
            self._block_delta(payload, out)
        elif kind == "message_delta":
            self._message_delta(payload, out)
        elif kind == "message_stop":
            self._stop(out)
        elif kind == "error":
            self._error(payload.get("error"), out)
        # ping, content_block_stop and event types added later carry nothing a chat chunk has.

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        chunk = {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}],
        }
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    def _start(self, message: object, out: list[bytes]) -> None:
        self._started = True
        if isinstance(message, dict):
            self._id = chat_id_of(message.get("id"))
            if isinstance(message.get("model"), str) and message["model"]:
                self._model = message["model"]
            usage = message.get("usage")
            if isinstance(usage, dict):
                self._usage.update(usage)
        out.append(self._chunk({"role": "assistant", "content": ""}))

    def _block_start(self, payload: dict[str, Any], out: list[bytes]) -> None:
        index, block = payload.get("index"), payload.get("content_block")
        if not isinstance(index, int) or not isinstance(block, dict):
            return
        kind = block.get("type")
        if kind == "text" and isinstance(block.get("text"), str) and block["text"]:
            out.append(self._chunk({"content": block["text"]}))
        elif kind == "tool_use":
            if self._json_text and block.get("name") == JSON_TOOL_NAME:
                self._json_blocks.add(index)
                return
            position = len(self._tool_index)
            self._tool_index[index] = position
            call = {
                "index": position,
                "id": str(block.get("id") or ""),
                "type": "function",
                "function": {"name": str(block.get("name") or ""), "arguments": ""},
            }
            out.append(self._chunk({"tool_calls": [call]}))

    def _block_delta(self, payload: dict[str, Any], out: list[bytes]) -> None:
        index, delta = payload.get("index"), payload.get("delta")
        if not isinstance(delta, dict):
            return
        kind = delta.get("type")
        if kind == "text_delta" and isinstance(delta.get("text"), str):
            out.append(self._chunk({"content": delta["text"]}))
        elif kind == "thinking_delta" and isinstance(delta.get("thinking"), str):
            out.append(self._chunk({"reasoning_content": delta["thinking"]}))
        elif kind == "input_json_delta" and isinstance(delta.get("partial_json"), str):
            partial = delta["partial_json"]
            if index in self._json_blocks:
                out.append(self._chunk({"content": partial}))
            elif isinstance(index, int) and index in self._tool_index:
                call = {"index": self._tool_index[index], "function": {"arguments": partial}}
                out.append(self._chunk({"tool_calls": [call]}))

    def _message_delta(self, payload: dict[str, Any], out: list[bytes]) -> None:
        usage = payload.get("usage")
        if isinstance(usage, dict):
            # Counts here are cumulative: they replace message_start's (output_tokens always, the rest when sent).
            self._usage.update({k: v for k, v in usage.items() if v is not None})
        delta = payload.get("delta")
        stop_reason = delta.get("stop_reason") if isinstance(delta, dict) else None
        finish = finish_reason_of(stop_reason)
        if finish == "tool_calls" and not self._tool_index:
            finish = "stop"  # only the response_format tool was called: its input is the content
        out.append(self._chunk({}, finish))

    def _stop(self, out: list[bytes]) -> None:
        if self._include_usage:
            chunk = {
                "id": self._id,
                "object": "chat.completion.chunk",
                "created": self._created,
                "model": self._model,
                "choices": [],
                "usage": openai_usage(self._usage),
            }
            out.append(b"data: " + orjson.dumps(chunk) + b"\n\n")
        out.append(b"data: [DONE]\n\n")
        self._ended = True

    def _error(self, error: object, out: list[bytes]) -> None:
        error_type = error.get("type") if isinstance(error, dict) else None
        message = error.get("message") if isinstance(error, dict) else None
        kind = error_type if isinstance(error_type, str) and error_type else "api_error"
        status = _ERROR_STATUS.get(kind, 500)
        if not self._started:
            self._ended = True
            # Overloaded is the 529 a non-streaming answer would carry (LiteLLM: the same InternalServerError).
            text = message if isinstance(message, str) and message else f"Upstream error ({kind})."
            self.opening_error = (529 if kind == "overloaded_error" else status, {"type": kind, "message": text})
            return
        body = {
            "error": {
                "message": message if isinstance(message, str) and message else f"Upstream error ({kind}).",
                "type": kind,
                "param": None,
                "code": str(status),
            }
        }
        out.append(b"data: " + orjson.dumps(body) + b"\n\n")
        self._ended = True
