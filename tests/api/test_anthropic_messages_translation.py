"""`/v1/messages` translation without a proxy: each refusal (status 400, the field named as Anthropic names it in
`param` and the message), each Anthropic → chat rule that the end-to-end tests do not reach (system blocks, tool
results with images, documents, tools, tool_choice, metadata as a JSON string), and the chat → Anthropic answer
for unusual upstream answers (content parts, refusals, malformed tool calls, no choices)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from haimaker.api.anthropic_messages import AnthropicMessages, chat_request, message_of, tool_use_block
from haimaker.errors import BadRequestError, BudgetExceededError
from haimaker.pipeline import JsonResult, StreamResult
from haimaker.providers.base import Route

USER_HI: dict[str, Any] = {"role": "user", "content": "Hi"}
EPHEMERAL: dict[str, str] = {"type": "ephemeral"}
SCHEMA: dict[str, Any] = {"type": "object", "properties": {"city": {"type": "string"}}}


def make_body(**overrides: Any) -> dict[str, Any]:
    """A valid Anthropic Messages body; `overrides` replace or add fields."""
    return {"model": "gpt-4o", "max_tokens": 64, "messages": [USER_HI], **overrides}


def refusal(body: dict[str, Any]) -> BadRequestError:
    with pytest.raises(BadRequestError) as caught:
        chat_request(body)
    assert caught.value.status_code == 400
    return caught.value


def assert_refused(body: dict[str, Any], param: str, message: str) -> None:
    error = refusal(body)
    assert (error.param, error.message) == (param, f"{param}: {message}")


def user_messages(*content: Any) -> list[dict[str, Any]]:
    """The chat messages of a one-turn request whose user content is `content` (blocks)."""
    messages: list[dict[str, Any]] = chat_request(make_body(messages=[{"role": "user", "content": list(content)}]))[
        "messages"
    ]
    return messages


def user_refusal(*content: Any) -> BadRequestError:
    return refusal(make_body(messages=[{"role": "user", "content": list(content)}]))


# ---- the dialect's entry points -------------------------------------------------------------------------------


def dialect(*, caches_prompts: bool) -> AnthropicMessages:
    return AnthropicMessages(lambda model: caches_prompts)


def test_a_body_that_is_not_json_is_a_400_saying_so() -> None:
    with pytest.raises(BadRequestError) as caught:
        dialect(caches_prompts=False).translate_request(b'{"model": ', {})
    assert caught.value.status_code == 400
    assert caught.value.message.startswith("Invalid JSON in request body: ")


def test_a_json_body_that_is_not_an_object_is_a_400() -> None:
    with pytest.raises(BadRequestError) as caught:
        dialect(caches_prompts=False).translate_request(b'[{"model": "gpt-4o"}]', {})
    assert caught.value.message == "Request body must be a JSON object."


def cached_request() -> bytes:
    return orjson.dumps(
        make_body(
            system=[{"type": "text", "text": "Be terse.", "cache_control": EPHEMERAL}],
            messages=[
                {"role": "user", "content": [{"type": "text", "text": "Hi", "cache_control": EPHEMERAL}]},
                {"role": "assistant", "content": "Hello"},
                {"role": "user", "content": "Weather?"},
            ],
            tools=[{"name": "get_weather", "input_schema": SCHEMA, "cache_control": EPHEMERAL}],
        )
    )


def test_cache_control_is_removed_from_parts_and_tools_for_a_model_that_does_not_cache_prompts() -> None:
    translated = dialect(caches_prompts=False).translate_request(cached_request(), {})
    assert translated.route is Route.CHAT
    chat = orjson.loads(translated.body)
    assert chat["messages"] == [
        {"role": "system", "content": [{"type": "text", "text": "Be terse."}]},
        {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "Weather?"},
    ]
    assert chat["tools"] == [{"type": "function", "function": {"name": "get_weather", "parameters": SCHEMA}}]


def test_cache_control_is_kept_on_parts_and_tools_for_a_model_that_caches_prompts() -> None:
    chat = orjson.loads(dialect(caches_prompts=True).translate_request(cached_request(), {}).body)
    assert chat["messages"][0]["content"] == [{"type": "text", "text": "Be terse.", "cache_control": EPHEMERAL}]
    assert chat["messages"][1]["content"] == [{"type": "text", "text": "Hi", "cache_control": EPHEMERAL}]
    assert chat["tools"][0]["cache_control"] == EPHEMERAL


async def test_the_stream_is_translated_with_its_headers_kept() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b"data: [DONE]\n\n"

    result = dialect(caches_prompts=False).translate_stream(StreamResult([("x-request-id", "r1")], chunks()), None)
    assert result.headers == [("x-request-id", "r1")]
    sent = b"".join([piece async for piece in result.chunks])
    assert sent.startswith(b"event: message_start\n") and sent.endswith(
        b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
    )


def test_the_answer_is_translated_with_its_status_and_headers_kept() -> None:
    answer = {"id": "chatcmpl-1", "model": "gpt-4o", "choices": [{"message": {"content": "Hi"}}]}
    result = JsonResult(200, orjson.dumps(answer), [("x-request-id", "r1")])
    translated = dialect(caches_prompts=False).translate_json(result, None)
    assert (translated.status, translated.headers) == (200, [("x-request-id", "r1")])
    assert orjson.loads(translated.body)["content"] == [{"type": "text", "text": "Hi"}]


def test_an_error_is_anthropics_envelope_and_keeps_a_more_specific_type_of_ours() -> None:
    messages = dialect(caches_prompts=False)
    assert orjson.loads(messages.error_body(BadRequestError("max_tokens: Field required"))) == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "max_tokens: Field required"},
    }
    budget = BudgetExceededError("Budget has been exceeded.")
    assert orjson.loads(messages.error_body(budget))["error"] == {
        "type": "invalid_request_error",
        "message": "Budget has been exceeded.",
        "litellm_error_type": "budget_exceeded",
    }


# ---- top-level fields ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "param", "message"),
    [
        ({"model": None}, "model", "Field required"),
        ({"model": ""}, "model", "must be a non-empty string"),
        ({"model": 4}, "model", "must be a non-empty string"),
        ({"max_tokens": None}, "max_tokens", "Field required"),
        ({"max_tokens": 0}, "max_tokens", "must be an integer of at least 1"),
        ({"max_tokens": True}, "max_tokens", "must be an integer of at least 1"),
        ({"max_tokens": "64"}, "max_tokens", "must be an integer of at least 1"),
        ({"stop_sequences": "END"}, "stop_sequences", "must be an array of strings"),
        ({"stop_sequences": ["END", 1]}, "stop_sequences", "must be an array of strings"),
        ({"stream": "true"}, "stream", "must be a boolean"),
    ],
)
def test_a_malformed_top_level_field_is_a_400_naming_it(overrides: dict[str, Any], param: str, message: str) -> None:
    assert_refused(make_body(**overrides), param, message)


@pytest.mark.parametrize(
    ("field", "value"),
    [("mcp_servers", [{"type": "url", "url": "https://mcp.example", "name": "x"}]), ("container", "cntr_1")],
)
def test_mcp_servers_and_container_are_refused_not_dropped(field: str, value: object) -> None:
    assert_refused(
        make_body(**{field: value}), field, "is not supported on this proxy's /v1/messages (no chat equivalent)"
    )


def test_hints_are_dropped_and_unknown_fields_pass_through_untouched() -> None:
    chat = chat_request(
        make_body(
            top_k=5,
            thinking={"type": "enabled", "budget_tokens": 1024},
            service_tier="auto",
            context_management={"edits": []},
            temperature=0.2,
            top_p=0.9,
            seed=7,
        )
    )
    assert chat == {
        "temperature": 0.2,
        "top_p": 0.9,
        "seed": 7,
        "model": "gpt-4o",
        "max_tokens": 64,
        "messages": [USER_HI],
    }


def test_stop_sequences_become_stop_and_an_empty_list_sends_none() -> None:
    assert chat_request(make_body(stop_sequences=["END", "\n\n"]))["stop"] == ["END", "\n\n"]
    assert "stop" not in chat_request(make_body(stop_sequences=[]))


def test_a_stream_asks_for_the_usage_chunk_and_stream_false_sends_neither() -> None:
    streamed = chat_request(make_body(stream=True))
    assert (streamed["stream"], streamed["stream_options"]) == (True, {"include_usage": True})
    plain = chat_request(make_body(stream=False))
    assert "stream" not in plain and "stream_options" not in plain


# ---- metadata: the customer ------------------------------------------------------------------------------------


def test_metadata_sent_as_a_json_string_names_the_customer_stripped() -> None:
    chat = chat_request(make_body(metadata='{"user_id": "  cust-7 "}'))
    assert (chat["metadata"], chat["user"]) == ({"user_id": "  cust-7 "}, "cust-7")


def test_metadata_that_is_an_unreadable_string_or_not_an_object_is_left_out() -> None:
    for metadata in ("{not json", "[1, 2]", 42):
        chat = chat_request(make_body(metadata=metadata))
        assert "metadata" not in chat and "user" not in chat


def test_a_blank_or_non_string_user_id_sets_no_upstream_user() -> None:
    for user_id in ("   ", 7):
        chat = chat_request(make_body(metadata={"user_id": user_id}))
        assert chat["metadata"] == {"user_id": user_id}
        assert "user" not in chat


def test_a_user_of_higher_precedence_is_not_overwritten_by_metadata_user_id() -> None:
    assert chat_request(make_body(user="alice", metadata={"user_id": "bob"}))["user"] == "alice"
    named = chat_request(make_body(litellm_metadata={"user": "carol"}, metadata={"user_id": "bob"}))
    assert "user" not in named
    assert named["litellm_metadata"] == {"user": "carol"}
    # An empty litellm_metadata.user names nobody, so metadata.user_id still does.
    assert chat_request(make_body(litellm_metadata={"user": ""}, metadata={"user_id": "bob"}))["user"] == "bob"


# ---- system ----------------------------------------------------------------------------------------------------


def test_system_text_blocks_become_one_system_message() -> None:
    one = chat_request(make_body(system=[{"type": "text", "text": "Be terse."}]))["messages"]
    assert one == [{"role": "system", "content": "Be terse."}, USER_HI]
    two = chat_request(make_body(system=[{"type": "text", "text": "A."}, {"type": "text", "text": "B."}]))["messages"]
    assert two[0] == {"role": "system", "content": [{"type": "text", "text": "A."}, {"type": "text", "text": "B."}]}


def test_an_empty_system_sends_no_system_message() -> None:
    empty: tuple[object, ...] = ("", [])
    for system in empty:
        assert chat_request(make_body(system=system))["messages"] == [USER_HI]


def test_a_malformed_system_is_a_400_naming_the_block() -> None:
    assert_refused(make_body(system={"text": "x"}), "system", "must be a string or an array of text blocks")
    assert_refused(make_body(system=[{"type": "text", "text": "ok"}, "no"]), "system.1", "must be a text block")
    image = {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}}
    assert_refused(make_body(system=[image]), "system.0", "must be a text block")
    assert_refused(make_body(system=[{"type": "text", "text": 3}]), "system.0", "must be a text block")


# ---- messages ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("messages", "param", "message"),
    [
        (None, "messages", "Field required"),
        ([], "messages", "must be a non-empty array"),
        ({"role": "user", "content": "Hi"}, "messages", "must be a non-empty array"),
        ([USER_HI, "Hi"], "messages.1", "must be an object"),
        ([{"role": "system", "content": "x"}], "messages.0.role", "must be 'user' or 'assistant'"),
        ([{"role": "user", "content": None}], "messages.0.content", "must be a string or an array of content blocks"),
        (
            [{"role": "user", "content": {"type": "text"}}],
            "messages.0.content",
            "must be a string or an array of content blocks",
        ),
    ],
)
def test_malformed_messages_are_a_400_naming_the_message(messages: object, param: str, message: str) -> None:
    body = make_body()
    body["messages"] = messages
    assert_refused(body, param, message)


def test_tool_results_come_first_as_tool_messages_then_the_rest_of_the_user_turn() -> None:
    messages = user_messages(
        {"type": "thinking", "thinking": "hmm", "signature": "s"},
        {"type": "text", "text": "Here you go."},
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "12°C", "is_error": False},
        {"type": "tool_result", "tool_use_id": "toolu_2"},
    )
    assert messages == [
        {"role": "tool", "tool_call_id": "toolu_1", "content": "12°C"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": ""},
        {"role": "user", "content": "Here you go."},
    ]


def test_a_user_turn_of_tool_results_only_sends_no_empty_user_message() -> None:
    messages = user_messages(
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "ok"},
        {"type": "redacted_thinking", "data": "xyz"},
    )
    assert messages == [{"role": "tool", "tool_call_id": "toolu_1", "content": "ok"}]


def test_images_a_tool_returned_move_to_the_user_message_before_its_own_parts() -> None:
    messages = user_messages(
        {"type": "text", "text": "What is this?"},
        {
            "type": "tool_result",
            "tool_use_id": "toolu_1",
            "content": [
                {"type": "text", "text": "a photo"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"}},
                {"type": "text", "text": "of a cat"},
            ],
        },
    )
    assert messages == [
        {
            "role": "tool",
            "tool_call_id": "toolu_1",
            "content": [{"type": "text", "text": "a photo"}, {"type": "text", "text": "of a cat"}],
        },
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}},
                {"type": "text", "text": "What is this?"},
            ],
        },
    ]


def test_a_tool_result_of_an_image_only_is_an_empty_tool_message() -> None:
    image = {"type": "image", "source": {"type": "url", "url": "https://x.example/cat.png"}}
    messages = user_messages({"type": "tool_result", "tool_use_id": "toolu_1", "content": [image]})
    assert messages == [
        {"role": "tool", "tool_call_id": "toolu_1", "content": ""},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x.example/cat.png"}}]},
    ]


def test_a_tool_results_cache_control_goes_on_its_last_text() -> None:
    messages = user_messages(
        {
            "type": "tool_result",
            "tool_use_id": "toolu_1",
            "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
            "cache_control": EPHEMERAL,
        }
    )
    assert messages[0]["content"] == [
        {"type": "text", "text": "a"},
        {"type": "text", "text": "b", "cache_control": EPHEMERAL},
    ]
    single = user_messages({"type": "tool_result", "tool_use_id": "t", "content": "a", "cache_control": EPHEMERAL})
    assert single[0]["content"] == [{"type": "text", "text": "a", "cache_control": EPHEMERAL}]


def test_a_malformed_tool_result_is_a_400_naming_it() -> None:
    error = user_refusal({"type": "text", "text": "x"}, {"type": "tool_result", "content": "ok"})
    assert (error.param, error.message) == (
        "messages.0.content.1.tool_use_id",
        "messages.0.content.1.tool_use_id: Field required",
    )
    error = user_refusal({"type": "tool_result", "tool_use_id": "t", "content": {"text": "ok"}})
    assert error.param == "messages.0.content.0.content"
    assert error.message.endswith("must be a string or an array of content blocks")
    error = user_refusal({"type": "tool_result", "tool_use_id": "t", "content": [{"type": "text", "text": "a"}, 5]})
    assert (error.param, error.message) == (
        "messages.0.content.0.content.1",
        "messages.0.content.0.content.1: must be a content block object",
    )


@pytest.mark.parametrize(
    ("block", "param", "message"),
    [
        ("Hi", "messages.0.content.0", "must be a content block object"),
        ({"type": "text"}, "messages.0.content.0.text", "Field required"),
        (
            {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}},
            "messages.0.content.0",
            "a tool_use block belongs in an assistant turn",
        ),
        (
            {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}},
            "messages.0.content.0",
            "block type 'server_tool_use' is not supported on this route",
        ),
        ({"content": "x"}, "messages.0.content.0", "block type None is not supported on this route"),
        ({"type": "image"}, "messages.0.content.0.source", "Field required"),
        (
            {"type": "image", "source": {"type": "base64", "data": "iVBOR"}},
            "messages.0.content.0.source",
            "a base64 source needs media_type and data",
        ),
        (
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": ""}},
            "messages.0.content.0.source",
            "a base64 source needs media_type and data",
        ),
        (
            {"type": "image", "source": {"type": "file", "file_id": "file_1"}},
            "messages.0.content.0.source.type",
            "image source 'file' is not supported on this route (base64 or url)",
        ),
        (
            {"type": "image", "source": {"type": "url", "url": ""}},
            "messages.0.content.0.source.type",
            "image source 'url' is not supported on this route (base64 or url)",
        ),
        ({"type": "document", "source": "JVBERi0"}, "messages.0.content.0.source", "Field required"),
        (
            {"type": "document", "source": {"type": "url", "url": "https://x.example/a.pdf"}},
            "messages.0.content.0.source.type",
            "document source 'url' is not supported on this route (base64 or text)",
        ),
        (
            {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": ""}},
            "messages.0.content.0.source.type",
            "document source 'base64' is not supported on this route (base64 or text)",
        ),
    ],
)
def test_a_user_block_with_no_chat_equivalent_is_a_400_naming_it(block: object, param: str, message: str) -> None:
    error = user_refusal(block)
    assert (error.param, error.message) == (param, f"{param}: {message}")


def test_documents_become_file_parts_or_text() -> None:
    messages = user_messages(
        {
            "type": "document",
            "title": "Q3.pdf",
            "source": {"type": "base64", "media_type": "application/pdf", "data": "JVB"},
        },
        {"type": "document", "source": {"type": "base64", "data": "JVC"}, "cache_control": EPHEMERAL},
        {
            "type": "document",
            "title": "",
            "source": {"type": "text", "media_type": "text/plain", "data": "plain words"},
        },
    )
    assert messages == [
        {
            "role": "user",
            "content": [
                {"type": "file", "file": {"filename": "Q3.pdf", "file_data": "data:application/pdf;base64,JVB"}},
                {
                    "type": "file",
                    "file": {"filename": "document.pdf", "file_data": "data:application/pdf;base64,JVC"},
                    "cache_control": EPHEMERAL,
                },
                {"type": "text", "text": "plain words"},
            ],
        }
    ]


def test_an_assistant_turn_keeps_its_text_and_tool_calls_and_drops_its_thinking() -> None:
    chat = chat_request(
        make_body(
            messages=[
                USER_HI,
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": "The user wants weather.", "signature": "sig"},
                        {"type": "text", "text": "Checking."},
                        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Oslo"}},
                        {"type": "tool_use", "id": "toolu_2", "name": "get_time"},
                    ],
                },
            ]
        )
    )
    assert chat["messages"][1] == {
        "role": "assistant",
        "content": "Checking.",
        "tool_calls": [
            {"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}},
            {"id": "toolu_2", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
        ],
    }


def assistant_messages(*content: Any) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = chat_request(
        make_body(messages=[USER_HI, {"role": "assistant", "content": list(content)}])
    )["messages"]
    return messages


def test_an_assistant_turn_of_tool_calls_only_has_null_content_and_of_thinking_only_empty_content() -> None:
    calls = assistant_messages({"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}})
    assert calls[1]["content"] is None and len(calls[1]["tool_calls"]) == 1
    assert assistant_messages({"type": "redacted_thinking", "data": "xyz"})[1] == {"role": "assistant", "content": ""}


def test_an_assistant_texts_cache_control_makes_it_a_part() -> None:
    assert assistant_messages({"type": "text", "text": "Hi", "cache_control": EPHEMERAL})[1] == {
        "role": "assistant",
        "content": [{"type": "text", "text": "Hi", "cache_control": EPHEMERAL}],
    }


@pytest.mark.parametrize(
    ("block", "param", "message"),
    [
        (
            {"type": "image", "source": {"type": "url", "url": "https://x.example/a.png"}},
            "messages.1.content.0",
            "block type 'image' is not supported in an assistant turn on this route",
        ),
        (
            {"type": "text"},
            "messages.1.content.0",
            "block type 'text' is not supported in an assistant turn on this route",
        ),
        ("Hi", "messages.1.content.0", "block type None is not supported in an assistant turn on this route"),
        ({"type": "tool_use", "name": "f", "input": {}}, "messages.1.content.0.id", "Field required"),
        ({"type": "tool_use", "id": "toolu_1", "name": "", "input": {}}, "messages.1.content.0.name", "Field required"),
        (
            {"type": "tool_use", "id": "toolu_1", "name": "f", "input": "{}"},
            "messages.1.content.0.input",
            "must be an object",
        ),
    ],
)
def test_a_malformed_assistant_block_is_a_400_naming_it(block: object, param: str, message: str) -> None:
    assert_refused(make_body(messages=[USER_HI, {"role": "assistant", "content": [block]}]), param, message)


# ---- tools and tool_choice ---------------------------------------------------------------------------------------


def test_custom_tools_become_functions_with_description_strict_and_cache_control() -> None:
    chat = chat_request(
        make_body(
            tools=[
                {"name": "a", "input_schema": SCHEMA},
                {
                    "type": "custom",
                    "name": "b",
                    "description": "B.",
                    "input_schema": SCHEMA,
                    "strict": True,
                    "cache_control": EPHEMERAL,
                },
                {"name": "c", "input_schema": SCHEMA, "description": None, "strict": "yes"},
            ]
        )
    )
    assert chat["tools"] == [
        {"type": "function", "function": {"name": "a", "parameters": SCHEMA}},
        {
            "type": "function",
            "function": {"name": "b", "parameters": SCHEMA, "description": "B.", "strict": True},
            "cache_control": EPHEMERAL,
        },
        {"type": "function", "function": {"name": "c", "parameters": SCHEMA}},
    ]


def test_an_empty_tools_list_sends_no_tools() -> None:
    assert "tools" not in chat_request(make_body(tools=[]))


@pytest.mark.parametrize(
    ("tools", "param", "message"),
    [
        ({"name": "a", "input_schema": SCHEMA}, "tools", "must be an array"),
        (["a"], "tools.0", "must be an object"),
        (
            [{"type": "web_search_20250305", "name": "web_search", "max_uses": 5}],
            "tools.0.type",
            "server tool 'web_search_20250305' is not supported on this route (custom tools only)",
        ),
        (
            [{"name": "a", "input_schema": SCHEMA}, {"type": "bash_20250124", "name": "bash"}],
            "tools.1.type",
            "server tool 'bash_20250124' is not supported on this route (custom tools only)",
        ),
        ([{"input_schema": SCHEMA}], "tools.0.name", "Field required"),
        ([{"name": "a"}], "tools.0.input_schema", "Field required"),
        ([{"name": "a", "input_schema": "{}"}], "tools.0.input_schema", "Field required"),
    ],
)
def test_a_malformed_or_server_tool_is_a_400_naming_it(tools: object, param: str, message: str) -> None:
    assert_refused(make_body(tools=tools), param, message)


WEATHER = [{"name": "get_weather", "input_schema": SCHEMA}]


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ({"type": "auto"}, "auto"),
        ({"type": "any"}, "required"),
        ({"type": "none"}, "none"),
        ({"type": "tool", "name": "get_weather"}, {"type": "function", "function": {"name": "get_weather"}}),
    ],
)
def test_tool_choice_maps_to_chats(choice: dict[str, Any], expected: object) -> None:
    chat = chat_request(make_body(tools=WEATHER, tool_choice=choice))
    assert chat["tool_choice"] == expected
    assert "parallel_tool_calls" not in chat


def test_disable_parallel_tool_use_turns_parallel_tool_calls_off_only_when_there_are_tools() -> None:
    choice = {"type": "auto", "disable_parallel_tool_use": True}
    assert chat_request(make_body(tools=WEATHER, tool_choice=choice))["parallel_tool_calls"] is False
    without_tools = chat_request(make_body(tool_choice=choice))
    assert without_tools["tool_choice"] == "auto" and "parallel_tool_calls" not in without_tools
    allowed = chat_request(make_body(tools=WEATHER, tool_choice={"type": "any", "disable_parallel_tool_use": False}))
    assert "parallel_tool_calls" not in allowed


@pytest.mark.parametrize(
    ("choice", "param", "message"),
    [
        ("auto", "tool_choice", "must be an object"),
        ({"type": "tool"}, "tool_choice.name", "Field required"),
        ({"type": "tool", "name": ""}, "tool_choice.name", "Field required"),
        ({"type": "required"}, "tool_choice.type", "must be one of 'auto', 'any', 'tool', 'none'"),
        ({}, "tool_choice.type", "must be one of 'auto', 'any', 'tool', 'none'"),
    ],
)
def test_a_malformed_tool_choice_is_a_400_naming_it(choice: object, param: str, message: str) -> None:
    assert_refused(make_body(tools=WEATHER, tool_choice=choice), param, message)


# ---- answer: chat → Anthropic ------------------------------------------------------------------------------------


def test_an_answer_without_choices_id_model_or_usage_is_an_empty_end_turn_message() -> None:
    assert message_of({"choices": []}) == {
        "id": "msg_unknown",
        "type": "message",
        "role": "assistant",
        "model": "unknown",
        "content": [],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 0,
            "output_tokens": 0,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
    }
    assert message_of({"choices": ["x"], "usage": "n/a"})["content"] == []
    assert message_of({"choices": [{"message": "Hi"}]})["content"] == []


def test_content_parts_are_joined_into_one_text_block() -> None:
    answer = {
        "id": "chatcmpl-9",
        "model": "gpt-4o",
        "choices": [
            {
                "finish_reason": "length",
                "message": {"content": [{"type": "text", "text": "Hel"}, {"type": "image"}, "x", {"text": "lo"}]},
            }
        ],
    }
    message = message_of(answer)
    assert (message["id"], message["content"], message["stop_reason"]) == (
        "msg_9",
        [{"type": "text", "text": "Hello"}],
        "max_tokens",
    )


def test_a_refusal_is_the_text_when_there_is_no_content() -> None:
    answer = {"choices": [{"finish_reason": "content_filter", "message": {"content": None, "refusal": "I can't."}}]}
    message = message_of(answer)
    assert (message["content"], message["stop_reason"]) == ([{"type": "text", "text": "I can't."}], "refusal")
    assert message_of({"choices": [{"message": {"content": 3}}]})["content"] == []


def test_tool_calls_become_tool_use_blocks_and_malformed_ones_are_skipped() -> None:
    answer = {
        "choices": [
            {
                "finish_reason": "tool_calls",
                "message": {
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
                        },
                        "call_2",
                        {"id": "call_3", "type": "function", "function": "get_time"},
                        {"type": "function", "function": {"arguments": "not json"}},
                    ],
                },
            }
        ]
    }
    message = message_of(answer)
    assert message["stop_reason"] == "tool_use"
    assert message["content"] == [
        {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Oslo"}},
        {"type": "tool_use", "id": "", "name": "", "input": {}},
    ]


def test_tool_use_block_is_none_for_a_call_without_a_function_object() -> None:
    assert tool_use_block(None) is None
    assert tool_use_block({"id": "call_1", "function": None}) is None
    assert tool_use_block({"id": "call_1", "function": {"name": "f", "arguments": {"a": 1}}}) == {
        "type": "tool_use",
        "id": "call_1",
        "name": "f",
        "input": {"a": 1},
    }
