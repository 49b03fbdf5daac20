"""A chat completion stream as the Responses API's event stream, and the Responses answer object they share.

The events, in the order and shape api.openai.com sends them and the openai SDK's stream state machine checks
(`openai/lib/streaming/responses`): `response.created`, `response.in_progress`; per output item
`response.output_item.added`, then for a message `response.content_part.added`, `response.output_text.delta`...,
`response.output_text.done`, `response.content_part.done`, or for a function call
`response.function_call_arguments.delta`..., `response.function_call_arguments.done`; then
`response.output_item.done`; last `response.completed` (or `response.incomplete` when the model hit its token limit,
`response.failed` after an `error` event when the upstream failed mid-stream), carrying the whole answer and its
usage. Every event has `type` and a `sequence_number` counting from 0, and goes out as `event: <type>` + `data:`.

Invariants: items keep one id from `added` to `done` and in the final answer (the SDK refuses a changed identity);
the chat stream is consumed as it arrives, and closing the translated stream closes the chat stream (the pipeline's
relay settles in its `finally`).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

# Request fields the answer echoes, with the value OpenAI reports when the request leaves them out.
_ECHOED: tuple[tuple[str, Any], ...] = (
    ("instructions", None),
    ("max_output_tokens", None),
    ("parallel_tool_calls", True),
    ("temperature", 1.0),
    ("tool_choice", "auto"),
    ("tools", []),
    ("top_p", 1.0),
    ("user", None),
    ("safety_identifier", None),
    ("metadata", {}),
)


@dataclass(frozen=True, slots=True)
class ResponseShell:
    """The parts of a Responses answer fixed by its request: id, time, echoed settings."""

    id: str
    created_at: int
    model: Any
    echoed: dict[str, Any]

    @classmethod
    def of(cls, request: Mapping[str, Any], response_id: str, created_at: int) -> ResponseShell:
        echoed = {name: request.get(name, default) for name, default in _ECHOED}
        echoed["text"] = request.get("text") or {"format": {"type": "text"}}
        echoed["reasoning"] = request.get("reasoning") or {"effort": None, "summary": None}
        return cls(response_id, created_at, request.get("model"), echoed)

    def response(
        self, status: str, output: list[dict[str, Any]], usage: dict[str, Any] | None, *, model: Any = None
    ) -> dict[str, Any]:
        """The `response` object in `status` ("in_progress", "completed", "incomplete", "failed")."""
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "background": False,
            "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
            "model": model if model is not None else self.model,
            "output": output,
            "previous_response_id": None,
            "store": False,
            "truncation": "disabled",
            **self.echoed,
            "usage": usage,
        }


def response_usage(usage: object) -> dict[str, Any] | None:
    """A chat `usage` in the Responses API's shape (`input_tokens` include the cached ones, as `prompt_tokens`)."""
    if not isinstance(usage, dict):
        return None
    prompt = _count(usage.get("prompt_tokens"))
    completion = _count(usage.get("completion_tokens"))
    prompt_details = usage.get("prompt_tokens_details")
    completion_details = usage.get("completion_tokens_details")
    cached = _count(prompt_details.get("cached_tokens")) if isinstance(prompt_details, dict) else 0
    reasoning = _count(completion_details.get("reasoning_tokens")) if isinstance(completion_details, dict) else 0
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": _count(usage.get("total_tokens")) or prompt + completion,
    }


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


@dataclass(slots=True)
class _Call:
    """A function call being streamed."""

    item_id: str
    output_index: int
    call_id: str
    name: str
    arguments: list[str] = field(default_factory=list)

    def item(self, status: str) -> dict[str, Any]:
        return {
            "id": self.item_id,
            "type": "function_call",
            "status": status,
            "call_id": self.call_id,
            "name": self.name,
            "arguments": "".join(self.arguments) if status == "completed" else "",
        }


class _Translator:
    """Chat chunks in, Responses events out; one per stream."""

    def __init__(self, shell: ResponseShell) -> None:
        self._shell = shell
        self._sequence = 0
        self._started = False
        self._ended = False
        self._model: Any = None
        self._done: list[tuple[int, dict[str, Any]]] = []  # finished items and their output_index
        self._next_index = 0
        self._text_id: str | None = None
        self._text_index = 0
        self._text: list[str] = []
        self._calls: dict[int, _Call] = {}  # by the chat tool call's index
        self._usage: dict[str, Any] | None = None
        self._finish_reason: str | None = None

    def _event(self, kind: str, **fields: Any) -> bytes:
        payload = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"

    def _start(self, out: list[bytes]) -> None:
        if self._started:
            return
        self._started = True
        response = self._shell.response("in_progress", [], None, model=self._model)
        out.append(self._event("response.created", response=response))
        out.append(self._event("response.in_progress", response=response))

    def feed(self, chunk: Mapping[str, Any]) -> list[bytes]:
        out: list[bytes] = []
        if isinstance(chunk.get("model"), str):
            self._model = chunk["model"]
        self._start(out)
        if isinstance(chunk.get("usage"), dict):
            self._usage = response_usage(chunk["usage"])
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue  # Responses has no `n`: the first choice is the answer
            delta = choice.get("delta")
            if isinstance(delta, dict):
                content = delta.get("content")
                if isinstance(content, str) and content:
                    self._text_delta(content, out)
                for call in delta.get("tool_calls") or ():
                    if isinstance(call, dict):
                        self._call_delta(call, out)
            if choice.get("finish_reason"):
                self._finish_reason = choice["finish_reason"]
        return out

    def _text_delta(self, text: str, out: list[bytes]) -> None:
        if self._text_id is None:
            self._text_id = "msg_" + uuid.uuid4().hex
            self._text_index = self._take_index()
            item = {"id": self._text_id, "type": "message", "status": "in_progress", "role": "assistant", "content": []}
            out.append(self._event("response.output_item.added", output_index=self._text_index, item=item))
            out.append(
                self._event(
                    "response.content_part.added",
                    item_id=self._text_id,
                    output_index=self._text_index,
                    content_index=0,
                    part={"type": "output_text", "text": "", "annotations": [], "logprobs": []},
                )
            )
        self._text.append(text)
        out.append(
            self._event(
                "response.output_text.delta",
                item_id=self._text_id,
                output_index=self._text_index,
                content_index=0,
                delta=text,
                logprobs=[],
            )
        )

    def _take_index(self) -> int:
        index = self._next_index
        self._next_index += 1
        return index

    def _close_text(self, out: list[bytes]) -> None:
        if self._text_id is None:
            return
        text = "".join(self._text)
        part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
        common = {"item_id": self._text_id, "output_index": self._text_index, "content_index": 0}
        out.append(self._event("response.output_text.done", **common, text=text, logprobs=[]))
        out.append(self._event("response.content_part.done", **common, part=part))
        item = {"id": self._text_id, "type": "message", "status": "completed", "role": "assistant", "content": [part]}
        out.append(self._event("response.output_item.done", output_index=self._text_index, item=item))
        self._done.append((self._text_index, item))
        self._text_id = None

    def _call_delta(self, call: Mapping[str, Any], out: list[bytes]) -> None:
        index = call.get("index", 0)
        current = self._calls.get(index)
        raw_function = call.get("function")
        function: Mapping[str, Any] = raw_function if isinstance(raw_function, dict) else {}
        if current is None:
            self._close_text(out)  # a message's text is done once the model calls a tool
            current = _Call(
                item_id="fc_" + uuid.uuid4().hex,
                output_index=self._take_index(),
                call_id=str(call.get("id") or "call_" + uuid.uuid4().hex),
                name=str(function.get("name") or ""),
            )
            self._calls[index] = current
            out.append(
                self._event(
                    "response.output_item.added", output_index=current.output_index, item=current.item("in_progress")
                )
            )
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            current.arguments.append(arguments)
            out.append(
                self._event(
                    "response.function_call_arguments.delta",
                    item_id=current.item_id,
                    output_index=current.output_index,
                    delta=arguments,
                )
            )

    def _close_items(self, out: list[bytes]) -> None:
        self._close_text(out)
        for call in self._calls.values():
            arguments = "".join(call.arguments)
            out.append(
                self._event(
                    "response.function_call_arguments.done",
                    item_id=call.item_id,
                    output_index=call.output_index,
                    name=call.name,
                    arguments=arguments,
                )
            )
            item = call.item("completed")
            out.append(self._event("response.output_item.done", output_index=call.output_index, item=item))
            self._done.append((call.output_index, item))
        self._calls.clear()

    @property
    def _output(self) -> list[dict[str, Any]]:
        return [item for _, item in sorted(self._done, key=lambda done: done[0])]

    def finish(self) -> list[bytes]:
        """The closing events of a complete stream (each output item done, then the final response)."""
        if self._ended:
            return []
        self._ended = True
        out: list[bytes] = []
        self._start(out)
        self._close_items(out)
        status = "incomplete" if self._finish_reason == "length" else "completed"
        response = self._shell.response(status, self._output, self._usage, model=self._model)
        out.append(self._event(f"response.{status}", response=response))
        return out

    def fail(self, error: Mapping[str, Any]) -> list[bytes]:
        """The closing events of a stream the upstream broke: an `error` event, then `response.failed`."""
        if self._ended:
            return []
        self._ended = True
        out: list[bytes] = []
        self._start(out)
        message = str(error.get("message") or "Upstream error.")
        code = error.get("code")
        out.append(self._event("error", code=None if code is None else str(code), message=message, param=None))
        response = self._shell.response("failed", self._output, self._usage, model=self._model)
        response["error"] = {"code": "server_error", "message": message}
        out.append(self._event("response.failed", response=response))
        return out


async def translate_chat_stream(chunks: AsyncIterator[bytes], shell: ResponseShell) -> AsyncIterator[bytes]:
    """The Responses events of a chat SSE stream, as its pieces arrive; closing this closes `chunks`."""
    translator = _Translator(shell)
    buffer = b""
    try:
        async for piece in chunks:
            # The pipeline's relay yields whole events, so this holds at most one partial event (a defensive join).
            # Line ends are normalised after joining: a piece may end between an event's `\r` and its `\n`.
            buffer = (buffer + piece).replace(b"\r\n", b"\n")
            end = buffer.rfind(b"\n\n")
            if end < 0:
                continue
            complete, buffer = buffer[: end + 2], buffer[end + 2 :]
            out: list[bytes] = []
            for event in complete.split(b"\n\n"):
                out.extend(_translate_event(translator, event))
            if out:
                yield b"".join(out)
        rest = translator.finish()  # a stream that ended without [DONE] but with a finish_reason (see sse.py)
        if rest:
            yield b"".join(rest)
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]


def _translate_event(translator: _Translator, event: bytes) -> list[bytes]:
    lines = [line[5:].strip() for line in event.split(b"\n") if line.startswith(b"data:")]
    if not lines:
        return []
    data = b"\n".join(lines)
    if data == b"[DONE]":
        return translator.finish()
    try:
        payload = orjson.loads(data)
    except orjson.JSONDecodeError:
        return []
    if not isinstance(payload, dict):
        return []
    error = payload.get("error")
    if error is not None:
        return translator.fail(error if isinstance(error, dict) else {"message": str(error)})
    return translator.feed(payload)
