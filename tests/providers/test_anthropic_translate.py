"""OpenAI chat ↔ Anthropic Messages translation: each request rule, the answer, usage; and each translated request
is one the strict fake Anthropic accepts (`messages_problem`)."""

from __future__ import annotations

from typing import Any

import pytest

from haimaker.errors import BadRequestError
from haimaker.providers.anthropic_translate import (
    DEFAULT_MAX_TOKENS,
    chat_completion,
    finish_reason_of,
    messages_request,
    openai_usage,
)
from tests.support.fakes.anthropic import messages_problem

MODEL = "claude-3-5-sonnet-20241022"


def translate(body: dict[str, Any], *, default_max_tokens: int | None = 8192, **kwargs: Any) -> dict[str, Any]:
    out = messages_request(body, MODEL, default_max_tokens=default_max_tokens, **kwargs)
    assert messages_problem(out) is None, messages_problem(out)
    return out


def test_system_and_developer_messages_become_system_blocks_and_the_turns_alternate() -> None:
    out = translate(
        {
            "model": "claude",
            "messages": [
                {"role": "system", "content": "Be terse."},
                {
                    "role": "developer",
                    "content": [{"type": "text", "text": "No emoji.", "cache_control": {"type": "ephemeral"}}],
                },
                {"role": "user", "content": "Hi"},
                {"role": "user", "content": [{"type": "text", "text": "there"}]},
            ],
        }
    )
    assert out["model"] == MODEL
    assert out["system"] == [
        {"type": "text", "text": "Be terse."},
        {"type": "text", "text": "No emoji.", "cache_control": {"type": "ephemeral"}},
    ]
    assert out["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Hi"}, {"type": "text", "text": "there"}]}
    ]


def test_max_tokens_comes_from_the_request_else_the_model_else_4096() -> None:
    base = {"messages": [{"role": "user", "content": "Hi"}]}
    assert translate({**base, "max_completion_tokens": 10, "max_tokens": 20})["max_tokens"] == 10
    assert translate({**base, "max_tokens": 20})["max_tokens"] == 20
    assert translate(base)["max_tokens"] == 8192
    assert translate(base, default_max_tokens=None)["max_tokens"] == DEFAULT_MAX_TOKENS == 4096


def test_images_data_urls_become_base64_sources_and_http_urls_url_sources() -> None:
    out = translate(
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Compare"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg", "detail": "low"}},
                        {
                            "type": "file",
                            "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBE"},
                        },
                    ],
                }
            ]
        }
    )
    assert out["messages"][0]["content"][1:] == [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBE"}},
    ]


def test_tool_calls_become_tool_use_and_tool_messages_merge_into_one_user_turn() -> None:
    out = translate(
        {
            "messages": [
                {"role": "user", "content": "Weather in Paris and Rome?"},
                {
                    "role": "assistant",
                    "content": "Checking.",
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "w", "arguments": '{"city":"Paris"}'},
                        },
                        {"id": "call_2", "type": "function", "function": {"name": "w", "arguments": ""}},
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
                {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "21C"}]},
                {"role": "user", "content": "Thanks"},
            ],
            "tools": [
                {
                    "type": "function",
                    "function": {
                        "name": "w",
                        "description": "weather",
                        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                    },
                }
            ],
        }
    )
    assert out["messages"][1] == {
        "role": "assistant",
        "content": [
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "call_1", "name": "w", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "call_2", "name": "w", "input": {}},
        ],
    }
    assert out["messages"][2] == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "call_1", "content": "18C"},
            {"type": "tool_result", "tool_use_id": "call_2", "content": [{"type": "text", "text": "21C"}]},
            {"type": "text", "text": "Thanks"},
        ],
    }
    assert out["tools"] == [
        {
            "name": "w",
            "description": "weather",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
        }
    ]


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        ("auto", None, {"type": "auto"}),
        ("required", None, {"type": "any"}),
        ("none", None, {"type": "none"}),
        ({"type": "function", "function": {"name": "w"}}, None, {"type": "tool", "name": "w"}),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        ("required", True, {"type": "any", "disable_parallel_tool_use": False}),
        (None, None, None),
    ],
)
def test_tool_choice_maps_as_litellm(choice: object, parallel: object, expected: object) -> None:
    body: dict[str, Any] = {
        "messages": [{"role": "user", "content": "Hi"}],
        "tools": [{"type": "function", "function": {"name": "w", "parameters": {"type": "object"}}}],
    }
    if choice is not None:
        body["tool_choice"] = choice
    if parallel is not None:
        body["parallel_tool_calls"] = parallel
    assert translate(body).get("tool_choice") == expected


def test_stop_sampling_user_and_anthropic_fields() -> None:
    out = translate(
        {
            "messages": [{"role": "user", "content": "Hi"}],
            "stop": ["END", "  "],
            "temperature": 0.5,
            "top_p": 0.9,
            "top_k": 5,
            "user": "cust-1",
            "stream": True,
            "stream_options": {"include_usage": True},
            "n": 1,
        }
    )
    assert out["stop_sequences"] == ["END"]  # whitespace-only dropped
    assert (out["temperature"], out["top_p"], out["top_k"]) == (0.5, 0.9, 5)
    assert out["metadata"] == {"user_id": "cust-1"}
    assert out["stream"] is True
    assert "stream_options" not in out and "n" not in out and "user" not in out
    assert translate({"messages": [{"role": "user", "content": "Hi"}], "stop": "X"})["stop_sequences"] == ["X"]


def test_an_email_user_is_not_sent_as_metadata_user_id() -> None:
    out = translate({"messages": [{"role": "user", "content": "Hi"}], "user": "someone@example.com"})
    assert "metadata" not in out


def test_n_above_one_is_refused_with_a_400() -> None:
    with pytest.raises(BadRequestError) as caught:
        messages_request({"messages": [{"role": "user", "content": "Hi"}], "n": 2}, MODEL, default_max_tokens=None)
    assert caught.value.status_code == 400 and caught.value.param == "n"


def test_openai_only_fields_are_refused_unless_drop_params() -> None:
    body = {"messages": [{"role": "user", "content": "Hi"}], "seed": 1, "frequency_penalty": 0.5}
    with pytest.raises(BadRequestError) as caught:
        messages_request(body, MODEL, default_max_tokens=None)
    assert "frequency_penalty" in caught.value.message and "seed" in caught.value.message
    out = translate(body, drop_params=True)
    assert "seed" not in out and "frequency_penalty" not in out


def test_a_conversation_opening_with_the_assistant_gets_a_user_turn_first() -> None:
    out = translate({"messages": [{"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Hi"}]})
    assert [m["role"] for m in out["messages"]] == ["user", "assistant", "user"]


@pytest.mark.parametrize(
    "messages",
    [
        [],
        [{"role": "system", "content": "only a system prompt"}],
        [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}],
        [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}]}],
        [
            {
                "role": "assistant",
                "tool_calls": [{"id": "c", "type": "function", "function": {"name": "w", "arguments": "{"}}],
            }
        ],
        [{"role": "tool", "content": "no id"}],
        [{"role": "function", "content": "legacy"}],
    ],
)
def test_malformed_messages_are_a_400(messages: list[dict[str, Any]]) -> None:
    with pytest.raises(BadRequestError):
        messages_request({"messages": messages}, MODEL, default_max_tokens=None)


def test_response_format_is_a_forced_json_tool() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    out = translate(
        {
            "messages": [{"role": "user", "content": "Hi"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
        }
    )
    assert out["tools"] == [{"name": "json_tool_call", "input_schema": schema}]
    assert out["tool_choice"] == {"type": "tool", "name": "json_tool_call"}
    answer = {
        "id": "msg_1",
        "type": "message",
        "content": [{"type": "tool_use", "id": "t", "name": "json_tool_call", "input": {"a": 1}}],
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 1, "output_tokens": 1},
    }
    completion = chat_completion(answer, MODEL, json_text=True)
    assert completion["choices"][0]["message"] == {"role": "assistant", "content": '{"a":1}'}
    assert completion["choices"][0]["finish_reason"] == "stop"


def test_an_answer_becomes_a_chat_completion_with_tool_calls_and_cache_usage() -> None:
    answer = {
        "id": "msg_abc",
        "type": "message",
        "role": "assistant",
        "model": MODEL,
        "content": [
            {"type": "thinking", "thinking": "hmm", "signature": "s"},
            {"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": "toolu_1", "name": "w", "input": {"city": "Paris"}},
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 10,
            "output_tokens": 5,
            "cache_read_input_tokens": 100,
            "cache_creation_input_tokens": 20,
        },
    }
    completion = chat_completion(answer, MODEL)
    assert completion["id"] == "chatcmpl-abc" and completion["object"] == "chat.completion"
    [choice] = completion["choices"]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"] == {
        "role": "assistant",
        "content": "Let me check.",
        "reasoning_content": "hmm",
        "tool_calls": [
            {"id": "toolu_1", "type": "function", "function": {"name": "w", "arguments": '{"city":"Paris"}'}}
        ],
    }
    assert completion["usage"] == {
        "prompt_tokens": 130,
        "completion_tokens": 5,
        "total_tokens": 135,
        "prompt_tokens_details": {"cached_tokens": 100},
        "cache_creation_input_tokens": 20,
        "cache_read_input_tokens": 100,
    }


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        (None, "stop"),
    ],
)
def test_stop_reasons_map_to_finish_reasons(stop_reason: object, finish: str) -> None:
    assert finish_reason_of(stop_reason) == finish


def test_usage_without_cache_counts() -> None:
    assert openai_usage({"input_tokens": 3, "output_tokens": 4})["prompt_tokens"] == 3
