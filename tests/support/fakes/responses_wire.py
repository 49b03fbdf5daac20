"""OpenAI Responses API wire format (`POST /v1/responses`): strict request checks, the `response` object, and its
event stream, as documented at platform.openai.com/docs/api-reference/responses (2025).

Checks what a proxy gets wrong when it forwards a Responses request as if it were chat: chat-only fields
(`messages`, `max_tokens`, `n`, `response_format`, `stream_options.include_usage`, ...) are "Unknown parameter"
400s as on api.openai.com, tools must be in the flattened Responses shape, input items must be typed. Replies are
deterministic: the behaviour's reply, or a call to the first tool when `tool_choice` requires one; token counts are
words (`behavior.count_words`). A stream has no `[DONE]`: it ends with `response.completed` (or `.incomplete`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson

from .behavior import Behavior, count_words, openai_error_body
from .wire import make_id

# Chat Completions fields the Responses API refuses ("Unknown parameter").
CHAT_ONLY_FIELDS = ("messages", "max_tokens", "max_completion_tokens", "n", "response_format", "functions", "stop")
_ITEM_TYPES = {"message", "function_call", "function_call_output", "reasoning", "item_reference"}
_PART_TYPES = {"input_text", "input_image", "input_file", "output_text", "refusal"}


def _unknown(name: str) -> dict[str, Any]:
    body = openai_error_body(400, f"Unknown parameter: '{name}'.", code="unknown_parameter")
    body["error"]["param"] = name
    return body


def _missing(name: str) -> dict[str, Any]:
    body = openai_error_body(400, f"Missing required parameter: '{name}'.", code="missing_required_parameter")
    body["error"]["param"] = name
    return body


def _invalid(name: str, message: str) -> dict[str, Any]:
    body = openai_error_body(400, message, code="invalid_value")
    body["error"]["param"] = name
    return body


def validate(body: dict[str, Any]) -> dict[str, Any] | None:
    """The 400 body api.openai.com sends for this request, or None when it is a valid Responses request."""
    for name in CHAT_ONLY_FIELDS:
        if name in body:
            return _unknown(name)
    options = body.get("stream_options")
    if isinstance(options, dict) and "include_usage" in options:
        return _unknown("stream_options.include_usage")
    if not isinstance(body.get("model"), str):
        return _missing("model")
    items = body.get("input")
    if items is None:
        return _missing("input")
    if isinstance(items, list):
        for i, item in enumerate(items):
            problem = _item_problem(item, f"input[{i}]")
            if problem is not None:
                return problem
    elif not isinstance(items, str):
        return _invalid("input", "Invalid type for 'input': expected a string or an array of input items.")
    for i, tool in enumerate(body.get("tools") or ()):
        if not isinstance(tool, dict) or "type" not in tool:
            return _missing(f"tools[{i}].type")
        if tool["type"] == "function":
            if "function" in tool:
                return _unknown(f"tools[{i}].function")  # chat's nested shape
            if not isinstance(tool.get("name"), str):
                return _missing(f"tools[{i}].name")
    return None


def _item_problem(item: object, param: str) -> dict[str, Any] | None:
    if not isinstance(item, dict):
        return _invalid(param, f"Invalid type for '{param}': expected an object.")
    kind = item.get("type", "message")
    if kind not in _ITEM_TYPES:
        return _invalid(f"{param}.type", f"Invalid value: '{kind}'.")
    if kind == "message":
        if item.get("role") not in ("user", "assistant", "system", "developer"):
            return _invalid(f"{param}.role", "Invalid value for 'role'.")
        content = item.get("content")
        if isinstance(content, list):
            for j, part in enumerate(content):
                if not isinstance(part, dict) or part.get("type") not in _PART_TYPES:
                    return _invalid(f"{param}.content[{j}].type", "Invalid content part type.")
        elif not isinstance(content, str):
            return _missing(f"{param}.content")
    elif kind == "function_call":
        for name in ("call_id", "name", "arguments"):
            if not isinstance(item.get(name), str):
                return _missing(f"{param}.{name}")
    elif kind == "function_call_output":
        if not isinstance(item.get("call_id"), str):
            return _missing(f"{param}.call_id")
        if "output" not in item:
            return _missing(f"{param}.output")
    return None


def _tool_call(body: dict[str, Any]) -> dict[str, Any] | None:
    """The function call the fake answers with: when `tool_choice` requires one and the last item is no output."""
    choice = body.get("tool_choice")
    tools = [t for t in body.get("tools") or () if isinstance(t, dict) and t.get("type") == "function"]
    items = body.get("input")
    last = items[-1] if isinstance(items, list) and items else None
    if not tools or (isinstance(last, dict) and last.get("type") == "function_call_output"):
        return None
    if choice == "required":
        tool = tools[0]
    elif isinstance(choice, dict) and choice.get("type") == "function":
        tool = next((t for t in tools if t.get("name") == choice.get("name")), tools[0])
    else:
        return None
    required = (tool.get("parameters") or {}).get("required") or []
    return {
        "id": make_id("fc_"),
        "type": "function_call",
        "status": "completed",
        "call_id": make_id("call_"),
        "name": tool["name"],
        "arguments": orjson.dumps(dict.fromkeys(required, "Paris")).decode(),
    }


def _usage(body: dict[str, Any], behavior: Behavior, output_text: str) -> dict[str, Any]:
    prompt = behavior.prompt_tokens
    if prompt is None:
        prompt = count_words(body.get("input")) + count_words(body.get("instructions"))
    completion = behavior.completion_tokens if behavior.completion_tokens is not None else len(output_text.split())
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": behavior.cached_tokens},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": behavior.reasoning_tokens},
        "total_tokens": prompt + completion,
    }


def response(body: dict[str, Any], behavior: Behavior, model: str) -> dict[str, Any]:
    """The completed `response` object for a valid request."""
    call = _tool_call(body)
    if call is not None:
        output = [call]
        produced = call["arguments"]
    else:
        part = {"type": "output_text", "text": behavior.reply, "annotations": [], "logprobs": []}
        output = [
            {"id": make_id("msg_"), "type": "message", "status": "completed", "role": "assistant", "content": [part]}
        ]
        produced = behavior.reply
    usage = None if behavior.omit_usage else dict(behavior.usage or _usage(body, behavior, produced))
    return _shell(body, model, "completed", output, usage)


def _shell(
    body: dict[str, Any], model: str, status: str, output: list[dict[str, Any]], usage: dict[str, Any] | None
) -> dict[str, Any]:
    return {
        "id": "resp_" + make_id("")[:24],
        "object": "response",
        "created_at": 1_741_476_542,
        "status": status,
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": model,
        "output": output,
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": {"effort": None, "summary": None},
        "store": body.get("store", True),
        "temperature": body.get("temperature", 1.0),
        "text": body.get("text") or {"format": {"type": "text"}},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools", []),
        "top_p": body.get("top_p", 1.0),
        "truncation": "disabled",
        "usage": usage,
        "user": body.get("user"),
        "metadata": body.get("metadata", {}),
    }


def events(body: dict[str, Any], behavior: Behavior, model: str) -> Iterator[dict[str, Any]]:
    """The event stream of the same answer: lifecycle, item and delta events, then `response.completed`."""
    final = response(body, behavior, model)
    started = {**final, "status": "in_progress", "output": [], "usage": None}
    sequence = iter(range(1_000_000))

    def event(kind: str, **fields: Any) -> dict[str, Any]:
        return {"type": kind, "sequence_number": next(sequence), **fields}

    yield event("response.created", response=started)
    yield event("response.in_progress", response=started)
    for index, item in enumerate(final["output"]):
        if item["type"] == "function_call":
            yield event("response.output_item.added", output_index=index, item={**item, "arguments": ""})
            ids = {"item_id": item["id"], "output_index": index}
            yield event("response.function_call_arguments.delta", **ids, delta=item["arguments"])
            yield event(
                "response.function_call_arguments.done",
                item_id=item["id"],
                output_index=index,
                name=item["name"],
                arguments=item["arguments"],
            )
            yield event("response.output_item.done", output_index=index, item=item)
            continue
        part = item["content"][0]
        ids = {"item_id": item["id"], "output_index": index, "content_index": 0}
        yield event("response.output_item.added", output_index=index, item={**item, "content": []})
        yield event("response.content_part.added", **ids, part={**part, "text": ""})
        words = part["text"].split(" ")
        for i, word in enumerate(words):
            yield event("response.output_text.delta", **ids, delta=word if i == 0 else " " + word, logprobs=[])
        yield event("response.output_text.done", **ids, text=part["text"], logprobs=[])
        yield event("response.content_part.done", **ids, part=part)
        yield event("response.output_item.done", output_index=index, item=item)
    yield event("response.completed", response=final)


def encode_event(payload: dict[str, Any]) -> bytes:
    """One Responses SSE event: `event: <type>` and its `data:` line."""
    kind: str = payload["type"]
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"
