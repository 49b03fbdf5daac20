"""The Anthropic Messages API (`POST /v1/messages`, `/messages`) served from any configured model.

A `Dialect` (`api/dialects.py`): the Anthropic request becomes an OpenAI chat request for the one pipeline (so
authentication, the customer, budgets, reservations, rate limits and spend logs are the chat route's), and the
pipeline's OpenAI answer becomes Anthropic's message, its stream Anthropic's event sequence (`anthropic_stream.py`),
its errors Anthropic's error envelope with the status kept. The translation follows LiteLLM 1.110.2's adapter
(`litellm/llms/anthropic/messages/adapters/transformation.py`) where it is on the wire.

What is translated (request → chat): `model`, `max_tokens` (required), `system` (string or text blocks), `messages`
(text, image base64/url, document base64 PDF / text, `tool_use`, `tool_result` string or blocks), `tools`,
`tool_choice` (auto/any/tool/none, `disable_parallel_tool_use`), `stop_sequences`, `temperature`, `top_p`,
`stream`, `metadata` (the customer: `metadata.user_id`, as LiteLLM reads it, also when `metadata` is a JSON string;
a `user_id` that is itself a JSON string, as Claude Code sends, is the id verbatim, as in LiteLLM), `cache_control`
on blocks and tools (kept on the OpenAI parts, LiteLLM's convention). Fields this module does not know pass through
untouched (house rule 12).
Dropped, as LiteLLM drops them for an OpenAI-shaped upstream: `top_k`, `thinking`, `service_tier`,
`context_management`, `is_error` of a tool result, `citations` of a text block, and thinking blocks in the history.
Refused with a 400 naming the field: Anthropic's server tools (`web_search_*`, `bash_*`, ...), `mcp_servers`,
`container`, and content blocks with no chat equivalent (`server_tool_use`, `search_result`, Files API sources, ...).
Answer: `stop_sequence` is always null (a chat answer does not say which sequence stopped it).

Invariant: the chat body holds every input the Anthropic body had that the chat API can carry; an input that would
change the answer and cannot be carried is refused, never silently dropped (the dropped ones above are hints).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

import orjson

from haimaker.api.anthropic_stream import translate_stream
from haimaker.api.anthropic_wire import (
    anthropic_usage,
    error_detail,
    message_id_of,
    stop_reason_of,
    tool_input,
)
from haimaker.api.dialects import Translated
from haimaker.errors import BadRequestError, ProxyError
from haimaker.pipeline import JsonResult, StreamResult
from haimaker.providers.base import Route

# Anthropic fields the chat API has no place for; they only tune the answer, so they are dropped (as LiteLLM does).
_DROPPED: Final = frozenset({"top_k", "thinking", "service_tier", "context_management"})
# Anthropic fields that would change what the model can do; without a chat equivalent they are refused.
_REFUSED: Final = frozenset({"mcp_servers", "container"})
# Fields this module translates (everything else passes through as it came).
_TRANSLATED: Final = frozenset(
    {"model", "max_tokens", "system", "messages", "tools", "tool_choice", "stop_sequences", "stream", "metadata"}
)


class AnthropicMessages:
    """The `Dialect` of `/v1/messages`: Anthropic's Messages API over the chat pipeline."""

    call_type = "anthropic_messages"

    def __init__(self, caches_prompts: Callable[[str], bool]) -> None:
        # Whether every deployment of a model group reads `cache_control` (Anthropic's prompt caching); others are
        # not sent it (OpenAI refuses fields it does not know on content parts).
        self._caches_prompts = caches_prompts

    def translate_request(self, raw: bytes, headers: Mapping[str, str]) -> Translated:
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise BadRequestError(f"Invalid JSON in request body: {exc.msg}.") from None
        if not isinstance(body, dict):
            raise BadRequestError("Request body must be a JSON object.")
        chat = chat_request(body)
        if b"cache_control" in raw and not self._caches_prompts(chat["model"]):
            _drop_cache_control(chat)
        return Translated(Route.CHAT, orjson.dumps(chat))

    def translate_json(self, result: JsonResult, request: object) -> JsonResult:
        answer = orjson.loads(result.body)  # the pipeline only returns answers it has read as a JSON object
        return JsonResult(result.status, orjson.dumps(message_of(answer)), result.headers)

    def translate_stream(self, result: StreamResult, request: object) -> StreamResult:
        return translate_stream(result)

    def error_body(self, error: ProxyError) -> bytes:
        detail = error_detail(error.status_code, error.message, error.error_type)
        return orjson.dumps({"type": "error", "error": detail})


# ---- request: Anthropic → chat ----------------------------------------------------------------------------------


def chat_request(body: dict[str, Any]) -> dict[str, Any]:
    """The OpenAI chat body for an Anthropic Messages body.

    Raises:
        BadRequestError: a required field is missing or malformed, or the request uses something with no chat
            equivalent (the message names the field as Anthropic's API does: `messages.0.content.1`).
    """
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _invalid("model", "Field required" if model is None else "must be a non-empty string")
    max_tokens = body.get("max_tokens")
    if max_tokens is None:
        raise _invalid("max_tokens", "Field required")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise _invalid("max_tokens", "must be an integer of at least 1")
    for name in _REFUSED:
        if body.get(name) is not None:
            raise _invalid(name, "is not supported on this proxy's /v1/messages (no chat equivalent)")
    chat: dict[str, Any] = {key: value for key, value in body.items() if key not in _TRANSLATED and key not in _DROPPED}
    chat["model"] = model
    chat["max_tokens"] = max_tokens
    chat["messages"] = _system_messages(body.get("system")) + _messages(body.get("messages"))
    tools = _tools(body.get("tools"))
    if tools:
        chat["tools"] = tools
    _set_tool_choice(chat, body.get("tool_choice"), has_tools=bool(tools))
    stop = body.get("stop_sequences")
    if stop is not None:
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise _invalid("stop_sequences", "must be an array of strings")
        if stop:
            chat["stop"] = stop
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _invalid("stream", "must be a boolean")
    if stream:
        chat["stream"] = True
        # The usage chunk feeds message_delta's usage, so it is asked for (and kept by the pipeline's tap).
        chat["stream_options"] = {"include_usage": True}
    _set_metadata(chat, body)
    return chat


def _invalid(param: str, what: str) -> BadRequestError:
    return BadRequestError(f"{param}: {what}", param=param)


def _set_metadata(chat: dict[str, Any], body: Mapping[str, Any]) -> None:
    """`metadata` kept for the customer resolver (a proxy-only field: never sent upstream); its `user_id` also
    becomes the upstream's `user`, as in LiteLLM, unless a `user` or `litellm_metadata.user` of higher precedence
    names the customer (then the upstream and the ledger would disagree)."""
    metadata = body.get("metadata")
    if isinstance(metadata, str):
        # LiteLLM's `_as_dict`: a metadata object sent as a JSON string still names the customer.
        try:
            metadata = orjson.loads(metadata)
        except orjson.JSONDecodeError:
            metadata = None
    if not isinstance(metadata, dict):
        return
    chat["metadata"] = metadata
    user_id = metadata.get("user_id")
    litellm_metadata = body.get("litellm_metadata")
    named_above = "user" in body or (isinstance(litellm_metadata, dict) and litellm_metadata.get("user"))
    if isinstance(user_id, str) and user_id.strip() and not named_above:
        chat["user"] = user_id.strip()


def _system_messages(system: object) -> list[dict[str, Any]]:
    if system is None:
        return []
    if isinstance(system, str):
        return [{"role": "system", "content": system}] if system else []
    if not isinstance(system, list):
        raise _invalid("system", "must be a string or an array of text blocks")
    parts: list[dict[str, Any]] = []
    for i, block in enumerate(system):
        if not isinstance(block, dict) or block.get("type") != "text" or not isinstance(block.get("text"), str):
            raise _invalid(f"system.{i}", "must be a text block")
        parts.append(_with_cache_control({"type": "text", "text": block["text"]}, block))
    return [{"role": "system", "content": _text_content(parts)}] if parts else []


def _messages(messages: object) -> list[dict[str, Any]]:
    if messages is None:
        raise _invalid("messages", "Field required")
    if not isinstance(messages, list) or not messages:
        raise _invalid("messages", "must be a non-empty array")
    out: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        where = f"messages.{i}"
        if not isinstance(message, dict):
            raise _invalid(where, "must be an object")
        role = message.get("role")
        content = message.get("content")
        if role not in ("user", "assistant"):
            raise _invalid(f"{where}.role", "must be 'user' or 'assistant'")
        if isinstance(content, str):
            out.append({"role": role, "content": content})
        elif isinstance(content, list):
            if role == "user":
                out.extend(_user_turn(content, where))
            else:
                out.append(_assistant_turn(content, where))
        else:
            raise _invalid(f"{where}.content", "must be a string or an array of content blocks")
    return out


def _user_turn(blocks: list[Any], where: str) -> list[dict[str, Any]]:
    """A user turn: its tool results first (chat wants them right after the assistant's tool calls), then one user
    message with the rest; images a tool returned go there too (chat allows images in user messages only)."""
    tool_messages: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    tool_images: list[dict[str, Any]] = []
    for j, block in enumerate(blocks):
        at = f"{where}.content.{j}"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "tool_result":
            message, images = _tool_message(block, at)
            tool_messages.append(message)
            tool_images.extend(images)
        elif kind in ("thinking", "redacted_thinking"):
            continue
        else:
            parts.append(_part(block, at))
    rest = tool_images + parts
    return tool_messages + ([{"role": "user", "content": _text_content(rest)}] if rest else [])


def _assistant_turn(blocks: list[Any], where: str) -> dict[str, Any]:
    texts: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    for j, block in enumerate(blocks):
        at = f"{where}.content.{j}"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text" and isinstance(block.get("text"), str):
            texts.append(_with_cache_control({"type": "text", "text": block["text"]}, block))
        elif kind == "tool_use":
            calls.append(_tool_call(block, at))
        elif kind in ("thinking", "redacted_thinking"):
            continue  # chat has no place for them; the model answers without its earlier reasoning
        else:
            raise _invalid(at, f"block type {kind!r} is not supported in an assistant turn on this route")
    message: dict[str, Any] = {"role": "assistant", "content": _text_content(texts) if texts else None}
    if calls:
        message["tool_calls"] = calls
    elif message["content"] is None:
        message["content"] = ""
    return message


def _text_content(parts: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    """One text part as a plain string (what every chat server reads); several, or one carrying `cache_control`
    (which only a part can hold), as parts."""
    if len(parts) == 1 and parts[0]["type"] == "text" and "cache_control" not in parts[0]:
        return str(parts[0]["text"])
    return parts


def _tool_call(block: dict[str, Any], at: str) -> dict[str, Any]:
    call_id, name, arguments = block.get("id"), block.get("name"), block.get("input", {})
    if not isinstance(call_id, str) or not call_id:
        raise _invalid(f"{at}.id", "Field required")
    if not isinstance(name, str) or not name:
        raise _invalid(f"{at}.name", "Field required")
    if not isinstance(arguments, dict):
        raise _invalid(f"{at}.input", "must be an object")
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": orjson.dumps(arguments).decode()},
    }


def _tool_message(block: dict[str, Any], at: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A `tool_result` as a tool message, and the images it held (moved to the user message that follows)."""
    call_id = block.get("tool_use_id")
    if not isinstance(call_id, str) or not call_id:
        raise _invalid(f"{at}.tool_use_id", "Field required")
    content = block.get("content", "")
    texts: list[dict[str, Any]] = []
    images: list[dict[str, Any]] = []
    if isinstance(content, str):
        texts.append({"type": "text", "text": content})
    elif isinstance(content, list):
        for k, inner in enumerate(content):
            part = _part(inner, f"{at}.content.{k}")
            (texts if part["type"] == "text" else images).append(part)
    else:
        raise _invalid(f"{at}.content", "must be a string or an array of content blocks")
    if "cache_control" in block and texts:
        texts[-1] = _with_cache_control(texts[-1], block)
    body: str | list[dict[str, Any]] = _text_content(texts) if texts else ""
    return {"role": "tool", "tool_call_id": call_id, "content": body}, images


def _part(block: object, at: str) -> dict[str, Any]:
    """One user content block as an OpenAI content part."""
    if not isinstance(block, dict):
        raise _invalid(at, "must be a content block object")
    kind = block.get("type")
    if kind == "text":
        text = block.get("text")
        if not isinstance(text, str):
            raise _invalid(f"{at}.text", "Field required")
        return _with_cache_control({"type": "text", "text": text}, block)
    if kind == "image":
        return _with_cache_control({"type": "image_url", "image_url": {"url": _image_url(block, at)}}, block)
    if kind == "document":
        return _with_cache_control(_document(block, at), block)
    if kind == "tool_use":
        raise _invalid(at, "a tool_use block belongs in an assistant turn")
    raise _invalid(at, f"block type {kind!r} is not supported on this route")


def _source(block: dict[str, Any], at: str) -> dict[str, Any]:
    source = block.get("source")
    if not isinstance(source, dict):
        raise _invalid(f"{at}.source", "Field required")
    return source


def _image_url(block: dict[str, Any], at: str) -> str:
    source = _source(block, at)
    kind = source.get("type")
    if kind == "base64":
        media_type, data = source.get("media_type"), source.get("data")
        if not isinstance(media_type, str) or not isinstance(data, str) or not data:
            raise _invalid(f"{at}.source", "a base64 source needs media_type and data")
        return f"data:{media_type};base64,{data}"
    if kind == "url" and isinstance(source.get("url"), str) and source["url"]:
        return str(source["url"])
    raise _invalid(f"{at}.source.type", f"image source {kind!r} is not supported on this route (base64 or url)")


def _document(block: dict[str, Any], at: str) -> dict[str, Any]:
    source = _source(block, at)
    kind = source.get("type")
    data = source.get("data")
    if kind == "base64" and isinstance(data, str) and data:
        media_type = source.get("media_type") or "application/pdf"
        title = block.get("title")
        filename = title if isinstance(title, str) and title else "document.pdf"
        return {"type": "file", "file": {"filename": filename, "file_data": f"data:{media_type};base64,{data}"}}
    if kind == "text" and isinstance(data, str):
        return {"type": "text", "text": data}
    raise _invalid(f"{at}.source.type", f"document source {kind!r} is not supported on this route (base64 or text)")


def _with_cache_control(part: dict[str, Any], block: Mapping[str, Any]) -> dict[str, Any]:
    control = block.get("cache_control")
    if control is not None:
        part["cache_control"] = control
    return part


def _tools(tools: object) -> list[dict[str, Any]]:
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise _invalid("tools", "must be an array")
    out: list[dict[str, Any]] = []
    for i, tool in enumerate(tools):
        at = f"tools.{i}"
        if not isinstance(tool, dict):
            raise _invalid(at, "must be an object")
        kind = tool.get("type")
        if kind not in (None, "custom"):
            raise _invalid(f"{at}.type", f"server tool {kind!r} is not supported on this route (custom tools only)")
        name, schema = tool.get("name"), tool.get("input_schema")
        if not isinstance(name, str) or not name:
            raise _invalid(f"{at}.name", "Field required")
        if not isinstance(schema, dict):
            raise _invalid(f"{at}.input_schema", "Field required")
        function: dict[str, Any] = {"name": name, "parameters": schema}
        description = tool.get("description")
        if isinstance(description, str):
            function["description"] = description
        if isinstance(tool.get("strict"), bool):
            function["strict"] = tool["strict"]
        out.append(_with_cache_control({"type": "function", "function": function}, tool))
    return out


def _set_tool_choice(chat: dict[str, Any], choice: object, *, has_tools: bool) -> None:
    if choice is None:
        return
    if not isinstance(choice, dict):
        raise _invalid("tool_choice", "must be an object")
    kind = choice.get("type")
    if kind == "auto":
        chat["tool_choice"] = "auto"
    elif kind == "any":
        chat["tool_choice"] = "required"
    elif kind == "none":
        chat["tool_choice"] = "none"
    elif kind == "tool":
        name = choice.get("name")
        if not isinstance(name, str) or not name:
            raise _invalid("tool_choice.name", "Field required")
        chat["tool_choice"] = {"type": "function", "function": {"name": name}}
    else:
        raise _invalid("tool_choice.type", "must be one of 'auto', 'any', 'tool', 'none'")
    if choice.get("disable_parallel_tool_use") is True and has_tools:
        chat["parallel_tool_calls"] = False


# ---- answer: chat → Anthropic -----------------------------------------------------------------------------------


def message_of(answer: Mapping[str, Any]) -> dict[str, Any]:
    """Anthropic's message for a `chat.completion` (its first choice: the Messages API has no `n`)."""
    choices = answer.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    raw_message = choice.get("message")
    message: Mapping[str, Any] = raw_message if isinstance(raw_message, dict) else {}
    content: list[dict[str, Any]] = []
    text = _answer_text(message.get("content")) or _answer_text(message.get("refusal"))
    if text:
        content.append({"type": "text", "text": text})
    for call in message.get("tool_calls") or ():
        block = tool_use_block(call)
        if block is not None:
            content.append(block)
    usage = answer.get("usage")
    return {
        "id": message_id_of(answer.get("id")),
        "type": "message",
        "role": "assistant",
        "model": answer.get("model") or "unknown",
        "content": content,
        "stop_reason": stop_reason_of(choice.get("finish_reason")),
        "stop_sequence": None,
        "usage": anthropic_usage(usage if isinstance(usage, dict) else None),
    }


def _answer_text(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):  # some OpenAI-compatible servers answer with content parts
        return "".join(p["text"] for p in value if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def tool_use_block(call: object) -> dict[str, Any] | None:
    """A `tool_use` block for one OpenAI tool call (arguments that are not a JSON object become `{}`)."""
    if not isinstance(call, dict) or not isinstance(call.get("function"), dict):
        return None
    function = call["function"]
    return {
        "type": "tool_use",
        "id": call.get("id") or "",
        "name": function.get("name") or "",
        "input": tool_input(function.get("arguments")),
    }


def _drop_cache_control(chat: dict[str, Any]) -> None:
    """Remove `cache_control` from every content part and tool of a translated request (in place; `chat_request`
    builds every part and tool as a dict)."""
    for message in chat.get("messages", ()):
        content = message.get("content")
        if isinstance(content, list):
            for part in content:
                part.pop("cache_control", None)
    for tool in chat.get("tools", ()):
        tool.pop("cache_control", None)
