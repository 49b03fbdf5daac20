"""Anthropic's wire shapes: error types by status (the SDK picks its exception class from them), stop reasons,
`msg_` ids, usage with cache tokens taken out of `input_tokens`, and tool inputs from OpenAI argument strings."""

from __future__ import annotations

import pytest

from haimaker.api.anthropic_wire import (
    anthropic_error_type,
    anthropic_usage,
    error_detail,
    message_id_of,
    stop_reason_of,
    tool_input,
)

NO_USAGE = {"input_tokens": 0, "output_tokens": 0, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (402, "billing_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (413, "request_too_large"),
        (429, "rate_limit_error"),
        (504, "timeout_error"),
        (529, "overloaded_error"),
        (422, "invalid_request_error"),  # an unnamed 4xx
        (408, "api_error"),  # a timeout is retried by the SDK, not a bad request
        (502, "api_error"),
        (503, "api_error"),
    ],
)
def test_the_error_type_follows_the_status(status: int, kind: str) -> None:
    assert anthropic_error_type(status) == kind


@pytest.mark.parametrize(
    ("finish_reason", "stop_reason"),
    [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("tool_calls", "tool_use"),
        ("function_call", "tool_use"),
        ("content_filter", "refusal"),
        ("something_new", "end_turn"),
        (None, "end_turn"),
        (1, "end_turn"),
    ],
)
def test_the_stop_reason_follows_the_finish_reason(finish_reason: object, stop_reason: str) -> None:
    assert stop_reason_of(finish_reason) == stop_reason


@pytest.mark.parametrize(
    ("chat_id", "message_id"),
    [
        ("chatcmpl-abc123", "msg_abc123"),
        ("msg_01XFDUDYJgAACzvnptvVoYEL", "msg_01XFDUDYJgAACzvnptvVoYEL"),
        ("gen-42", "msg_gen-42"),
        ("", "msg_unknown"),
        (None, "msg_unknown"),
        (42, "msg_unknown"),
    ],
)
def test_the_message_id_is_derived_from_the_upstreams(chat_id: object, message_id: str) -> None:
    assert message_id_of(chat_id) == message_id


def test_input_tokens_exclude_cache_reads_and_writes() -> None:
    usage = {
        "prompt_tokens": 1000,
        "completion_tokens": 20,
        "cache_read_input_tokens": 600,
        "cache_creation_input_tokens": 300,
    }
    assert anthropic_usage(usage) == {
        "input_tokens": 100,
        "output_tokens": 20,
        "cache_creation_input_tokens": 300,
        "cache_read_input_tokens": 600,
    }
    openai = {"prompt_tokens": 100, "completion_tokens": 5, "prompt_tokens_details": {"cached_tokens": 40}}
    assert anthropic_usage(openai) == {
        "input_tokens": 60,
        "output_tokens": 5,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 40,
    }


def test_missing_or_unreadable_usage_is_all_zeros_never_an_error() -> None:
    assert anthropic_usage(None) == NO_USAGE
    assert anthropic_usage({}) == NO_USAGE
    assert anthropic_usage({"prompt_tokens": -1, "completion_tokens": 2}) == NO_USAGE
    assert anthropic_usage({"prompt_tokens": 10, "prompt_tokens_details": {"cached_tokens": 11}}) == NO_USAGE


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ({"city": "Oslo"}, {"city": "Oslo"}),
        ('{"city": "Oslo", "days": 2}', {"city": "Oslo", "days": 2}),
        ('["Oslo"]', {}),
        ('"Oslo"', {}),
        ('{"city": "Os', {}),
        ("", {}),
        (None, {}),
        (["Oslo"], {}),
    ],
)
def test_tool_input_is_the_arguments_object_or_empty(arguments: object, expected: dict[str, object]) -> None:
    assert tool_input(arguments) == expected


def test_our_own_error_type_is_kept_only_when_it_says_more_than_the_status() -> None:
    assert error_detail(400, "Budget exceeded.", "budget_exceeded") == {
        "type": "invalid_request_error",
        "message": "Budget exceeded.",
        "litellm_error_type": "budget_exceeded",
    }
    assert error_detail(403, "Blocked.", "customer_blocked")["litellm_error_type"] == "customer_blocked"
    for generic in (None, "invalid_request_error", "api_error", "internal_error", "rate_limit_error"):
        assert "litellm_error_type" not in error_detail(429, "Slow down.", generic)
    assert error_detail(500, "Boom.") == {"type": "api_error", "message": "Boom."}
