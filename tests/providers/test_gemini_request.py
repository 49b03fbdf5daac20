"""OpenAI chat requests as Gemini GenerateContentRequests: roles, parts, tools, generation config, and what is
refused with a 400 naming the field (never sent to Gemini to fail there, never silently changed)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from haimaker.errors import BadRequestError
from haimaker.providers.gemini_request import gemini_request
from tests.support.fakes.gemini_wire import check_request


def translated(**body: Any) -> dict[str, Any]:
    request = gemini_request(body)
    check_request(request)  # whatever we send, the strict fake (Gemini's documented shape) accepts
    return request


def test_system_and_developer_messages_become_the_system_instruction() -> None:
    request = translated(
        messages=[
            {"role": "system", "content": "Be terse."},
            {"role": "developer", "content": [{"type": "text", "text": "No emoji."}]},
            {"role": "user", "content": "hi"},
        ]
    )
    assert request["systemInstruction"] == {"parts": [{"text": "Be terse."}, {"text": "No emoji."}]}
    assert request["contents"] == [{"role": "user", "parts": [{"text": "hi"}]}]


def test_consecutive_turns_of_one_role_are_merged_and_assistant_is_model() -> None:
    request = translated(
        messages=[
            {"role": "user", "content": "a"},
            {"role": "user", "content": "b"},
            {"role": "assistant", "content": "c"},
            {"role": "user", "content": "d"},
        ]
    )
    assert request["contents"] == [
        {"role": "user", "parts": [{"text": "a"}, {"text": "b"}]},
        {"role": "model", "parts": [{"text": "c"}]},
        {"role": "user", "parts": [{"text": "d"}]},
    ]


def test_parallel_tool_results_go_in_one_turn_after_the_calls() -> None:
    calls = [
        {"id": "call_1", "type": "function", "function": {"name": "a", "arguments": '{"x": 1}'}},
        {"id": "call_2", "type": "function", "function": {"name": "b", "arguments": ""}},
    ]
    request = translated(
        messages=[
            {"role": "user", "content": "go"},
            {"role": "assistant", "content": "Calling.", "tool_calls": calls},
            {"role": "tool", "tool_call_id": "call_2", "content": "[1, 2]"},
            {"role": "tool", "tool_call_id": "call_1", "content": '{"ok": true}'},
        ]
    )
    assert request["contents"][1] == {
        "role": "model",
        "parts": [
            {"text": "Calling."},
            {"functionCall": {"name": "a", "args": {"x": 1}}},
            {"functionCall": {"name": "b", "args": {}}},
        ],
    }
    assert request["contents"][2] == {
        "role": "user",
        "parts": [
            {"functionResponse": {"name": "b", "response": {"content": "[1, 2]"}}},
            {"functionResponse": {"name": "a", "response": {"ok": True}}},
        ],
    }


def test_a_thought_signature_in_the_tool_call_id_goes_back_on_the_function_call() -> None:
    call = {"id": "call_1__thought__c2ln", "type": "function", "function": {"name": "a", "arguments": "{}"}}
    request = translated(
        messages=[
            {"role": "user", "content": "go"},
            {"role": "assistant", "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1__thought__c2ln", "content": "done"},
        ]
    )
    assert request["contents"][1]["parts"] == [{"functionCall": {"name": "a", "args": {}}, "thoughtSignature": "c2ln"}]


def test_tools_tool_choice_and_generation_config() -> None:
    request = translated(
        messages=[{"role": "user", "content": "hi"}],
        tools=[{"type": "function", "function": {"name": "noop", "parameters": {"type": "object", "properties": {}}}}],
        tool_choice={"type": "function", "function": {"name": "noop"}},
        temperature=0.5,
        top_p=0.9,
        max_completion_tokens=100,
        stop="END",
        n=2,
        seed=7,
        presence_penalty=0.1,
        frequency_penalty=0.2,
        reasoning_effort="low",
        response_format={"type": "json_object"},
        user="someone",
        stream_options={"include_usage": True},
        parallel_tool_calls=True,
    )
    assert request["tools"] == [{"functionDeclarations": [{"name": "noop", "parameters": {"type": "object"}}]}]
    assert request["toolConfig"] == {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["noop"]}}
    assert request["generationConfig"] == {
        "temperature": 0.5,
        "topP": 0.9,
        "candidateCount": 2,
        "seed": 7,
        "presencePenalty": 0.1,
        "frequencyPenalty": 0.2,
        "maxOutputTokens": 100,
        "thinkingConfig": {"thinkingBudget": 1024, "includeThoughts": True},
        "stopSequences": ["END"],
        "responseMimeType": "application/json",
    }


@pytest.mark.parametrize(("choice", "mode"), [("none", "NONE"), ("auto", "AUTO"), ("required", "ANY")])
def test_tool_choice_modes(choice: str, mode: str) -> None:
    request = translated(messages=[{"role": "user", "content": "hi"}], tool_choice=choice)
    assert request["toolConfig"] == {"functionCallingConfig": {"mode": mode}}


def test_media_parts() -> None:
    content = [
        {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
        {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0="}},
        {"type": "file", "file": {"file_id": "https://generativelanguage.googleapis.com/v1beta/files/abc"}},
        {"type": "image_url", "image_url": "https://example.com/a.webp?size=2"},
    ]
    request = translated(messages=[{"role": "user", "content": content}])
    assert request["contents"][0]["parts"] == [
        {"inlineData": {"mimeType": "audio/wav", "data": "UklGRg=="}},
        {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0="}},
        {
            "fileData": {
                "mimeType": "application/pdf",
                "fileUri": "https://generativelanguage.googleapis.com/v1beta/files/abc",
            }
        },
        {"fileData": {"mimeType": "image/webp", "fileUri": "https://example.com/a.webp?size=2"}},
    ]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"logit_bias": {"1": 1}}, "logit_bias"),
        ({"logprobs": True}, "logprobs"),
        ({"tools": [{"type": "web_search"}]}, "tools"),
        ({"tool_choice": "sometimes"}, "tool_choice"),
        ({"messages": [{"role": "user", "content": [{"type": "video", "video": "x"}]}]}, "messages"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:x"}}]}]},
            "messages",
        ),
        ({"messages": [{"role": "tool", "tool_call_id": "nope", "content": "x"}]}, "messages"),
        ({"messages": [{"role": "system", "content": "only a system prompt"}]}, "messages"),
        ({"messages": []}, "messages"),
        ({"response_format": {"type": "yaml"}}, "response_format"),
    ],
)
def test_what_gemini_cannot_take_is_a_400_naming_the_field(body: dict[str, Any], param: str) -> None:
    full = {"messages": [{"role": "user", "content": "hi"}], **body}
    with pytest.raises(BadRequestError) as caught:
        gemini_request(full)
    assert caught.value.param == param
    assert caught.value.status_code == 400


def test_the_callers_body_is_not_modified() -> None:
    body: dict[str, Any] = {
        "messages": [{"role": "user", "content": "hi"}],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "f",
                    "parameters": {
                        "type": "object",
                        "properties": {"a": {"type": "string"}},
                        "additionalProperties": False,
                    },
                },
            }
        ],
    }
    before = copy.deepcopy(body)
    gemini_request(body)
    assert body == before


def test_the_deprecated_functions_and_function_call_fields_are_tools_too() -> None:
    request = translated(
        messages=[{"role": "user", "content": "hi"}],
        functions=[{"name": "f", "description": "F"}],
        function_call={"name": "f"},
    )
    assert request["tools"] == [{"functionDeclarations": [{"name": "f", "description": "F"}]}]
    assert request["toolConfig"] == {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["f"]}}


HI: list[dict[str, Any]] = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(
    ("body", "param", "message"),
    [
        ({"messages": ["hi"]}, "messages", "messages[0]: a message is an object."),
        ({"messages": [{"role": "bot", "content": "x"}]}, "messages", "messages[0].role: 'bot' is not a chat role."),
        (
            {"messages": [{"role": "system", "content": [{"type": "image_url"}]}, *HI]},
            "messages",
            "messages[0].content: only text parts are allowed here.",
        ),
        (
            {"messages": [{"role": "system", "content": 5}, *HI]},
            "messages",
            "messages[0].content: a string or a list of parts.",
        ),
        (
            {"messages": [{"role": "user", "content": {"text": "hi"}}]},
            "messages",
            "messages[0].content: a string or a list of parts.",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
            "messages",
            "messages[0].content[0]: a URL or a data URL is required.",
        ),
        (
            {"messages": [*HI, {"role": "assistant", "tool_calls": [{"id": "c", "function": {}}]}]},
            "messages",
            "messages[1].tool_calls[0]: a function call with a name.",
        ),
        (
            {
                "messages": [
                    *HI,
                    {"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{"}}]},
                ]
            },
            "messages",
            "messages[1].tool_calls[0].function.arguments: not valid JSON.",
        ),
        (
            {
                "messages": [
                    *HI,
                    {"role": "assistant", "function_call": {"name": "f", "arguments": "[1, 2]"}},
                ]
            },
            "messages",
            "messages[1].function_call.arguments: Gemini takes function arguments as a JSON object.",
        ),
        ({"tools": {"type": "function"}}, "tools", "tools: a list of tools."),
        ({"tools": [{"type": "function", "function": {}}]}, "tools", "tools[0].function: a function with a name."),
        (
            {"tool_choice": {"type": "function", "function": {}}},
            "tool_choice",
            "tool_choice: {'type': 'function', 'function': {}} is not a tool choice Gemini understands.",
        ),
    ],
)
def test_a_malformed_request_is_a_400_with_its_param_and_message(
    body: dict[str, Any], param: str, message: str
) -> None:
    with pytest.raises(BadRequestError) as caught:
        gemini_request({"messages": HI, **body})
    assert (caught.value.status_code, caught.value.param, caught.value.message) == (400, param, message)


def test_an_unknown_reasoning_effort_is_a_400_listing_the_known_ones() -> None:
    with pytest.raises(BadRequestError) as caught:
        gemini_request({"messages": HI, "reasoning_effort": "max"})
    assert caught.value.status_code == 400
    assert caught.value.message == (
        "reasoning_effort: 'max' is not one of ['minimal', 'low', 'medium', 'high', 'none', 'disable']."
    )


def test_assistant_refusals_legacy_function_calls_and_empty_turns() -> None:
    request = translated(
        messages=[
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": ""},
            {"role": "assistant", "content": [{"type": "refusal", "refusal": "I can't."}]},
            {"role": "user", "content": "please"},
            {
                "role": "assistant",
                "function_call": {"name": "f", "arguments": {"a": 1}},
                "tool_calls": [{"type": "function", "function": {"name": "g", "arguments": ""}}],
            },
            {"role": "function", "name": "f", "content": "ok"},
            {"role": "tool", "name": "g", "content": '{"t": 1}'},
        ]
    )
    assert request["contents"] == [
        {"role": "user", "parts": [{"text": "hi"}]},
        {"role": "model", "parts": [{"text": "I can't."}]},
        {"role": "user", "parts": [{"text": "please"}]},
        {
            "role": "model",
            "parts": [{"functionCall": {"name": "g", "args": {}}}, {"functionCall": {"name": "f", "args": {"a": 1}}}],
        },
        {
            "role": "user",
            "parts": [
                {"functionResponse": {"name": "f", "response": {"content": "ok"}}},
                {"functionResponse": {"name": "g", "response": {"t": 1}}},
            ],
        },
    ]


def test_stop_lists_and_a_json_schema_become_generation_config() -> None:
    schema = {"type": "object", "properties": {"b": {"type": "string"}, "a": {"type": "integer"}}}
    request = translated(
        messages=HI,
        stop=["A", "B"],
        response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
    )
    config = request["generationConfig"]
    assert config["stopSequences"] == ["A", "B"]
    assert config["responseMimeType"] == "application/json"
    assert config["responseSchema"]["propertyOrdering"] == ["b", "a"]
    assert config["responseSchema"]["properties"] == {"b": {"type": "string"}, "a": {"type": "integer"}}
