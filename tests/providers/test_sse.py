"""`SSETap`: relaying SSE bytes event by event, tapping `usage`, stripping the usage chunk we asked for.

Guards a relay that holds events back (or splits them) when TCP pieces fall mid-event, the injected
usage-only chunk reaching a client that never asked for it, and a stream whose usage is lost.
"""

from __future__ import annotations

import itertools
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from haimaker.accounting.pricing import Usage, UsageError
from haimaker.errors import BadGatewayError
from haimaker.providers.redaction import Redactor
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


# ---- bounds (issue 10, findings 1 and 6) -------------------------------------------------------------------


def test_an_event_that_never_ends_fails_the_stream_once_past_the_cap() -> None:
    tap = SSETap(keep_usage_chunk=False, max_event_bytes=1024 * 1024)
    assert tap.feed(_chunk("before")) == _chunk("before")
    tap.feed(b'data: {"pad":"')
    piece = b"x" * 65536
    fed = 0
    with pytest.raises(BadGatewayError, match="larger than 1048576 bytes"):
        while fed < 20 * 1024 * 1024:  # 20 MB without a blank line, in socket-sized pieces
            assert tap.feed(piece) == b""
            fed += len(piece)
    assert fed <= 1024 * 1024, "it gave up at the cap, not at the end of the line"
    with pytest.raises(BadGatewayError):
        tap.feed(b"\n\n")  # nothing is relayed after the fault
    assert tap.produced_text() == "before"


def test_the_events_before_an_oversized_one_are_relayed_before_the_fault() -> None:
    tap = SSETap(keep_usage_chunk=False, max_event_bytes=4096)
    big = b"data: " + b"z" * 10_000 + b"\n\n"

    assert tap.feed(_chunk("a") + _chunk("b") + big + _chunk("c")) == _chunk("a") + _chunk("b")
    with pytest.raises(BadGatewayError):
        tap.feed(_chunk("d"))


def test_a_lone_oversized_event_fails_at_once() -> None:
    tap = SSETap(keep_usage_chunk=False, max_event_bytes=4096)
    with pytest.raises(BadGatewayError):
        tap.feed(b"data: " + b"z" * 10_000 + b"\n\n")


@pytest.mark.parametrize("split", [b"\n|\n", b"\r\n|\r\n", b"\r|\n\r\n", b"\r\n\r|\n"])
def test_a_boundary_split_across_pieces_is_found(split: bytes) -> None:
    first, second = split.split(b"|")
    tap = SSETap(keep_usage_chunk=False)
    event = b'data: {"choices":[{"delta":{"content":"x"}}]}'
    assert tap.feed(event + first) == b""
    assert tap.feed(second) == event + b"\n\n"


@pytest.mark.parametrize(
    "usage",
    [
        {"prompt_tokens": 2**62, "completion_tokens": 1},
        {"prompt_tokens": 1e308, "completion_tokens": 1},
        {"prompt_tokens": -1, "completion_tokens": 1},
        {"prompt_tokens": "5", "completion_tokens": 1},
        {"prompt_tokens": 5, "completion_tokens": 1, "prompt_tokens_details": {"cached_tokens": 9}},
    ],
    ids=repr,
)
def test_an_impossible_usage_chunk_is_not_relayed_and_fails_the_stream(usage: dict[str, Any]) -> None:
    tap = SSETap(keep_usage_chunk=True)
    usage_chunk = _event({"id": "c", "object": "chat.completion.chunk", "choices": [], "usage": usage})

    out = tap.feed(_chunk("Hel") + _chunk("lo") + usage_chunk + DONE)

    assert out == _chunk("Hel") + _chunk("lo")
    assert tap.usage is None and tap.parsed_usage is None
    assert not tap.finished, "the [DONE] after the fault is not relayed"
    with pytest.raises(BadGatewayError, match="impossible usage"):
        tap.flush()
    assert tap.produced_text() == "Hello"


def test_a_usage_the_pipeline_refuses_fails_the_stream() -> None:
    def refuse(usage: Usage) -> None:
        raise UsageError("too dear")

    tap = SSETap(keep_usage_chunk=False, check_usage=refuse)
    with pytest.raises(BadGatewayError, match="too dear"):
        tap.feed(USAGE_CHUNK)


def test_a_valid_usage_is_parsed_once_for_the_pipeline() -> None:
    tap = SSETap(keep_usage_chunk=False)
    tap.feed(STREAM)
    assert tap.parsed_usage == Usage(prompt_tokens=5, completion_tokens=3)


# ---- secrets by value (issue 10, finding 2) ----------------------------------------------------------------

AZURE_KEY = "0123456789abcdef0123456789abcdef"
PASSPHRASE = "correct-horse-battery-staple-42"


@pytest.mark.parametrize("secret", ["sk-proj-AbCdEf0123456789xyz", AZURE_KEY, PASSPHRASE])
def test_every_field_of_an_error_event_is_scrubbed_of_the_key(secret: str) -> None:
    tap = SSETap(keep_usage_chunk=False, redactor=Redactor([secret]))
    error = {"message": f"bad key {secret}", "type": f"t-{secret}", "param": secret, "code": f"{secret}!"}
    out = tap.feed(_event({"error": error, "detail": secret}))

    assert secret.encode() not in out
    assert tap.saw_error
    relayed = orjson.loads(out[6:])
    assert relayed["error"]["message"] == "bad key [REDACTED]"
    assert relayed["error"]["param"] == "[REDACTED]"


def test_a_secret_anywhere_in_a_relayed_event_is_scrubbed() -> None:
    tap = SSETap(keep_usage_chunk=False, redactor=Redactor([PASSPHRASE]))
    out = tap.feed(_chunk(f"the key is {PASSPHRASE}") + b"data: " + PASSPHRASE.encode())
    assert PASSPHRASE.encode() not in out + tap.flush()
    assert orjson.loads(out[6:])["choices"][0]["delta"]["content"] == "the key is [REDACTED]"


# ---- properties --------------------------------------------------------------------------------------------


@given(
    cuts=st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=12),
    crlf=st.booleans(),
)
@settings(max_examples=200, deadline=None)
def test_any_split_of_a_stream_relays_the_same_bytes_as_one_piece(cuts: list[int], crlf: bool) -> None:
    raw = STREAM.replace(b"\n", b"\r\n") if crlf else STREAM
    bounds = [0, *sorted(c * len(raw) // len(STREAM) for c in cuts), len(raw)]
    pieces = [raw[a:b] for a, b in itertools.pairwise(bounds)]
    whole, split = SSETap(keep_usage_chunk=True), SSETap(keep_usage_chunk=True)

    assert _relay(split, pieces) == _relay(whole, [raw]) == STREAM
    assert split.usage == whole.usage == USAGE
    assert split.finished and whole.finished
