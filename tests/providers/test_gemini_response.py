"""Gemini answers as OpenAI's: finish reasons, usage (cached and thought tokens), tool calls with their thought
signatures, and the stream translator on pieces of any size (CRLF framing as Google sends it)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from haimaker.accounting.pricing import usage_from_openai
from haimaker.errors import BadGatewayError
from haimaker.providers import gemini_response
from haimaker.providers.gemini_response import GeminiStream, chat_completion, finish_reason, openai_usage


def test_finish_reasons() -> None:
    assert finish_reason("STOP", called_tools=False) == "stop"
    assert finish_reason("STOP", called_tools=True) == "tool_calls"
    assert finish_reason("MAX_TOKENS", called_tools=True) == "length"
    for reason in ("SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII"):
        assert finish_reason(reason, called_tools=False) == "content_filter"
    assert finish_reason("SOMETHING_NEW", called_tools=False) == "stop"
    assert finish_reason(None, called_tools=False) is None


def test_usage_counts_cached_inside_the_prompt_and_thoughts_as_completion() -> None:
    usage = openai_usage(
        {
            "promptTokenCount": 100,
            "cachedContentTokenCount": 60,
            "candidatesTokenCount": 20,
            "thoughtsTokenCount": 30,
            "toolUsePromptTokenCount": 5,
            "totalTokenCount": 155,
        }
    )
    assert usage == {
        "prompt_tokens": 105,
        "completion_tokens": 50,
        "total_tokens": 155,
        "prompt_tokens_details": {"cached_tokens": 60},
        "completion_tokens_details": {"reasoning_tokens": 30},
    }
    parsed = usage_from_openai(usage)
    assert parsed is not None
    assert (parsed.prompt_tokens, parsed.cache_read_tokens, parsed.completion_tokens) == (105, 60, 50)


def test_a_thought_signature_rides_in_the_tool_call_id() -> None:
    answer = {
        "candidates": [
            {
                "content": {
                    "role": "model",
                    "parts": [{"functionCall": {"name": "f", "args": {"a": [1]}}, "thoughtSignature": "c2ln"}],
                },
                "finishReason": "STOP",
            }
        ]
    }
    choice = orjson.loads(chat_completion(orjson.dumps(answer), "gemini-x"))["choices"][0]
    [call] = choice["message"]["tool_calls"]
    assert call["id"].startswith("call_") and call["id"].endswith("__thought__c2ln")
    assert call["function"] == {"name": "f", "arguments": '{"a":[1]}'}
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None


@pytest.mark.parametrize("raw", [b"not json", b"[1, 2]", b'{"error": {"code": 500, "message": "Internal"}}'])
def test_an_unreadable_answer_is_a_502(raw: bytes) -> None:
    with pytest.raises(BadGatewayError):
        chat_completion(raw, "m")


def _stream_bytes(*events: dict[str, Any]) -> bytes:
    return b"".join(b"data: " + orjson.dumps(e) + b"\r\n\r\n" for e in events)


EVENTS = (
    {"candidates": [{"content": {"role": "model", "parts": [{"text": "Hel"}]}, "index": 0}], "responseId": "r1"},
    {
        "candidates": [
            {"content": {"role": "model", "parts": [{"text": "lo"}]}, "finishReason": "MAX_TOKENS", "index": 0}
        ],
        "usageMetadata": {"promptTokenCount": 4, "candidatesTokenCount": 2, "totalTokenCount": 6},
        "modelVersion": "gemini-2.5-flash-001",
    },
)


@pytest.mark.parametrize("size", [1, 7, 1_000_000])
def test_the_stream_translator_takes_pieces_of_any_size(size: int) -> None:
    raw = _stream_bytes(*EVENTS)
    stream = GeminiStream("gemini-2.5-flash", with_usage=True)
    out: list[bytes] = []
    for start in range(0, len(raw), size):
        out += stream.feed(raw[start : start + size])
    out += stream.finish()
    assert out[-1] == b"data: [DONE]\n\n"
    chunks = [orjson.loads(event[6:]) for event in out[:-1]]
    assert [c["id"] for c in chunks] == ["chatcmpl-r1"] * 3
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "Hel"}
    assert chunks[1]["choices"][0] == {
        "index": 0,
        "delta": {"content": "lo"},
        "finish_reason": "length",
        "logprobs": None,
    }
    assert chunks[2]["choices"] == [] and chunks[2]["usage"]["total_tokens"] == 6
    assert chunks[2]["model"] == "gemini-2.5-flash-001"


def test_a_stream_event_past_the_cap_fails_the_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gemini_response, "MAX_EVENT_BYTES", 64)
    stream = GeminiStream("m", with_usage=False)
    with pytest.raises(BadGatewayError, match="larger than"):
        stream.feed(b"data: " + b"x" * 100)


def test_a_blocked_prompt_in_a_stream_is_a_content_filter_chunk() -> None:
    stream = GeminiStream("m", with_usage=False)
    events = stream.feed(_stream_bytes({"promptFeedback": {"blockReason": "SAFETY"}})) + stream.finish()
    first = orjson.loads(events[0][6:])
    assert first["choices"][0]["finish_reason"] == "content_filter"
    assert events[-1] == b"data: [DONE]\n\n"


def test_an_error_event_mid_stream_fails_the_stream() -> None:
    stream = GeminiStream("m", with_usage=False)
    with pytest.raises(BadGatewayError, match="overloaded"):
        stream.feed(_stream_bytes({"error": {"code": 503, "message": "The model is overloaded."}}))


def test_a_stream_cut_before_any_finish_reason_ends_without_done_or_usage() -> None:
    stream = GeminiStream("m", with_usage=True)
    events = stream.feed(_stream_bytes(EVENTS[0])) + stream.finish()
    assert not stream.is_complete
    assert len(events) == 1 and b"[DONE]" not in events[0] and b'"usage"' not in events[0]
