"""Relaying an OpenAI SSE stream event by event while tapping its `usage`.

`SSETap.feed()` takes raw upstream bytes in pieces of any size and returns the complete events to
forward, at once, never buffering more than one partial event. On the way it reads `usage` from the
chunk that carries it, drops the extra usage-only chunk when the client did not ask for it (we ask the
upstream for it on our own account), and keeps the content pieces so that a stream without any usage
can still be counted.
"""

from __future__ import annotations

from typing import Any

import orjson

from haimaker.providers.redaction import sanitize_message

_USAGE_MARKERS = (b'"usage":{', b'"usage": {')
_MARKERS = (*_USAGE_MARKERS, b"[DONE]", b'"error"')


class SSETap:
    __slots__ = ("_buffer", "_keep_usage_chunk", "content_parts", "finished", "saw_error", "saw_finish_reason", "usage")

    def __init__(self, *, keep_usage_chunk: bool) -> None:
        self._buffer = b""
        self._keep_usage_chunk = keep_usage_chunk
        self.usage: dict[str, Any] | None = None
        self.content_parts: list[bytes] = []
        self.finished = False
        self.saw_error = False
        # Some OpenAI-compatible servers end a complete stream without `[DONE]`; a finish_reason says it was whole.
        self.saw_finish_reason = False

    def feed(self, data: bytes) -> bytes:
        """Consume raw bytes; return the bytes of the complete events to forward now (maybe empty)."""
        buffer = self._buffer + data if self._buffer else data
        if b"\r\n" in buffer:
            buffer = buffer.replace(b"\r\n", b"\n")
        end = buffer.rfind(b"\n\n")
        if end < 0:
            self._buffer = buffer
            return b""
        complete, self._buffer = buffer[: end + 2], buffer[end + 2 :]
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
                if forwarded is not None:
                    out.append(forwarded + b"\n\n")
        return b"".join(out)

    def flush(self) -> bytes:
        """Whatever partial event is left when the upstream closes (forwarded as is)."""
        rest, self._buffer = self._buffer, b""
        return rest

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
            error = _sanitized_error_event(data)
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
                self.usage = usage
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
                for choice in payload.get("choices") or () if isinstance(payload, dict) else ():
                    if not isinstance(choice, dict):
                        continue
                    delta = choice.get("delta")
                    text = delta.get("content") if isinstance(delta, dict) else choice.get("text")
                    if isinstance(text, str):
                        texts.append(text)
        return "".join(texts)


def _data_of(event: bytes) -> bytes | None:
    lines = [line[5:].lstrip() for line in event.split(b"\n") if line.startswith(b"data:")]
    if not lines:
        return None
    return b"\n".join(lines).strip()


def _sanitized_error_event(data: bytes) -> bytes | None:
    """`data: {"error": ...}` with its message scrubbed of secrets, or None when `data` is not an error."""
    try:
        payload = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    error = payload.get("error") if isinstance(payload, dict) else None
    if error is None:
        return None
    if isinstance(error, dict):
        message = sanitize_message(str(error.get("message") or "Upstream error."))
        error = {**error, "message": message}
    else:
        error = sanitize_message(str(error))
    return b"data: " + orjson.dumps({**payload, "error": error})


def error_event(message: str, error_type: str = "api_error", code: str = "502") -> bytes:
    """The SSE event that ends a client's stream when the upstream fails mid-way."""
    return (
        b"data: "
        + orjson.dumps({"error": {"message": message, "type": error_type, "param": None, "code": code}})
        + b"\n\n"
    )
