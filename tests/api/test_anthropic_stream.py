"""The chat stream → Anthropic Messages stream, fed real OpenAI SSE sequences through `translate_stream` (no server):
the exact event sequence for text, tool-call deltas and refusals; events split across pieces of any size or with
CRLF line ends; an upstream error mid-stream (the relay's `error_event`) becoming `event: error` with nothing after
it; a stream that ends without `[DONE]`; noise the tap may relay (comments, unreadable data, other choices); and the
pipeline's relay closed whichever way the client leaves."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Any

import orjson
import pytest

from haimaker.api.anthropic_stream import StreamTranslator, translate_stream
from haimaker.pipeline import StreamResult
from haimaker.providers.sse import error_event

Event = tuple[str, Any]
NO_USAGE = {"input_tokens": 0, "output_tokens": 0, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
DONE = b"data: [DONE]\n\n"


class FakeRelay:
    """The pipeline's relay: yields `pieces`, and records whether it ran out and whether it was closed."""

    def __init__(self, pieces: Iterable[bytes]) -> None:
        self._pieces = iter(pieces)
        self.exhausted = False
        self.closed = False

    def __aiter__(self) -> FakeRelay:
        return self

    async def __anext__(self) -> bytes:
        try:
            return next(self._pieces)
        except StopIteration:
            self.exhausted = True
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        self.closed = True


def sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def chunk(
    delta: dict[str, Any] | None = None,
    finish: str | None = None,
    *,
    index: int = 0,
    usage: dict[str, int] | None = None,
) -> bytes:
    """One `chat.completion.chunk` event; with `usage` and no delta, the final usage chunk (no choices)."""
    body: dict[str, Any] = {"id": "chatcmpl-s1", "object": "chat.completion.chunk", "model": "gpt-4o", "choices": []}
    if delta is not None or finish is not None:
        body["choices"] = [{"index": index, "delta": delta or {}, "finish_reason": finish}]
    if usage is not None:
        body["usage"] = usage
    return sse(body)


USAGE = {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}
USAGE_OUT = {"input_tokens": 12, "output_tokens": 3, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
TEXT_STREAM = [
    chunk({"role": "assistant", "content": ""}),
    chunk({"content": "Hel"}),
    chunk({"content": "lo"}),
    chunk({}, "stop"),
    chunk(usage=USAGE),
    DONE,
]


def message_start(message_id: str = "msg_s1", model: str = "gpt-4o") -> list[Event]:
    message: dict[str, Any] = {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": NO_USAGE,
    }
    return [("message_start", {"type": "message_start", "message": message}), ("ping", {"type": "ping"})]


def block_start(index: int, block: dict[str, Any]) -> Event:
    return ("content_block_start", {"type": "content_block_start", "index": index, "content_block": block})


def text_delta(index: int, text: str) -> Event:
    return (
        "content_block_delta",
        {"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": text}},
    )


def json_delta(index: int, partial: str) -> Event:
    delta = {"type": "input_json_delta", "partial_json": partial}
    return ("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})


def block_stop(index: int) -> Event:
    return ("content_block_stop", {"type": "content_block_stop", "index": index})


def message_end(stop_reason: str, usage: dict[str, int]) -> list[Event]:
    delta = {"stop_reason": stop_reason, "stop_sequence": None}
    return [
        ("message_delta", {"type": "message_delta", "delta": delta, "usage": usage}),
        ("message_stop", {"type": "message_stop"}),
    ]


TEXT_EVENTS = [
    *message_start(),
    block_start(0, {"type": "text", "text": ""}),
    text_delta(0, "Hel"),
    text_delta(0, "lo"),
    block_stop(0),
    *message_end("end_turn", USAGE_OUT),
]


def parse(sent: bytes) -> list[Event]:
    """Anthropic's SSE bytes as (event name, data) pairs; every event is exactly `event:` then `data:`."""
    events: list[Event] = []
    assert sent.endswith(b"\n\n") or not sent
    for raw in sent.split(b"\n\n")[:-1]:
        name, data = raw.split(b"\n")
        assert name.startswith(b"event: ") and data.startswith(b"data: "), raw
        events.append((name[7:].decode(), orjson.loads(data[6:])))
    return events


async def run(pieces: Iterable[bytes]) -> tuple[list[Event], list[bytes], FakeRelay, StreamResult]:
    relay = FakeRelay(pieces)
    result = translate_stream(
        StreamResult([("content-type", "text/event-stream")], relay, done=lambda: relay.exhausted)
    )
    sent = [piece async for piece in result.chunks]
    return parse(b"".join(sent)), sent, relay, result


async def test_a_text_stream_is_anthropics_event_sequence_and_the_relay_is_closed() -> None:
    events, sent, relay, result = await run(TEXT_STREAM)
    assert events == TEXT_EVENTS
    assert result.headers == [("content-type", "text/event-stream")]
    assert relay.closed and result.done()
    # Each event leaves as soon as its chunk has arrived: one output per chunk that produced anything.
    assert len(sent) == 5


@pytest.mark.parametrize("size", [1, 2, 7, 64])
async def test_events_split_across_pieces_of_any_size_translate_the_same(size: int) -> None:
    whole = b"".join(TEXT_STREAM)
    events, sent, _, result = await run(whole[i : i + size] for i in range(0, len(whole), size))
    assert events == TEXT_EVENTS
    assert all(piece for piece in sent)  # pieces that complete no event send nothing, not empty bytes
    assert result.done()


async def test_crlf_line_ends_and_a_crlf_split_between_pieces_translate_the_same() -> None:
    whole = b"".join(TEXT_STREAM).replace(b"\n", b"\r\n")
    cut = whole.index(b"\r\n") + 1  # the first piece ends between \r and \n
    events, *_ = await run([whole[:cut], whole[cut:]])
    assert events == TEXT_EVENTS


async def test_tool_call_deltas_become_tool_use_blocks_with_input_json_deltas() -> None:
    first = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}
    second = {"index": 1, "id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}
    events, *_ = await run(
        [
            chunk({"role": "assistant", "content": "Let me check."}),
            chunk({"tool_calls": [first]}),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city"'}}]}),
            # A continuation without an index (some OpenAI-compatible servers) stays in the open tool_use block.
            chunk({"tool_calls": [{"function": {"arguments": ':"Oslo"}'}}]}),
            chunk({"tool_calls": [second]}),
            chunk({}, "tool_calls"),
            chunk(usage=USAGE),
            DONE,
        ]
    )
    assert events == [
        *message_start(),
        block_start(0, {"type": "text", "text": ""}),
        text_delta(0, "Let me check."),
        block_stop(0),
        block_start(1, {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {}}),
        json_delta(1, '{"city"'),
        json_delta(1, ':"Oslo"}'),
        block_stop(1),
        block_start(2, {"type": "tool_use", "id": "call_2", "name": "get_time", "input": {}}),
        json_delta(2, "{}"),
        block_stop(2),
        *message_end("tool_use", USAGE_OUT),
    ]


async def test_text_after_a_tool_call_and_a_malformed_tool_call_open_new_blocks() -> None:
    events, *_ = await run(
        [
            chunk({"tool_calls": [{"index": 0, "id": "call_1", "function": "get_time"}, "call_2"]}),
            chunk({"content": "Done."}),
            chunk({}, "stop"),
            DONE,
        ]
    )
    assert events == [
        *message_start(),
        block_start(0, {"type": "tool_use", "id": "call_1", "name": "", "input": {}}),
        block_stop(0),
        block_start(1, {"type": "text", "text": ""}),
        text_delta(1, "Done."),
        block_stop(1),
        *message_end("end_turn", NO_USAGE),
    ]


async def test_a_refusal_delta_is_text_and_the_stop_reason_is_refusal() -> None:
    events, *_ = await run([chunk({"content": None, "refusal": "I can't help."}), chunk({}, "content_filter"), DONE])
    assert events == [
        *message_start(),
        block_start(0, {"type": "text", "text": ""}),
        text_delta(0, "I can't help."),
        block_stop(0),
        *message_end("refusal", NO_USAGE),
    ]


async def test_an_upstream_error_mid_stream_is_an_error_event_and_nothing_follows() -> None:
    events, sent, relay, result = await run(
        [
            chunk({"content": "Hel"}),
            error_event("Upstream closed the stream before it was complete.", "api_error", "502"),
            chunk({"content": "lo"}),  # nothing after the error reaches the client, not even [DONE]
            DONE,
        ]
    )
    assert events == [
        *message_start(),
        block_start(0, {"type": "text", "text": ""}),
        text_delta(0, "Hel"),
        (
            "error",
            {
                "type": "error",
                "error": {"type": "api_error", "message": "Upstream closed the stream before it was complete."},
            },
        ),
    ]
    assert len(sent) == 2
    assert relay.exhausted and relay.closed and result.done()


async def test_an_error_in_the_same_piece_as_later_events_ends_the_stream_there() -> None:
    timeout = error_event("Upstream timed out mid-stream.", "timeout", "504")
    events, *_ = await run([chunk({"content": "Hel"}) + timeout + chunk({}, "stop") + DONE])
    assert events[-2:] == [
        text_delta(0, "Hel"),
        (
            "error",
            {
                "type": "error",
                "error": {
                    "type": "timeout_error",
                    "message": "Upstream timed out mid-stream.",
                    "litellm_error_type": "timeout",
                },
            },
        ),
    ]


@pytest.mark.parametrize(
    ("error", "detail"),
    [
        # OpenAI's own mid-stream error (relayed by the tap): no numeric code, so a 500.
        (
            {"message": "The server had an error.", "type": "server_error", "param": None, "code": None},
            {"type": "api_error", "message": "The server had an error.", "litellm_error_type": "server_error"},
        ),
        (
            {"message": "Rate limited.", "type": "rate_limit_error", "code": "429"},
            {"type": "rate_limit_error", "message": "Rate limited."},
        ),
        ({"code": "rate_limit_exceeded", "message": 5, "type": 7}, {"type": "api_error", "message": "Upstream error."}),
    ],
)
def test_the_error_events_status_comes_from_a_numeric_code_else_500(
    error: dict[str, Any], detail: dict[str, str]
) -> None:
    translator = StreamTranslator()
    assert parse(translator.feed(sse({"error": error}))) == [("error", {"type": "error", "error": detail})]
    assert translator.finished
    assert translator.feed(chunk({"content": "late"})) == b""
    assert translator.close() == b""


async def test_a_stream_that_ends_after_its_finish_reason_without_done_is_still_a_whole_message() -> None:
    events, sent, relay, result = await run(TEXT_STREAM[:-1])
    assert events == TEXT_EVENTS
    # message_delta and message_stop leave together, from close(), once the relay has run out.
    assert [name for name, _ in parse(sent[-1])] == ["message_delta", "message_stop"]
    assert relay.closed and result.done()


async def test_a_stream_cut_before_its_finish_reason_is_not_completed_or_done() -> None:
    events, _, relay, result = await run(TEXT_STREAM[:3])
    assert events == [
        *message_start(),
        block_start(0, {"type": "text", "text": ""}),
        text_delta(0, "Hel"),
        text_delta(0, "lo"),
    ]
    assert relay.closed
    assert not result.done()  # the client sees no message_stop: the stream did not finish


async def test_an_empty_stream_sends_nothing() -> None:
    events, sent, relay, result = await run([])
    assert (events, sent, relay.closed, result.done()) == ([], [], True, False)


async def test_done_alone_is_a_whole_empty_message() -> None:
    events, *_ = await run([DONE])
    assert events == [*message_start("msg_unknown", "unknown"), *message_end("end_turn", NO_USAGE)]


async def test_comments_unreadable_data_and_other_choices_are_skipped() -> None:
    events, *_ = await run(
        [
            b": keep-alive\n\n",
            b"event: ping\n\n",
            b"data: {not json\n\n",
            b"data: [1, 2]\n\n",
            chunk({"content": "second choice"}, index=1),
            b'data:{"id":"chatcmpl-s1","model":"gpt-4o","choices":[{"index":0,"delta":{"content":"Hi"}}]}\n\n',
            # One event in two data lines; a finish chunk whose delta is null.
            b'data: {"id":"chatcmpl-s1",\ndata: "choices":[{"index":0,"delta":null,"finish_reason":"stop"}]}\n\n',
            DONE,
        ]
    )
    assert events == [
        *message_start(),
        block_start(0, {"type": "text", "text": ""}),
        text_delta(0, "Hi"),
        block_stop(0),
        *message_end("end_turn", NO_USAGE),
    ]


async def test_the_relay_is_closed_when_the_client_hangs_up_mid_stream() -> None:
    relay = FakeRelay(TEXT_STREAM)
    result = translate_stream(StreamResult([], relay, done=lambda: relay.exhausted))
    stream = result.chunks
    first = await anext(stream)
    assert [name for name, _ in parse(first)] == ["message_start", "ping"]
    await stream.aclose()  # type: ignore[attr-defined]  # an async generator's
    assert relay.closed and not relay.exhausted
    assert not result.done()


async def test_a_relay_without_aclose_is_iterated_to_its_end() -> None:
    async def plain() -> AsyncIterator[bytes]:
        for piece in TEXT_STREAM:
            yield piece

    class NoClose:
        def __init__(self) -> None:
            self._inner = plain()

        def __aiter__(self) -> NoClose:
            return self

        async def __anext__(self) -> bytes:
            piece: bytes = await anext(self._inner)
            return piece

    result = translate_stream(StreamResult([], NoClose()))
    assert parse(b"".join([piece async for piece in result.chunks])) == TEXT_EVENTS
