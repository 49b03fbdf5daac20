"""`mock/<name>`: answers locally, deterministically, with real token counts; streaming included.

It lets the quickstart and the benchmark run with no network: the reply is `mock_response` (or a fixed
sentence), `usage` is counted with the same tokenizer the budget engine uses, and `mock_latency_ms`
simulates a slow model.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import struct
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson

from haimaker.accounting.tokens import TokenCounter
from haimaker.providers.base import Deployment, Route

DEFAULT_REPLY = "This is a mock response from haimaker. The proxy is working."
_EMBEDDING_DIMENSIONS = 16


class MockResponse:
    """A finished answer, served either whole or as SSE events."""

    __slots__ = ("_events", "_payload", "status")

    def __init__(self, payload: bytes | None, events: list[bytes] | None) -> None:
        self.status = 200
        self._payload = payload
        self._events = events

    async def read(self) -> bytes:
        return self._payload or b""

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        for event in self._events or ():
            yield event

    def at_end(self) -> bool:
        return False  # served from a generator: the end is only known by iterating to it

    def close(self) -> None:
        self._events = None


class MockProvider:
    def __init__(self, tokens: TokenCounter) -> None:
        self._tokens = tokens

    async def open(self, deployment: Deployment, route: Route, body: dict[str, Any], stream: bool) -> MockResponse:
        if deployment.mock_latency_ms:
            await asyncio.sleep(deployment.mock_latency_ms / 1000)
        model = deployment.upstream_model
        if route is Route.EMBEDDINGS:
            return MockResponse(self._embedding(model, body), None)
        reply = deployment.mock_response if deployment.mock_response is not None else DEFAULT_REPLY
        reply = self._truncate(reply, body, model)
        if route is Route.CHAT:
            prompt_tokens = self._tokens.count_chat_prompt(body.get("messages"), model)
        else:
            prompt_tokens = self._tokens.count_completion_prompt(body.get("prompt"), model)
        completion_tokens = self._tokens.count_text(reply, model)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        if stream:
            options = body.get("stream_options")
            with_usage = isinstance(options, dict) and options.get("include_usage") is True
            return MockResponse(None, _stream_events(route, model, reply, usage if with_usage else None))
        return MockResponse(_whole(route, model, reply, usage), None)

    def _truncate(self, reply: str, body: dict[str, Any], model: str) -> str:
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        if not isinstance(limit, int) or isinstance(limit, bool) or limit <= 0:
            return reply
        words = reply.split(" ")
        while len(words) > 1 and self._tokens.count_text(" ".join(words), model) > limit:
            words.pop()
        return " ".join(words)

    def _embedding(self, model: str, body: dict[str, Any]) -> bytes:
        inputs = body.get("input")
        items = inputs if isinstance(inputs, list) and inputs and not isinstance(inputs[0], int) else [inputs]
        as_base64 = body.get("encoding_format") == "base64"
        data = []
        for index, item in enumerate(items):
            vector = _vector(str(item))
            embedding: Any = (
                base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode() if as_base64 else vector
            )
            data.append({"object": "embedding", "index": index, "embedding": embedding})
        prompt_tokens = self._tokens.count_embedding_input(inputs, model)
        return orjson.dumps(
            {
                "object": "list",
                "data": data,
                "model": model,
                "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
            }
        )

    async def aclose(self) -> None:
        """Nothing to release."""


def _vector(text: str) -> list[float]:
    digest = hashlib.sha256(text.encode()).digest()
    return [round((byte - 127.5) / 127.5, 6) for byte in digest[:_EMBEDDING_DIMENSIONS]]


def _whole(route: Route, model: str, reply: str, usage: dict[str, int]) -> bytes:
    created = int(time.time())
    if route is Route.CHAT:
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": reply},
            "finish_reason": "stop",
            "logprobs": None,
        }
        obj = "chat.completion"
        prefix = "chatcmpl-"
    else:
        choice = {"index": 0, "text": reply, "finish_reason": "stop", "logprobs": None}
        obj = "text_completion"
        prefix = "cmpl-"
    return orjson.dumps(
        {
            "id": prefix + uuid.uuid4().hex,
            "object": obj,
            "created": created,
            "model": model,
            "choices": [choice],
            "usage": usage,
        }
    )


def _stream_events(route: Route, model: str, reply: str, usage: dict[str, int] | None) -> list[bytes]:
    created = int(time.time())
    is_chat = route is Route.CHAT
    ident = ("chatcmpl-" if is_chat else "cmpl-") + uuid.uuid4().hex
    obj = "chat.completion.chunk" if is_chat else "text_completion"
    pieces = [word + " " for word in reply.split(" ")]
    pieces[-1] = pieces[-1].rstrip(" ")
    events: list[bytes] = []

    def chunk(choice: dict[str, Any] | None, finish: str | None = None) -> bytes:
        payload: dict[str, Any] = {"id": ident, "object": obj, "created": created, "model": model}
        payload["choices"] = [] if choice is None else [{"index": 0, **choice, "finish_reason": finish}]
        if usage is not None:
            payload["usage"] = None
        return b"data: " + orjson.dumps(payload) + b"\n\n"

    if is_chat:
        events.append(chunk({"delta": {"role": "assistant", "content": ""}}))
        events.extend(chunk({"delta": {"content": piece}}) for piece in pieces)
        events.append(chunk({"delta": {}}, "stop"))
    else:
        events.extend(chunk({"text": piece}) for piece in pieces)
        events.append(chunk({"text": ""}, "stop"))
    if usage is not None:
        final = {"id": ident, "object": obj, "created": created, "model": model, "choices": [], "usage": usage}
        events.append(b"data: " + orjson.dumps(final) + b"\n\n")
    events.append(b"data: [DONE]\n\n")
    return events
