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


# ---- refusals: each malformed request is a 400 naming the exact field ------------------------------------------

HI: list[dict[str, Any]] = [{"role": "user", "content": "Hi"}]


def refusal(body: dict[str, Any]) -> BadRequestError:
    with pytest.raises(BadRequestError) as caught:
        messages_request(body, MODEL, default_max_tokens=None)
    assert caught.value.status_code == 400
    return caught.value


@pytest.mark.parametrize(
    ("change", "param", "what"),
    [
        ({"response_format": {"type": "xml"}}, "response_format", "must be an object of type text"),
        ({"response_format": "json_object"}, "response_format", "must be an object of type text"),
        ({"max_tokens": 0}, "max_tokens", "must be a positive integer"),
        ({"max_completion_tokens": True}, "max_completion_tokens", "must be a positive integer"),
        ({"max_tokens": "10"}, "max_tokens", "must be a positive integer"),
        ({"stop": ["END", 3]}, "stop", "must be a string or an array of strings"),
        ({"stop": {"seq": "END"}}, "stop", "must be a string or an array of strings"),
        ({"tools": {"type": "function"}}, "tools", "must be an array"),
        ({"tools": [{"type": "web_search"}]}, "tools.0", "only function tools are supported"),
        ({"tools": [{"type": "function", "function": {"name": ""}}]}, "tools.0.function.name", "is required"),
        ({"tool_choice": "any"}, "tool_choice", "must be auto, required, none or a named function"),
        ({"tool_choice": {"type": "function"}}, "tool_choice", "must be auto, required, none or a named function"),
    ],
)
def test_a_malformed_request_field_is_a_400_naming_it(change: dict[str, Any], param: str, what: str) -> None:
    error = refusal({"messages": HI, **change})
    assert error.param == param
    assert error.message.startswith(f"anthropic: {param}: {what}")


@pytest.mark.parametrize(
    ("message", "param", "what"),
    [
        ("Hi", "messages.0", "must be an object"),
        ({"role": "system", "content": 5}, "messages.0.content", "must be a string or an array of text parts"),
        (
            {"role": "system", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]},
            "messages.0.content.0",
            "must be a text part",
        ),
        ({"role": "user", "content": {"text": "Hi"}}, "messages.0.content", "must be a string or an array"),
        ({"role": "user", "content": ["Hi"]}, "messages.0.content.0", "must be a content part object"),
        ({"role": "user", "content": [{"type": "text", "text": 1}]}, "messages.0.content.0.text", "must be a string"),
        (
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": ""}}]},
            "messages.0.content.0.image_url.url",
            "must be a URL or a data URL",
        ),
        (
            {"role": "user", "content": [{"type": "file", "file": {"file_id": "file-1"}}]},
            "messages.0.content.0.file.file_data",
            "must be a base64 data URL (file ids are not supported)",
        ),
        (
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png,rawbytes"}}]},
            "messages.0.content.0.image_url.url",
            "a data URL must be base64",
        ),
        ({"role": "assistant", "tool_calls": {"id": "c"}}, "messages.0.tool_calls", "must be an array"),
        ({"role": "assistant", "tool_calls": ["c"]}, "messages.0.tool_calls.0", "must be a function tool call"),
        (
            {"role": "assistant", "tool_calls": [{"id": "", "function": {"name": "w"}}]},
            "messages.0.tool_calls.0",
            "needs an id and a function name",
        ),
        (
            {"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "w", "arguments": "[1]"}}]},
            "messages.0.tool_calls.0.function.arguments",
            "must be a JSON object",
        ),
    ],
)
def test_a_malformed_message_is_a_400_naming_its_path(message: object, param: str, what: str) -> None:
    error = refusal({"messages": [message]})
    assert error.param == param
    assert error.message.startswith(f"anthropic: {param}: {what}")


# ---- translations of the less common shapes -------------------------------------------------------------------


def test_a_float_max_tokens_is_rounded_and_a_phone_number_user_is_not_metadata() -> None:
    out = translate({"messages": HI, "max_tokens": 99.6, "user": "+1 (555) 123-4567"})
    assert out["max_tokens"] == 100
    assert "metadata" not in out


def test_empty_text_parts_and_empty_turns_are_left_out() -> None:
    out = translate(
        {
            "messages": [
                {"role": "system", "content": [{"type": "text", "text": ""}, {"type": "text", "text": "Be terse."}]},
                {"role": "user", "content": ""},
                {"role": "user", "content": [{"type": "text", "text": ""}, {"type": "text", "text": "Hi"}]},
                {"role": "assistant", "content": None},
                {"role": "assistant", "content": "Hello"},
            ]
        }
    )
    assert out["system"] == [{"type": "text", "text": "Be terse."}]
    assert out["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Hello"}]},
    ]


def test_a_tool_result_without_content_and_a_pdf_url_and_cache_control_on_tools() -> None:
    out = translate(
        {
            "messages": [
                {"role": "user", "content": [{"type": "image_url", "image_url": "https://example.com/Doc.PDF?x=1"}]},
                {
                    "role": "assistant",
                    "tool_calls": [
                        {
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "w", "arguments": "  "},
                            "cache_control": {"type": "ephemeral"},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "c1", "content": None, "cache_control": {"type": "ephemeral"}},
            ],
            "tools": [
                {"type": "function", "function": {"name": "w"}, "cache_control": {"type": "ephemeral"}},
            ],
        }
    )
    assert out["messages"][0]["content"] == [
        {"type": "document", "source": {"type": "url", "url": "https://example.com/Doc.PDF?x=1"}}
    ]
    assert out["messages"][1]["content"] == [
        {"type": "tool_use", "id": "c1", "name": "w", "input": {}, "cache_control": {"type": "ephemeral"}}
    ]
    assert out["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": "c1", "cache_control": {"type": "ephemeral"}}
    ]
    assert out["tools"] == [
        {"name": "w", "input_schema": {"type": "object", "properties": {}}, "cache_control": {"type": "ephemeral"}}
    ]


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ({"type": "auto"}, {"type": "auto"}),
        ({"type": "required"}, {"type": "any"}),
        ({"type": "any"}, {"type": "any"}),
        ({"type": "none"}, {"type": "none"}),
    ],
)
def test_an_anthropic_style_tool_choice_object_passes_by_its_type(choice: object, expected: object) -> None:
    body = {"messages": HI, "tools": [{"type": "function", "function": {"name": "w"}}], "tool_choice": choice}
    assert translate(body)["tool_choice"] == expected


def test_parallel_tool_calls_is_not_sent_with_tool_choice_none() -> None:
    body = {
        "messages": HI,
        "tools": [{"type": "function", "function": {"name": "w"}}],
        "tool_choice": "none",
        "parallel_tool_calls": False,
    }
    assert translate(body)["tool_choice"] == {"type": "none"}


def test_json_object_and_text_response_formats() -> None:
    out = translate({"messages": HI, "response_format": {"type": "json_object"}})
    assert out["tools"] == [{"name": "json_tool_call", "input_schema": {"type": "object"}}]
    plain = translate({"messages": HI, "response_format": {"type": "text"}})
    assert "tools" not in plain and "tool_choice" not in plain


def test_an_answer_without_id_or_usage_and_with_unknown_blocks() -> None:
    answer = {
        "type": "message",
        "content": ["stray", {"type": "redacted_thinking", "data": "x"}, {"type": "text", "text": "ok"}],
        "stop_reason": "refusal",
    }
    completion = chat_completion(answer, MODEL)
    assert completion["id"] == "chatcmpl-unknown"
    assert completion["model"] == MODEL
    assert completion["choices"][0] == {
        "index": 0,
        "message": {"role": "assistant", "content": "ok"},
        "finish_reason": "content_filter",
        "logprobs": None,
    }
    assert completion["usage"]["total_tokens"] == 0


def test_a_tool_use_answer_without_text_has_null_content_and_malformed_counts_read_as_zero() -> None:
    answer = {
        "id": "msg_9",
        "type": "message",
        "content": [{"type": "tool_use", "id": "t1", "name": "w"}],
        "stop_reason": "tool_use",
        "usage": {"input_tokens": True, "output_tokens": -3, "cache_read_input_tokens": "5"},
    }
    completion = chat_completion(answer, MODEL)
    assert completion["choices"][0]["message"] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "t1", "type": "function", "function": {"name": "w", "arguments": "{}"}}],
    }
    assert completion["usage"]["prompt_tokens"] == 0 and completion["usage"]["completion_tokens"] == 0
