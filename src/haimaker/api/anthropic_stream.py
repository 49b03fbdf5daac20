"""The pipeline's OpenAI chat stream as Anthropic's Messages stream, event by event.

    message_start → ping → (content_block_start → content_block_delta* → content_block_stop)* → message_delta
    → message_stop

A text block carries `text_delta`s, a tool_use block `input_json_delta`s (the tool call's argument pieces as they
come). The OpenAI usage chunk (the dialect asks for it) feeds `message_delta.usage`; `[DONE]` ends the message. An
error event the relay sends when the upstream fails mid-stream becomes Anthropic's `event: error`.

Invariants: the pipeline's relay is always iterated to its end and closed (it settles the charge in its `finally`),
nothing is buffered beyond one partial event, and every event is sent as soon as its OpenAI chunk arrives.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson

from haimaker.api.anthropic_wire import anthropic_usage, error_detail, message_id_of, stop_reason_of
from haimaker.pipeline import StreamResult

_PING = b'event: ping\ndata: {"type":"ping"}\n\n'


def translate_stream(result: StreamResult) -> StreamResult:
    """`result` as Anthropic's stream; done once `message_stop` is out and the pipeline's stream is done."""
    translator = StreamTranslator()
    inner_done = result.done
    return StreamResult(
        result.headers,
        _relay(result.chunks, translator),
        done=lambda: translator.finished and inner_done(),
    )


async def _relay(chunks: AsyncIterator[bytes], translator: StreamTranslator) -> AsyncIterator[bytes]:
    try:
        async for piece in chunks:
            out = translator.feed(piece)
            if out:
                yield out
        out = translator.close()
        if out:
            yield out
    finally:
        # The pipeline's relay settles in its own `finally`: close it whichever way we leave (end, hang-up).
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()


def _event(name: bytes, payload: dict[str, Any]) -> bytes:
    return b"event: " + name + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


class StreamTranslator:
    """Turns OpenAI SSE bytes (whole events, in pieces of any size) into Anthropic SSE bytes."""

    def __init__(self) -> None:
        self._buffer = b""
        self._started = False
        self._blocks = 0  # content blocks started so far (the next block's index)
        self._open: str | None = None  # "text" or "tool_use" while a block is open
        self._tool_index: object = None  # the OpenAI tool call index of the open tool_use block
        self._stop_reason: str | None = None
        self._usage: dict[str, Any] | None = None
        self.finished = False  # message_stop (or an error event) has been produced: nothing follows

    def feed(self, data: bytes) -> bytes:
        if self.finished:
            return b""
        self._buffer += data.replace(b"\r\n", b"\n") if b"\r" in data else data
        out: list[bytes] = []
        while not self.finished:
            end = self._buffer.find(b"\n\n")
            if end < 0:
                break
            event, self._buffer = self._buffer[:end], self._buffer[end + 2 :]
            payload = _data_of(event)
            if payload is not None:
                self._translate(payload, out)
        return b"".join(out)

    def close(self) -> bytes:
        """What ends the message when the stream ended without `[DONE]` after its finish reason; else nothing."""
        if self.finished or not self._started or self._stop_reason is None:
            return b""
        out: list[bytes] = []
        self._finish(out)
        return b"".join(out)

    def _translate(self, payload: bytes, out: list[bytes]) -> None:
        if payload == b"[DONE]":
            self._finish(out)
            return
        try:
            chunk = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return  # the pipeline's tap only relays events it could read; a comment or keep-alive otherwise
        if not isinstance(chunk, dict):
            return
        error = chunk.get("error")
        if isinstance(error, dict) and not chunk.get("choices"):
            self._fail(error, out)
            return
        if not self._started:
            self._start(chunk, out)
        for choice in chunk.get("choices") or ():
            if isinstance(choice, dict) and choice.get("index", 0) == 0:
                self._choice(choice, out)
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self._usage = usage

    def _start(self, chunk: dict[str, Any], out: list[bytes]) -> None:
        self._started = True
        message: dict[str, Any] = {
            "id": message_id_of(chunk.get("id")),
            "type": "message",
            "role": "assistant",
            "model": chunk.get("model") or "unknown",
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            # The prompt's count arrives with the usage chunk at the end: message_delta carries it.
            "usage": anthropic_usage(None),
        }
        out.append(_event(b"message_start", {"type": "message_start", "message": message}))
        out.append(_PING)

    def _choice(self, choice: dict[str, Any], out: list[bytes]) -> None:
        delta = choice.get("delta")
        if isinstance(delta, dict):
            text = delta.get("content")
            if not isinstance(text, str) or not text:
                text = delta.get("refusal")
            if isinstance(text, str) and text:
                self._text(text, out)
            for call in delta.get("tool_calls") or ():
                if isinstance(call, dict):
                    self._tool_call(call, out)
        finish = choice.get("finish_reason")
        if finish is not None:
            self._stop_reason = stop_reason_of(finish)
            self._close_block(out)

    def _text(self, text: str, out: list[bytes]) -> None:
        if self._open != "text":
            self._close_block(out)
            self._open_block({"type": "text", "text": ""}, "text", out)
        self._delta({"type": "text_delta", "text": text}, out)

    def _tool_call(self, call: dict[str, Any], out: list[bytes]) -> None:
        raw_function = call.get("function")
        function: dict[str, Any] = raw_function if isinstance(raw_function, dict) else {}
        index = call.get("index", self._tool_index)
        if self._open != "tool_use" or index != self._tool_index:
            self._close_block(out)
            name = function.get("name") or ""
            block: dict[str, Any] = {"type": "tool_use", "id": call.get("id") or "", "name": name, "input": {}}
            self._open_block(block, "tool_use", out)
            self._tool_index = index
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            self._delta({"type": "input_json_delta", "partial_json": arguments}, out)

    def _delta(self, delta: dict[str, Any], out: list[bytes]) -> None:
        payload = {"type": "content_block_delta", "index": self._blocks - 1, "delta": delta}
        out.append(_event(b"content_block_delta", payload))

    def _open_block(self, block: dict[str, Any], kind: str, out: list[bytes]) -> None:
        payload = {"type": "content_block_start", "index": self._blocks, "content_block": block}
        out.append(_event(b"content_block_start", payload))
        self._blocks += 1
        self._open = kind

    def _close_block(self, out: list[bytes]) -> None:
        if self._open is not None:
            out.append(_event(b"content_block_stop", {"type": "content_block_stop", "index": self._blocks - 1}))
            self._open = None
            self._tool_index = None

    def _finish(self, out: list[bytes]) -> None:
        if not self._started:
            self._start({}, out)
        self._close_block(out)
        delta = {"stop_reason": self._stop_reason or "end_turn", "stop_sequence": None}
        usage = anthropic_usage(self._usage)
        out.append(_event(b"message_delta", {"type": "message_delta", "delta": delta, "usage": usage}))
        out.append(_event(b"message_stop", {"type": "message_stop"}))
        self.finished = True

    def _fail(self, error: dict[str, Any], out: list[bytes]) -> None:
        code = error.get("code")
        status = int(code) if isinstance(code, str) and code.isdigit() else 500
        message = error.get("message") if isinstance(error.get("message"), str) else "Upstream error."
        own_type = error.get("type") if isinstance(error.get("type"), str) else None
        out.append(_event(b"error", {"type": "error", "error": error_detail(status, str(message), own_type)}))
        self.finished = True


def _data_of(event: bytes) -> bytes | None:
    """The data of one SSE event (its `data:` lines joined), None for a comment or an event without data."""
    lines = [line for line in event.split(b"\n") if line.startswith(b"data:")]
    if not lines:
        return None
    return b"\n".join(line[6:] if line[5:6] == b" " else line[5:] for line in lines).strip()
