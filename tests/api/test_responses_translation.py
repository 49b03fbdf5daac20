"""`responses_api`: a Responses request as the chat request that serves it, and a chat answer as a Responses answer.

Plain function calls, no proxy. Guards a translated request that silently loses a field (tools, formats, reasoning,
the proxy's `litellm_*` fields), a conversation whose tool calls land in the wrong chat turn, a request that needs
state we do not keep (or a built-in tool) reaching the upstream instead of a 400 naming the field, and a native
OpenAI group whose bytes are rewritten.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from haimaker.accounting.pricing import PriceTable
from haimaker.api.responses_api import ResponsesDialect, chat_to_response, responses_to_chat
from haimaker.config.schema import Config
from haimaker.errors import BadRequestError
from haimaker.pipeline import JsonResult, StreamResult
from haimaker.providers.base import Route
from haimaker.providers.router import Router, build_deployments


def _router() -> Router:
    """Model groups through the real config path: native OpenAI, bridged OpenAI, mock, and a mixed group."""
    entries: list[tuple[str, dict[str, Any]]] = [
        ("native", {"model": "openai/gpt-4o", "api_key": "sk-test"}),
        ("native", {"model": "azure/gpt-4o", "api_key": "az-test", "api_base": "https://a.example"}),
        ("bridged", {"model": "openai/gpt-4o", "api_key": "sk-test", "use_chat_completions_api": True}),
        ("mocked", {"model": "mock/mocked"}),
        ("mixed", {"model": "openai/gpt-4o", "api_key": "sk-test"}),
        ("mixed", {"model": "mock/mixed"}),
    ]
    config = Config.model_validate(
        {"model_list": [{"model_name": name, "litellm_params": params} for name, params in entries]}
    )
    return Router(build_deployments(config, PriceTable.bundled()), {})


def _refusal(body: dict[str, Any]) -> BadRequestError:
    with pytest.raises(BadRequestError) as caught:
        responses_to_chat(body)
    assert caught.value.status_code == 400
    return caught.value


def _chat(**fields: Any) -> dict[str, Any]:
    return responses_to_chat({"model": "m", **fields})


# ---- routing: native or translated ---------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["native", None, "", 42, "no-such-model"])
def test_native_groups_and_requests_the_pipeline_refuses_keep_their_bytes(model: object) -> None:
    # No model, or an unknown one, goes to the pipeline untouched: its own 400 names the field or the models.
    raw = orjson.dumps({"model": model, "input": "hi", "previous_response_id": "resp_1"}) + b"  "

    translated = ResponsesDialect(_router()).translate_request(raw, {})

    assert translated.route is Route.RESPONSES
    assert translated.body == raw
    assert translated.request is None


@pytest.mark.parametrize("model", ["bridged", "mocked", "mixed"])
def test_groups_not_all_native_are_translated_to_chat(model: str) -> None:
    raw = orjson.dumps({"model": model, "input": "hi"})

    translated = ResponsesDialect(_router()).translate_request(raw, {})

    assert translated.route is Route.CHAT
    assert orjson.loads(translated.body) == {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    assert translated.request == {"model": model, "input": "hi"}


def test_a_translated_request_needing_stored_state_is_refused_before_the_pipeline() -> None:
    raw = orjson.dumps({"model": "mocked", "input": "hi", "previous_response_id": "resp_1"})
    with pytest.raises(BadRequestError) as caught:
        ResponsesDialect(_router()).translate_request(raw, {})
    assert caught.value.param == "previous_response_id"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{not json", "Invalid JSON in request body: "),
        (b"[1, 2]", "Request body must be a JSON object."),
        (b'"input"', "Request body must be a JSON object."),
    ],
)
def test_a_body_that_is_not_a_json_object_is_a_400(raw: bytes, message: str) -> None:
    with pytest.raises(BadRequestError) as caught:
        ResponsesDialect(_router()).translate_request(raw, {})
    assert caught.value.status_code == 400
    assert caught.value.message.startswith(message)
    assert caught.value.__cause__ is None, "the decoder's exception is not chained into the error"


def test_errors_are_in_openais_envelope() -> None:
    error = BadRequestError("'background' is not supported.", param="background")

    body = orjson.loads(ResponsesDialect(_router()).error_body(error))

    assert body == {
        "error": {
            "message": "'background' is not supported.",
            "type": "invalid_request_error",
            "param": "background",
            "code": "400",
        }
    }


# ---- answers: native passthrough, translated JSON and stream ---------------------------------------------------


def test_a_native_answer_is_returned_as_is() -> None:
    dialect = ResponsesDialect(_router())
    result = JsonResult(200, b'{"object":"response"}', [("x-a", "1")])

    assert dialect.translate_json(result, None) is result

    stream = StreamResult([], _chunks())
    assert dialect.translate_stream(stream, None) is stream


def test_a_translated_json_answer_becomes_a_response_with_status_and_headers_kept() -> None:
    chat = {
        "id": "chatcmpl-1",
        "created": 1_700_000_000,
        "model": "mock-1",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
    }
    result = JsonResult(200, orjson.dumps(chat), [("x-litellm-call-id", "c1")])

    translated = ResponsesDialect(_router()).translate_json(result, {"model": "mocked", "input": "hi"})

    assert translated.status == 200
    assert translated.headers == [("x-litellm-call-id", "c1")]
    response = orjson.loads(translated.body)
    assert response["object"] == "response"
    assert response["created_at"] == 1_700_000_000
    assert response["model"] == "mock-1"
    assert [part["text"] for part in response["output"][0]["content"]] == ["Hi"]
    assert response["usage"]["total_tokens"] == 4


async def _chunks(*pieces: bytes) -> AsyncIterator[bytes]:
    for piece in pieces:
        yield piece


async def test_a_translated_stream_becomes_responses_events_and_keeps_the_done_probe() -> None:
    chunk = {"model": "mock-1", "choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": "stop"}]}
    stream = StreamResult(
        [("content-type", "text/event-stream")],
        _chunks(b"data: " + orjson.dumps(chunk) + b"\n\n", b"data: [DONE]\n\n"),
        done=lambda: True,
    )

    translated = ResponsesDialect(_router()).translate_stream(stream, {"model": "mocked", "input": "hi"})

    assert translated.headers == [("content-type", "text/event-stream")]
    assert translated.done()
    body = b"".join([piece async for piece in translated.chunks])
    kinds = re.findall(rb"^event: (\S+)$", body, re.MULTILINE)
    assert kinds[0] == b"response.created" and kinds[-1] == b"response.completed"
    ids = set(re.findall(rb'"id":"(resp_[0-9a-f]{32})"', body))
    assert len(ids) == 1, "every event carries the one response id"


# ---- request fields --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [("previous_response_id", "resp_1"), ("conversation", "conv_1"), ("prompt", {"id": "pmpt_1"})],
)
def test_fields_needing_stored_state_are_refused_naming_the_field(field: str, value: object) -> None:
    error = _refusal({"model": "m", "input": "hi", field: value})

    assert error.param == field
    assert error.message.startswith(f"'{field}' is not supported: ")
    assert "not available" in error.message or "not stored" in error.message


def test_background_responses_are_refused_but_background_false_is_served() -> None:
    error = _refusal({"model": "m", "input": "hi", "background": True})
    assert error.param == "background"
    assert error.message == (
        "'background' is not supported: background responses are stored and polled, and responses are not stored "
        "for this model."
    )

    assert "background" not in _chat(input="hi", background=False)


def test_a_request_without_input_is_refused() -> None:
    error = _refusal({"model": "m", "instructions": "Be brief."})
    assert (error.param, error.message) == ("input", "Missing required parameter: 'input'.")


def test_every_translatable_field_reaches_the_chat_request() -> None:
    tool = {"type": "function", "name": "f", "description": "F.", "parameters": {"type": "object"}, "strict": True}
    chat = _chat(
        input="hi",
        instructions="Be brief.",
        temperature=0.2,
        top_p=0.9,
        parallel_tool_calls=False,
        user="alice",
        safety_identifier="sid",
        metadata={"user_id": "u1"},
        service_tier="flex",
        top_logprobs=2,
        litellm_metadata={"user": "cust-1"},
        max_output_tokens=64,
        tools=[tool],
        tool_choice={"type": "function", "name": "f"},
        reasoning={"effort": "low", "summary": "auto"},
        stream=True,
        store=False,
        truncation="disabled",
    )

    assert chat == {
        "model": "m",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
        "temperature": 0.2,
        "top_p": 0.9,
        "parallel_tool_calls": False,
        "user": "alice",
        "safety_identifier": "sid",
        "metadata": {"user_id": "u1"},
        "service_tier": "flex",
        "top_logprobs": 2,
        "litellm_metadata": {"user": "cust-1"},
        "max_tokens": 64,
        "tools": [
            {
                "type": "function",
                "function": {"name": "f", "description": "F.", "parameters": {"type": "object"}, "strict": True},
            }
        ],
        "tool_choice": {"type": "function", "function": {"name": "f"}},
        "reasoning_effort": "low",
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def test_null_fields_and_empty_tools_are_left_out() -> None:
    chat = _chat(
        input="hi", temperature=None, max_output_tokens=None, tools=[], reasoning={"effort": None}, stream=False
    )
    assert chat == {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize("choice", ["auto", "none", "required"])
def test_a_tool_choice_mode_is_passed_as_is(choice: str) -> None:
    assert _chat(input="hi", tool_choice=choice)["tool_choice"] == choice


@pytest.mark.parametrize(
    "choice", [{"type": "function"}, {"type": "function", "name": 3}, {"type": "web_search_preview"}, ["auto"], 1]
)
def test_a_tool_choice_other_than_a_mode_or_a_named_function_is_refused(choice: object) -> None:
    error = _refusal({"model": "m", "input": "hi", "tool_choice": choice})
    assert error.param == "tool_choice"
    assert error.message.startswith("'tool_choice' must be 'auto', 'none', 'required' or a function")


@pytest.mark.parametrize(
    ("tools", "param", "message"),
    [
        ({"type": "function", "name": "f"}, "tools", "'tools' must be an array."),
        ("web_search", "tools", "'tools' must be an array."),
        ([{"type": "web_search_preview"}], "tools[0].type", "'tools[0]' has type 'web_search_preview': "),
        ([{"type": "function", "name": "f"}, "f"], "tools[1].type", "'tools[1]' has type 'None': "),
        ([{"name": "f"}], "tools[0].type", "'tools[0]' has type 'None': "),
    ],
)
def test_tools_other_than_functions_are_refused_naming_the_tool(tools: object, param: str, message: str) -> None:
    error = _refusal({"model": "m", "input": "hi", "tools": tools})
    assert error.param == param
    assert error.message.startswith(message)


def test_a_function_tool_keeps_only_the_fields_it_gives() -> None:
    assert _chat(input="hi", tools=[{"type": "function", "name": "f", "description": None}])["tools"] == [
        {"type": "function", "function": {"name": "f"}}
    ]


@pytest.mark.parametrize(
    ("text", "response_format"),
    [
        (
            {"format": {"type": "json_schema", "name": "w", "schema": {"type": "object"}, "strict": True}},
            {"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object"}, "strict": True}},
        ),
        (
            {"format": {"type": "json_schema", "name": "w", "description": "W.", "schema": {}, "strict": None}},
            {"type": "json_schema", "json_schema": {"name": "w", "schema": {}, "description": "W."}},
        ),
        ({"format": {"type": "json_object"}}, {"type": "json_object"}),
        ({"format": {"type": "text"}}, None),
        ({"format": "json_object"}, None),
        ({"verbosity": "low"}, None),
        ("json", None),
    ],
)
def test_text_format_becomes_chats_response_format(text: object, response_format: dict[str, Any] | None) -> None:
    assert _chat(input="hi", text=text).get("response_format") == response_format


@pytest.mark.parametrize("reasoning", ["high", {"summary": "auto"}])
def test_reasoning_without_an_effort_is_not_sent(reasoning: object) -> None:
    assert "reasoning_effort" not in _chat(input="hi", reasoning=reasoning)


# ---- input items -----------------------------------------------------------------------------------------------


def test_instructions_must_be_a_string() -> None:
    error = _refusal({"model": "m", "input": "hi", "instructions": ["Be brief."]})
    assert (error.param, error.message) == ("instructions", "'instructions' must be a string.")


@pytest.mark.parametrize("items", [[], {"role": "user", "content": "hi"}, 7])
def test_input_must_be_a_string_or_a_non_empty_array(items: object) -> None:
    error = _refusal({"model": "m", "input": items})
    assert error.param == "input"
    assert error.message == "'input' must be a string or a non-empty array of input items."


def test_an_input_item_must_be_an_object() -> None:
    error = _refusal({"model": "m", "input": [{"role": "user", "content": "hi"}, "hi"]})
    assert (error.param, error.message) == ("input[1]", "'input[1]' must be an object.")


def test_message_roles_map_to_chats_and_developer_becomes_system() -> None:
    items = [
        {"type": "message", "role": "developer", "content": "Rules."},
        {"role": "system", "content": "More rules."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
    ]
    assert _chat(input=items)["messages"] == [
        {"role": "system", "content": "Rules."},
        {"role": "system", "content": "More rules."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
    ]


@pytest.mark.parametrize("role", ["tool", None, "critic"])
def test_a_message_with_another_role_is_refused(role: object) -> None:
    error = _refusal({"model": "m", "input": [{"role": "user", "content": "hi"}, {"role": role, "content": "x"}]})
    assert error.param == "input[1].role"
    assert error.message == "'input[1].role' must be one of 'user', 'assistant', 'system' or 'developer'."


def test_a_tool_conversation_becomes_chats_assistant_and_tool_turns() -> None:
    items = [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"type": "reasoning", "id": "rs_1", "summary": []},  # an earlier turn's reasoning: chat has no place for it
        {"type": "function_call", "call_id": "c1", "name": "weather", "arguments": '{"city":"Paris"}'},
        {"type": "function_call", "call_id": "c2", "name": "weather"},
        {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
        {"type": "function_call_output", "call_id": "c2", "output": [{"type": "input_text", "text": "rain"}]},
        {"type": "function_call", "call_id": "c3", "name": "weather", "arguments": '{"city":"Oslo"}'},
        {"role": "assistant", "content": "Looking up Oslo too."},
        {"type": "function_call", "call_id": "c4", "name": "weather", "arguments": "{}"},
    ]

    assert _chat(input=items)["messages"] == [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Paris"}'}},
                {"id": "c2", "type": "function", "function": {"name": "weather", "arguments": ""}},
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "c2", "content": "rain"},
        # After a tool result, a call starts a new assistant turn.
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c3", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Oslo"}'}}
            ],
        },
        # A call after the assistant's text joins that turn.
        {
            "role": "assistant",
            "content": "Looking up Oslo too.",
            "tool_calls": [{"id": "c4", "type": "function", "function": {"name": "weather", "arguments": "{}"}}],
        },
    ]


def test_a_first_item_that_is_a_function_call_opens_an_assistant_turn() -> None:
    items = [{"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"}]
    assert _chat(input=items)["messages"] == [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
        }
    ]


def test_an_item_reference_is_refused_as_items_are_not_stored() -> None:
    error = _refusal(
        {"model": "m", "input": [{"role": "user", "content": "hi"}, {"type": "item_reference", "id": "x"}]}
    )
    assert error.param == "input[1]"
    assert (
        error.message == "'input[1]' is an item_reference: items are not stored for this model; send the item itself."
    )


@pytest.mark.parametrize("kind", ["web_search_call", "computer_call_output", "image_generation_call"])
def test_an_item_of_a_built_in_tool_is_refused_naming_its_type(kind: str) -> None:
    error = _refusal({"model": "m", "input": [{"type": kind, "id": "x"}]})
    assert error.param == "input[0].type"
    assert error.message.startswith(f"'input[0]' has type '{kind}', which is not supported for this model")


# ---- content parts ---------------------------------------------------------------------------------------------


def test_user_content_parts_become_chat_parts() -> None:
    content = [
        {"type": "input_text", "text": "What is this?"},
        {"type": "input_image", "image_url": "https://example.com/cat.png", "detail": "low"},
        {"type": "input_image", "image_url": "data:image/png;base64,AAAA"},
        {"type": "input_file", "file_data": "data:application/pdf;base64,AAAA", "filename": "a.pdf"},
        {"type": "input_file", "file_id": "file-1", "filename": None},
        {"type": "text"},
    ]

    assert _chat(input=[{"role": "user", "content": content}])["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.png", "detail": "low"}},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                {"type": "file", "file": {"file_data": "data:application/pdf;base64,AAAA", "filename": "a.pdf"}},
                {"type": "file", "file": {"file_id": "file-1"}},
                {"type": "text", "text": ""},
            ],
        }
    ]


@pytest.mark.parametrize("role", ["assistant", "system", "developer"])
def test_text_parts_of_a_text_only_role_are_joined(role: str) -> None:
    content = [
        {"type": "output_text", "text": "Hello, ", "annotations": []},
        {"type": "refusal", "refusal": "I cannot."},
        {"type": "input_text", "text": "!"},
    ]
    assert _chat(input=[{"role": role, "content": content}])["messages"] == [
        {"role": "system" if role == "developer" else role, "content": "Hello, I cannot.!"}
    ]


def test_a_non_text_part_in_a_text_only_role_is_refused() -> None:
    content = [{"type": "output_text", "text": "See:"}, {"type": "input_image", "image_url": "https://x/y.png"}]
    error = _refusal({"model": "m", "input": [{"role": "assistant", "content": content}]})
    assert (error.param, error.message) == ("input[0]", "'input[0]' of role assistant may hold text parts only.")


def test_a_tool_output_given_as_parts_must_be_text() -> None:
    output = [{"type": "input_image", "image_url": "https://x/y.png"}]
    error = _refusal({"model": "m", "input": [{"type": "function_call_output", "call_id": "c1", "output": output}]})
    assert error.param == "input[0].output"
    assert error.message == "'input[0].output' of role tool may hold text parts only."


@pytest.mark.parametrize(
    ("content", "param", "message"),
    [
        (None, "input[0]", "'input[0].content' must be a string or an array of content parts."),
        ({"type": "input_text"}, "input[0]", "'input[0].content' must be a string or an array of content parts."),
        (["hi"], "input[0].content[0]", "'input[0].content[0]' must be an object."),
        (
            [{"type": "input_image", "file_id": "file-1"}],
            "input[0].content[0]",
            "'input[0].content[0]' must give an 'image_url' (a URL or a data URL); uploaded file ids are not "
            "supported for this model.",
        ),
        (
            [{"type": "input_text", "text": "a"}, {"type": "input_file", "file_data": None}],
            "input[0].content[1]",
            "'input[0].content[1]' must give 'file_data' or 'file_id' (a 'file_url' is not fetched for a model "
            "served through chat).",
        ),
        (  # a name alone is no file: refused, never sent upstream without data
            [{"type": "input_file", "filename": "report.pdf"}],
            "input[0].content[0]",
            "'input[0].content[0]' must give 'file_data' or 'file_id' (a 'file_url' is not fetched for a model "
            "served through chat).",
        ),
        (
            [{"type": "input_audio", "input_audio": {}}],
            "input[0].content[0]",
            "'input[0].content[0]' has type 'input_audio', which is not supported (supported: input_text, "
            "input_image, input_file, output_text, refusal).",
        ),
    ],
)
def test_a_content_part_that_cannot_be_translated_is_refused(content: object, param: str, message: str) -> None:
    error = _refusal({"model": "m", "input": [{"role": "user", "content": content}]})
    assert (error.param, error.message) == (param, message)


# ---- answers: chat → Responses ---------------------------------------------------------------------------------


REQUEST: dict[str, Any] = {"model": "mocked", "input": "hi", "instructions": "Be brief.", "temperature": 0.5}


def test_a_chat_answer_with_text_refusal_and_tool_calls_becomes_the_responses_output() -> None:
    chat = {
        "created": 1_700_000_000,
        "model": "gpt-4o-2024-08-06",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Checking.",
                    "refusal": "Not that part.",
                    "tool_calls": [
                        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}},
                        {"id": "c2", "type": "function", "function": {"name": "g", "arguments": None}},
                        {"id": "c3", "type": "custom"},
                        "junk",
                    ],
                },
                "finish_reason": "tool_calls",
            },
            {"index": 1, "message": {"role": "assistant", "content": "ignored"}},
        ],
        "usage": {
            "prompt_tokens": 10,
            "completion_tokens": 4,
            "total_tokens": 14,
            "prompt_tokens_details": {"cached_tokens": 6},
            "completion_tokens_details": {"reasoning_tokens": 2},
        },
    }

    response = chat_to_response(chat, REQUEST)

    assert re.fullmatch(r"resp_[0-9a-f]{32}", response["id"])
    message, first, second = response["output"]
    assert re.fullmatch(r"msg_[0-9a-f]{32}", message.pop("id"))
    assert message == {
        "type": "message",
        "status": "completed",
        "role": "assistant",
        "content": [
            {"type": "output_text", "text": "Checking.", "annotations": [], "logprobs": []},
            {"type": "refusal", "refusal": "Not that part."},
        ],
    }
    assert re.fullmatch(r"fc_[0-9a-f]{32}", first.pop("id"))
    assert first == {
        "type": "function_call",
        "status": "completed",
        "call_id": "c1",
        "name": "f",
        "arguments": '{"a":1}',
    }
    assert second["arguments"] == "" and second["call_id"] == "c2"
    assert response["status"] == "completed"
    assert response["incomplete_details"] is None
    assert response["created_at"] == 1_700_000_000
    assert response["model"] == "gpt-4o-2024-08-06"
    assert response["instructions"] == "Be brief."
    assert response["temperature"] == 0.5
    assert response["top_p"] == 1.0, "a setting the request left out is reported with OpenAI's default"
    assert response["usage"] == {
        "input_tokens": 10,
        "input_tokens_details": {"cached_tokens": 6},
        "output_tokens": 4,
        "output_tokens_details": {"reasoning_tokens": 2},
        "total_tokens": 14,
    }


def test_an_answer_cut_at_the_token_limit_is_incomplete() -> None:
    chat = {"choices": [{"message": {"content": "Once upon a"}, "finish_reason": "length"}]}

    response = chat_to_response(chat, REQUEST)

    assert response["status"] == "incomplete"
    assert response["incomplete_details"] == {"reason": "max_output_tokens"}
    assert response["output"][0]["content"][0]["text"] == "Once upon a"


@pytest.mark.parametrize(
    "chat",
    [
        {},
        {"choices": []},
        {"choices": ["junk"]},
        {"choices": [{"message": "junk"}]},
        {"choices": [{"message": {"content": "", "refusal": None, "tool_calls": None}}]},
        {"model": 7, "created": True, "usage": "junk", "choices": [{"message": {"content": None}}]},
    ],
)
def test_an_answer_without_a_usable_message_is_an_empty_completed_response(chat: dict[str, Any]) -> None:
    before = int(time.time())

    response = chat_to_response(chat, REQUEST)

    assert response["status"] == "completed"
    assert response["output"] == []
    assert response["usage"] is None
    assert response["model"] == "mocked", "without the upstream's model name the request's is reported"
    assert response["created_at"] >= before, "without a (non-boolean) created time the time of the answer is used"
