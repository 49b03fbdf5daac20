"""An OpenAI chat request as a Gemini `GenerateContentRequest` (AI Studio and Vertex take the same body).

    messages[system|developer]        -> systemInstruction.parts[].text
    messages[user]                    -> contents[role=user] (text, image_url, input_audio, file parts)
    messages[assistant]               -> contents[role=model] (text, tool_calls as functionCall parts)
    messages[tool]                    -> contents[role=user].parts[].functionResponse (the call's name looked up
                                         from the assistant tool_call it answers)
    tools[type=function] | functions  -> tools[0].functionDeclarations (parameters cleaned by `gemini_schema`)
    tool_choice | function_call       -> toolConfig.functionCallingConfig (none/auto/required=ANY/a named function)
    temperature, top_p, max_tokens | max_completion_tokens, stop, n, seed, presence_penalty, frequency_penalty,
    response_format (json_object, json_schema), reasoning_effort (a thinkingBudget)  -> generationConfig
    tool_call id `<id>__thought__<sig>` -> the functionCall part's thoughtSignature (see THOUGHT_SIGNATURE_SEPARATOR)

Consecutive contents of one role are merged (Gemini wants turns to alternate, and all the responses to one turn's
function calls in one content). Fields with no Gemini meaning that change nothing (`user`, `metadata`, `store`,
`stream_options`, `parallel_tool_calls`...) are dropped; what cannot be translated faithfully is refused with a
`BadRequestError` naming the field (a non-function tool, an unknown content part, `logit_bias`, `logprobs`).

Invariants: the caller's body is never modified; every image/file URL is passed by reference (`fileData`) or
inlined from its data URL (`inlineData`), never fetched by the proxy.
"""

from __future__ import annotations

import mimetypes
from typing import Any, Final

import orjson

from haimaker.errors import BadRequestError
from haimaker.providers.gemini_schema import gemini_schema

# OpenAI request fields that are refused rather than silently dropped: they change what the client gets back.
_REFUSED: Final = {
    "logit_bias": "Gemini has no logit_bias",
    "logprobs": "log probabilities are not translated for Gemini",
    "top_logprobs": "log probabilities are not translated for Gemini",
    "audio": "audio output is not translated for Gemini",
    "prediction": "predicted outputs are not available on Gemini",
}
# The thought signature Gemini gives a function call rides in the tool call's id, `<id>__thought__<signature>`,
# the way LiteLLM carries it (https://ai.google.dev/gemini-api/docs/thought-signatures): the client sends the id
# back unchanged with the conversation, and Gemini 3 refuses a function call turn that lost its signature.
THOUGHT_SIGNATURE_SEPARATOR: Final = "__thought__"
# `reasoning_effort` as a thinking budget in tokens (LiteLLM's defaults); `none` / `disable` turn thinking off.
_THINKING_BUDGETS: Final = {"minimal": 128, "low": 1024, "medium": 2048, "high": 4096, "none": 0, "disable": 0}
_AUDIO_MIME: Final = {"wav": "audio/wav", "mp3": "audio/mp3", "flac": "audio/flac", "ogg": "audio/ogg"}


def gemini_request(body: dict[str, Any], *, drop_params: bool = False) -> dict[str, Any]:
    """The GenerateContentRequest for an OpenAI chat request body (raises `BadRequestError` on what it refuses;
    with `drop_params`, LiteLLM's, the request-level fields Gemini has no place for are left out instead)."""
    if not drop_params:
        for name, reason in _REFUSED.items():
            if body.get(name) not in (None, False):
                raise BadRequestError(f"{name}: {reason}.", param=name)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequestError("messages: a non-empty list is required.", param="messages")
    system, contents = _contents(messages)
    request: dict[str, Any] = {"contents": contents}
    if system:
        request["systemInstruction"] = {"parts": system}
    tools = body.get("tools")
    functions = body.get("functions")  # OpenAI's deprecated spelling of function tools
    if not tools and isinstance(functions, list):
        tools = [{"type": "function", "function": function} for function in functions]
    if tools:
        request["tools"] = [{"functionDeclarations": _declarations(tools)}]
    tool_choice = body.get("tool_choice")
    legacy_choice = body.get("function_call")
    if tool_choice is None and legacy_choice is not None:
        tool_choice = {"function": legacy_choice} if isinstance(legacy_choice, dict) else legacy_choice
    if tool_choice is not None:
        request["toolConfig"] = {"functionCallingConfig": _calling_config(tool_choice)}
    config = _generation_config(body)
    if config:
        request["generationConfig"] = config
    return request


def _contents(messages: list[Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    call_names: dict[str, str] = {}  # tool_call id -> function name, for the tool messages that answer them
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise BadRequestError(f"{where}: a message is an object.", param="messages")
        role = message.get("role")
        if role in ("system", "developer"):
            system.extend({"text": text} for text in _texts(message.get("content"), where))
            continue
        if role == "user":
            parts = _user_parts(message.get("content"), where)
            gemini_role = "user"
        elif role == "assistant":
            parts = _assistant_parts(message, where, call_names)
            gemini_role = "model"
        elif role in ("tool", "function"):
            parts = [_function_response(message, where, call_names)]
            gemini_role = "user"
        else:
            raise BadRequestError(f"{where}.role: {role!r} is not a chat role.", param="messages")
        if not parts:
            continue
        if contents and contents[-1]["role"] == gemini_role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": gemini_role, "parts": parts})
    if not contents:
        raise BadRequestError("messages: Gemini needs at least one user or assistant message.", param="messages")
    return system, contents


def _texts(content: object, where: str) -> list[str]:
    if content is None:
        return []
    if isinstance(content, str):
        return [content] if content else []
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text":
                raise BadRequestError(f"{where}.content: only text parts are allowed here.", param="messages")
            texts.append(str(part.get("text") or ""))
        return [t for t in texts if t]
    raise BadRequestError(f"{where}.content: a string or a list of parts.", param="messages")


def _user_parts(content: object, where: str) -> list[dict[str, Any]]:
    if content is None or isinstance(content, str):
        return [{"text": content}] if content else []
    if not isinstance(content, list):
        raise BadRequestError(f"{where}.content: a string or a list of parts.", param="messages")
    parts: list[dict[str, Any]] = []
    for i, part in enumerate(content):
        at = f"{where}.content[{i}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            parts.append({"text": str(part.get("text") or "")})
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            parts.append(_media_part(url, at, default_mime="image/jpeg"))
        elif kind == "input_audio":
            audio = part.get("input_audio") or {}
            fmt = str(audio.get("format") or "wav")
            parts.append({"inlineData": {"mimeType": _AUDIO_MIME.get(fmt, f"audio/{fmt}"), "data": audio.get("data")}})
        elif kind == "file":
            file = part.get("file") or {}
            reference = file.get("file_data") or file.get("file_id")
            mime = file.get("format")
            parts.append(_media_part(reference, at, default_mime=mime or "application/pdf"))
        else:
            raise BadRequestError(f"{at}.type: {kind!r} parts are not supported for Gemini.", param="messages")
    return parts


def _media_part(url: object, at: str, *, default_mime: str) -> dict[str, Any]:
    """A data URL inlined (`inlineData`), any other URL by reference (`fileData`: gs://, https://, Files API)."""
    if not isinstance(url, str) or not url:
        raise BadRequestError(f"{at}: a URL or a data URL is required.", param="messages")
    if url.startswith("data:"):
        header, sep, data = url[5:].partition(",")
        mime, _, encoding = header.partition(";")
        if not sep or encoding != "base64":
            raise BadRequestError(f"{at}: a data URL must be base64 (data:<type>;base64,<data>).", param="messages")
        return {"inlineData": {"mimeType": mime or default_mime, "data": data}}
    guessed, _ = mimetypes.guess_type(url.split("?", 1)[0])
    return {"fileData": {"mimeType": guessed or default_mime, "fileUri": url}}


def _assistant_parts(message: dict[str, Any], where: str, call_names: dict[str, str]) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = [{"text": text} for text in _assistant_texts(message.get("content"), where)]
    for i, call in enumerate(message.get("tool_calls") or ()):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise BadRequestError(f"{where}.tool_calls[{i}]: a function call with a name.", param="messages")
        args = _arguments(function.get("arguments"), f"{where}.tool_calls[{i}].function.arguments")
        part: dict[str, Any] = {"functionCall": {"name": function["name"], "args": args}}
        call_id = call.get("id")
        if isinstance(call_id, str):
            call_names[call_id] = function["name"]
            _, separator, signature = call_id.partition(THOUGHT_SIGNATURE_SEPARATOR)
            if separator and signature:
                part["thoughtSignature"] = signature  # Gemini 3 refuses a function call turn without it
        parts.append(part)
    legacy = message.get("function_call")
    if isinstance(legacy, dict) and isinstance(legacy.get("name"), str):
        args = _arguments(legacy.get("arguments"), f"{where}.function_call.arguments")
        parts.append({"functionCall": {"name": legacy["name"], "args": args}})
    return parts


def _assistant_texts(content: object, where: str) -> list[str]:
    if isinstance(content, list):  # assistant parts may also be refusals, which are text for Gemini
        return [str(p.get("text") or p.get("refusal") or "") for p in content if isinstance(p, dict)]
    return _texts(content, where)


def _arguments(raw: object, at: str) -> dict[str, Any]:
    if raw is None or raw == "":
        return {}
    try:
        args = orjson.loads(raw) if isinstance(raw, str) else raw
    except orjson.JSONDecodeError:
        raise BadRequestError(f"{at}: not valid JSON.", param="messages") from None
    if not isinstance(args, dict):
        raise BadRequestError(f"{at}: Gemini takes function arguments as a JSON object.", param="messages")
    return args


def _function_response(message: dict[str, Any], where: str, call_names: dict[str, str]) -> dict[str, Any]:
    name = message.get("name") or call_names.get(str(message.get("tool_call_id")))
    if not isinstance(name, str):
        raise BadRequestError(
            f"{where}: the tool message answers no earlier assistant tool_call (Gemini needs the function name).",
            param="messages",
        )
    content = message.get("content")
    text = "".join(_texts(content, where)) if not isinstance(content, str) else content
    try:
        parsed = orjson.loads(text)
    except orjson.JSONDecodeError:
        parsed = None
    # Gemini's `response` is a JSON object: an object result goes as is, anything else under `content` (as LiteLLM).
    response = parsed if isinstance(parsed, dict) else {"content": text}
    return {"functionResponse": {"name": name, "response": response}}


def _declarations(tools: object) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise BadRequestError("tools: a list of tools.", param="tools")
    declarations = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or tool.get("type", "function") != "function":
            kind = tool.get("type") if isinstance(tool, dict) else None
            raise BadRequestError(f"tools[{i}]: {kind!r} tools are not supported for Gemini.", param="tools")
        function = tool.get("function")
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise BadRequestError(f"tools[{i}].function: a function with a name.", param="tools")
        declaration: dict[str, Any] = {"name": function["name"]}
        if function.get("description"):
            declaration["description"] = function["description"]
        parameters = function.get("parameters")
        if isinstance(parameters, dict) and parameters:
            declaration["parameters"] = gemini_schema(parameters, param=f"tools[{i}].function.parameters")
        declarations.append(declaration)
    return declarations


def _calling_config(choice: object) -> dict[str, Any]:
    if choice in ("none", "auto"):
        return {"mode": str(choice).upper()}
    if choice == "required":
        return {"mode": "ANY"}
    if isinstance(choice, dict):
        function = choice.get("function")
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            return {"mode": "ANY", "allowedFunctionNames": [function["name"]]}
    raise BadRequestError(f"tool_choice: {choice!r} is not a tool choice Gemini understands.", param="tool_choice")


def _generation_config(body: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for ours, theirs in (
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("n", "candidateCount"),
        ("seed", "seed"),
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
    ):
        if body.get(ours) is not None:
            config[theirs] = body[ours]
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None:
        config["maxOutputTokens"] = max_tokens
    effort = body.get("reasoning_effort")
    if effort is not None:
        if effort not in _THINKING_BUDGETS:
            raise BadRequestError(
                f"reasoning_effort: {effort!r} is not one of {list(_THINKING_BUDGETS)}.", param="reasoning_effort"
            )
        budget = _THINKING_BUDGETS[str(effort)]
        config["thinkingConfig"] = {"thinkingBudget": budget, "includeThoughts": budget > 0}
    stop = body.get("stop")
    if isinstance(stop, str):
        config["stopSequences"] = [stop]
    elif isinstance(stop, list) and stop:
        config["stopSequences"] = stop
    response_format = body.get("response_format")
    if isinstance(response_format, dict):
        kind = response_format.get("type")
        if kind in ("json_object", "json_schema"):
            config["responseMimeType"] = "application/json"
        spec = response_format.get("json_schema")
        if kind == "json_schema" and isinstance(spec, dict) and isinstance(spec.get("schema"), dict):
            config["responseSchema"] = gemini_schema(
                spec["schema"], param="response_format.json_schema.schema", property_ordering=True
            )
        elif kind not in ("text", "json_object", "json_schema"):
            raise BadRequestError(f"response_format.type: {kind!r} is not supported.", param="response_format")
    return config
