"""`SSETap` on a Responses API stream (`responses=True`), and the tap's text and error helpers.

Real SSE byte sequences fed to the tap, no proxy. Guards a native Responses stream whose bytes are altered on the way,
a usage lost because it sits in the terminal event's `response.usage` instead of a usage chunk, an impossible usage
relayed or priced, an upstream's error event with our key in it, a cut stream charged for the wrong text, and chat
events that look like usage or errors (a nested `usage`, an `"error"` status) mistaken for them.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from haimaker.accounting.pricing import Usage, UsageError
from haimaker.errors import BadGatewayError
from haimaker.providers.redaction import Redactor
from haimaker.providers.sse import SSETap, choice_texts, message_texts, response_output_texts

RESPONSES_USAGE = {
    "input_tokens": 12,
    "input_tokens_details": {"cached_tokens": 4},
    "output_tokens": 5,
    "output_tokens_details": {"reasoning_tokens": 0},
    "total_tokens": 17,
}


def _event(payload: dict[str, Any]) -> bytes:
    """A Responses event as api.openai.com frames it: `event: <type>` then `data:`."""
    kind: str = payload["type"]
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


def _response(status: str, usage: object = None) -> dict[str, Any]:
    # The response object carries `"error": null`: every created/in_progress event holds the error marker.
    return {"id": "resp_1", "object": "response", "status": status, "error": None, "output": [], "usage": usage}


def _delta(kind: str, delta: str, seq: int) -> bytes:
    return _event({"type": kind, "sequence_number": seq, "item_id": "msg_1", "output_index": 0, "delta": delta})


CREATED = _event({"type": "response.created", "sequence_number": 0, "response": _response("in_progress")})
TEXT = _delta("response.output_text.delta", "Hel", 1) + _delta("response.output_text.delta", "lo", 2)
COMPLETED = _event(
    {"type": "response.completed", "sequence_number": 3, "response": _response("completed", RESPONSES_USAGE)}
)
STREAM = CREATED + TEXT + COMPLETED


def _relay(tap: SSETap, pieces: list[bytes]) -> bytes:
    return b"".join(tap.feed(piece) for piece in pieces) + tap.flush()


# ---- the Responses tap -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 7, 64, len(STREAM)])
def test_a_responses_stream_is_relayed_untouched_and_its_terminal_usage_tapped(size: int) -> None:
    tap = SSETap(keep_usage_chunk=False, responses=True)
    pieces = [STREAM[i : i + size] for i in range(0, len(STREAM), size)]

    assert _relay(tap, pieces) == STREAM, "nothing is dropped: the terminal event is the usage, never stripped"
    assert tap.finished
    assert tap.usage == RESPONSES_USAGE
    assert tap.parsed_usage == Usage(prompt_tokens=12, completion_tokens=5, cache_read_tokens=4)
    assert not tap.saw_error
    assert tap.produced_text() == "Hello"


def test_pieces_before_the_terminal_event_are_relayed_without_waiting_for_it() -> None:
    tap = SSETap(keep_usage_chunk=False, responses=True)

    assert tap.feed(CREATED) == CREATED
    assert tap.feed(TEXT) == TEXT
    assert not tap.finished and tap.usage is None


@pytest.mark.parametrize("status", ["failed", "incomplete"])
def test_failed_and_incomplete_events_also_end_the_stream(status: str) -> None:
    usage = {"input_tokens": 3, "output_tokens": 2, "total_tokens": 5}
    terminal = _event({"type": f"response.{status}", "sequence_number": 3, "response": _response(status, usage)})
    tap = SSETap(keep_usage_chunk=False, responses=True)

    assert tap.feed(CREATED + TEXT + terminal) == CREATED + TEXT + terminal
    assert tap.finished
    assert tap.parsed_usage == Usage(prompt_tokens=3, completion_tokens=2)


@pytest.mark.parametrize("response", [_response("failed"), None, "failed"])
def test_a_terminal_event_without_usage_ends_the_stream_without_one(response: object) -> None:
    terminal = _event({"type": "response.failed", "sequence_number": 1, "response": response})
    tap = SSETap(keep_usage_chunk=False, responses=True)

    assert tap.feed(CREATED + terminal) == CREATED + terminal
    assert tap.finished
    assert tap.usage is None and tap.parsed_usage is None


def test_a_usage_without_token_counts_is_kept_but_not_priced() -> None:
    checked: list[Usage] = []
    terminal = _event({"type": "response.completed", "sequence_number": 1, "response": _response("completed", {})})
    tap = SSETap(keep_usage_chunk=False, responses=True, check_usage=checked.append)

    tap.feed(terminal)

    assert tap.finished
    assert tap.usage == {} and tap.parsed_usage is None
    assert checked == [], "there is nothing to check"


def test_an_error_event_is_relayed_and_noted_without_ending_the_stream() -> None:
    error = _event({"type": "error", "sequence_number": 3, "code": "server_error", "message": "boom", "param": None})
    tap = SSETap(keep_usage_chunk=False, responses=True)

    assert tap.feed(CREATED + TEXT + error) == CREATED + TEXT + error
    assert tap.saw_error
    assert not tap.finished, "response.failed, not the error event, ends a Responses stream"


def test_the_key_an_upstream_echoes_in_an_error_event_is_scrubbed() -> None:
    secret = "sk-proj-AbCdEf0123456789xyz"
    error = _event({"type": "error", "sequence_number": 0, "code": None, "message": f"bad key {secret}", "param": None})
    tap = SSETap(keep_usage_chunk=False, redactor=Redactor([secret]), responses=True)

    out = tap.feed(error)

    assert secret.encode() not in out
    assert orjson.loads(out.split(b"data: ")[1])["message"] == "bad key [REDACTED]"
    assert tap.saw_error


@pytest.mark.parametrize(
    "usage",
    [
        {"input_tokens": -1, "output_tokens": 5},
        {"input_tokens": 2, "output_tokens": 5, "input_tokens_details": {"cached_tokens": 9}},
        {"input_tokens": "12", "output_tokens": 5},
    ],
    ids=repr,
)
def test_an_impossible_usage_in_the_terminal_event_is_not_relayed_and_fails_the_stream(usage: dict[str, Any]) -> None:
    terminal = _event({"type": "response.completed", "sequence_number": 3, "response": _response("completed", usage)})
    tap = SSETap(keep_usage_chunk=False, responses=True)

    out = tap.feed(CREATED + TEXT + terminal)

    assert out == CREATED + TEXT, "the events before the fault go out, the faulty one does not"
    assert tap.usage is None and tap.parsed_usage is None
    with pytest.raises(BadGatewayError, match="impossible usage"):
        tap.flush()
    assert tap.produced_text() == "Hello", "the call is charged for the text it delivered"


def test_a_usage_the_pipeline_refuses_fails_the_responses_stream() -> None:
    def refuse(usage: Usage) -> None:
        raise UsageError("costs more than the budget allows")

    tap = SSETap(keep_usage_chunk=False, responses=True, check_usage=refuse)

    with pytest.raises(BadGatewayError, match="costs more than the budget allows"):
        tap.feed(COMPLETED)
    assert tap.usage is None


def test_comments_and_undecodable_events_beside_a_marker_are_relayed_as_they_are() -> None:
    noise = b": keep-alive\n\n" + b"event: response.output_text.delta\ndata: {not json\n\n" + b"data: [1, 2]\n\n"
    tap = SSETap(keep_usage_chunk=False, responses=True)

    assert tap.feed(CREATED + noise + COMPLETED) == CREATED + noise + COMPLETED
    assert tap.finished
    assert tap.produced_text() == ""


def test_a_cut_stream_is_charged_for_its_text_refusal_and_call_argument_deltas_only() -> None:
    events = [
        _delta("response.output_text.delta", "It is ", 1),
        _delta("response.refusal.delta", "I won't. ", 2),
        _delta("response.function_call_arguments.delta", '{"city":"Oslo"}', 3),
        _delta("response.reasoning_summary_text.delta", "Thinking...", 4),  # not produced text
        _event({"type": "response.output_text.delta", "sequence_number": 5, "delta": None}),
    ]
    tap = SSETap(keep_usage_chunk=False, responses=True)

    for event in events:
        tap.feed(event)

    assert not tap.finished and tap.usage is None
    assert tap.produced_text() == 'It is I won\'t. {"city":"Oslo"}'


def test_a_chat_tap_does_not_count_responses_deltas() -> None:
    tap = SSETap(keep_usage_chunk=False)
    tap.feed(TEXT)
    assert tap.produced_text() == "", "a chat stream's text is in its choices"


# ---- chat events that only look like usage or errors -------------------------------------------------------------


def _chat_event(payload: object) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


CHUNK = _chat_event({"choices": [{"index": 0, "delta": {"content": "Hi"}}]})
DONE = b"data: [DONE]\n\n"


def test_a_comment_after_the_usage_chunk_is_relayed() -> None:
    usage_chunk = _chat_event({"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 1}})
    tap = SSETap(keep_usage_chunk=True)

    assert tap.feed(CHUNK + usage_chunk + b": ping\n\n" + DONE) == CHUNK + usage_chunk + b": ping\n\n" + DONE
    assert tap.finished and tap.usage == {"prompt_tokens": 1, "completion_tokens": 1}


def test_a_chunk_with_an_error_status_but_no_error_object_is_content() -> None:
    chunk = _chat_event({"choices": [{"index": 0, "delta": {"content": "Hi"}}], "status": "error"})
    tap = SSETap(keep_usage_chunk=False)

    assert tap.feed(chunk + DONE) == chunk + DONE
    assert not tap.saw_error
    assert tap.produced_text() == "Hi"


def test_an_undecodable_event_mentioning_error_is_relayed_as_it_is() -> None:
    broken = b'data: {"error": oops\n\n'
    tap = SSETap(keep_usage_chunk=False)

    assert tap.feed(broken) == broken
    assert not tap.saw_error


def test_an_error_object_without_a_message_gets_one() -> None:
    tap = SSETap(keep_usage_chunk=False)

    out = tap.feed(_chat_event({"error": {"code": 503, "message": ""}}))

    assert orjson.loads(out[6:]) == {"error": {"code": 503, "message": "Upstream error."}}
    assert tap.saw_error


@pytest.mark.parametrize(
    "event",
    [
        b'data: {"choices": [], "usage": {"prompt_tokens": 1\n\n',  # cut JSON
        _chat_event([{"usage": {"prompt_tokens": 1}}]),  # not an object
    ],
)
def test_an_event_with_a_usage_marker_that_is_not_a_usage_chunk_is_relayed_untapped(event: bytes) -> None:
    tap = SSETap(keep_usage_chunk=False)

    assert tap.feed(event) == event
    assert tap.usage is None


def test_a_nested_usage_on_a_content_chunk_is_not_the_streams_usage() -> None:
    chunk = _chat_event({"choices": [{"index": 0, "delta": {"content": "Hi"}}], "meta": {"usage": {"n": 1}}})
    tap = SSETap(keep_usage_chunk=False)

    assert tap.feed(chunk) == chunk
    assert tap.usage is None
    assert tap.produced_text() == "Hi"


def test_a_cut_chat_stream_counts_every_kind_of_delta_text() -> None:
    deltas = [
        {"content": [{"type": "text", "text": "A"}, {"type": "image_url"}, "junk"]},
        {"refusal": "B"},
        {"tool_calls": [{"index": 0, "function": {"name": "f", "arguments": "{}"}}, "junk", {"function": None}]},
        {"tool_calls": None},
    ]
    pieces = [_chat_event({"choices": [{"index": 0, "delta": d}]}) for d in deltas]
    pieces += [
        _chat_event({"choices": ["junk", {"index": 0, "delta": None}, {"index": 0, "text": "C"}]}),
        b"data: {not json\n\n",
        _chat_event(["not", "an", "object"]),
    ]
    tap = SSETap(keep_usage_chunk=False)

    for piece in pieces:
        tap.feed(piece)

    assert tap.produced_text() == "ABf{}C"


# ---- the text helpers ------------------------------------------------------------------------------------------


def test_choice_texts_reads_messages_and_completion_texts() -> None:
    answer = {
        "choices": [
            {"message": {"content": "one", "refusal": "two"}},
            {"text": "three"},
            {"message": None, "text": None},
            "junk",
        ]
    }
    assert choice_texts(answer, "message") == ["one", "two", "three"]
    assert choice_texts({"choices": "junk"}, "message") == []


def test_message_texts_reads_content_parts_refusal_and_tool_calls() -> None:
    message = {
        "content": [{"type": "text", "text": "a"}, {"type": "text", "text": 1}],
        "refusal": "b",
        "tool_calls": [{"function": {"name": "c", "arguments": "d"}}, {"function": {"name": None}}, 7],
    }
    assert message_texts(message) == ["a", "b", "c", "d"]


def test_response_output_texts_reads_messages_refusals_and_function_calls() -> None:
    response = {
        "output": [
            {"type": "reasoning", "summary": [{"type": "summary_text", "text": "hmm"}]},
            {
                "type": "message",
                "content": [
                    {"type": "output_text", "text": "Hi. "},
                    {"type": "refusal", "refusal": "No."},
                    "junk",
                ],
            },
            {"type": "function_call", "name": "weather", "arguments": '{"city":"Oslo"}'},
            {"type": "function_call", "name": None, "arguments": None},
            {"type": "message", "content": None},
            "junk",
        ]
    }
    assert response_output_texts(response) == ["Hi. ", "No.", "weather", '{"city":"Oslo"}']
    assert response_output_texts({"output": None}) == []
