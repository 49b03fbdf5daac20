"""A Gemini `GenerateContentResponse` as an OpenAI `chat.completion`, whole or as a stream of chunks.

    candidates[i] (index)            -> choices[index]
    parts[].text                     -> message.content (parts marked `thought` -> reasoning_content)
    parts[].functionCall             -> message.tool_calls (Gemini's `id`, or one minted; a thoughtSignature is
                                        appended as `__thought__<signature>`, see gemini_request.py)
    finishReason                     -> finish_reason (STOP: stop, or tool_calls when the candidate called one;
                                        MAX_TOKENS: length; SAFETY, RECITATION, BLOCKLIST...: content_filter)
    promptFeedback.blockReason       -> one choice, content null, finish_reason content_filter
    usageMetadata                    -> usage: prompt_tokens = promptTokenCount (+ toolUsePromptTokenCount), of which
                                        prompt_tokens_details.cached_tokens = cachedContentTokenCount; completion_tokens
                                        = candidatesTokenCount + thoughtsTokenCount (reasoning_tokens)

A stream (`streamGenerateContent?alt=sse`) is a series of `data: <GenerateContentResponse>` events, each with the
new text of each candidate and the usage so far; `GeminiStream.feed()` turns each into `chat.completion.chunk`
events and `GeminiStream.finish()` adds the usage chunk (when asked) and `[DONE]`.

Invariants: a partial upstream event is buffered (never more than `MAX_EVENT_BYTES`); a chunk never carries a
`usage` object except the final usage-only one, so the relay's tap reads the usage exactly once.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Final

import orjson

from haimaker.errors import BadGatewayError
from haimaker.providers.gemini_request import THOUGHT_SIGNATURE_SEPARATOR

# Gemini's finish reasons and their OpenAI meaning (LiteLLM's `_FINISH_REASON_MAP`); anything else reads as stop.
_FINISH_REASONS: Final = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "LANGUAGE": "content_filter",
    "OTHER": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "IMAGE_PROHIBITED_CONTENT": "content_filter",
    "IMAGE_RECITATION": "content_filter",
    "IMAGE_OTHER": "content_filter",
    "NO_IMAGE": "content_filter",
    "FINISH_REASON_UNSPECIFIED": "stop",
    "MALFORMED_FUNCTION_CALL": "stop",
    "UNEXPECTED_TOOL_CALL": "stop",
    "TOO_MANY_TOOL_CALLS": "stop",
}
MAX_EVENT_BYTES: Final = 8 * 1024 * 1024


def finish_reason(reason: object, *, called_tools: bool) -> str | None:
    """OpenAI's finish_reason for Gemini's (None while the candidate is not finished)."""
    if not isinstance(reason, str) or not reason:
        return None
    mapped = _FINISH_REASONS.get(reason, "stop")
    return "tool_calls" if called_tools and mapped == "stop" else mapped


def openai_usage(metadata: object) -> dict[str, Any] | None:
    """OpenAI's `usage` for Gemini's `usageMetadata` (None when there is none)."""
    if not isinstance(metadata, dict):
        return None
    prompt = _count(metadata, "promptTokenCount") + _count(metadata, "toolUsePromptTokenCount")
    thoughts = _count(metadata, "thoughtsTokenCount")
    completion = _count(metadata, "candidatesTokenCount") + thoughts
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": _count(metadata, "cachedContentTokenCount")},
        "completion_tokens_details": {"reasoning_tokens": thoughts},
    }


def _count(metadata: dict[str, Any], name: str) -> int:
    value = metadata.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _new_call_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]


def _candidate_parts(candidate: dict[str, Any]) -> tuple[str | None, str | None, list[dict[str, Any]]]:
    """(text, reasoning text, tool_calls without their index) of a candidate's parts."""
    content = candidate.get("content")
    parts = content.get("parts") if isinstance(content, dict) else None
    texts: list[str] = []
    thoughts: list[str] = []
    calls: list[dict[str, Any]] = []
    for part in parts if isinstance(parts, list) else ():
        if not isinstance(part, dict):
            continue
        call = part.get("functionCall")
        if isinstance(call, dict):
            call_id = call.get("id") if isinstance(call.get("id"), str) and call.get("id") else _new_call_id()
            signature = part.get("thoughtSignature")
            if isinstance(signature, str) and signature:
                call_id = f"{call_id}{THOUGHT_SIGNATURE_SEPARATOR}{signature}"
            calls.append(
                {
                    "id": call_id,
                    "type": "function",
                    "function": {
                        "name": str(call.get("name") or ""),
                        "arguments": orjson.dumps(call.get("args") or {}).decode(),
                    },
                }
            )
        elif isinstance(part.get("text"), str):
            (thoughts if part.get("thought") is True else texts).append(part["text"])
    return ("".join(texts) if texts else None), ("".join(thoughts) if thoughts else None), calls


def _candidates(answer: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    candidates = answer.get("candidates")
    found = []
    for position, candidate in enumerate(candidates if isinstance(candidates, list) else ()):
        if isinstance(candidate, dict):
            index = candidate.get("index")
            found.append((index if isinstance(index, int) else position, candidate))
    return found


def _checked(raw: bytes) -> dict[str, Any]:
    try:
        answer = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadGatewayError("Gemini sent an answer that is not JSON.") from None
    if not isinstance(answer, dict):
        raise BadGatewayError("Gemini sent an answer that is not a JSON object.")
    error = answer.get("error")
    if isinstance(error, dict):
        raise BadGatewayError(f"Gemini error: {error.get('message') or error.get('status') or 'unknown'}")
    return answer


def chat_completion(raw: bytes, model: str) -> bytes:
    """The `chat.completion` for a whole GenerateContentResponse body."""
    answer = _checked(raw)
    choices: list[dict[str, Any]] = []
    for index, candidate in _candidates(answer):
        text, reasoning, calls = _candidate_parts(candidate)
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if reasoning is not None:
            message["reasoning_content"] = reasoning
        if calls:
            message["tool_calls"] = calls
        reason = finish_reason(candidate.get("finishReason"), called_tools=bool(calls)) or "stop"
        choices.append({"index": index, "message": message, "finish_reason": reason, "logprobs": None})
    if not choices:  # the prompt itself was blocked (promptFeedback.blockReason): nothing was generated
        message = {"role": "assistant", "content": None}
        choices.append({"index": 0, "message": message, "finish_reason": "content_filter", "logprobs": None})
    choices.sort(key=lambda choice: int(choice["index"]))
    completion: dict[str, Any] = {
        "id": _completion_id(answer),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": str(answer.get("modelVersion") or model),
        "choices": choices,
    }
    usage = openai_usage(answer.get("usageMetadata"))
    if usage is not None:
        completion["usage"] = usage
    return orjson.dumps(completion)


def _completion_id(answer: dict[str, Any]) -> str:
    response_id = answer.get("responseId")
    return "chatcmpl-" + (response_id if isinstance(response_id, str) and response_id else uuid.uuid4().hex)


class GeminiStream:
    """Turns the bytes of a Gemini SSE stream into OpenAI chunk events, piece by piece."""

    __slots__ = (
        "_buffer",
        "_called",
        "_created",
        "_id",
        "_model",
        "_started",
        "_usage",
        "_with_usage",
        "is_complete",
    )

    def __init__(self, model: str, *, with_usage: bool) -> None:
        self._model = model
        self._with_usage = with_usage
        self._buffer = b""
        self._id: str | None = None
        self._created = int(time.time())
        self._started: set[int] = set()  # candidates whose first chunk (with the role) was sent
        self._called: dict[int, int] = {}  # tool calls sent per candidate (their index in the delta)
        self._usage: dict[str, Any] | None = None
        self.is_complete = False  # a candidate finished (finishReason) or the prompt was blocked

    def feed(self, piece: bytes) -> list[bytes]:
        """The OpenAI events for the complete upstream events in `piece` (and what was buffered before it)."""
        start = max(len(self._buffer) - 3, 0)  # a boundary may straddle the pieces: rescan the old tail only
        self._buffer += piece
        if b"\r" in piece or self._buffer[start : start + 3].find(b"\r") >= 0:
            self._buffer = self._buffer.replace(b"\r\n", b"\n")
            start = 0
        events: list[bytes] = []
        while True:
            end = self._buffer.find(b"\n\n", start)
            if end < 0:
                break
            event, self._buffer = self._buffer[:end], self._buffer[end + 2 :]
            start = 0
            events.extend(self._translate(event))
        if len(self._buffer) > MAX_EVENT_BYTES:
            raise BadGatewayError(f"Gemini sent a stream event larger than {MAX_EVENT_BYTES} bytes.")
        return events

    def finish(self) -> list[bytes]:
        """The events after the upstream stream ended: the rest, then, if Gemini finished (`is_complete`), the
        usage chunk (when asked) and `[DONE]`; a stream cut short gets neither, so it is not taken as whole."""
        events = self._translate(self._buffer) if self._buffer.strip() else []
        self._buffer = b""
        if not self.is_complete:
            return events
        if self._with_usage and self._usage is not None:
            events.append(self._event([], usage=self._usage))
        events.append(b"data: [DONE]\n\n")
        return events

    def _translate(self, event: bytes) -> list[bytes]:
        lines = [line[5:].strip() for line in event.split(b"\n") if line.startswith(b"data:")]
        data = b"\n".join(lines)
        if not data:
            return []
        answer = _checked(data)
        if self._id is None:
            self._id = _completion_id(answer)
        model = answer.get("modelVersion")
        if isinstance(model, str) and model:
            self._model = model
        usage = openai_usage(answer.get("usageMetadata"))
        if usage is not None:
            self._usage = usage  # cumulative: the last one is the whole call's
        out = []
        candidates = _candidates(answer)
        if (
            not candidates
            and isinstance(answer.get("promptFeedback"), dict)
            and answer["promptFeedback"].get("blockReason")
        ):
            out.append(self._event([{"index": 0, "delta": {"role": "assistant"}, "finish_reason": "content_filter"}]))
            self.is_complete = True
        for index, candidate in candidates:
            out.append(self._event([self._choice(index, candidate)]))
        return out

    def _choice(self, index: int, candidate: dict[str, Any]) -> dict[str, Any]:
        text, reasoning, calls = _candidate_parts(candidate)
        delta: dict[str, Any] = {}
        if index not in self._started:
            self._started.add(index)
            delta["role"] = "assistant"
        if text is not None:
            delta["content"] = text
        if reasoning is not None:
            delta["reasoning_content"] = reasoning
        if calls:
            first = self._called.get(index, 0)
            delta["tool_calls"] = [{"index": first + i, **call} for i, call in enumerate(calls)]
            self._called[index] = first + len(calls)
        reason = finish_reason(candidate.get("finishReason"), called_tools=self._called.get(index, 0) > 0)
        if reason is not None:
            self.is_complete = True
        return {"index": index, "delta": delta, "finish_reason": reason, "logprobs": None}

    def _event(self, choices: list[dict[str, Any]], *, usage: dict[str, Any] | None = None) -> bytes:
        chunk: dict[str, Any] = {
            "id": self._id or "chatcmpl-" + uuid.uuid4().hex,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "choices": choices,
        }
        if usage is not None:
            chunk["usage"] = usage
        return b"data: " + orjson.dumps(chunk) + b"\n\n"
