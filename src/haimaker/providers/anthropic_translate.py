"""OpenAI chat ↔ Anthropic Messages: the pure translation of a request and of a whole answer (no I/O).

Request (`messages_request`): system/developer messages become `system` text blocks; consecutive user and tool
messages merge into one user turn (tool results first, as Anthropic requires them right after the assistant's
`tool_use`), consecutive assistant messages into one assistant turn; a conversation that opens with the assistant
gets a "." user turn before it (Anthropic's first turn is the user's, LiteLLM does the same). Content parts keep their
`cache_control` (prompt caching). Fields are translated from an allowlist; OpenAI fields Anthropic has no equivalent
for are refused with a 400 naming them (LiteLLM's default, `drop_params: false`), or dropped when the deployment sets
`drop_params: true`; any other field (`top_k`, `thinking`, `service_tier`...) is Anthropic's own and passed on.
`n` > 1 is refused: Anthropic answers one choice, and n calls would bill n prompts behind the caller's back.

Answer (`chat_completion`): text blocks → `content`, `tool_use` → `tool_calls` (arguments as a JSON string),
`thinking` → `reasoning_content` (LiteLLM's field), `stop_reason` → `finish_reason`; usage in OpenAI's shape with
`prompt_tokens` = input + cache reads + cache writes (Anthropic's `input_tokens` excludes both).
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import Any, Final

import orjson

from haimaker.errors import BadRequestError

DEFAULT_MAX_TOKENS: Final = 4096
# `response_format` is served as LiteLLM does on models without native structured output: a forced tool whose
# input is the answer, turned back into text content in the answer.
JSON_TOOL_NAME: Final = "json_tool_call"

# OpenAI chat fields with no Anthropic equivalent (LiteLLM's UnsupportedParamsError unless drop_params).
_UNSUPPORTED: Final = frozenset(
    {
        "frequency_penalty",
        "presence_penalty",
        "logit_bias",
        "logprobs",
        "top_logprobs",
        "seed",
        "store",
        "modalities",
        "audio",
        "prediction",
        "functions",
        "function_call",
        "reasoning_effort",
        "web_search_options",
        "prompt_cache_key",
        "safety_identifier",
        "verbosity",
    }
)
# Fields this module translates (or consumes), never passed on as they are.
_TRANSLATED: Final = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "max_completion_tokens",
        "stop",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "user",
        "n",
        "stream",
        "stream_options",
        "response_format",
    }
)
_FINISH_REASONS: Final[Mapping[str, str]] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
_DATA_URL: Final = re.compile(r"data:(?P<media>[\w.+-]+/[\w.+-]+)(?:;[^,]*)?;base64,(?P<data>.*)", re.DOTALL)
# Anthropic refuses a metadata.user_id that looks like an email or a phone number (LiteLLM's `_valid_user_id`).
_EMAIL: Final = re.compile(r"^[a-zA-Z0-9._%+-]+@[a-zA-Z0-9.-]+\.[a-zA-Z]{2,}$")
_PHONE: Final = re.compile(r"^\+?[\d\s\(\)-]{7,}$")


def _invalid(param: str, what: str) -> BadRequestError:
    return BadRequestError(f"anthropic: {param}: {what}", param=param)


# ---- request: OpenAI chat → Anthropic Messages -------------------------------------------------------------------


def messages_request(
    body: Mapping[str, Any], model: str, *, default_max_tokens: int | None, drop_params: bool = False
) -> dict[str, Any]:
    """The Messages API body for an OpenAI chat body sent to `model`.

    `default_max_tokens` (the model's max output) is used when the request names none (Anthropic requires it).

    Raises:
        BadRequestError: a malformed message, or a field Anthropic cannot honour (unless `drop_params`).
    """
    unsupported = sorted(name for name in body if name in _UNSUPPORTED and body[name] is not None)
    if unsupported and not drop_params:
        raise BadRequestError(
            f"anthropic does not support parameters: {unsupported}, for model={model}. To drop these, set "
            "`drop_params: true` in the deployment's litellm_params.",
            param=unsupported[0],
        )
    n = body.get("n")
    if n is not None and n != 1:
        raise _invalid("n", "Anthropic returns one choice per request; n must be 1")
    out: dict[str, Any] = {
        key: value
        for key, value in body.items()
        if key not in _TRANSLATED and key not in _UNSUPPORTED and value is not None
    }
    out["model"] = model
    out["max_tokens"] = _max_tokens(body, default_max_tokens)
    system, messages = _conversation(body.get("messages"))
    if system:
        out["system"] = system
    out["messages"] = messages
    tools = _tools(body.get("tools"))
    tool_choice = _tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"))
    response_format = body.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") in ("json_object", "json_schema"):
        tools.append({"name": JSON_TOOL_NAME, "input_schema": _format_schema(response_format)})
        tool_choice = {"type": "tool", "name": JSON_TOOL_NAME}
    elif response_format is not None and not (
        isinstance(response_format, dict) and response_format.get("type") == "text"
    ):
        raise _invalid("response_format", "must be an object of type text, json_object or json_schema")
    if tools:
        out["tools"] = tools
    if tool_choice is not None:
        out["tool_choice"] = tool_choice
    stop = _stop_sequences(body.get("stop"))
    if stop:
        out["stop_sequences"] = stop
    user = body.get("user")
    if isinstance(user, str) and user and not _EMAIL.match(user) and not _PHONE.match(user):
        out["metadata"] = {"user_id": user}
    if body.get("stream") is True:
        out["stream"] = True
    return out


def wants_json_text(body: Mapping[str, Any]) -> bool:
    """The request asked for JSON through `response_format` (the answer's json tool call becomes its content)."""
    response_format = body.get("response_format")
    return isinstance(response_format, dict) and response_format.get("type") in ("json_object", "json_schema")


def _max_tokens(body: Mapping[str, Any], default: int | None) -> int:
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 1:
            raise _invalid(name, "must be a positive integer")
        return value if isinstance(value, int) else max(1, round(value))
    return default or DEFAULT_MAX_TOKENS


def _stop_sequences(stop: object) -> list[str]:
    if stop is None:
        return []
    values = [stop] if isinstance(stop, str) else stop
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise _invalid("stop", "must be a string or an array of strings")
    # Anthropic refuses whitespace-only stop sequences (LiteLLM drops them).
    return [v for v in values if v.strip()]


def _format_schema(response_format: Mapping[str, Any]) -> dict[str, Any]:
    spec = response_format.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, dict) else None
    return schema if isinstance(schema, dict) else {"type": "object"}


def _conversation(messages: object) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """`system` blocks and alternating turns for OpenAI `messages`."""
    if not isinstance(messages, list) or not messages:
        raise _invalid("messages", "must be a non-empty array")
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        at = f"messages.{i}"
        if not isinstance(message, dict):
            raise _invalid(at, "must be an object")
        role = message.get("role")
        if role in ("system", "developer"):
            system.extend(_text_blocks(message.get("content"), f"{at}.content"))
            continue
        if role == "user":
            _append(turns, "user", _user_blocks(message.get("content"), f"{at}.content"))
        elif role == "tool":
            _append(turns, "user", [_tool_result(message, at)])
        elif role == "assistant":
            _append(turns, "assistant", _assistant_blocks(message, at))
        else:
            raise _invalid(f"{at}.role", f"role {role!r} is not supported")
    if not turns:
        raise _invalid("messages", "needs at least one user or assistant message besides the system prompt")
    if turns[0]["role"] != "user":
        turns.insert(0, {"role": "user", "content": [{"type": "text", "text": "."}]})
    return system, turns


def _append(turns: list[dict[str, Any]], role: str, blocks: list[dict[str, Any]]) -> None:
    if not blocks:
        return
    if turns and turns[-1]["role"] == role:
        turns[-1]["content"].extend(blocks)
    else:
        turns.append({"role": role, "content": blocks})


def _text_blocks(content: object, at: str) -> list[dict[str, Any]]:
    """Text-only content (system prompts, tool results) as text blocks; empty text is dropped (Anthropic refuses it)."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise _invalid(at, "must be a string or an array of text parts")
    blocks = []
    for j, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
            raise _invalid(f"{at}.{j}", "must be a text part")
        if part["text"]:
            blocks.append(_with_cache_control({"type": "text", "text": part["text"]}, part))
    return blocks


def _user_blocks(content: object, at: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise _invalid(at, "must be a string or an array of content parts")
    blocks = []
    for j, part in enumerate(content):
        block = _user_block(part, f"{at}.{j}")
        if block is not None:
            blocks.append(block)
    return blocks


def _user_block(part: object, at: str) -> dict[str, Any] | None:
    if not isinstance(part, dict):
        raise _invalid(at, "must be a content part object")
    kind = part.get("type")
    if kind == "text":
        text = part.get("text")
        if not isinstance(text, str):
            raise _invalid(f"{at}.text", "must be a string")
        return _with_cache_control({"type": "text", "text": text}, part) if text else None
    if kind == "image_url":
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, dict) else image
        if not isinstance(url, str) or not url:
            raise _invalid(f"{at}.image_url.url", "must be a URL or a data URL")
        return _with_cache_control(_media_block(url, f"{at}.image_url.url"), part)
    if kind == "file":
        file = part.get("file")
        data = file.get("file_data") if isinstance(file, dict) else None
        if not isinstance(data, str):
            raise _invalid(f"{at}.file.file_data", "must be a base64 data URL (file ids are not supported)")
        return _with_cache_control(_media_block(data, f"{at}.file.file_data"), part)
    raise _invalid(f"{at}.type", f"content part {kind!r} is not supported")


def _media_block(url: str, at: str) -> dict[str, Any]:
    """An image (or PDF document) block: a data URL becomes a base64 source, an http(s) URL a url source."""
    if url.startswith("data:"):
        match = _DATA_URL.fullmatch(url)
        if match is None:
            raise _invalid(at, "a data URL must be base64 (data:<media type>;base64,<data>)")
        media = match["media"]
        kind = "document" if media == "application/pdf" else "image"
        return {"type": kind, "source": {"type": "base64", "media_type": media, "data": match["data"]}}
    if url.startswith(("https://", "http://")):
        kind = "document" if url.lower().split("?", 1)[0].endswith(".pdf") else "image"
        return {"type": kind, "source": {"type": "url", "url": url}}
    raise _invalid(at, "must be an http(s) URL or a base64 data URL")


def _assistant_blocks(message: Mapping[str, Any], at: str) -> list[dict[str, Any]]:
    content = message.get("content")
    blocks = [] if content is None else _text_blocks(content, f"{at}.content")
    calls = message.get("tool_calls")
    if calls is not None and not isinstance(calls, list):
        raise _invalid(f"{at}.tool_calls", "must be an array")
    for j, call in enumerate(calls or ()):
        blocks.append(_tool_use(call, f"{at}.tool_calls.{j}"))
    return blocks


def _tool_use(call: object, at: str) -> dict[str, Any]:
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(call, dict) or not isinstance(function, dict):
        raise _invalid(at, "must be a function tool call")
    call_id, name, arguments = call.get("id"), function.get("name"), function.get("arguments")
    if not isinstance(call_id, str) or not call_id or not isinstance(name, str) or not name:
        raise _invalid(at, "needs an id and a function name")
    try:
        tool_input = orjson.loads(arguments) if isinstance(arguments, str) and arguments.strip() else {}
    except orjson.JSONDecodeError:
        raise _invalid(f"{at}.function.arguments", "must be a JSON object") from None
    if not isinstance(tool_input, dict):
        raise _invalid(f"{at}.function.arguments", "must be a JSON object")
    return _with_cache_control({"type": "tool_use", "id": call_id, "name": name, "input": tool_input}, call)


def _tool_result(message: Mapping[str, Any], at: str) -> dict[str, Any]:
    call_id = message.get("tool_call_id")
    if not isinstance(call_id, str) or not call_id:
        raise _invalid(f"{at}.tool_call_id", "is required on a tool message")
    content = message.get("content")
    result: dict[str, Any] = {"type": "tool_result", "tool_use_id": call_id}
    if isinstance(content, str):
        result["content"] = content
    elif content is not None:
        result["content"] = _user_blocks(content, f"{at}.content")
    return _with_cache_control(result, message)


def _tools(tools: object) -> list[dict[str, Any]]:
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise _invalid("tools", "must be an array")
    out = []
    for i, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(function, dict):
            raise _invalid(f"tools.{i}", "only function tools are supported")
        name = function.get("name")
        if not isinstance(name, str) or not name:
            raise _invalid(f"tools.{i}.function.name", "is required")
        parameters = function.get("parameters")
        converted: dict[str, Any] = {
            "name": name,
            "input_schema": parameters if isinstance(parameters, dict) else {"type": "object", "properties": {}},
        }
        if isinstance(function.get("description"), str):
            converted["description"] = function["description"]
        out.append(_with_cache_control(converted, tool))
    return out


def _tool_choice(choice: object, parallel: object) -> dict[str, Any] | None:
    """LiteLLM's `_map_tool_choice`: auto/required/none/named, `parallel_tool_calls` as its inverse flag."""
    mapped: dict[str, Any] | None = None
    if choice in ("auto", "required", "none"):
        mapped = {"type": {"auto": "auto", "required": "any", "none": "none"}[str(choice)]}
    elif isinstance(choice, dict):
        function = choice.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        if isinstance(name, str) and name:
            mapped = {"type": "tool", "name": name}
        elif choice.get("type") in ("auto", "required", "any", "none"):
            mapped = {"type": "any" if choice["type"] == "required" else choice["type"]}
        else:
            raise _invalid("tool_choice", "must be auto, required, none or a named function")
    elif choice is not None:
        raise _invalid("tool_choice", "must be auto, required, none or a named function")
    if isinstance(parallel, bool) and choice != "none":
        mapped = mapped or {"type": "auto"}
        mapped["disable_parallel_tool_use"] = not parallel
    return mapped


def _with_cache_control(block: dict[str, Any], source: Mapping[str, Any]) -> dict[str, Any]:
    control = source.get("cache_control")
    if isinstance(control, dict):
        block["cache_control"] = control
    return block


# ---- answer: Anthropic Messages → OpenAI chat ---------------------------------------------------------------------


def finish_reason_of(stop_reason: object) -> str:
    """OpenAI's `finish_reason` for Anthropic's `stop_reason` (anything unknown reads as a normal stop)."""
    return _FINISH_REASONS.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"


def openai_usage(usage: Mapping[str, Any]) -> dict[str, Any]:
    """OpenAI's usage for Anthropic's: cache reads and writes are part of `prompt_tokens`."""
    input_tokens = _count(usage.get("input_tokens"))
    cache_read = _count(usage.get("cache_read_input_tokens"))
    cache_write = _count(usage.get("cache_creation_input_tokens"))
    output_tokens = _count(usage.get("output_tokens"))
    prompt = input_tokens + cache_read + cache_write
    return {
        "prompt_tokens": prompt,
        "completion_tokens": output_tokens,
        "total_tokens": prompt + output_tokens,
        "prompt_tokens_details": {"cached_tokens": cache_read},
        "cache_creation_input_tokens": cache_write,
        "cache_read_input_tokens": cache_read,
    }


def _count(value: object) -> int:
    # A malformed count reads as 0 here; the pipeline's usage checks bound the counts that remain.
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def chat_completion(answer: Mapping[str, Any], model: str, *, json_text: bool = False) -> dict[str, Any]:
    """The `chat.completion` for a Messages API answer; `json_text`: the json tool's input is the content."""
    texts: list[str] = []
    reasoning: list[str] = []
    calls: list[dict[str, Any]] = []
    content = answer.get("content")
    for block in content if isinstance(content, list) else ():
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif kind == "thinking" and isinstance(block.get("thinking"), str):
            reasoning.append(block["thinking"])
        elif kind == "tool_use":
            arguments = orjson.dumps(block.get("input") if block.get("input") is not None else {}).decode()
            if json_text and block.get("name") == JSON_TOOL_NAME:
                texts.append(arguments)
                continue
            calls.append(
                {
                    "id": str(block.get("id") or ""),
                    "type": "function",
                    "function": {"name": str(block.get("name") or ""), "arguments": arguments},
                }
            )
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts or not calls else None}
    if reasoning:
        message["reasoning_content"] = "".join(reasoning)
    if calls:
        message["tool_calls"] = calls
    finish = finish_reason_of(answer.get("stop_reason"))
    if json_text and finish == "tool_calls" and not calls:
        finish = "stop"
    usage = answer.get("usage")
    return {
        "id": chat_id_of(answer.get("id")),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": str(answer.get("model") or model),
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
        "usage": openai_usage(usage if isinstance(usage, dict) else {}),
    }


def chat_id_of(message_id: object) -> str:
    """A `chatcmpl-` id derived from Anthropic's `msg_` id, so the two match in logs."""
    if not isinstance(message_id, str) or not message_id:
        return "chatcmpl-unknown"
    return "chatcmpl-" + message_id.removeprefix("msg_")
