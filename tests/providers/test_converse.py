"""OpenAI chat <-> Bedrock Converse: requests, answers, stream events, usage and the refusals.

Guards a translation that breaks Converse's turn rules (alternation, tool results in a user turn), loses images or
tool calls, charges cache reads and writes as plain input, or lets a truncated stream end with `[DONE]`.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from haimaker.accounting.pricing import usage_from_openai
from haimaker.errors import BadGatewayError, BadRequestError
from haimaker.providers.converse import StreamTranslator, chat_completion, converse_request, openai_usage
from haimaker.providers.eventstream import EventMessage, EventStreamDecoder
from haimaker.providers.redaction import Redactor
from tests.support.fakes import Behavior
from tests.support.fakes.bedrock import stream_messages
from tests.support.fakes.bedrock_wire import converse_problem, encode_message, exception
from tests.support.fakes.bedrock_wire import event as wire_event

PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather of a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
]


def test_a_whole_conversation_becomes_a_valid_converse_request() -> None:
    body = {
        "model": "claude",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {
                "role": "developer",
                "content": [{"type": "text", "text": "Use tools.", "cache_control": {"type": "ephemeral"}}],
            },
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Weather where this photo was taken?"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                ],
            },
            {
                "role": "assistant",
                "content": "Checking.",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    },
                    {
                        "id": "call_2",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Nice"}'},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
            {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "22C"}]},
            {"role": "user", "content": "And tomorrow?"},
        ],
        "tools": TOOLS,
        "tool_choice": "auto",
        "max_tokens": 100,
        "temperature": 0.5,
        "top_p": 0.9,
        "stop": "END",
        "n": 1,
        "user": "customer-1",
        "stream_options": {"include_usage": True},
    }
    request = converse_request(body)
    assert converse_problem(request) is None
    assert request["system"] == [{"text": "Be brief."}, {"text": "Use tools."}, {"cachePoint": {"type": "default"}}]
    assert request["inferenceConfig"] == {"maxTokens": 100, "temperature": 0.5, "topP": 0.9, "stopSequences": ["END"]}
    assert request["toolConfig"] == {
        "tools": [
            {
                "toolSpec": {
                    "name": "get_weather",
                    "inputSchema": {"json": TOOLS[0]["function"]["parameters"]},
                    "description": "Weather of a city",
                }
            }
        ],
        "toolChoice": {"auto": {}},
    }
    user, assistant, results = request["messages"]
    assert user == {
        "role": "user",
        "content": [
            {"text": "Weather where this photo was taken?"},
            {"image": {"format": "png", "source": {"bytes": PNG}}},
        ],
    }
    assert assistant["content"] == [
        {"text": "Checking."},
        {"toolUse": {"toolUseId": "call_1", "name": "get_weather", "input": {"city": "Paris"}}},
        {"toolUse": {"toolUseId": "call_2", "name": "get_weather", "input": {"city": "Nice"}}},
    ]
    # Both tool results and the next user message share one user turn (Converse requires alternation).
    assert results == {
        "role": "user",
        "content": [
            {"toolResult": {"toolUseId": "call_1", "content": [{"text": "18C"}]}},
            {"toolResult": {"toolUseId": "call_2", "content": [{"text": "22C"}]}},
            {"text": "And tomorrow?"},
        ],
    }


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("required", {"any": {}}),
        ({"type": "function", "function": {"name": "get_weather"}}, {"tool": {"name": "get_weather"}}),
        (None, None),
    ],
)
def test_tool_choice_maps_to_converse(choice: object, expected: object) -> None:
    body: dict[str, Any] = {"messages": [{"role": "user", "content": "hi"}], "tools": TOOLS}
    if choice is not None:
        body["tool_choice"] = choice
    assert converse_request(body)["toolConfig"].get("toolChoice") == expected


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"tool_choice": "none", "tools": TOOLS}, "tool_choice"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"tools": [{"type": "code_interpreter"}]}, "tools[0]"),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/a.png"}}]}
                ]
            },
            "messages[0].content[0]",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "data:image/tiff;base64,AAAA"}}],
                    }
                ]
            },
            "messages[0].content[0]",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]},
            "messages[0].content[0]",
        ),
        ({"messages": [{"role": "system", "content": "only a system prompt"}]}, "messages"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].tool_call_id"),
    ],
)
def test_what_converse_cannot_do_is_refused_with_a_400_naming_the_param(change: dict[str, Any], param: str) -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], **change}
    with pytest.raises(BadRequestError) as caught:
        converse_request(body)
    assert caught.value.status_code == 400
    assert caught.value.param == param


def test_empty_text_is_left_out_and_an_emptied_turn_merges_away() -> None:
    body = {
        "messages": [
            {"role": "user", "content": "one"},
            {"role": "assistant", "content": ""},
            {"role": "user", "content": "two"},
        ]
    }
    assert converse_request(body)["messages"] == [{"role": "user", "content": [{"text": "one"}, {"text": "two"}]}]


ANSWER = {
    "output": {
        "message": {
            "role": "assistant",
            "content": [
                {"reasoningContent": {"reasoningText": {"text": "Think.", "signature": "sig"}}},
                {"text": "Let me check."},
                {"toolUse": {"toolUseId": "tooluse_1", "name": "get_weather", "input": {"city": "Paris"}}},
            ],
        }
    },
    "stopReason": "tool_use",
    "usage": {
        "inputTokens": 10,
        "outputTokens": 7,
        "totalTokens": 122,
        "cacheReadInputTokens": 100,
        "cacheWriteInputTokens": 5,
    },
    "metrics": {"latencyMs": 42},
}


def test_an_answer_becomes_a_chat_completion_with_tool_calls_and_cache_usage() -> None:
    completion = chat_completion(ANSWER, "anthropic.claude-3-5-sonnet-20241022-v2:0")
    assert completion["object"] == "chat.completion"
    assert completion["model"] == "anthropic.claude-3-5-sonnet-20241022-v2:0"
    (choice,) = completion["choices"]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"] == {
        "role": "assistant",
        "content": "Let me check.",
        "reasoning_content": "Think.",
        "tool_calls": [
            {
                "id": "tooluse_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
            }
        ],
    }
    assert completion["usage"]["prompt_tokens"] == 115
    usage = usage_from_openai(completion["usage"])
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.cache_read_tokens, usage.cache_creation_tokens) == (
        115,
        7,
        100,
        5,
    )


@pytest.mark.parametrize(
    ("stop", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("guardrail_intervened", "content_filter"),
        ("content_filtered", "content_filter"),
        ("something_new", "stop"),
    ],
)
def test_stop_reasons_map_as_litellm_maps_them(stop: str, finish: str) -> None:
    answer = {**ANSWER, "stopReason": stop, "output": {"message": {"role": "assistant", "content": [{"text": "x"}]}}}
    assert chat_completion(answer, "m")["choices"][0]["finish_reason"] == finish


def test_impossible_usage_is_a_bad_gateway() -> None:
    with pytest.raises(BadGatewayError):
        openai_usage({"inputTokens": -1, "outputTokens": 2})
    with pytest.raises(BadGatewayError):
        chat_completion({"output": {}}, "m")


def _stream(answer: dict[str, Any], behavior: Behavior | None = None) -> bytes:
    return b"".join(stream_messages(answer, behavior or Behavior()))


def _translate(raw: bytes, *, include_usage: bool = True) -> list[Any]:
    decoder = EventStreamDecoder()
    translator = StreamTranslator("m", include_usage=include_usage, redactor=Redactor())
    out = b"".join(translator.events(message) for message in decoder.feed(raw)) + translator.finish()
    chunks: list[Any] = []
    for event in out.split(b"\n\n"):
        if event:
            data = event.removeprefix(b"data: ")
            chunks.append("[DONE]" if data == b"[DONE]" else orjson.loads(data))
    return chunks


def test_a_stream_becomes_openai_chunks_with_tool_deltas_usage_and_done() -> None:
    *body, usage_chunk, done = _translate(_stream(ANSWER))
    assert done == "[DONE]"
    assert body[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert len({c["id"] for c in body}) == 1
    assert "".join(c["choices"][0]["delta"].get("reasoning_content") or "" for c in body) == "Think."
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in body) == "Let me check."
    calls = [c["choices"][0]["delta"]["tool_calls"][0] for c in body if "tool_calls" in c["choices"][0]["delta"]]
    assert calls[0] == {
        "index": 0,
        "id": "tooluse_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    assert "".join(c["function"]["arguments"] for c in calls) == '{"city":"Paris"}'
    assert body[-1]["choices"][0] == {"index": 0, "delta": {}, "finish_reason": "tool_calls"}
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"]["prompt_tokens"] == 115
    assert usage_chunk["usage"]["prompt_tokens_details"] == {"cached_tokens": 100}
    assert usage_chunk["usage"]["cache_creation_input_tokens"] == 5


def test_usage_chunk_only_when_asked() -> None:
    chunks = _translate(_stream(ANSWER), include_usage=False)
    assert chunks[-1] == "[DONE]"
    assert all(c == "[DONE]" or c["choices"] for c in chunks)


def test_a_stream_cut_before_message_stop_gets_no_done() -> None:
    raw = b"".join(list(stream_messages(ANSWER, Behavior()))[:3])
    assert "[DONE]" not in _translate(raw)


def test_an_exception_message_fails_the_stream_with_its_type_and_message() -> None:
    decoder = EventStreamDecoder()
    translator = StreamTranslator("m", include_usage=True, redactor=Redactor(["secret-value-123"]))
    (message,) = decoder.feed(exception("throttlingException", b'{"message":"Slow down secret-value-123"}'))
    with pytest.raises(BadGatewayError, match=r"throttlingException\): Slow down \[REDACTED\]"):
        translator.events(message)


# ---- refusals and translations of the less common shapes ------------------------------------------------------

HI: list[dict[str, Any]] = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(
    ("change", "param", "message"),
    [
        ({"messages": []}, "messages", "`messages` must be a non-empty list."),
        ({"messages": "hi"}, "messages", "`messages` must be a non-empty list."),
        ({"tools": {"type": "function"}}, "tools", "`tools` must be a list."),
        ({"tools": TOOLS, "tool_choice": {"type": "function"}}, "tool_choice", "`tool_choice` must name a function."),
        (
            {"tools": TOOLS, "tool_choice": "any"},
            "tool_choice",
            "`tool_choice` must be 'auto', 'required' or a named function.",
        ),
        ({"messages": ["hi"]}, "messages[0]", "Each message must be an object."),
        (
            {"messages": [{"role": "function", "content": "x"}]},
            "messages[0].role",
            "bedrock/ deployments do not take 'function' messages.",
        ),
        (
            {"messages": [{"role": "user", "content": {"text": "hi"}}]},
            "messages[0].content",
            "`content` must be a string or a list of parts.",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "image_url", "image_url": "data:image/png;base64,@@"}]}
                ]
            },
            "messages[0].content[0]",
            "The image data URL is not valid base64.",
        ),
        (
            {"messages": [*HI, {"role": "assistant", "tool_calls": {"id": "c"}}]},
            "messages[1].tool_calls",
            "`tool_calls` must be a list.",
        ),
        (
            {"messages": [*HI, {"role": "assistant", "tool_calls": [{"function": {"name": "get_weather"}}]}]},
            "messages[1].tool_calls[0]",
            "Each tool call needs an `id` and a `function`.",
        ),
        (
            {
                "messages": [
                    *HI,
                    {"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "w", "arguments": "{"}}]},
                ]
            },
            "messages[1].tool_calls[0].function.arguments",
            "Tool call arguments must be JSON.",
        ),
    ],
)
def test_a_malformed_request_is_a_400_with_its_param_and_message(
    change: dict[str, Any], param: str, message: str
) -> None:
    with pytest.raises(BadRequestError) as caught:
        converse_request({"messages": HI, **change})
    assert (caught.value.status_code, caught.value.param, caught.value.message) == (400, param, message)


def test_drop_params_leaves_out_n_logprobs_and_response_format() -> None:
    body = {"messages": HI, "n": 2, "top_logprobs": 1, "response_format": {"type": "json_object"}}
    assert converse_request(body, drop_params=True) == {"messages": [{"role": "user", "content": [{"text": "hi"}]}]}


def test_inference_config_tools_without_description_and_auto_choice() -> None:
    body = {
        "messages": HI,
        "max_tokens": 50,
        "temperature": 0.2,
        "top_p": 0.8,
        "stop": "END",
        "tools": [{"type": "function", "function": {"name": "now"}}],
        "tool_choice": "auto",
    }
    request = converse_request(body)
    assert converse_problem(request) is None, converse_problem(request)
    assert request["inferenceConfig"] == {"maxTokens": 50, "temperature": 0.2, "topP": 0.8, "stopSequences": ["END"]}
    assert request["toolConfig"] == {
        "tools": [{"toolSpec": {"name": "now", "inputSchema": {"json": {"type": "object", "properties": {}}}}}],
        "toolChoice": {"auto": {}},
    }
    assert converse_request({"messages": HI, "stop": []}).get("inferenceConfig") is None
    assert converse_request({"messages": HI, "stop": ["A", "B"]})["inferenceConfig"] == {"stopSequences": ["A", "B"]}


def test_empty_and_missing_content_is_left_out_and_an_empty_tool_result_is_one_space() -> None:
    body = {
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": ""}, {"type": "text", "text": "hi"}]},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "get_weather"}}],
            },
            {"role": "tool", "tool_call_id": "c1", "content": ""},
        ],
        "tools": TOOLS,
    }
    request = converse_request(body)
    assert converse_problem(request) is None, converse_problem(request)
    assert request["messages"] == [
        {"role": "user", "content": [{"text": "hi"}]},
        {"role": "assistant", "content": [{"toolUse": {"toolUseId": "c1", "name": "get_weather", "input": {}}}]},
        {"role": "user", "content": [{"toolResult": {"toolUseId": "c1", "content": [{"text": " "}]}}]},
    ]


def test_an_answer_with_unknown_blocks_and_no_usage() -> None:
    answer = {
        "output": {
            "message": {
                "role": "assistant",
                "content": [
                    "stray",
                    {"image": {"format": "png"}},
                    {"reasoningContent": {"redactedContent": "opaque"}},
                    {"text": "Done."},
                ],
            }
        },
        "stopReason": "end_turn",
    }
    completion = chat_completion(answer, "m")
    assert completion["choices"][0]["message"] == {"role": "assistant", "content": "Done."}
    assert "usage" not in completion
    assert openai_usage(None) is None
    with pytest.raises(BadGatewayError) as caught:
        chat_completion(["not", "an", "object"], "m")
    assert caught.value.message == "Bedrock answered with something other than a JSON object."


# ---- stream events the common path does not meet ---------------------------------------------------------------


def _events(*messages: bytes) -> list[EventMessage]:
    return EventStreamDecoder().feed(b"".join(messages))


def test_non_tool_block_starts_and_deltas_without_content_send_nothing() -> None:
    translator = StreamTranslator("m", include_usage=True, redactor=Redactor())
    messages = _events(
        wire_event("contentBlockStart", b'{"contentBlockIndex":0,"start":{}}'),
        wire_event("contentBlockDelta", b'{"contentBlockIndex":0,"delta":"text"}'),
        wire_event("contentBlockDelta", b'{"contentBlockIndex":0,"delta":{"citation":{}}}'),
        wire_event("contentBlockStop", b'{"contentBlockIndex":0}'),
        wire_event("metadata", b'{"metrics":{"latencyMs":1}}'),
        wire_event("messageStop", b""),
    )
    out = [translator.events(message) for message in messages]
    assert out[:5] == [b"", b"", b"", b"", b""]
    assert orjson.loads(out[5].removeprefix(b"data: "))["choices"][0] == {
        "index": 0,
        "delta": {},
        "finish_reason": "stop",
    }


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"{not json", "Bedrock sent a contentBlockDelta event that is not JSON."),
        (b"[1]", "Bedrock sent a contentBlockDelta event that is not an object."),
    ],
)
def test_an_unreadable_event_is_a_502_naming_the_event(payload: bytes, message: str) -> None:
    translator = StreamTranslator("m", include_usage=True, redactor=Redactor())
    (decoded,) = _events(wire_event("contentBlockDelta", payload))
    with pytest.raises(BadGatewayError) as caught:
        translator.events(decoded)
    assert caught.value.message == message


def test_an_error_message_header_wins_and_a_payload_that_is_not_json_reads_as_no_message() -> None:
    translator = StreamTranslator("m", include_usage=True, redactor=Redactor())
    headed = {":message-type": "error", ":error-code": "InternalFailure", ":error-message": "try again"}
    (with_header,) = _events(encode_message(headed, b""))
    with pytest.raises(BadGatewayError) as caught:
        translator.events(with_header)
    assert caught.value.message == "Bedrock stream failed (InternalFailure): try again"
    (unreadable,) = _events(exception("modelStreamErrorException", b"<html>oops</html>"))
    with pytest.raises(BadGatewayError) as caught:
        translator.events(unreadable)
    assert caught.value.message == "Bedrock stream failed (modelStreamErrorException): no message"
