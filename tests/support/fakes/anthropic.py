"""A fake api.anthropic.com: `POST /v1/messages`, JSON and the documented event stream, checked strictly.

Authentication as Anthropic's: `x-api-key` (a missing or wrong key is a 401 `authentication_error`), the
`anthropic-version` header required, a JSON content type. The body is checked against the Messages API's documented
shape and refused with Anthropic's 400 body (`{"type": "error", "error": {"type": "invalid_request_error",
"message"}}`) otherwise: only Messages fields (an OpenAI-only field such as `n`, `stop` or `stream_options` is
"Extra inputs are not permitted"), `max_tokens` present, turns alternating user/assistant and opening with the user,
content blocks of their role (`tool_use` in assistant turns; `tool_result` in the user turn right after the assistant's
`tool_use`, first in it, one for each of its ids), images as base64 (a supported media type) or url sources, tools
with an object `input_schema`, `tool_choice` of the documented forms, `metadata` with `user_id` only.

The model: with tools offered and no tool result yet, it calls the first tool (or the named one) with
`tool_input`; with tool results, it answers with text quoting the last one; otherwise `Behavior.reply`, cut at a
stop sequence (`stop_reason: stop_sequence`) or at `max_tokens` words (`max_tokens`). Usage: `Behavior.usage` is
sent verbatim as Anthropic's usage object when set (cache counts included), else `input_tokens` = words of the prompt
(or `Behavior.prompt_tokens`), `output_tokens` = words of the reply (or `Behavior.completion_tokens`).

Behaviours (`Behavior`): `status` answers Anthropic's error body for it (529 `overloaded_error` included);
`stream_error` sends `event: error` after the first delta (in place of the whole message with `die_after_chunks=0`);
`die_after_chunks` cuts the stream after that many events.
A request's own `fake_behavior` field (a test hook the proxy passes on) is removed before the body is checked.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Final

import orjson
from aiohttp import web

from . import wire
from .behavior import Behavior, count_words
from .recording import RecordedRequest
from .server import BEHAVIOR_FIELD, FakeUpstream

ANTHROPIC_VERSION: Final = "2023-06-01"
_FIELDS: Final = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "system",
        "metadata",
        "stop_sequences",
        "stream",
        "temperature",
        "top_p",
        "top_k",
        "tools",
        "tool_choice",
        "thinking",
        "service_tier",
    }
)
_ERROR_TYPES: Final[Mapping[int, str]] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
_IMAGE_TYPES: Final = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})


def anthropic_error_body(status: int, message: str | None = None, error_type: str | None = None) -> dict[str, Any]:
    """Anthropic's error body for `status`."""
    kind = error_type or _ERROR_TYPES.get(status, "api_error")
    return {"type": "error", "error": {"type": kind, "message": message or kind.replace("_", " ").capitalize()}}


class FakeAnthropic(FakeUpstream):
    """A fake Anthropic Messages API on 127.0.0.1."""

    kind = "anthropic"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.tool_input: dict[str, Any] = {"city": "Paris", "unit": "celsius"}

    @property
    def base_url(self) -> str:
        """The `api_base` of a deployment (the provider appends `/v1/messages`)."""
        return self.url

    def _routes(self) -> list[web.RouteDef]:
        return [web.post("/v1/messages", self._messages)]

    def _denied(self, recorded: RecordedRequest) -> web.Response | None:
        if self.api_key is not None:
            presented = recorded.headers.get("x-api-key")
            if not presented:
                return self._json(401, anthropic_error_body(401, "x-api-key header is required"))
            if presented != self.api_key:
                return self._json(401, anthropic_error_body(401, f"invalid x-api-key: {self._mask(presented)}"))
        if recorded.headers.get("anthropic-version") != ANTHROPIC_VERSION:
            return self._json(400, anthropic_error_body(400, "anthropic-version: header is required"))
        if not recorded.headers.get("content-type", "").startswith("application/json"):
            return self._json(400, anthropic_error_body(400, "content-type must be application/json"))
        return None

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        async def handle() -> web.StreamResponse:
            recorded = await self._record(request)
            denied = self._denied(recorded)
            if denied is not None:
                return denied
            if not isinstance(recorded.body, dict):
                return self._json(400, anthropic_error_body(400, "The request body is not valid JSON."))
            body = {k: v for k, v in recorded.body.items() if k != BEHAVIOR_FIELD}
            behavior = self._choose_behavior(body.get("model"), self._override(recorded))
            await self._wait(behavior.delay_s)
            if behavior.hang:
                await self._hang()
            if behavior.status is not None:
                error = (
                    dict(behavior.error_body)
                    if behavior.error_body is not None
                    else anthropic_error_body(behavior.status, behavior.error_message, behavior.error_type)
                )
                return self._json(behavior.status, error, behavior.headers)
            problem = messages_problem(body)
            if problem is not None:
                return self._json(400, anthropic_error_body(400, problem))
            message = self._message(body, behavior)
            if body.get("stream") is True:
                return await self._event_stream(request, stream_events(message, behavior), behavior)
            return self._json(200, message, behavior.headers)

        return await self._guarded(handle)

    def _message(self, body: dict[str, Any], behavior: Behavior) -> dict[str, Any]:
        content, stop_reason, stop_sequence = self._answer(body, behavior)
        output = sum(
            count_words(b.get("text", "")) + count_words(orjson.dumps(b.get("input", "")).decode()) for b in content
        )
        if behavior.usage is not None:
            usage = dict(behavior.usage)
        else:
            usage = {
                "input_tokens": behavior.prompt_tokens
                if behavior.prompt_tokens is not None
                else count_words(body["messages"]) + count_words(body.get("system")),
                "output_tokens": behavior.completion_tokens if behavior.completion_tokens is not None else output,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": behavior.cached_tokens,
            }
        return {
            "id": wire.make_id("msg_"),
            "type": "message",
            "role": "assistant",
            "model": behavior.response_model or body["model"],
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": stop_sequence,
            "usage": usage,
        }

    def _answer(self, body: dict[str, Any], behavior: Behavior) -> tuple[list[dict[str, Any]], str, str | None]:
        last = body["messages"][-1]["content"]
        results = (
            [b for b in last if isinstance(b, dict) and b.get("type") == "tool_result"]
            if isinstance(last, list)
            else []
        )
        tools = body.get("tools") or []
        choice = body.get("tool_choice") or {"type": "auto"}
        if tools and not results and choice.get("type") != "none":
            name = choice.get("name") if choice.get("type") == "tool" else tools[0]["name"]
            block = {"type": "tool_use", "id": wire.make_id("toolu_"), "name": name, "input": self.tool_input}
            return [{"type": "text", "text": "Let me check."}, block], "tool_use", None
        if results:
            result = results[-1].get("content")
            quoted = result if isinstance(result, str) else " ".join(b.get("text", "") for b in result or ())
            return [{"type": "text", "text": f"The tool said: {quoted}"}], "end_turn", None
        text = behavior.reply
        for sequence in body.get("stop_sequences") or ():
            at = text.find(sequence)
            if at >= 0:
                return [{"type": "text", "text": text[:at]}], "stop_sequence", sequence
        words = text.split(" ")
        if len(words) > body["max_tokens"]:
            return [{"type": "text", "text": " ".join(words[: body["max_tokens"]])}], "max_tokens", None
        return [{"type": "text", "text": text}], "end_turn", None

    async def _event_stream(
        self, request: web.Request, events: Iterator[bytes], behavior: Behavior
    ) -> web.StreamResponse:
        """Anthropic's stream: `event:` + `data:` pairs, no `[DONE]` (the stream ends after `message_stop`)."""
        response = web.StreamResponse(
            status=200, headers={"Content-Type": "text/event-stream; charset=utf-8", **behavior.headers}
        )
        self._counters.bump(open_streams=1, streams_started=1)
        outcome = "cancelled"
        try:
            await response.prepare(request)
            for sent, event in enumerate(events):
                if behavior.die_after_chunks and sent >= behavior.die_after_chunks:
                    outcome = "killed"
                    self._kill(request)
                    return response
                if sent:
                    await self._wait(behavior.chunk_delay_s)
                await response.write(event)
            await response.write_eof()
            outcome = "completed"
            return response
        except ConnectionError:
            return response
        finally:
            deltas = {"open_streams": -1}
            deltas[{"completed": "streams_completed", "killed": "streams_killed"}.get(outcome, "streams_cancelled")] = 1
            self._counters.bump(**deltas)


def _event(name: str, payload: dict[str, Any]) -> bytes:
    return f"event: {name}\n".encode() + b"data: " + orjson.dumps(payload) + b"\n\n"


def stream_events(message: dict[str, Any], behavior: Behavior) -> Iterator[bytes]:
    """The documented event sequence of `message`: message_start, ping, each block's start/deltas/stop,
    message_delta (stop reason, cumulative output usage), message_stop."""
    if behavior.stream_error is not None and behavior.die_after_chunks == 0:
        # An error frame in place of the message (Anthropic overloaded as the stream opens).
        yield _event("error", {"type": "error", "error": dict(behavior.stream_error)})
        return
    usage = dict(message["usage"])
    start_usage = {**usage, "output_tokens": 1}
    yield _event(
        "message_start",
        {
            "type": "message_start",
            "message": {**message, "content": [], "stop_reason": None, "stop_sequence": None, "usage": start_usage},
        },
    )
    yield _event("ping", {"type": "ping"})
    for index, block in enumerate(message["content"]):
        if block["type"] == "text":
            yield _event(
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}},
            )
            for piece in _pieces(block["text"], behavior.chunks):
                yield _event(
                    "content_block_delta",
                    {"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": piece}},
                )
                if behavior.stream_error is not None:
                    yield _event("error", {"type": "error", "error": dict(behavior.stream_error)})
                    return
        else:
            start = {**block, "input": {}}
            yield _event("content_block_start", {"type": "content_block_start", "index": index, "content_block": start})
            arguments = orjson.dumps(block["input"]).decode()
            middle = len(arguments) // 2
            for piece in (arguments[:middle], arguments[middle:]):
                yield _event(
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "input_json_delta", "partial_json": piece},
                    },
                )
        yield _event("content_block_stop", {"type": "content_block_stop", "index": index})
    delta = {"stop_reason": message["stop_reason"], "stop_sequence": message["stop_sequence"]}
    yield _event(
        "message_delta",
        {"type": "message_delta", "delta": delta, "usage": {"output_tokens": usage.get("output_tokens", 0)}},
    )
    yield _event("message_stop", {"type": "message_stop"})


def _pieces(text: str, chunks: int | None) -> list[str]:
    words = text.split(" ")
    pieces = [w + " " for w in words[:-1]] + [words[-1]]
    if chunks is None or chunks >= len(pieces):
        return [p for p in pieces if p] or [""]
    size = -(-len(pieces) // chunks)
    return ["".join(pieces[i : i + size]) for i in range(0, len(pieces), size)]


def messages_problem(body: dict[str, Any]) -> str | None:
    """What Anthropic would refuse in a Messages body (None: nothing)."""
    for name in body:
        if name not in _FIELDS:
            return f"{name}: Extra inputs are not permitted"
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "model: Field required"
    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        return "max_tokens: Field required"
    temperature = body.get("temperature")
    if temperature is not None and not (isinstance(temperature, (int, float)) and 0 <= temperature <= 1):
        return "temperature: Input should be less than or equal to 1"
    metadata = body.get("metadata")
    if metadata is not None and (not isinstance(metadata, dict) or set(metadata) - {"user_id"}):
        return "metadata: only user_id is permitted"
    stops = body.get("stop_sequences")
    if stops is not None and (not isinstance(stops, list) or not all(isinstance(s, str) and s.strip() for s in stops)):
        return "stop_sequences: each must be a non-whitespace string"
    return _system_problem(body.get("system")) or _tools_problem(body) or _turns_problem(body.get("messages"))


def _system_problem(system: object) -> str | None:
    if system is None or isinstance(system, str):
        return None
    if not isinstance(system, list):
        return "system: Input should be a valid string or list"
    for i, block in enumerate(system):
        if not isinstance(block, dict) or block.get("type") != "text" or not block.get("text"):
            return f"system.{i}: must be a non-empty text block"
        if set(block) - {"type", "text", "cache_control"}:
            return f"system.{i}: Extra inputs are not permitted"
    return None


def _tools_problem(body: dict[str, Any]) -> str | None:
    tools = body.get("tools")
    names = set()
    for i, tool in enumerate(tools or ()):
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
            return f"tools.{i}.name: Field required"
        if set(tool) - {"name", "description", "input_schema", "cache_control", "type"}:
            return f"tools.{i}: Extra inputs are not permitted"
        schema = tool.get("input_schema")
        if not isinstance(schema, dict) or schema.get("type") != "object":
            return f"tools.{i}.input_schema.type: Input should be 'object'"
        names.add(tool["name"])
    choice = body.get("tool_choice")
    if choice is None:
        return None
    if not isinstance(choice, dict) or choice.get("type") not in ("auto", "any", "tool", "none"):
        return "tool_choice: Input tag does not match any of the expected tags: 'auto', 'any', 'tool', 'none'"
    if set(choice) - {"type", "name", "disable_parallel_tool_use"}:
        return "tool_choice: Extra inputs are not permitted"
    if choice["type"] == "tool" and choice.get("name") not in names:
        return "tool_choice.name: names no tool in tools"
    return None


def _turns_problem(messages: object) -> str | None:
    if not isinstance(messages, list) or not messages:
        return "messages: at least one message is required"
    pending: set[str] = set()
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or set(message) - {"role", "content"}:
            return f"messages.{i}: Extra inputs are not permitted"
        role = message.get("role")
        expected = "user" if i % 2 == 0 else "assistant"
        if role != expected:
            return f"messages.{i}.role: roles must alternate between user and assistant, starting with user"
        content = message.get("content")
        if isinstance(content, str):
            if pending:
                return _unanswered(i, pending)
            continue
        if not isinstance(content, list) or not content:
            return f"messages.{i}.content: must be a string or a non-empty list of blocks"
        answered: set[str] = set()
        for j, block in enumerate(content):
            problem = _block_problem(block, role, f"messages.{i}.content.{j}")
            if problem is not None:
                return problem
            if block["type"] == "tool_result":
                if block.get("tool_use_id") not in pending:
                    return f"messages.{i}.content.{j}: unexpected tool_use_id in tool_result block"
                if j != len(answered):
                    return f"messages.{i}.content.{j}: tool_result blocks must come first in the user turn"
                answered.add(block["tool_use_id"])
        if pending - answered:
            return _unanswered(i, pending - answered)
        pending = {b["id"] for b in content if b["type"] == "tool_use"}
    if pending:
        return "messages: the last assistant turn's tool_use blocks have no tool_result"
    return None


def _unanswered(i: int, ids: set[str]) -> str:
    return f"messages.{i}: tool_use ids were found without tool_result blocks immediately after: {sorted(ids)}"


def _block_problem(block: object, role: str, at: str) -> str | None:
    if not isinstance(block, dict):
        return f"{at}: must be a content block"
    kind = block.get("type")
    allowed = {"user": {"text", "image", "document", "tool_result"}, "assistant": {"text", "tool_use", "thinking"}}
    if kind not in allowed[role]:
        return f"{at}.type: {kind!r} blocks are not permitted in {role} turns"
    if kind == "text" and (not isinstance(block.get("text"), str) or not block["text"]):
        return f"{at}: text content blocks must be non-empty"
    if kind in ("image", "document"):
        source = block.get("source")
        if not isinstance(source, dict):
            return f"{at}.source: Field required"
        if source.get("type") == "base64":
            media = source.get("media_type")
            if (kind == "image" and media not in _IMAGE_TYPES) or (kind == "document" and media != "application/pdf"):
                return f"{at}.source.media_type: unsupported media type {media!r}"
            if not isinstance(source.get("data"), str) or not source["data"]:
                return f"{at}.source.data: Field required"
        elif source.get("type") != "url" or not str(source.get("url", "")).startswith(("http://", "https://")):
            return f"{at}.source: must be a base64 or url source"
    if kind == "tool_use":
        if not isinstance(block.get("id"), str) or not isinstance(block.get("name"), str):
            return f"{at}: tool_use needs id and name"
        if not isinstance(block.get("input"), dict):
            return f"{at}.input: Input should be a valid dictionary"
    if kind == "tool_result":
        content = block.get("content")
        if content is not None and not isinstance(content, (str, list)):
            return f"{at}.content: must be a string or a list of blocks"
    return None
