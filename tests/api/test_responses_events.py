"""`responses_events`: a chat completion stream as the Responses API's event stream.

Real chat SSE bytes in, Responses events out, no proxy. Guards events out of the order the openai SDK's stream
state machine checks, an item whose id changes between `added` and `done`, a second choice leaking into the answer,
an upstream failure mid-stream that ends without `response.failed`, a stream cut without `[DONE]` that never
completes, and a translated stream that leaves the chat stream (and so the relay's settlement) open.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from haimaker.api.responses_events import ResponseShell, response_usage, translate_chat_stream

SHELL = ResponseShell.of({"model": "mocked", "input": "hi"}, "resp_1", 1_700_000_000)
DONE = b"data: [DONE]\n\n"


def _chunk(delta: dict[str, Any] | None = None, *, finish: str | None = None, **fields: Any) -> bytes:
    choice: dict[str, Any] = {"index": 0, "delta": delta or {}, "finish_reason": finish}
    return b"data: " + orjson.dumps({"object": "chat.completion.chunk", "choices": [choice], **fields}) + b"\n\n"


def _call(index: int, *, call_id: str | None = None, name: str | None = None, arguments: str | None = None) -> bytes:
    function = {k: v for k, v in (("name", name), ("arguments", arguments)) if v is not None}
    call = {"index": index, "id": call_id, "type": "function", "function": function}
    return _chunk({"tool_calls": [call]})


class Upstream:
    """A chat stream from fixed pieces that records whether it was closed."""

    def __init__(self, *pieces: bytes) -> None:
        self.pieces = pieces
        self.closed = False

    async def _gen(self) -> AsyncIterator[bytes]:
        try:
            for piece in self.pieces:
                yield piece
        finally:
            self.closed = True

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._gen()


async def _events(*pieces: bytes, shell: ResponseShell = SHELL) -> list[dict[str, Any]]:
    """The translated stream's events (their data), checking each is framed as `event: <type>` + `data:`."""
    body = b"".join([piece async for piece in translate_chat_stream(_aiter(*pieces), shell)])
    events = []
    for frame in body.split(b"\n\n")[:-1]:
        event_line, data_line = frame.split(b"\n")
        payload = orjson.loads(data_line.removeprefix(b"data: "))
        assert event_line == b"event: " + payload["type"].encode()
        events.append(payload)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    return events


async def _aiter(*pieces: bytes) -> AsyncIterator[bytes]:
    for piece in pieces:
        yield piece


def _types(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


# ---- usage -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("usage", [None, "12", [1, 2]])
def test_a_missing_or_malformed_usage_is_none(usage: object) -> None:
    assert response_usage(usage) is None


def test_usage_counts_that_are_not_integers_read_as_zero_and_total_is_derived() -> None:
    usage = {
        "prompt_tokens": 7,
        "completion_tokens": True,
        "prompt_tokens_details": None,
        "completion_tokens_details": {"reasoning_tokens": "3"},
    }
    assert response_usage(usage) == {
        "input_tokens": 7,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 0,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 7,
    }


# ---- streams ---------------------------------------------------------------------------------------------------


async def test_text_then_tool_calls_stream_in_the_sdks_order_with_stable_ids() -> None:
    usage = {"prompt_tokens": 9, "completion_tokens": 5, "total_tokens": 14}
    events = await _events(
        _chunk({"role": "assistant", "content": ""}, model="gpt-4o-2024-08-06"),
        _chunk({"content": "Let me "}) + _chunk({"content": "check."}),
        _call(0, call_id="c1", name="weather", arguments='{"ci'),
        _call(1, call_id="c2", name="time"),
        _call(0, arguments='ty":"Oslo"}'),
        _chunk(finish="tool_calls"),
        _chunk(choices=[], usage=usage),
        DONE,
    )

    assert _types(events) == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",  # the message
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",  # the first tool call closes the message
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",  # call c1
        "response.function_call_arguments.delta",
        "response.output_item.added",  # call c2, no arguments yet
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    created = events[0]["response"]
    assert created["status"] == "in_progress" and created["id"] == "resp_1" and created["output"] == []
    assert created["model"] == "gpt-4o-2024-08-06", "the upstream's model name from the first chunk"
    message_id = events[2]["item"]["id"]
    assert {e["item_id"] for e in events[3:8]} == {message_id}
    assert events[8]["item"]["id"] == message_id
    assert events[6]["text"] == "Let me check."
    c1, c2 = events[9]["item"], events[11]["item"]
    assert (c1["call_id"], c1["name"], c1["arguments"], c1["status"]) == ("c1", "weather", "", "in_progress")
    assert (events[9]["output_index"], events[11]["output_index"]) == (1, 2)
    assert events[13] == {
        "type": "response.function_call_arguments.done",
        "sequence_number": 13,
        "item_id": c1["id"],
        "output_index": 1,
        "name": "weather",
        "arguments": '{"city":"Oslo"}',
    }
    assert events[16]["item"] == {**c2, "status": "completed", "arguments": ""}
    final = events[-1]["response"]
    assert final["status"] == "completed"
    assert [item["id"] for item in final["output"]] == [message_id, c1["id"], c2["id"]]
    assert final["output"][0]["content"][0]["text"] == "Let me check."
    assert final["usage"] == {
        "input_tokens": 9,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 5,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 14,
    }


async def test_only_the_first_choice_is_the_answer() -> None:
    second = b"data: " + orjson.dumps({"choices": [{"index": 1, "delta": {"content": "B"}}, "junk"]}) + b"\n\n"
    events = await _events(_chunk({"content": "A"}), second, _chunk({"content": "a"}), DONE)

    deltas = [e["delta"] for e in events if e["type"] == "response.output_text.delta"]
    assert deltas == ["A", "a"]
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == "Aa"


async def test_a_tool_call_without_an_id_or_name_gets_a_call_id_and_non_dict_calls_are_skipped() -> None:
    odd = _chunk({"tool_calls": ["junk", {"function": "junk"}]})
    events = await _events(odd, _call(0, arguments="{}"), DONE)

    added = events[2]["item"]
    assert added["call_id"].startswith("call_") and added["name"] == ""
    assert events[-1]["response"]["output"][0]["arguments"] == "{}"


async def test_a_stream_cut_at_the_token_limit_ends_incomplete() -> None:
    # Some upstreams send the finishing chunk with a null delta.
    finish = b"data: " + orjson.dumps({"choices": [{"index": 0, "delta": None, "finish_reason": "length"}]}) + b"\n\n"
    events = await _events(_chunk({"content": "Once"}), finish, DONE)

    assert events[-1]["type"] == "response.incomplete"
    assert events[-1]["response"]["status"] == "incomplete"
    assert events[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}


async def test_an_upstream_error_mid_stream_ends_with_an_error_event_then_response_failed() -> None:
    error = {"error": {"message": "overloaded", "type": "api_error", "code": 529}}
    events = await _events(_chunk({"content": "Hal"}), b"data: " + orjson.dumps(error) + b"\n\n", DONE)

    assert _types(events) == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "error",
        "response.failed",
    ], "nothing follows the failure, not even the [DONE] that came after it"
    assert events[5] == {"type": "error", "sequence_number": 5, "code": "529", "message": "overloaded", "param": None}
    failed = events[6]["response"]
    assert failed["status"] == "failed"
    assert failed["error"] == {"code": "server_error", "message": "overloaded"}
    assert failed["output"] == [], "the unfinished message is not reported as an output item"


@pytest.mark.parametrize(
    ("error", "message", "code"),
    [
        ({}, "Upstream error.", None),
        ({"message": "", "code": None}, "Upstream error.", None),
        ("rate limited", "rate limited", None),
    ],
)
async def test_an_error_event_at_the_start_still_opens_the_response(
    error: object, message: str, code: str | None
) -> None:
    events = await _events(b"data: " + orjson.dumps({"error": error}) + b"\n\n")

    assert _types(events) == ["response.created", "response.in_progress", "error", "response.failed"]
    assert (events[2]["message"], events[2]["code"]) == (message, code)
    assert events[3]["response"]["error"]["message"] == message


async def test_a_stream_ending_without_done_is_completed_at_its_end() -> None:
    events = await _events(_chunk({"content": "Hi"}, finish="stop"))
    assert events[-1]["type"] == "response.completed"
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == "Hi"


async def test_an_empty_stream_is_an_empty_completed_response() -> None:
    events = await _events()
    assert _types(events) == ["response.created", "response.in_progress", "response.completed"]
    assert events[-1]["response"]["output"] == [] and events[-1]["response"]["usage"] is None


async def test_events_split_across_pieces_are_joined_and_noise_is_ignored() -> None:
    stream = b": keep-alive\n\n" + b"data: not json\n\n" + b"data: [1, 2]\n\n" + _chunk({"content": "Hi"})
    pieces = [stream[i : i + 7] for i in range(0, len(stream), 7)]
    # A whole CRLF-framed event (the relay's SSETap normalises CRLF split across pieces before this point).
    pieces.append(_chunk({"content": "!"}).replace(b"\n", b"\r\n"))

    events = await _events(*pieces, DONE)

    assert [e["delta"] for e in events if e["type"] == "response.output_text.delta"] == ["Hi", "!"]
    assert _types(events)[-1] == "response.completed"
    assert _types(events).count("response.created") == 1


async def test_done_twice_or_data_after_the_end_adds_no_second_terminal_event() -> None:
    events = await _events(_chunk({"content": "Hi"}), DONE, DONE)
    assert _types(events).count("response.completed") == 1

    error = b'data: {"error": {"message": "late"}}\n\n'
    events = await _events(_chunk({"content": "Hi"}), DONE, error)
    assert "error" not in _types(events) and "response.failed" not in _types(events)


async def test_the_response_echoes_the_requests_settings_with_openais_defaults() -> None:
    request = {
        "model": "mocked",
        "instructions": "Be brief.",
        "max_output_tokens": 50,
        "tools": [{"type": "function", "name": "f"}],
        "tool_choice": "required",
        "text": {"format": {"type": "json_object"}},
        "reasoning": {"effort": "low"},
        "metadata": {"k": "v"},
    }
    events = await _events(DONE, shell=ResponseShell.of(request, "resp_2", 5))

    final = events[-1]["response"]
    assert {k: final[k] for k in (*request, "id", "created_at", "temperature", "top_p", "parallel_tool_calls")} == {
        **request,
        "id": "resp_2",
        "created_at": 5,
        "temperature": 1.0,
        "top_p": 1.0,
        "parallel_tool_calls": True,
    }
    assert (final["store"], final["background"], final["previous_response_id"]) == (False, False, None)
    defaults = ResponseShell.of({"model": "m"}, "r", 0).echoed
    assert defaults["text"] == {"format": {"type": "text"}}
    assert defaults["reasoning"] == {"effort": None, "summary": None}


async def test_closing_the_translated_stream_closes_the_chat_stream() -> None:
    upstream = Upstream(_chunk({"content": "a"}), _chunk({"content": "b"}), DONE)
    translated = translate_chat_stream(upstream.__aiter__(), SHELL)

    first = await translated.__anext__()
    assert b"response.created" in first
    await translated.aclose()  # type: ignore[attr-defined]

    assert upstream.closed, "the chat stream is closed with the translated one (the relay settles in its finally)"


async def test_a_complete_stream_closes_the_chat_stream() -> None:
    upstream = Upstream(_chunk({"content": "a"}), DONE)
    async for _ in translate_chat_stream(upstream.__aiter__(), SHELL):
        pass
    assert upstream.closed


async def test_an_event_split_between_its_cr_and_lf_is_not_lost() -> None:
    """Line ends are normalised after joining the pieces: a piece ending in `\r` before the `\n` of its event."""
    chunks = [
        b'data: {"id":"c","choices":[{"index":0,"delta":{"content":"Hi"}}]}\r',
        b'\n\r\ndata: {"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\r\n\r\ndata: [DONE]\r\n\r\n',
    ]
    events = await _events(*chunks)
    deltas = [e["delta"] for e in events if e["type"] == "response.output_text.delta"]
    assert deltas == ["Hi"]
    assert events[-1]["type"] == "response.completed"
