"""Gemini's wire format for the fake: a strict check of a `GenerateContentRequest`, and its answers.

The check follows the documented REST types (generativelanguage v1beta / aiplatform v1 `GenerateContentRequest`,
`Content`, `Part`, `GenerationConfig`, `Tool`, `Schema`): unknown fields are refused with the 400 Google sends
(`Invalid JSON payload received. Unknown name "x"`), as are turns of another role than user/model, empty parts, a
part that is not exactly one kind, function responses that do not answer the previous turn's calls one for one,
and schema keywords outside Gemini's Schema (`additionalProperties`, `$ref`, type arrays...).

Answers: `candidates` (one per `candidateCount`), `usageMetadata` (words as tokens: `promptTokenCount` counts every
text of the request plus the scripted cached tokens, which it includes), `modelVersion`, `responseId`.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

_REQUEST_FIELDS = {"contents", "systemInstruction", "tools", "toolConfig", "generationConfig", "safetySettings"}
_PART_KINDS = {"text", "inlineData", "fileData", "functionCall", "functionResponse"}
_PART_EXTRAS = {"thought", "thoughtSignature"}
_CONFIG_FIELDS = {
    "temperature",
    "topP",
    "topK",
    "candidateCount",
    "maxOutputTokens",
    "stopSequences",
    "responseMimeType",
    "responseSchema",
    "presencePenalty",
    "frequencyPenalty",
    "seed",
    "thinkingConfig",
}
_SCHEMA_FIELDS = {
    "type",
    "format",
    "title",
    "description",
    "nullable",
    "default",
    "items",
    "minItems",
    "maxItems",
    "enum",
    "properties",
    "propertyOrdering",
    "required",
    "minProperties",
    "maxProperties",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "pattern",
    "example",
    "anyOf",
}
_SCHEMA_TYPES = {"string", "integer", "boolean", "number", "array", "object"}


class InvalidRequest(Exception):
    """The 400 Google answers (`status` INVALID_ARGUMENT)."""


@dataclass(frozen=True, slots=True)
class GeminiReply:
    """What the fake answers one generation request with.

    Attributes:
        text: the text of each candidate (candidate i > 0 gets ` (i)` appended).
        function_calls: `functionCall` parts ({"name", "args"}) instead of text.
        thought: a thought part before the text (counted in `thoughtsTokenCount`).
        thought_signature: the `thoughtSignature` of the first function call part (as Gemini 2.5+/3 send it).
        finish_reason: Gemini's finishReason of every candidate.
        cached_tokens: `cachedContentTokenCount` (added to `promptTokenCount`, as Gemini counts it).
        block_reason: answer no candidates, only `promptFeedback.blockReason`.
        status, error_message: answer this HTTP status with Google's error envelope instead.
        chunks: words per stream event.
        cut_after: close the connection abruptly after this many stream events.
    """

    text: str = "Hello from the fake Gemini."
    function_calls: tuple[dict[str, Any], ...] = ()
    thought: str | None = None
    finish_reason: str = "STOP"
    cached_tokens: int = 0
    block_reason: str | None = None
    status: int | None = None
    error_message: str = "Resource has been exhausted (e.g. check quota)."
    chunks: int = 2
    thought_signature: str | None = None
    cut_after: int | None = None


_STATUSES = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND"}
_STATUSES |= {429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"}


def error_body(status: int, message: str) -> dict[str, Any]:
    """Google's error envelope."""
    return {"error": {"code": status, "message": message, "status": _STATUSES.get(status, "UNKNOWN")}}


def check_request(body: object) -> dict[str, Any]:
    """The request if it is a valid GenerateContentRequest; raise `InvalidRequest` otherwise."""
    if not isinstance(body, dict):
        raise InvalidRequest("Invalid JSON payload received.")
    _known(body, _REQUEST_FIELDS, "")
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        raise InvalidRequest("* GenerateContentRequest.contents: contents is not specified")
    pending_calls = 0
    for i, content in enumerate(contents):
        where = f"contents[{i}]"
        if not isinstance(content, dict):
            raise InvalidRequest(f"Invalid value at '{where}'")
        _known(content, {"role", "parts"}, where)
        if content.get("role") not in ("user", "model"):
            raise InvalidRequest(f"Please use a valid role: user, model. ({where}.role={content.get('role')!r})")
        parts = _parts(content.get("parts"), where)
        responses = sum(1 for p in parts if "functionResponse" in p)
        if pending_calls and responses != pending_calls:
            raise InvalidRequest(
                "Please ensure that the number of function response parts is equal to the number of function call "
                "parts of the function call turn."
            )
        if responses and not pending_calls:
            raise InvalidRequest(f"{where}: a function response turn must follow a function call turn.")
        if responses and content["role"] != "user":
            raise InvalidRequest(f"{where}: function responses come in a user turn.")
        pending_calls = sum(1 for p in parts if "functionCall" in p) if content["role"] == "model" else 0
    system = body.get("systemInstruction")
    if system is not None:
        if not isinstance(system, dict):
            raise InvalidRequest("Invalid value at 'system_instruction'")
        _known(system, {"parts", "role"}, "systemInstruction")
        for part in _parts(system.get("parts"), "systemInstruction"):
            if set(part) != {"text"}:
                raise InvalidRequest("systemInstruction: only text parts")
    for t, tool in enumerate(body.get("tools") or ()):
        _known(tool, {"functionDeclarations"}, f"tools[{t}]")
        for d, declaration in enumerate(tool.get("functionDeclarations") or ()):
            where = f"tools[{t}].function_declarations[{d}]"
            _known(declaration, {"name", "description", "parameters"}, where)
            if not isinstance(declaration.get("name"), str):
                raise InvalidRequest(f"{where}.name: required")
            if "parameters" in declaration:
                check_schema(declaration["parameters"], f"{where}.parameters")
    tool_config = body.get("toolConfig")
    if tool_config is not None:
        _known(tool_config, {"functionCallingConfig"}, "toolConfig")
        calling = tool_config["functionCallingConfig"]
        _known(calling, {"mode", "allowedFunctionNames"}, "toolConfig.functionCallingConfig")
        if calling.get("mode") not in ("AUTO", "ANY", "NONE"):
            raise InvalidRequest(f"Invalid value at 'tool_config.function_calling_config.mode' ({calling.get('mode')})")
    config = body.get("generationConfig")
    if config is not None:
        _known(config, _CONFIG_FIELDS, "generationConfig")
        if "thinkingConfig" in config:
            _known(config["thinkingConfig"], {"thinkingBudget", "includeThoughts", "thinkingLevel"}, "thinkingConfig")
        if "responseSchema" in config:
            check_schema(config["responseSchema"], "generationConfig.responseSchema")
        if "responseSchema" in config and config.get("responseMimeType") != "application/json":
            raise InvalidRequest("response_mime_type must be application/json with a response_schema")
    return body


def _known(obj: object, allowed: set[str], where: str) -> None:
    if not isinstance(obj, dict):
        raise InvalidRequest(f"Invalid value at '{where}'")
    for name in obj:
        if name not in allowed:
            raise InvalidRequest(
                f"Invalid JSON payload received. Unknown name \"{name}\" at '{where}': Cannot find field."
            )


def _parts(parts: object, where: str) -> list[dict[str, Any]]:
    if not isinstance(parts, list) or not parts:
        raise InvalidRequest(f"* GenerateContentRequest.{where}.parts: contents.parts must not be empty.")
    for j, part in enumerate(parts):
        at = f"{where}.parts[{j}]"
        if not isinstance(part, dict):
            raise InvalidRequest(f"Invalid value at '{at}'")
        kinds = [k for k in part if k in _PART_KINDS]
        _known(part, _PART_KINDS | _PART_EXTRAS, at)
        if len(kinds) != 1:
            raise InvalidRequest(f"{at}: a part holds exactly one of {sorted(_PART_KINDS)}")
        kind = kinds[0]
        value = part[kind]
        if kind == "text" and not isinstance(value, str):
            raise InvalidRequest(f"{at}.text: a string")
        if kind == "inlineData":
            _known(value, {"mimeType", "data"}, f"{at}.inline_data")
            if not value.get("mimeType") or not isinstance(value.get("data"), str):
                raise InvalidRequest(f"{at}.inline_data: mimeType and base64 data are required")
        if kind == "fileData":
            _known(value, {"mimeType", "fileUri"}, f"{at}.file_data")
            if not value.get("fileUri"):
                raise InvalidRequest(f"{at}.file_data.file_uri: required")
        if kind == "functionCall":
            _known(value, {"name", "args", "id"}, f"{at}.function_call")
            if not isinstance(value.get("args", {}), dict):
                raise InvalidRequest(f"{at}.function_call.args: a Struct")
        if kind == "functionResponse":
            _known(value, {"name", "response", "id"}, f"{at}.function_response")
            if not isinstance(value.get("name"), str) or not isinstance(value.get("response"), dict):
                raise InvalidRequest(f"{at}.function_response: name and a response object are required")
    return parts


def check_schema(schema: object, where: str) -> None:
    """Gemini's Schema object, recursively: no JSON Schema keyword it does not know."""
    _known(schema, _SCHEMA_FIELDS, where)
    assert isinstance(schema, dict)
    kind = schema.get("type")
    if kind is not None and (not isinstance(kind, str) or kind.lower() not in _SCHEMA_TYPES):
        raise InvalidRequest(f"Invalid value at '{where}.type' ({kind!r})")
    if "enum" in schema and (
        str(kind).lower() != "string" or not all(isinstance(v, str) and v for v in schema["enum"])
    ):
        raise InvalidRequest(f"{where}.enum: only for STRING type, with non-empty values")
    if str(kind).lower() == "array" and "items" not in schema:
        raise InvalidRequest(f"{where}.items: missing field.")
    if str(kind).lower() == "object" and "properties" in schema and not schema["properties"]:
        raise InvalidRequest(f"{where}.properties: should be non-empty for OBJECT type")
    for name, sub in (schema.get("properties") or {}).items():
        check_schema(sub, f"{where}.properties[{name}]")
    if "items" in schema:
        check_schema(schema["items"], f"{where}.items")
    for k, sub in enumerate(schema.get("anyOf") or ()):
        check_schema(sub, f"{where}.anyOf[{k}]")


def words(value: object) -> int:
    """Words in every text of a request (contents and system instruction): the fake's token count."""
    if isinstance(value, dict):
        return sum(words(v) for k, v in value.items() if k in ("text", "contents", "parts", "systemInstruction"))
    if isinstance(value, list):
        return sum(words(v) for v in value)
    if isinstance(value, str):
        return len(value.split())
    return 0


@dataclass(slots=True)
class Plan:
    """The answer to one request, before it is framed whole or as a stream."""

    texts: list[str]
    reply: GeminiReply
    prompt_tokens: int
    model: str
    response_id: str = field(default_factory=lambda: secrets.token_urlsafe(16))

    @classmethod
    def of(cls, body: dict[str, Any], reply: GeminiReply, model: str) -> Plan:
        count = int((body.get("generationConfig") or {}).get("candidateCount") or 1)
        texts = [reply.text + (f" ({i})" if i else "") for i in range(count)]
        prompt = words(body.get("contents")) + words(body.get("systemInstruction")) + reply.cached_tokens
        return cls(texts, reply, prompt, model)

    def usage(self, *, final: bool = True) -> dict[str, Any]:
        usage: dict[str, Any] = {"promptTokenCount": self.prompt_tokens}
        candidates = sum(len(t.split()) for t in self.texts) if not self.reply.function_calls else 3 * len(self.texts)
        thoughts = len(self.reply.thought.split()) * len(self.texts) if self.reply.thought else 0
        if final:
            usage["candidatesTokenCount"] = candidates
            if thoughts:
                usage["thoughtsTokenCount"] = thoughts
        if self.reply.cached_tokens:
            usage["cachedContentTokenCount"] = self.reply.cached_tokens
        usage["totalTokenCount"] = self.prompt_tokens + (candidates + thoughts if final else 0)
        return usage

    def whole(self) -> dict[str, Any]:
        if self.reply.block_reason:
            return {
                **self._meta(),
                "promptFeedback": {"blockReason": self.reply.block_reason},
                "usageMetadata": self.usage(),
            }
        candidates = [
            {
                "content": {"role": "model", "parts": self._parts(text)},
                "finishReason": self.reply.finish_reason,
                "index": i,
            }
            for i, text in enumerate(self.texts)
        ]
        return {"candidates": candidates, "usageMetadata": self.usage(), **self._meta()}

    def events(self) -> Iterator[dict[str, Any]]:
        """GenerateContentResponse pieces: each candidate's text by `chunks` words, the last with finishReason."""
        if self.reply.block_reason or self.reply.function_calls:
            yield self.whole()
            return
        pieces = [_split(text, self.reply.chunks) for text in self.texts]
        if self.reply.thought:
            yield self._event([[{"text": self.reply.thought, "thought": True}] for _ in self.texts], last=False)
        rounds = max(len(p) for p in pieces)
        for r in range(rounds):
            last = r == rounds - 1
            parts = [[{"text": p[r]}] if r < len(p) else [] for p in pieces]
            yield self._event(parts, last=last)

    def _event(self, parts: list[list[dict[str, Any]]], *, last: bool) -> dict[str, Any]:
        candidates = []
        for i, candidate_parts in enumerate(parts):
            candidate: dict[str, Any] = {"content": {"role": "model", "parts": candidate_parts}, "index": i}
            if last:
                candidate["finishReason"] = self.reply.finish_reason
            if candidate_parts or last:
                candidates.append(candidate)
        return {"candidates": candidates, "usageMetadata": self.usage(final=last), **self._meta()}

    def _parts(self, text: str) -> list[dict[str, Any]]:
        if self.reply.function_calls:
            calls: list[dict[str, Any]] = [{"functionCall": dict(call)} for call in self.reply.function_calls]
            if self.reply.thought_signature:
                calls[0]["thoughtSignature"] = self.reply.thought_signature
            return calls
        parts: list[dict[str, Any]] = [{"text": self.reply.thought, "thought": True}] if self.reply.thought else []
        return [*parts, {"text": text}]

    def _meta(self) -> dict[str, Any]:
        return {"modelVersion": self.model, "responseId": self.response_id}


def _split(text: str, per: int) -> list[str]:
    tokens = text.split(" ")
    pieces = [" ".join(tokens[i : i + per]) for i in range(0, len(tokens), per)]
    return [p + (" " if i < len(pieces) - 1 else "") for i, p in enumerate(pieces)]
