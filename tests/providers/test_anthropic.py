"""The Anthropic provider's stream translation (Anthropic events in any piece sizes → OpenAI chunks) and its URL."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from haimaker.errors import BadGatewayError
from haimaker.providers.anthropic import AnthropicStreamTranslator, messages_url
from haimaker.providers.sse import SSETap
from tests.support.fakes import Behavior
from tests.support.fakes.anthropic import stream_events

MESSAGE: dict[str, Any] = {
    "id": "msg_01",
    "type": "message",
    "role": "assistant",
    "model": "claude-3-5-sonnet-20241022",
    "content": [
        {"type": "text", "text": "Let me check the weather."},
        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 10,
        "output_tokens": 12,
        "cache_read_input_tokens": 100,
        "cache_creation_input_tokens": 5,
    },
}


def payloads(raw: bytes) -> list[Any]:
    out: list[Any] = []
    for event in raw.split(b"\n\n"):
        if event.startswith(b"data: "):
            data = event[6:]
            out.append("[DONE]" if data == b"[DONE]" else orjson.loads(data))
    return out


def translated(raw: bytes, piece: int, **kwargs: Any) -> bytes:
    translator = AnthropicStreamTranslator("claude", include_usage=True, **kwargs)
    out = b"".join(translator.feed(raw[i : i + piece]) for i in range(0, len(raw), piece))
    return out + translator.flush()


@pytest.mark.parametrize("piece", [1, 7, 10_000])
def test_a_stream_becomes_openai_chunks_with_tool_deltas_usage_and_done(piece: int) -> None:
    raw = b"".join(stream_events(MESSAGE, Behavior()))
    chunks = payloads(translated(raw.replace(b"\n", b"\r\n"), piece))
    assert chunks[-1] == "[DONE]"
    *body, usage_chunk, _ = chunks
    assert all(c["id"] == "chatcmpl-01" and c["object"] == "chat.completion.chunk" for c in body)
    assert body[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in body)
    assert text == "Let me check the weather."
    calls = [c["choices"][0]["delta"]["tool_calls"][0] for c in body if "tool_calls" in c["choices"][0]["delta"]]
    assert calls[0] == {
        "index": 0,
        "id": "toolu_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    assert "".join(c["function"]["arguments"] for c in calls) == '{"city":"Paris"}'
    assert all(c["index"] == 0 for c in calls)
    assert [c["choices"][0]["finish_reason"] for c in body][-1] == "tool_calls"
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"] == {
        "prompt_tokens": 115,
        "completion_tokens": 12,
        "total_tokens": 127,
        "prompt_tokens_details": {"cached_tokens": 100},
        "cache_creation_input_tokens": 5,
        "cache_read_input_tokens": 100,
    }


def test_the_pipelines_tap_reads_the_translated_usage_and_finish() -> None:
    tap = SSETap(keep_usage_chunk=False)
    out = tap.feed(translated(b"".join(stream_events(MESSAGE, Behavior())), 50))
    assert tap.finished and tap.saw_finish_reason
    assert tap.parsed_usage is not None
    assert (tap.parsed_usage.prompt_tokens, tap.parsed_usage.completion_tokens) == (115, 12)
    assert b'"choices":[]' not in out  # the usage chunk the client did not ask for is dropped by the tap


def test_without_include_usage_there_is_no_usage_chunk() -> None:
    translator = AnthropicStreamTranslator("claude", include_usage=False)
    chunks = payloads(translator.feed(b"".join(stream_events(MESSAGE, Behavior()))))
    assert chunks[-1] == "[DONE]" and not any(isinstance(c, dict) and "usage" in c for c in chunks)


def test_an_error_event_becomes_an_openai_error_event_and_ends_the_stream_without_done() -> None:
    behavior = Behavior(stream_error={"type": "overloaded_error", "message": "Overloaded"})
    chunks = payloads(translated(b"".join(stream_events(MESSAGE, behavior)), 64))
    assert chunks[-1] == {"error": {"message": "Overloaded", "type": "overloaded_error", "param": None, "code": "503"}}
    assert "[DONE]" not in chunks


def test_a_cut_stream_has_no_done() -> None:
    raw = b"".join(list(stream_events(MESSAGE, Behavior()))[:4])
    assert "[DONE]" not in payloads(translated(raw, 16))


def test_an_unreadable_event_is_a_502() -> None:
    translator = AnthropicStreamTranslator("claude", include_usage=True)
    with pytest.raises(BadGatewayError):
        translator.feed(b"event: message_start\ndata: {not json\n\n")


def test_thinking_deltas_become_reasoning_content() -> None:
    raw = (
        b'data: {"type":"message_start","message":{"id":"msg_2","usage":{"input_tokens":1,"output_tokens":1}}}\n\n'
        b'data: {"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":""}}\n\n'
        b'data: {"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"Hmm."}}\n\n'
        b'data: {"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"x"}}\n\n'
    )
    chunks = payloads(translated(raw, 1000))
    assert chunks[-1]["choices"][0]["delta"] == {"reasoning_content": "Hmm."}


@pytest.mark.parametrize(
    ("base", "url"),
    [
        (None, "https://api.anthropic.com/v1/messages"),
        ("https://gw.example.com/", "https://gw.example.com/v1/messages"),
        ("https://gw.example.com/anthropic/v1/messages", "https://gw.example.com/anthropic/v1/messages"),
    ],
)
def test_the_messages_url_appends_v1_messages_unless_present(base: str | None, url: str) -> None:
    assert messages_url(base) == url


def test_an_error_event_before_the_message_starts_is_held_as_the_opening_error() -> None:
    translator = AnthropicStreamTranslator("claude", include_usage=True)
    raw = b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\n\n'
    assert translator.feed(raw) == b""
    assert translator.opening_error == (529, {"type": "overloaded_error", "message": "Overloaded"})
