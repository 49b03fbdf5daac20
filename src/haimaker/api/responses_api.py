"""The OpenAI Responses API (`POST /v1/responses`, `/responses`) over the one pipeline.

A model group whose every deployment is `openai/` or `azure/` (without LiteLLM's `use_chat_completions_api`) gets the
request as is, on `Route.RESPONSES` (the upstream speaks the API; `previous_response_id`, built-in tools and stored
state are then the upstream's). Any other group is served by translation: the request becomes a chat completion, and the
chat answer (JSON, or its stream via `responses_events.py`) becomes a Responses answer. What cannot be translated,
because we store no responses and run no built-in tools, is refused with a 400 naming the field: `previous_response_id`,
`conversation`, `background`, stored `prompt` templates, `item_reference` items, and tools other than `function`.

Invariants: the customer, budgets, rate limits and spend logs are the pipeline's (`call_type` "aresponses"); the
native route's bytes are relayed untouched; errors are OpenAI's envelope, which is what the SDK reads on this API.

What a translated answer needs from its request (`instructions`, `tools`, `text`, ...) is handed back with the answer
(`Translated.request`: the Responses body; None when the request was served natively).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import Any, Final

import orjson

from haimaker.api.dialects import Translated
from haimaker.api.errors import error_body
from haimaker.api.responses_events import ResponseShell, response_usage, translate_chat_stream
from haimaker.errors import BadRequestError, ProxyError, UnknownModelError
from haimaker.pipeline import JsonResult, StreamResult
from haimaker.providers.base import Route
from haimaker.providers.router import Router

RESPONSES_PATHS: Final = frozenset({"/v1/responses", "/responses"})
# Providers that serve the Responses API themselves: a group of only these gets the request untouched.
NATIVE_PROVIDERS: Final = frozenset({"openai", "azure"})

# Request fields that need state we do not keep, or features we do not run: refused on the translated route.
_STATEFUL_FIELDS: Final = {
    "previous_response_id": "previous_response_id needs the stored earlier response, and responses are not stored "
    "for this model; send the whole conversation in 'input' instead.",
    "conversation": "conversations are not stored for this model; send the whole conversation in 'input' instead.",
    "prompt": "stored prompt templates are not available for this model; send the prompt in 'input'.",
}
# Fields of a Responses request that a chat request carries under the same name and meaning.
_SAME_NAME_FIELDS: Final = (
    "temperature",
    "top_p",
    "parallel_tool_calls",
    "user",
    "safety_identifier",
    "metadata",  # the proxy's metadata (identity reads metadata.user_id), as on the chat route; never sent upstream
    "service_tier",
    "top_logprobs",
)
_ROLES: Final = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}


class ResponsesDialect:
    """`client.responses.create` of the official openai SDK, JSON and streaming."""

    call_type = "aresponses"

    def __init__(self, router: Router) -> None:
        self._router = router

    def translate_request(self, raw: bytes, headers: Mapping[str, str]) -> Translated:
        body = _request_body(raw)
        model = body.get("model")
        if self._is_native(model):
            return Translated(Route.RESPONSES, raw)
        chat = responses_to_chat(body)
        return Translated(Route.CHAT, orjson.dumps(chat), request=body)

    def _is_native(self, model: object) -> bool:
        if not isinstance(model, str) or not model:
            return True  # the pipeline's checks refuse it, in the route's own words
        try:
            group = self._router.group(model)
        except UnknownModelError:
            return True  # the pipeline's 400 names the available models
        # `use_chat_completions_api: true` (LiteLLM's litellm_params key) sends an OpenAI deployment through chat too.
        return all(
            deployment.provider in NATIVE_PROVIDERS and not deployment.params.get("use_chat_completions_api")
            for deployment in group
        )

    def translate_json(self, result: JsonResult, request: dict[str, Any] | None) -> JsonResult:
        if request is None:  # served natively: the answer is the upstream's
            return result
        chat = orjson.loads(result.body)
        return JsonResult(result.status, orjson.dumps(chat_to_response(chat, request)), result.headers)

    def translate_stream(self, result: StreamResult, request: dict[str, Any] | None) -> StreamResult:
        if request is None:
            return result
        shell = ResponseShell.of(request, _response_id(), int(time.time()))
        return StreamResult(result.headers, translate_chat_stream(result.chunks, shell), done=result.done)

    def error_body(self, error: ProxyError) -> bytes:
        return error_body(error)


def _request_body(raw: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequestError(f"Invalid JSON in request body: {exc.msg}.") from None
    if not isinstance(body, dict):
        raise BadRequestError("Request body must be a JSON object.")
    return body


def _response_id() -> str:
    return "resp_" + uuid.uuid4().hex


# ---- request: Responses → chat ---------------------------------------------------------------------------------


def responses_to_chat(body: Mapping[str, Any]) -> dict[str, Any]:
    """A Responses request as the chat completion request that serves it.

    Raises:
        BadRequestError: a field needs stored state or a built-in tool, or an item is not a Responses input item.
    """
    for name, reason in _STATEFUL_FIELDS.items():
        if body.get(name) is not None:
            raise BadRequestError(f"'{name}' is not supported: {reason}", param=name)
    if body.get("background") is True:
        raise BadRequestError(
            "'background' is not supported: background responses are stored and polled, and responses are not stored "
            "for this model.",
            param="background",
        )
    if body.get("input") is None:
        raise BadRequestError("Missing required parameter: 'input'.", param="input")
    chat: dict[str, Any] = {"model": body.get("model"), "messages": _messages(body)}
    for name in _SAME_NAME_FIELDS:
        if body.get(name) is not None:
            chat[name] = body[name]
    for name, value in body.items():
        if "litellm_" in name:  # the proxy's own fields (litellm_metadata.user names the customer)
            chat[name] = value
    if body.get("max_output_tokens") is not None:
        chat["max_tokens"] = body["max_output_tokens"]
    tools = body.get("tools")
    if tools:
        chat["tools"] = _chat_tools(tools)
    if body.get("tool_choice") is not None:
        chat["tool_choice"] = _chat_tool_choice(body["tool_choice"])
    response_format = _response_format(body.get("text"))
    if response_format is not None:
        chat["response_format"] = response_format
    reasoning = body.get("reasoning")
    if isinstance(reasoning, dict) and reasoning.get("effort") is not None:
        chat["reasoning_effort"] = reasoning["effort"]
    if body.get("stream") is True:
        # The usage chunk becomes response.completed's usage (the pipeline then passes it on to us).
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    return chat


def _messages(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    instructions = body.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise BadRequestError("'instructions' must be a string.", param="instructions")
        messages.append({"role": "system", "content": instructions})
    items = body["input"]
    if isinstance(items, str):
        messages.append({"role": "user", "content": items})
        return messages
    if not isinstance(items, list) or not items:
        raise BadRequestError("'input' must be a string or a non-empty array of input items.", param="input")
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise BadRequestError(f"'input[{index}]' must be an object.", param=f"input[{index}]")
        _add_item(messages, item, index)
    return messages


def _add_item(messages: list[dict[str, Any]], item: Mapping[str, Any], index: int) -> None:
    kind = item.get("type", "message")
    param = f"input[{index}]"
    if kind == "message":
        role = _ROLES.get(item.get("role"))  # type: ignore[arg-type]
        if role is None:
            raise BadRequestError(
                f"'{param}.role' must be one of 'user', 'assistant', 'system' or 'developer'.", param=f"{param}.role"
            )
        messages.append({"role": role, "content": _content(item.get("content"), role, param)})
    elif kind == "function_call":
        call = {
            "id": item.get("call_id"),
            "type": "function",
            "function": {"name": item.get("name"), "arguments": item.get("arguments", "")},
        }
        last = messages[-1] if messages else None
        # Consecutive calls (and calls after the assistant's text) are one assistant turn in chat's shape.
        if last is not None and last["role"] == "assistant" and "tool_call_id" not in last:
            last.setdefault("tool_calls", []).append(call)
        else:
            messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
    elif kind == "function_call_output":
        output = item.get("output")
        content = output if isinstance(output, str) else _content(output, "tool", f"{param}.output")
        messages.append({"role": "tool", "tool_call_id": item.get("call_id"), "content": content})
    elif kind == "reasoning":
        return  # an earlier turn's reasoning: chat has no place for it (LiteLLM drops it too)
    elif kind == "item_reference":
        raise BadRequestError(
            f"'{param}' is an item_reference: items are not stored for this model; send the item itself.", param=param
        )
    else:
        raise BadRequestError(
            f"'{param}' has type '{kind}', which is not supported for this model (supported: message, function_call, "
            "function_call_output, reasoning).",
            param=f"{param}.type",
        )


def _content(content: object, role: str, param: str) -> Any:
    """A message's content in chat's shape: a string stays one; parts become chat parts (assistant: text)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise BadRequestError(f"'{param}.content' must be a string or an array of content parts.", param=param)
    parts: list[dict[str, Any]] = []
    for i, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        assert_param = f"{param}.content[{i}]"
        if not isinstance(part, dict):
            raise BadRequestError(f"'{assert_param}' must be an object.", param=assert_param)
        if kind in ("input_text", "output_text", "text"):
            parts.append({"type": "text", "text": part.get("text", "")})
        elif kind == "refusal":
            parts.append({"type": "text", "text": part.get("refusal", "")})
        elif kind == "input_image":
            url = part.get("image_url")
            if not isinstance(url, str):
                raise BadRequestError(
                    f"'{assert_param}' must give an 'image_url' (a URL or a data URL); uploaded file ids are not "
                    "supported for this model.",
                    param=assert_param,
                )
            image: dict[str, Any] = {"url": url}
            if part.get("detail") is not None:
                image["detail"] = part["detail"]
            parts.append({"type": "image_url", "image_url": image})
        elif kind == "input_file":
            if part.get("file_data") is None and part.get("file_id") is None:
                # Chat takes a file's data or id; a URL (`file_url`) would have to be fetched, which we do not do.
                raise BadRequestError(
                    f"'{assert_param}' must give 'file_data' or 'file_id' (a 'file_url' is not fetched for a model "
                    "served through chat).",
                    param=assert_param,
                )
            file = {k: part[k] for k in ("file_data", "file_id", "filename") if part.get(k) is not None}
            parts.append({"type": "file", "file": file})
        else:
            raise BadRequestError(
                f"'{assert_param}' has type '{kind}', which is not supported (supported: input_text, input_image, "
                "input_file, output_text, refusal).",
                param=assert_param,
            )
    if role in ("assistant", "system", "tool"):
        # These roles take text only in most chat providers: their parts are joined.
        if any(p["type"] != "text" for p in parts):
            raise BadRequestError(f"'{param}' of role {role} may hold text parts only.", param=param)
        return "".join(p["text"] for p in parts)
    return parts


def _chat_tools(tools: object) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise BadRequestError("'tools' must be an array.", param="tools")
    chat_tools = []
    for index, tool in enumerate(tools):
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind != "function" or not isinstance(tool, dict):
            raise BadRequestError(
                f"'tools[{index}]' has type '{kind}': only function tools are supported for this model (built-in "
                "tools such as web_search, file_search, code_interpreter or computer use run only on OpenAI models).",
                param=f"tools[{index}].type",
            )
        function = {k: tool[k] for k in ("name", "description", "parameters", "strict") if tool.get(k) is not None}
        chat_tools.append({"type": "function", "function": function})
    return chat_tools


def _chat_tool_choice(choice: object) -> Any:
    if isinstance(choice, str):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    raise BadRequestError(
        "'tool_choice' must be 'auto', 'none', 'required' or a function ({\"type\": \"function\", \"name\": ...}) "
        "for this model.",
        param="tool_choice",
    )


def _response_format(text: object) -> dict[str, Any] | None:
    if not isinstance(text, dict):
        return None
    fmt = text.get("format")
    if not isinstance(fmt, dict):
        return None
    kind = fmt.get("type")
    if kind == "json_schema":
        schema = {k: fmt[k] for k in ("name", "schema", "strict", "description") if fmt.get(k) is not None}
        return {"type": "json_schema", "json_schema": schema}
    if kind == "json_object":
        return {"type": "json_object"}
    return None


# ---- answer: chat → Responses ----------------------------------------------------------------------------------


def chat_to_response(chat: Mapping[str, Any], request: Mapping[str, Any]) -> dict[str, Any]:
    """A chat completion as the Responses API answer to `request` (its first choice: Responses has no `n`)."""
    shell = ResponseShell.of(request, _response_id(), _int(chat.get("created")) or int(time.time()))
    choices = chat.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    raw_message = choice.get("message")
    message: Mapping[str, Any] = raw_message if isinstance(raw_message, dict) else {}
    output: list[dict[str, Any]] = []
    content = message.get("content")
    refusal = message.get("refusal")
    parts: list[dict[str, Any]] = []
    if isinstance(content, str) and content:
        parts.append({"type": "output_text", "text": content, "annotations": [], "logprobs": []})
    if isinstance(refusal, str) and refusal:
        parts.append({"type": "refusal", "refusal": refusal})
    if parts:
        output.append(
            {
                "id": "msg_" + uuid.uuid4().hex,
                "type": "message",
                "status": "completed",
                "role": "assistant",
                "content": parts,
            }
        )
    for call in message.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            output.append(
                {
                    "id": "fc_" + uuid.uuid4().hex,
                    "type": "function_call",
                    "status": "completed",
                    "call_id": call.get("id"),
                    "name": function.get("name"),
                    "arguments": function.get("arguments") or "",
                }
            )
    model = chat.get("model") if isinstance(chat.get("model"), str) else request.get("model")
    return shell.response(
        "incomplete" if choice.get("finish_reason") == "length" else "completed",
        output,
        response_usage(chat.get("usage")),
        model=model,
    )


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
