"""A fake OpenAI chat upstream that calls tools, for the tool round trips of the translating routes.

`FakeOpenAIToolCaller` serves `/v1/chat/completions` like api.openai.com does for a tool-using model: when the
conversation has no tool result yet and tools are offered, it calls the first tool with `tool_arguments`; once it
has tool results, it answers with text quoting the last one. JSON and SSE (the tool call's arguments streamed in
pieces, the usage chunk when `stream_options.include_usage` asks). Usage is fixed (`usage` attributes), so costs
can be asserted exactly.

The request is checked strictly against OpenAI's documented chat format, and refused with OpenAI's 400 body
otherwise: roles; a `tool` message only right after the assistant's `tool_calls` and naming one of their ids;
content parts `text` / `image_url` / `file`, images in user messages only; tools `{"type": "function",
"function": {"name", "parameters"}}`; `tool_choice` one of OpenAI's forms.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
from aiohttp import web

from . import wire
from .behavior import Behavior, openai_error_body
from .openai_upstream import FakeOpenAI

_PART_TYPES = {"user": {"text", "image_url", "file"}, "system": {"text"}, "assistant": {"text"}, "tool": {"text"}}


class FakeOpenAIToolCaller(FakeOpenAI):
    """A fake OpenAI whose model calls the first offered tool, then answers from the tool's result."""

    kind = "openai-tools"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.tool_arguments: dict[str, Any] = {"city": "Paris", "unit": "celsius"}
        self.prompt_tokens = 120
        self.completion_tokens = 30
        self.cached_tokens = 0

    def _routes(self) -> list[web.RouteDef]:
        return [web.post(f"{prefix}/chat/completions", self._tool_chat) for prefix in ("/v1", "")]

    async def _tool_chat(self, request: web.Request) -> web.StreamResponse:
        async def handle() -> web.StreamResponse:
            recorded = await self._record(request)
            denied = self._unauthorized(recorded)
            if denied is not None:
                return denied
            body = recorded.body
            problem = chat_problem(body) if isinstance(body, dict) else "We could not parse the JSON body."
            if problem is not None:
                return self._json(400, openai_error_body(400, problem))
            return await self._answer(request, body)

        return await self._guarded(handle)

    async def _answer(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        meta = wire.new_meta("chatcmpl-", str(body["model"]))
        messages = body["messages"]
        tools = body.get("tools") or []
        call: dict[str, Any] | None = None
        text: str | None = None
        answered = any(m["role"] == "tool" for m in messages)
        if not answered and tools and body.get("tool_choice") != "none":
            name = tools[0]["function"]["name"]
            call = {"id": wire.make_id("call_"), "type": "function", "function": {"name": name, "arguments": ""}}
            call["function"]["arguments"] = orjson.dumps(self.tool_arguments).decode()
        else:
            results = [m["content"] for m in messages if m["role"] == "tool"]
            text = f"The tool said: {results[-1]}" if results else "No tool was called."
        usage = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
        }
        finish = "tool_calls" if call is not None else "stop"
        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None, "annotations": []}
            if call is not None:
                message["tool_calls"] = [call]
            choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
            payload = {
                "id": meta.id,
                "object": "chat.completion",
                "created": meta.created,
                "model": meta.model,
                "choices": [choice],
                "usage": usage,
                "service_tier": "default",
                "system_fingerprint": meta.system_fingerprint,
            }
            return self._json(200, payload)
        options = body.get("stream_options")
        send_usage = isinstance(options, dict) and options.get("include_usage") is True
        events = _stream_events(meta, call, text, finish, usage if send_usage else None)
        return await self._stream(request, events, Behavior())


def _stream_events(
    meta: wire.ResponseMeta, call: dict[str, Any] | None, text: str | None, finish: str, usage: dict[str, Any] | None
) -> Iterator[dict[str, Any]]:
    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return {
            "id": meta.id,
            "object": "chat.completion.chunk",
            "created": meta.created,
            "model": meta.model,
            "system_fingerprint": meta.system_fingerprint,
            "choices": [choice],
            **({"usage": None} if usage is not None else {}),
        }

    yield chunk({"role": "assistant", "content": None if call is not None else "", "refusal": None})
    if call is not None:
        arguments = call["function"]["arguments"]
        first = {"index": 0, "id": call["id"], "type": "function", "function": {"name": call["function"]["name"]}}
        first["function"]["arguments"] = ""
        yield chunk({"tool_calls": [first]})
        half = len(arguments) // 2
        for piece in (arguments[:half], arguments[half:]):
            yield chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
    else:
        for piece in wire.split_text(text or "", None):
            yield chunk({"content": piece})
    yield chunk({}, finish)
    if usage is not None:
        final = chunk({})
        final["choices"] = []
        final["usage"] = usage
        yield final


def chat_problem(body: dict[str, Any]) -> str | None:
    """Why OpenAI would refuse this chat body (its 400 message), or None."""
    if not isinstance(body.get("model"), str):
        return "you must provide a model parameter"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "Missing required parameter: 'messages'."
    open_calls: set[str] = set()
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in _PART_TYPES:
            return f"Invalid value for 'messages[{i}].role'."
        content = message.get("content")
        if role == "tool":
            if message.get("tool_call_id") not in open_calls:
                return (
                    f"Invalid parameter: messages with role 'tool' must be a response to a preceeding message with "
                    f"'tool_calls' (messages[{i}])."
                )
        else:
            open_calls = set()
        if isinstance(content, list):
            for j, part in enumerate(content):
                kind = part.get("type") if isinstance(part, dict) else None
                if kind not in _PART_TYPES[role]:
                    return f"Invalid value for 'messages[{i}].content[{j}].type' in a {role} message: {kind!r}."
                if kind == "image_url" and not str(part["image_url"].get("url", "")).startswith(("data:", "http")):
                    return f"Invalid image URL in 'messages[{i}].content[{j}]'."
        elif not isinstance(content, str) and not (role == "assistant" and message.get("tool_calls")):
            return f"Invalid type for 'messages[{i}].content': expected a string or an array."
        for call in message.get("tool_calls") or ():
            arguments = call.get("function", {}).get("arguments")
            if call.get("type") != "function" or not isinstance(arguments, str):
                return f"Invalid 'messages[{i}].tool_calls': each needs type 'function' and string arguments."
            open_calls.add(call["id"])
    for i, tool in enumerate(body.get("tools") or ()):
        function = tool.get("function") if isinstance(tool, dict) else None
        if tool.get("type") != "function" or not isinstance(function, dict) or not function.get("name"):
            return f"Missing required parameter: 'tools[{i}].function'."
        if not isinstance(function.get("parameters", {}), dict):
            return f"Invalid 'tools[{i}].function.parameters': expected an object."
    choice = body.get("tool_choice")
    named = isinstance(choice, dict) and choice.get("type") == "function" and choice.get("function", {}).get("name")
    if choice is not None and choice not in ("auto", "none", "required") and not named:
        return "Invalid value for 'tool_choice'."
    return None
