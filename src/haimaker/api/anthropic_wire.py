"""Anthropic's wire shapes shared by the `/v1/messages` answer and its stream: error types by status, stop reasons,
message ids, usage (`input_tokens` excludes cache reads and writes) and tool inputs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import orjson

from haimaker.accounting.pricing import Usage, UsageError, usage_from_openai

# LiteLLM's map (`anthropic_interface/exceptions` + `proxy/common_utils/anthropic_error_payload.py`): the Anthropic
# SDK raises its exception class from the status, and reads `error.type`.
_ERROR_TYPE_BY_STATUS: Final[Mapping[int, str]] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}

_STOP_REASONS: Final[Mapping[str, str]] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
    "refusal": "refusal",
}


def anthropic_error_type(status: int) -> str:
    """Anthropic's `error.type` for a status (LiteLLM's rule: an unnamed 4xx is invalid_request_error)."""
    named = _ERROR_TYPE_BY_STATUS.get(status)
    if named is not None:
        return named
    return "invalid_request_error" if 400 <= status < 500 and status != 408 else "api_error"


def stop_reason_of(finish_reason: object) -> str:
    """Anthropic's `stop_reason` for an OpenAI `finish_reason` (anything unknown ends the turn, as in LiteLLM)."""
    return _STOP_REASONS.get(finish_reason, "end_turn") if isinstance(finish_reason, str) else "end_turn"


def message_id_of(chat_id: object) -> str:
    """A `msg_` id for the answer, derived from the upstream's id so the two can be matched in logs."""
    if not isinstance(chat_id, str) or not chat_id:
        return "msg_unknown"
    if chat_id.startswith("msg_"):
        return chat_id
    return "msg_" + chat_id.removeprefix("chatcmpl-")


def anthropic_usage(usage: Mapping[str, Any] | None) -> dict[str, int]:
    """Anthropic's usage from an OpenAI usage object: `input_tokens` excludes cache reads and writes."""
    try:
        parsed = usage_from_openai(usage)
    except UsageError:  # already refused by the pipeline before an answer gets here; never a 500 on the edge
        parsed = None
    if parsed is None:
        parsed = Usage(prompt_tokens=0, completion_tokens=0)
    return {
        "input_tokens": max(0, parsed.prompt_tokens - parsed.cache_read_tokens - parsed.cache_creation_tokens),
        "output_tokens": parsed.completion_tokens,
        "cache_creation_input_tokens": parsed.cache_creation_tokens,
        "cache_read_input_tokens": parsed.cache_read_tokens,
    }


def tool_input(arguments: object) -> dict[str, Any]:
    if isinstance(arguments, dict):
        return arguments
    if isinstance(arguments, str) and arguments:
        try:
            parsed = orjson.loads(arguments)
        except orjson.JSONDecodeError:
            return {}
        return parsed if isinstance(parsed, dict) else {}
    return {}


def error_detail(status: int, message: str, own_type: str | None = None) -> dict[str, str]:
    """The `error` object of Anthropic's envelope; our own type is kept as `litellm_error_type` when it says more
    than the status's (budget_exceeded, customer_blocked, ...), as LiteLLM does."""
    kind = anthropic_error_type(status)
    detail = {"type": kind, "message": message}
    if own_type is not None and own_type not in (kind, "invalid_request_error", "api_error", "internal_error"):
        detail["litellm_error_type"] = own_type
    return detail
