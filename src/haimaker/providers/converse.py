"""Bedrock's Converse API spoken in OpenAI's chat format: requests one way, answers and stream events the other.

Request (`converse_request`): `system`/`developer` messages become `system` blocks; user and assistant turns
become `messages` of content blocks (text, images from data URLs as raw base64 bytes, `cache_control` as a
`cachePoint` after its block); assistant `tool_calls` become `toolUse` blocks and `tool` messages `toolResult`
blocks in a user turn; consecutive turns of one role are merged (Converse requires alternation). `tools` become
`toolConfig.tools[].toolSpec`, `tool_choice` `toolConfig.toolChoice`; `max_tokens`/`max_completion_tokens`,
`temperature`, `top_p` and `stop` become `inferenceConfig`.

Refused with a 400, as LiteLLM refuses them without `drop_params` (`AmazonConverseConfig`): `n` > 1, logprobs,
`tool_choice: "none"`, `response_format` other than text, image URLs that are not data URLs (fetching a client's
URL from the gateway is not something we do), audio and file parts, non-function tools. Other OpenAI fields that
Converse has no place for (`user`, `metadata`, `seed`, penalties...) are not sent.

Answer (`chat_completion`, `StreamTranslator`): text blocks become `content`, `toolUse` blocks `tool_calls`,
`reasoningContent` LiteLLM's `reasoning_content`; `stopReason` maps as LiteLLM's `map_finish_reason`; `usage`
maps as LiteLLM's `transform_usage`: `prompt_tokens` = `inputTokens` + `cacheReadInputTokens` +
`cacheWriteInputTokens`, cached reads in `prompt_tokens_details.cached_tokens`, writes in
`cache_creation_input_tokens` (so each is priced at its own rate).
"""

from __future__ import annotations

import base64
import binascii
import re
import time
import uuid
from collections.abc import Mapping
from typing import Any, Final

import orjson

from haimaker.errors import BadGatewayError, BadRequestError
from haimaker.providers.eventstream import EventMessage
from haimaker.providers.redaction import Redactor

# Bedrock's stopReason values and LiteLLM's mapping of them (litellm_core_utils/core_helpers.py).
_FINISH_REASONS: Final = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
    "model_context_window_exceeded": "length",
}
_IMAGE_FORMATS: Final = {"png": "png", "jpeg": "jpeg", "jpg": "jpeg", "gif": "gif", "webp": "webp"}
_DATA_URL: Final = re.compile(r"data:image/(?P<kind>[a-zA-Z0-9.+-]+);base64,(?P<data>.*)", re.DOTALL)


def _refuse(message: str, param: str | None = None) -> BadRequestError:
    return BadRequestError(message, param=param)


# ---- request ------------------------------------------------------------------------------------------------


def converse_request(body: Mapping[str, Any], *, drop_params: bool = False) -> dict[str, Any]:
    """The Converse request body for an OpenAI chat request. Raises `BadRequestError` for what Converse cannot do;
    with `drop_params` (LiteLLM's), the request-level fields it cannot honour (`n`, logprobs, `response_format`) are
    left out instead."""
    n = body.get("n")
    if n is not None and n != 1 and not drop_params:
        raise _refuse("bedrock/ deployments answer one choice: Converse has no `n` (send n=1 or omit it).", "n")
    if (body.get("logprobs") or body.get("top_logprobs") is not None) and not drop_params:
        raise _refuse("bedrock/ deployments do not return logprobs.", "logprobs")
    response_format = body.get("response_format")
    if isinstance(response_format, Mapping) and response_format.get("type") not in (None, "text") and not drop_params:
        raise _refuse("bedrock/ deployments do not support `response_format` (only text).", "response_format")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _refuse("`messages` must be a non-empty list.", "messages")
    system, turns = _turns(messages)
    request: dict[str, Any] = {"messages": turns}
    if system:
        request["system"] = system
    inference = _inference_config(body)
    if inference:
        request["inferenceConfig"] = inference
    tool_config = _tool_config(body.get("tools"), body.get("tool_choice"))
    if tool_config:
        request["toolConfig"] = tool_config
    return request


def _inference_config(body: Mapping[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = {}
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None:
        config["maxTokens"] = max_tokens
    if body.get("temperature") is not None:
        config["temperature"] = body["temperature"]
    if body.get("top_p") is not None:
        config["topP"] = body["top_p"]
    stop = body.get("stop")
    if isinstance(stop, str):
        config["stopSequences"] = [stop]
    elif isinstance(stop, list) and stop:
        config["stopSequences"] = stop
    return config


def _tool_config(tools: object, tool_choice: object) -> dict[str, Any] | None:
    if tool_choice == "none":
        raise _refuse("bedrock/ deployments do not support tool_choice 'none' (omit the tools instead).", "tool_choice")
    if not tools:
        return None
    if not isinstance(tools, list):
        raise _refuse("`tools` must be a list.", "tools")
    specs = []
    for i, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, Mapping) and tool.get("type") == "function" else None
        if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
            raise _refuse("bedrock/ deployments take only `function` tools with a name.", f"tools[{i}]")
        spec: dict[str, Any] = {
            "name": function["name"],
            "inputSchema": {"json": function.get("parameters") or {"type": "object", "properties": {}}},
        }
        if function.get("description"):
            spec["description"] = function["description"]
        specs.append({"toolSpec": spec})
    config: dict[str, Any] = {"tools": specs}
    if tool_choice == "auto":
        config["toolChoice"] = {"auto": {}}
    elif tool_choice == "required":
        config["toolChoice"] = {"any": {}}
    elif isinstance(tool_choice, Mapping):
        function = tool_choice.get("function")
        name = function.get("name") if isinstance(function, Mapping) else None
        if not isinstance(name, str):
            raise _refuse("`tool_choice` must name a function.", "tool_choice")
        config["toolChoice"] = {"tool": {"name": name}}
    elif tool_choice is not None:
        raise _refuse("`tool_choice` must be 'auto', 'required' or a named function.", "tool_choice")
    return config


def _turns(messages: list[Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise _refuse("Each message must be an object.", f"messages[{i}]")
        role = message.get("role")
        if role in ("system", "developer"):
            system.extend(_content_blocks(message.get("content"), f"messages[{i}]", images=False))
            continue
        if role == "user":
            blocks = _content_blocks(message.get("content"), f"messages[{i}]", images=True)
            _append_turn(turns, "user", blocks)
        elif role == "assistant":
            _append_turn(turns, "assistant", _assistant_blocks(message, f"messages[{i}]"))
        elif role == "tool":
            _append_turn(turns, "user", [_tool_result(message, f"messages[{i}]")])
        else:
            raise _refuse(f"bedrock/ deployments do not take {role!r} messages.", f"messages[{i}].role")
    if not turns:
        raise _refuse("Converse needs at least one user message.", "messages")
    return system, turns


def _append_turn(turns: list[dict[str, Any]], role: str, blocks: list[dict[str, Any]]) -> None:
    if not blocks:
        return  # Converse rejects empty turns and blank text; merging keeps the roles alternating
    if turns and turns[-1]["role"] == role:
        turns[-1]["content"].extend(blocks)
    else:
        turns.append({"role": role, "content": blocks})


def _content_blocks(content: object, where: str, *, images: bool) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"text": content}] if content else []
    if not isinstance(content, list):
        raise _refuse("`content` must be a string or a list of parts.", f"{where}.content")
    blocks: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, Mapping) else None
        if kind == "text" and isinstance(part.get("text"), str):
            if part["text"]:
                blocks.append({"text": part["text"]})
        elif kind == "image_url" and images:
            blocks.append(_image_block(part.get("image_url"), f"{where}.content[{j}]"))
        else:
            raise _refuse(f"bedrock/ deployments do not take {kind!r} content parts here.", f"{where}.content[{j}]")
        if isinstance(part, Mapping) and part.get("cache_control") and blocks:
            blocks.append({"cachePoint": {"type": "default"}})
    return blocks


def _image_block(image_url: object, where: str) -> dict[str, Any]:
    url = image_url.get("url") if isinstance(image_url, Mapping) else image_url
    match = _DATA_URL.fullmatch(url) if isinstance(url, str) else None
    if match is None:
        raise _refuse("bedrock/ deployments take images as base64 data URLs (data:image/png;base64,...).", where)
    image_format = _IMAGE_FORMATS.get(match["kind"].lower())
    if image_format is None:
        raise _refuse(f"Bedrock does not take image/{match['kind']} (png, jpeg, gif, webp).", where)
    data = match["data"].strip()
    try:
        base64.b64decode(data, validate=True)
    except binascii.Error:
        raise _refuse("The image data URL is not valid base64.", where) from None
    return {"image": {"format": image_format, "source": {"bytes": data}}}


def _assistant_blocks(message: Mapping[str, Any], where: str) -> list[dict[str, Any]]:
    blocks = _content_blocks(message.get("content"), where, images=False)
    tool_calls = message.get("tool_calls") or []
    if not isinstance(tool_calls, list):
        raise _refuse("`tool_calls` must be a list.", f"{where}.tool_calls")
    for k, call in enumerate(tool_calls):
        function = call.get("function") if isinstance(call, Mapping) else None
        if not isinstance(function, Mapping) or not isinstance(call.get("id"), str):
            raise _refuse("Each tool call needs an `id` and a `function`.", f"{where}.tool_calls[{k}]")
        arguments = function.get("arguments") or "{}"
        try:
            tool_input = orjson.loads(arguments) if isinstance(arguments, str) else arguments
        except orjson.JSONDecodeError:
            raise _refuse("Tool call arguments must be JSON.", f"{where}.tool_calls[{k}].function.arguments") from None
        blocks.append({"toolUse": {"toolUseId": call["id"], "name": function.get("name"), "input": tool_input}})
    return blocks


def _tool_result(message: Mapping[str, Any], where: str) -> dict[str, Any]:
    call_id = message.get("tool_call_id")
    if not isinstance(call_id, str):
        raise _refuse("A tool message needs its `tool_call_id`.", f"{where}.tool_call_id")
    content = _content_blocks(message.get("content"), where, images=False)
    parts = [block for block in content if "text" in block] or [{"text": " "}]
    return {"toolResult": {"toolUseId": call_id, "content": parts}}


# ---- answer -------------------------------------------------------------------------------------------------


def finish_reason(stop_reason: object) -> str:
    """OpenAI's finish_reason for a Converse `stopReason` (unknown ones read as "stop", as LiteLLM does)."""
    return _FINISH_REASONS.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"


def openai_usage(usage: object) -> dict[str, Any] | None:
    """OpenAI's `usage` for a Converse `usage` (prompt tokens include cache reads and writes)."""
    if not isinstance(usage, Mapping):
        return None
    raw_input = _count(usage, "inputTokens")
    output = _count(usage, "outputTokens")
    cache_read = _count(usage, "cacheReadInputTokens")
    cache_write = _count(usage, "cacheWriteInputTokens")
    prompt = raw_input + cache_read + cache_write
    return {
        "prompt_tokens": prompt,
        "completion_tokens": output,
        "total_tokens": prompt + output,
        "prompt_tokens_details": {"cached_tokens": cache_read},
        "cache_read_input_tokens": cache_read,
        "cache_creation_input_tokens": cache_write,
    }


def _count(usage: Mapping[str, Any], name: str) -> int:
    value = usage.get(name)
    if value is None:
        return 0
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise BadGatewayError(f"Bedrock reported an impossible usage ({name}={value!r}).")
    return value


def chat_completion(answer: object, model: str) -> dict[str, Any]:
    """The OpenAI `chat.completion` for a Converse answer."""
    if not isinstance(answer, Mapping):
        raise BadGatewayError("Bedrock answered with something other than a JSON object.")
    output = answer.get("output")
    message = output.get("message") if isinstance(output, Mapping) else None
    if not isinstance(message, Mapping) or not isinstance(message.get("content"), list):
        raise BadGatewayError("Bedrock answered without output.message.content.")
    texts: list[str] = []
    reasoning: list[str] = []
    tool_calls: list[dict[str, Any]] = []
    for block in message["content"]:
        if not isinstance(block, Mapping):
            continue
        if isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif isinstance(block.get("toolUse"), Mapping):
            use = block["toolUse"]
            tool_calls.append(
                {
                    "id": use.get("toolUseId"),
                    "type": "function",
                    "function": {"name": use.get("name"), "arguments": orjson.dumps(use.get("input", {})).decode()},
                }
            )
        elif isinstance(block.get("reasoningContent"), Mapping):
            text = (block["reasoningContent"].get("reasoningText") or {}).get("text")
            if isinstance(text, str):
                reasoning.append(text)
    reply: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts or not tool_calls else None}
    if tool_calls:
        reply["tool_calls"] = tool_calls
    if reasoning:
        reply["reasoning_content"] = "".join(reasoning)
    completion: dict[str, Any] = {
        "id": _completion_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": reply, "finish_reason": finish_reason(answer.get("stopReason"))}],
    }
    usage = openai_usage(answer.get("usage"))
    if usage is not None:
        completion["usage"] = usage
    return completion


def _completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4()}"


class StreamTranslator:
    """Turns ConverseStream messages into OpenAI `chat.completion.chunk` SSE events, usage chunk and `[DONE]`.

    `[DONE]` is sent only by `finish()`, after a `messageStop`: a stream cut before it is left incomplete, so the
    relay reports it as such instead of passing a truncated answer off as whole.
    """

    __slots__ = ("_created", "_id", "_include_usage", "_model", "_redactor", "_tool_indexes", "stopped")

    def __init__(self, model: str, *, include_usage: bool, redactor: Redactor) -> None:
        self._id = _completion_id()
        self._created = int(time.time())
        self._model = model
        self._include_usage = include_usage
        self._redactor = redactor
        self._tool_indexes: dict[int, int] = {}  # contentBlockIndex -> tool_calls index
        self.stopped = False

    def events(self, message: EventMessage) -> bytes:
        """The SSE bytes for one stream message (possibly none). Raises `BadGatewayError` for an exception."""
        kind = message.header(":message-type")
        if kind in ("exception", "error"):
            raise self._failure(message)
        event = message.header(":event-type")
        try:
            data = orjson.loads(message.payload) if message.payload else {}
        except orjson.JSONDecodeError:
            raise BadGatewayError(f"Bedrock sent a {event} event that is not JSON.") from None
        if not isinstance(data, dict):
            raise BadGatewayError(f"Bedrock sent a {event} event that is not an object.")
        if event == "messageStart":
            return self._chunk({"role": "assistant", "content": ""})
        if event == "contentBlockStart":
            start = data.get("start")
            use = start.get("toolUse") if isinstance(start, Mapping) else None
            if isinstance(use, Mapping):
                index = self._tool_indexes.setdefault(data.get("contentBlockIndex", 0), len(self._tool_indexes))
                call = {"index": index, "id": use.get("toolUseId"), "type": "function"}
                return self._chunk({"tool_calls": [{**call, "function": {"name": use.get("name"), "arguments": ""}}]})
            return b""
        if event == "contentBlockDelta":
            return self._delta(data)
        if event == "messageStop":
            self.stopped = True
            return self._chunk({}, finish=finish_reason(data.get("stopReason")))
        if event == "metadata":
            usage = openai_usage(data.get("usage"))
            if usage is None or not self._include_usage:
                return b""
            return _sse(self._envelope([]) | {"usage": usage})
        return b""  # contentBlockStop, and events added after this was written

    def finish(self) -> bytes:
        """The end of the stream: `[DONE]` after a `messageStop`, else nothing."""
        return b"data: [DONE]\n\n" if self.stopped else b""

    def _delta(self, data: Mapping[str, Any]) -> bytes:
        delta = data.get("delta")
        if not isinstance(delta, Mapping):
            return b""
        if isinstance(delta.get("text"), str):
            return self._chunk({"content": delta["text"]})
        use = delta.get("toolUse")
        if isinstance(use, Mapping):
            index = self._tool_indexes.setdefault(data.get("contentBlockIndex", 0), len(self._tool_indexes))
            return self._chunk({"tool_calls": [{"index": index, "function": {"arguments": use.get("input", "")}}]})
        reasoning = delta.get("reasoningContent")
        if isinstance(reasoning, Mapping) and isinstance(reasoning.get("text"), str):
            return self._chunk({"reasoning_content": reasoning["text"]})
        return b""

    def _envelope(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "choices": choices,
        }

    def _chunk(self, delta: dict[str, Any], *, finish: str | None = None) -> bytes:
        return _sse(self._envelope([{"index": 0, "delta": delta, "finish_reason": finish}]))

    def _failure(self, message: EventMessage) -> BadGatewayError:
        name = message.header(":exception-type") or message.header(":error-code") or "error"
        text = message.header(":error-message")
        if text is None:
            try:
                parsed = orjson.loads(message.payload)
            except orjson.JSONDecodeError:
                parsed = None
            text = parsed.get("message") if isinstance(parsed, dict) else None
        detail = self._redactor.message(str(text)) if text else "no message"
        return BadGatewayError(f"Bedrock stream failed ({self._redactor.message(name)}): {detail}")


def _sse(payload: Mapping[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"
