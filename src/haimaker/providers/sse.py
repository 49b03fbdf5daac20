"""Relaying an OpenAI SSE stream event by event while tapping its `usage`.

`SSETap.feed()` takes raw upstream bytes in pieces of any size and returns the complete events to
forward, at once, never buffering more than one partial event. On the way it reads `usage` from the
chunk that carries it, drops the extra usage-only chunk when the client did not ask for it (we ask the
upstream for it on our own account), and keeps the content pieces so that a stream without any usage
can still be counted.

A Responses API stream (`responses=True`, issue 13) has no `[DONE]` and no usage chunk: its terminal event
(`response.completed`, `response.failed` or `response.incomplete`) ends it and carries the usage in
`response.usage`; its produced text is the `response.*.delta` events'.

Invariants (issue 10): the work per piece is linear in the piece (only new bytes are scanned for an event
boundary); a partial event is held up to `max_event_bytes`, past which the stream fails; a usage no model can
report is never relayed nor priced; no configured secret leaves in any event, error events scrubbed field by field.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import orjson

from haimaker.accounting.pricing import Usage, UsageError, usage_from_openai
from haimaker.errors import BadGatewayError, UpstreamError
from haimaker.providers.redaction import Redactor

_USAGE_MARKERS = (b'"usage":{', b'"usage": {')
_MARKERS = (*_USAGE_MARKERS, b"[DONE]", b'"error"')
# The largest event a real stream carries is far smaller: a whole 128k-token answer sent as one event (servers that
# do not really stream) is about 0.5 MB, a partial image of the Responses API (base64 PNG, 1536x1024) 2-5 MB.
# Past 8 MiB an "event" is a fault or an attack (one 20 MB line used to take the loop for 15 s and RSS to 1.27 GB).
DEFAULT_MAX_EVENT_BYTES: Final = 8 * 1024 * 1024
_NO_SECRETS: Final = Redactor()
# The Responses API's terminal events (their JSON `type`), each carrying the final `response` object.
_RESPONSE_TERMINAL_TYPES: Final = frozenset({"response.completed", "response.failed", "response.incomplete"})
_RESPONSE_TERMINAL_MARKERS: Final = tuple(b'"' + name.encode() + b'"' for name in _RESPONSE_TERMINAL_TYPES)
# Responses events whose `delta` is produced text (what a cut stream is charged for).
_RESPONSE_TEXT_DELTAS: Final = frozenset(
    {"response.output_text.delta", "response.refusal.delta", "response.function_call_arguments.delta"}
)


class SSETap:
    """Splits an upstream's SSE bytes into whole events for the client, tapping `usage` and scrubbing secrets.

    Bounded work: each piece is scanned once for an event boundary (plus one byte of the piece before), so a huge
    event costs linear time, and a partial event is buffered only up to `max_event_bytes`. A fault (an event past
    the cap, an impossible usage) ends the tap: the events complete before it are returned first, then `feed()` /
    `flush()` raise it as a `BadGatewayError`, which the relay turns into an error event.
    """

    __slots__ = (
        "_check_usage",
        "_ends_with_newline",
        "_failure",
        "_keep_usage_chunk",
        "_max_event_bytes",
        "_parts",
        "_pending_cr",
        "_redactor",
        "_responses",
        "_size",
        "content_parts",
        "finished",
        "parsed_usage",
        "saw_error",
        "saw_finish_reason",
        "usage",
    )

    def __init__(
        self,
        *,
        keep_usage_chunk: bool,
        redactor: Redactor | None = None,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
        check_usage: Callable[[Usage], object] | None = None,
        responses: bool = False,
    ) -> None:
        """`check_usage` may refuse a parsed usage by raising `UsageError` (the pipeline bounds its cost there);
        `responses`: the stream is the Responses API's (its terminal event ends it and carries the usage)."""
        self._responses = responses
        self._parts: list[bytes] = []
        self._size = 0
        self._ends_with_newline = False
        self._pending_cr = False
        self._failure: UpstreamError | None = None
        self._keep_usage_chunk = keep_usage_chunk
        self._redactor = redactor or _NO_SECRETS
        self._max_event_bytes = max_event_bytes
        self._check_usage = check_usage
        self.usage: dict[str, Any] | None = None
        self.parsed_usage: Usage | None = None
        self.content_parts: list[bytes] = []
        self.finished = False
        self.saw_error = False
        # Some OpenAI-compatible servers end a complete stream without `[DONE]`; a finish_reason says it was whole.
        self.saw_finish_reason = False

    def feed(self, data: bytes) -> bytes:
        """Consume raw bytes; return the bytes of the complete events to forward now (maybe empty).

        Raises:
            BadGatewayError: the stream broke a bound (after the events complete before the fault were returned).
        """
        if self._failure is not None:
            raise self._failure
        complete = self._complete_events(data)
        out = self._forward(complete) if complete else b""
        if self._failure is not None and not out:
            raise self._failure
        return out

    def flush(self) -> bytes:
        """Whatever partial event is left when the upstream closes (forwarded as is, scrubbed)."""
        if self._failure is not None:
            raise self._failure
        rest = b"".join(self._parts) + (b"\r" if self._pending_cr else b"")
        self._parts, self._size, self._pending_cr = [], 0, False
        if rest and self._redactor.contains_secret(rest):
            rest = self._redactor.bytes(rest)
        return rest

    def _fail(self, message: str) -> None:
        if self._failure is None:
            self._failure = BadGatewayError(message)
        self._parts, self._size = [], 0  # nothing more is relayed: free the buffer now

    def _complete_events(self, data: bytes) -> bytes:
        """Buffer `data`; return the complete events it finishes (maybe none)."""
        if self._pending_cr:
            data = b"\r" + data
            self._pending_cr = False
        if b"\r" in data:
            if data.endswith(b"\r"):  # maybe half of a CRLF: decide with the next piece
                data = data[:-1]
                self._pending_cr = True
            data = data.replace(b"\r\n", b"\n")
        if not data:
            return b""
        # Only the new bytes are scanned; a boundary can also straddle the previous piece's last byte.
        end = data.rfind(b"\n\n")
        cut = end + 2 if end >= 0 else (1 if self._ends_with_newline and data[:1] == b"\n" else 0)
        if cut == 0:
            self._parts.append(data)
            self._size += len(data)
            self._ends_with_newline = data.endswith(b"\n")
            if self._size > self._max_event_bytes:
                self._fail(f"Upstream sent a stream event larger than {self._max_event_bytes} bytes.")
            return b""
        head, rest = data[:cut], data[cut:]
        complete = b"".join([*self._parts, head]) if self._parts else head
        self._parts = [rest] if rest else []
        self._size = len(rest)
        self._ends_with_newline = rest.endswith(b"\n") if rest else True
        if len(complete) > self._max_event_bytes:
            complete = self._within_cap(complete)
        if self._size > self._max_event_bytes:
            self._fail(f"Upstream sent a stream event larger than {self._max_event_bytes} bytes.")
        return complete

    def _within_cap(self, complete: bytes) -> bytes:
        """The events of `complete` before the first one over the cap (which fails the tap); rare, so not fast."""
        start = 0
        while start < len(complete):
            end = complete.find(b"\n\n", start)
            end = len(complete) if end < 0 else end + 2
            if end - start > self._max_event_bytes:
                self._fail(f"Upstream sent a stream event larger than {self._max_event_bytes} bytes.")
                return complete[:start]
            start = end
        return complete

    def _forward(self, complete: bytes) -> bytes:
        """Tap and scrub complete events; return what the client gets."""
        if self._redactor.contains_secret(complete):
            # Whatever an upstream echoes (our key in an error event or anywhere else) leaves without it.
            complete = self._redactor.bytes(complete)
        if self._responses:
            return self._forward_responses(complete)
        # Plain `in` tests, not any(genexpr): this runs for every piece of every stream.
        if not self.saw_finish_reason and (b'"finish_reason":"' in complete or b'"finish_reason": "' in complete):
            self.saw_finish_reason = True
        if not self._needs_inspection(complete):
            self._collect_content(complete)
            return complete
        # Markers sit at the end of a stream (usage chunk, [DONE]): forward the events before the first
        # marked one untouched and inspect only the rest, instead of parsing every event of the piece.
        first = min(i for i in (complete.find(m) for m in _MARKERS) if i >= 0)
        boundary = complete.rfind(b"\n\n", 0, first)
        head_end = boundary + 2 if boundary >= 0 else 0
        out = []
        if head_end > 0:
            head = complete[:head_end]
            self._collect_content(head)
            out.append(head)
            complete = complete[head_end:]
        for event in complete.split(b"\n\n"):
            if event:
                forwarded = self._inspect(event)
                if self._failure is not None:
                    break  # the faulty event and everything after it are not relayed
                if forwarded is not None:
                    out.append(forwarded + b"\n\n")
        return b"".join(out)

    def _forward_responses(self, complete: bytes) -> bytes:
        """`_forward` for a Responses stream: only pieces holding a terminal or error event are parsed."""
        if b'"error"' not in complete and not any(marker in complete for marker in _RESPONSE_TERMINAL_MARKERS):
            self._collect_content(complete)
            return complete
        out = []
        for event in complete.split(b"\n\n"):
            if event:
                forwarded = self._inspect_response_event(event)
                if forwarded is None:  # the tap failed the stream (`_fail`): nothing more is relayed
                    break
                out.append(forwarded + b"\n\n")
        return b"".join(out)

    def _inspect_response_event(self, event: bytes) -> bytes | None:
        data = _data_of(event)
        try:
            payload = orjson.loads(data) if data else None
        except orjson.JSONDecodeError:
            payload = None
        kind = payload.get("type") if isinstance(payload, dict) else None
        if kind == "error":
            self.saw_error = True
            return event
        if kind not in _RESPONSE_TERMINAL_TYPES:
            self._collect_content(event + b"\n\n")
            return event
        assert isinstance(payload, dict)
        self.finished = True
        response = payload.get("response")
        usage = response.get("usage") if isinstance(response, dict) else None
        if isinstance(usage, dict):
            try:
                parsed = usage_from_openai(usage)
                if parsed is not None and self._check_usage is not None:
                    self._check_usage(parsed)
            except UsageError as exc:
                self._fail(f"Upstream reported an impossible usage ({exc}).")
                return None
            self.usage = usage
            self.parsed_usage = parsed
        return event

    @staticmethod
    def _needs_inspection(chunk: bytes) -> bool:
        # Plain `in` tests rather than a loop over _MARKERS: this runs on every piece of every stream.
        return b'"usage":{' in chunk or b'"usage": {' in chunk or b"[DONE]" in chunk or b'"error"' in chunk

    def _inspect(self, event: bytes) -> bytes | None:
        """Tap one event; return what to forward in its place (None: drop it)."""
        data = _data_of(event)
        if data is None:
            return event
        if data == b"[DONE]":
            self.finished = True
            return event
        if b'"error"' in data:
            error = _sanitized_error_event(data, self._redactor)
            if error is not None:
                # An upstream error event may echo what we sent it (our key included): pass it on sanitised.
                self.saw_error = True
                return error
        if not any(marker in data for marker in _USAGE_MARKERS):
            self._collect_content(event)
            return event
        try:
            payload = orjson.loads(data)
        except orjson.JSONDecodeError:
            return event
        if isinstance(payload, dict):
            usage = payload.get("usage")
            if isinstance(usage, dict):
                try:
                    parsed = usage_from_openai(usage)
                    if parsed is not None and self._check_usage is not None:
                        self._check_usage(parsed)
                except UsageError as exc:
                    # Never relayed nor priced: the client gets an error event, the call is charged for its text.
                    self._fail(f"Upstream reported an impossible usage ({exc}).")
                    return None
                self.usage = usage
                self.parsed_usage = parsed
            choices = payload.get("choices")
            if choices:
                self._collect_content(event + b"\n\n")
            elif not self._keep_usage_chunk:
                return None
        return event

    def _collect_content(self, chunk: bytes) -> None:
        # Keep raw events only; they are parsed solely if the stream ends without usage.
        self.content_parts.append(chunk)

    def produced_text(self) -> str:
        """The text the stream delivered so far (for counting when no usage arrived)."""
        texts: list[str] = []
        for part in self.content_parts:
            for event in part.split(b"\n\n"):
                data = _data_of(event)
                if not data or data == b"[DONE]":
                    continue
                try:
                    payload = orjson.loads(data)
                except orjson.JSONDecodeError:
                    continue
                if not isinstance(payload, dict):
                    continue
                if self._responses:
                    delta = payload.get("delta")
                    if payload.get("type") in _RESPONSE_TEXT_DELTAS and isinstance(delta, str):
                        texts.append(delta)
                else:
                    texts.extend(choice_texts(payload, "delta"))
        return "".join(texts)


def _data_of(event: bytes) -> bytes | None:
    lines = [line[5:].lstrip() for line in event.split(b"\n") if line.startswith(b"data:")]
    if not lines:
        return None
    return b"\n".join(lines).strip()


def choice_texts(answer: dict[str, Any], part: str) -> list[str]:
    """The text of every choice of an answer (`part` "message") or a stream chunk (`part` "delta"): the chat
    message's text (`message_texts`), or a completion's `text`."""
    texts: list[str] = []
    choices = answer.get("choices")
    for choice in choices if isinstance(choices, list) else ():
        if not isinstance(choice, dict):
            continue
        message = choice.get(part)
        if isinstance(message, dict):
            texts.extend(message_texts(message))
        elif isinstance(choice.get("text"), str):
            texts.append(choice["text"])
    return texts


def response_output_texts(response: dict[str, Any]) -> list[str]:
    """The generated text of a Responses API answer: its messages' output text and refusals, its function calls'
    names and arguments."""
    texts: list[str] = []
    output = response.get("output")
    for item in output if isinstance(output, list) else ():
        if not isinstance(item, dict):
            continue
        if item.get("type") == "function_call":
            texts.extend(v for v in (item.get("name"), item.get("arguments")) if isinstance(v, str))
            continue
        content = item.get("content")
        for part in content if isinstance(content, list) else ():
            if isinstance(part, dict):
                texts.extend(v for v in (part.get("text"), part.get("refusal")) if isinstance(v, str))
    return texts


def message_texts(message: dict[str, Any]) -> list[str]:
    """The generated text of a chat message or delta: content (string or text parts), refusal, tool-call arguments."""
    texts: list[str] = []
    content = message.get("content")
    if isinstance(content, str):
        texts.append(content)
    elif isinstance(content, list):
        texts.extend(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    refusal = message.get("refusal")
    if isinstance(refusal, str):
        texts.append(refusal)
    for call in message.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            texts.extend(v for v in (function.get("name"), function.get("arguments")) if isinstance(v, str))
    return texts


def _sanitized_error_event(data: bytes, redactor: Redactor) -> bytes | None:
    """`data: {"error": ...}` with every field scrubbed of secrets, or None when `data` is not an error."""
    try:
        payload = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    error = payload.get("error") if isinstance(payload, dict) else None
    if error is None:
        return None
    if isinstance(error, dict) and not error.get("message"):
        error = {**error, "message": "Upstream error."}
    # Every field, not only `message`: upstreams echo what we sent in `param`, `type` or `code` too.
    return b"data: " + orjson.dumps(redactor.value({**payload, "error": error}))


def error_event(message: str, error_type: str = "api_error", code: str = "502") -> bytes:
    """The SSE event that ends a client's stream when the upstream fails mid-way."""
    return (
        b"data: "
        + orjson.dumps({"error": {"message": message, "type": error_type, "param": None, "code": code}})
        + b"\n\n"
    )
