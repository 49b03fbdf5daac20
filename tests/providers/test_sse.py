"""`SSETap`: relaying SSE bytes event by event, tapping `usage`, stripping the usage chunk we asked for.

Guards a relay that holds events back (or splits them) when TCP pieces fall mid-event, the injected
usage-only chunk reaching a client that never asked for it, and a stream whose usage is lost.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from haimaker.providers.sse import SSETap, error_event


def _event(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def _chunk(content: str, *, usage: object = None, with_usage_field: bool = False) -> bytes:
    payload: dict[str, Any] = {
        "id": "c",
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": {"content": content}}],
    }
    if with_usage_field:
        payload["usage"] = usage
    return _event(payload)


USAGE = {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
USAGE_CHUNK = _event({"id": "c", "object": "chat.completion.chunk", "choices": [], "usage": USAGE})
DONE = b"data: [DONE]\n\n"
STREAM = _chunk("Hel") + _chunk("lo") + USAGE_CHUNK + DONE


def _relay(tap: SSETap, pieces: list[bytes]) -> bytes:
    return b"".join(tap.feed(piece) for piece in pieces) + tap.flush()


@pytest.mark.parametrize("size", [1, 2, 3, 7, 16, 64, len(STREAM)])
def test_events_split_anywhere_are_relayed_whole_and_in_order(size: int) -> None:
    tap = SSETap(keep_usage_chunk=True)
    pieces = [STREAM[i : i + size] for i in range(0, len(STREAM), size)]

    assert _relay(tap, pieces) == STREAM
    assert tap.usage == USAGE
    assert tap.finished


def test_each_event_is_released_as_soon_as_it_is_complete() -> None:
    tap = SSETap(keep_usage_chunk=False)
    first = _chunk("a")

    assert tap.feed(first[:-1]) == b""  # one byte short of the blank line: nothing to send yet
    assert tap.feed(first[-1:]) == first
    second = _chunk("b")
    assert tap.feed(second + second[:5]) == second  # the complete event goes out, the partial one waits
    assert tap.feed(second[5:]) == second


@pytest.mark.parametrize("size", [1, 5, len(STREAM)])
def test_usage_chunk_is_stripped_when_the_client_did_not_ask(size: int) -> None:
    tap = SSETap(keep_usage_chunk=False)
    pieces = [STREAM[i : i + size] for i in range(0, len(STREAM), size)]

    out = _relay(tap, pieces)

    assert out == _chunk("Hel") + _chunk("lo") + DONE
    assert tap.usage == USAGE, "the usage is tapped even when the chunk is dropped"


def test_usage_on_a_content_chunk_is_tapped_and_the_chunk_kept() -> None:
    tap = SSETap(keep_usage_chunk=False)
    last = _chunk("end", usage=USAGE, with_usage_field=True)

    assert tap.feed(last) == last
    assert tap.usage == USAGE
    assert tap.produced_text() == "end"


def test_null_usage_fields_are_not_mistaken_for_usage() -> None:
    tap = SSETap(keep_usage_chunk=False)
    chunk = _chunk("x", usage=None, with_usage_field=True)

    assert tap.feed(chunk) == chunk
    assert tap.usage is None


def test_pretty_printed_usage_is_recognised() -> None:
    tap = SSETap(keep_usage_chunk=False)
    pretty = b'data: {"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}}\n\n'

    assert tap.feed(pretty) == b""
    assert tap.usage == {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}


def test_crlf_framed_streams_are_normalised() -> None:
    tap = SSETap(keep_usage_chunk=False)
    crlf = STREAM.replace(b"\n", b"\r\n")
    pieces = [crlf[i : i + 3] for i in range(0, len(crlf), 3)]

    assert _relay(tap, pieces) == _chunk("Hel") + _chunk("lo") + DONE
    assert tap.usage == USAGE


def test_content_mentioning_usage_in_text_is_not_stripped() -> None:
    tap = SSETap(keep_usage_chunk=False)
    tricky = _chunk('the JSON is {"usage":{"x":1}} and "error"')

    assert tap.feed(tricky) == tricky
    assert tap.usage is None
    assert not tap.saw_error


def test_comments_and_other_fields_pass_through() -> None:
    tap = SSETap(keep_usage_chunk=False)
    raw = b": keep-alive\n\nevent: ping\ndata: {}\n\n"
    assert tap.feed(raw) == raw


def test_done_marks_the_stream_finished() -> None:
    tap = SSETap(keep_usage_chunk=False)
    tap.feed(_chunk("a"))
    assert not tap.finished
    tap.feed(DONE)
    assert tap.finished


def test_error_events_are_relayed_and_noted() -> None:
    tap = SSETap(keep_usage_chunk=False)
    error = _event({"error": {"message": "overloaded", "type": "server_error", "param": None, "code": None}})

    assert tap.feed(error) == error
    assert tap.saw_error


def test_produced_text_joins_chat_deltas_and_text_completions() -> None:
    chat = SSETap(keep_usage_chunk=False)
    for piece in (_chunk("Hel"), _chunk("lo"), DONE):
        chat.feed(piece)
    text = SSETap(keep_usage_chunk=False)
    text.feed(_event({"object": "text_completion", "choices": [{"index": 0, "text": "abc"}]}))

    assert chat.produced_text() == "Hello"
    assert text.produced_text() == "abc"


def test_flush_hands_back_a_trailing_partial_event() -> None:
    tap = SSETap(keep_usage_chunk=False)
    tap.feed(b'data: {"partial')
    assert tap.flush() == b'data: {"partial'
    assert tap.flush() == b""


def test_error_event_carries_the_openai_envelope() -> None:
    raw = error_event("Upstream closed", "api_error", "502")

    assert raw.startswith(b"data: ") and raw.endswith(b"\n\n")
    assert orjson.loads(raw[6:]) == {
        "error": {"message": "Upstream closed", "type": "api_error", "param": None, "code": "502"}
    }


def test_upstream_error_event_is_passed_on_without_the_key_it_echoes() -> None:
    tap = SSETap(keep_usage_chunk=False)
    event = b'data: {"error": {"message": "Incorrect API key provided: sk-live-abcdef123456", "type": "auth"}}\n\n'
    out = tap.feed(event)
    assert tap.saw_error
    assert b"sk-live-abcdef123456" not in out
    assert b'"type":"auth"' in out


def test_stream_with_finish_reason_but_no_done_marker_counts_as_complete() -> None:
    tap = SSETap(keep_usage_chunk=False)
    tap.feed(b'data: {"choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}\n\n')
    assert not tap.saw_finish_reason
    tap.feed(b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n')
    assert tap.saw_finish_reason and not tap.finished
