"""The client's request body: the few fields the proxy reads, checked once (`parse_body`), and the body the provider
gets without the fields only the proxy reads (`without_proxy_fields`). Every other field passes through untouched.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from haimaker.errors import BadRequestError
from haimaker.providers.base import Route

# Request fields only the proxy reads: `_upstream_body` removes them, so the provider never sees them (an OpenAI
# upstream answers 400 "Unrecognized request argument" to each). The list is LiteLLM's: names it owns (its
# `all_litellm_params` / `is_litellm_owned_kwarg`) and pops from client requests (`_UNTRUSTED_ROOT_CONTROL_FIELDS`)
# that a LiteLLM client plausibly sends; names an OpenAI-compatible upstream may define (vLLM's `guided_json`, ...)
# pass through. OpenAI's own `user` and `safety_identifier` stay.
PROXY_ONLY_FIELDS = frozenset(
    {
        # The proxy's metadata on the chat, completions and embeddings routes (LiteLLM's get_metadata_variable_name):
        # identity reads `metadata.user_id`. OpenAI's stored-completions `metadata` is thus unreachable, as in LiteLLM.
        "metadata",
        # Spend-log and routing tags, and request objects LiteLLM itself builds (a client must not forge them).
        "tags",
        "proxy_server_request",
        "standard_logging_object",
        "secret_fields",
        # Routing, retries and fallbacks: the proxy's router decides them from its config, never the client.
        "fallbacks",
        "context_window_fallback_dict",
        "num_retries",
        "retry_policy",
        "cooldown_time",
        "model_list",
        "allowed_model_region",  # a customer's region comes from its record, never from the request
        # LiteLLM features we do not run: response caching, guardrails, callbacks, mocked answers.
        "caching",
        "cache",
        "guardrails",
        "disable_global_guardrails",
        "callbacks",
        "logger_fn",
        "no-log",
        "mock_response",
        "mock_timeout",
        "mock_tool_calls",
        # Client-side upstream credentials: the deployment's own are used; a client's are never passed on.
        "api_key",
        "api_base",
        "base_url",
        "api_version",
    }
)
# Also every name holding this: `litellm_metadata`, `litellm_trace_id`, `litellm_session_id`, ... and LiteLLM's internal
# `_litellm_*` names (a substring test: half the cost of two `startswith` per field on the hot path).
PROXY_ONLY_MARK = "litellm_"


def without_proxy_fields(body: dict[str, Any]) -> dict[str, Any]:
    """`body` without `PROXY_ONLY_FIELDS` (and names holding `PROXY_ONLY_MARK`): never mutated, copied only when a
    field has to go (the hot path pays one membership test per field)."""
    for name in body:
        if name in PROXY_ONLY_FIELDS or PROXY_ONLY_MARK in name:
            return {
                key: value for key, value in body.items() if key not in PROXY_ONLY_FIELDS and PROXY_ONLY_MARK not in key
            }
    return body


def parse_body(route: Route, raw: bytes, path_model: str | None = None) -> dict[str, Any]:
    """Decode and check the few fields the proxy reads; every other field passes through untouched."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequestError(f"Invalid JSON in request body: {exc.msg}.") from None
    if not isinstance(body, dict):
        raise BadRequestError("Request body must be a JSON object.")
    if path_model is not None and "model" not in body:
        body["model"] = path_model
    model = body.get("model")
    if model is None:
        raise BadRequestError("Missing required parameter: 'model'.", param="model")
    if not isinstance(model, str) or not model:
        raise BadRequestError("'model' must be a non-empty string.", param="model")
    if route is Route.CHAT:
        messages = body.get("messages")
        if messages is None:
            raise BadRequestError("Missing required parameter: 'messages'.", param="messages")
        if not isinstance(messages, list) or not messages:
            raise BadRequestError("'messages' must be a non-empty array.", param="messages")
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or not isinstance(message.get("role"), str):
                raise BadRequestError(
                    f"'messages[{i}]' must be an object with a string 'role'.", param=f"messages[{i}]"
                )
    elif route is Route.COMPLETIONS:
        if body.get("prompt") is None:
            raise BadRequestError("Missing required parameter: 'prompt'.", param="prompt")
    elif route is Route.RESPONSES:
        if body.get("input") is None:
            raise BadRequestError("Missing required parameter: 'input'.", param="input")
        value = body.get("max_output_tokens")
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise BadRequestError("'max_output_tokens' must be a non-negative integer.", param="max_output_tokens")
    elif body.get("input") is None:
        raise BadRequestError("Missing required parameter: 'input'.", param="input")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise BadRequestError("'stream' must be a boolean.", param="stream")
    for name in ("max_tokens", "max_completion_tokens", "n"):
        value = body.get(name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise BadRequestError(f"'{name}' must be a non-negative integer.", param=name)
    return body


def responses_prompt(body: Mapping[str, Any]) -> list[Any]:
    """A Responses request's prompt as chat-like messages for counting: `instructions`, then the `input` items."""
    messages: list[Any] = []
    instructions = body.get("instructions")
    if isinstance(instructions, str) and instructions:
        messages.append({"role": "system", "content": instructions})
    items = body.get("input")
    if isinstance(items, str):
        messages.append({"role": "user", "content": items})
    elif isinstance(items, list):
        messages.extend(items)
    return messages


def max_output_tokens(body: Mapping[str, Any]) -> int | None:
    value = body.get("max_completion_tokens") or body.get("max_tokens") or body.get("max_output_tokens")
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def positive_int_or(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else default
