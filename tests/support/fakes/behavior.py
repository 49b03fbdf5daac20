"""How a fake upstream answers one request: the `Behavior` value and the provider error bodies.

A `Behavior` is a frozen value. A fake server holds a default one, one per model, and a FIFO script of one-shot
behaviours; a single request can override any field by sending a JSON object in the `X-Fake-Behavior` header or in
the body field `fake_behavior` (the body field travels through a proxy that forwards unknown fields untouched).

Invariants: every field has a deterministic default, so two identical requests get identical replies apart from
ids and timestamps; token counts are words (see `count_words`), never a real tokenizer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

StreamUsage = Literal["requested", "never", "always"]

DEFAULT_REPLY = "Hello! This is the fake upstream speaking."

# Bodies OpenAI sends for each status, as observed on api.openai.com. Only `message` varies in practice.
_OPENAI_ERRORS: dict[int, tuple[str, str, str | None]] = {
    400: ("Invalid request.", "invalid_request_error", None),
    401: ("Incorrect API key provided.", "invalid_request_error", "invalid_api_key"),
    403: ("You are not allowed to sample from this model.", "invalid_request_error", None),
    404: ("The model does not exist or you do not have access to it.", "invalid_request_error", "model_not_found"),
    408: ("Request timed out.", "timeout", None),
    409: ("Conflict.", "invalid_request_error", None),
    422: ("Unprocessable entity.", "invalid_request_error", None),
    429: (
        "Rate limit reached for requests. Limit: 3, Used: 3, Requested: 1. Please try again in 20s.",
        "requests",
        "rate_limit_exceeded",
    ),
    500: ("The server had an error while processing your request. Sorry about that!", "server_error", None),
    502: ("Bad gateway.", "server_error", None),
    503: ("The engine is currently overloaded, please try again later.", "server_error", None),
    504: ("Gateway timeout.", "server_error", None),
}


def openai_error_body(
    status: int, message: str | None = None, type_: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """Return the OpenAI error envelope `{"error": {message, type, param, code}}` for `status`."""
    default_message, default_type, default_code = _OPENAI_ERRORS.get(status, ("Error.", "api_error", None))
    return {
        "error": {
            "message": message if message is not None else default_message,
            "type": type_ if type_ is not None else default_type,
            "param": None,
            "code": code if code is not None else default_code,
        }
    }


def azure_error_body(code: str, message: str) -> dict[str, Any]:
    """Return Azure's error envelope, which has `code` and `message` only."""
    return {"error": {"code": code, "message": message}}


@dataclass(frozen=True, slots=True)
class Behavior:
    """What the fake does with one generation request (chat, completions, embeddings).

    Attributes:
        reply: assistant text (chat) or completion text.
        prompt_tokens: reported prompt tokens; `None` counts the words of the prompt.
        completion_tokens: reported completion tokens; `None` counts the words of the reply (times `n`).
        cached_tokens: reported `prompt_tokens_details.cached_tokens`.
        reasoning_tokens: reported `completion_tokens_details.reasoning_tokens`.
        chunks: number of content chunks in a stream; `None` sends one chunk per word.
        delay_s: wait before the response starts (headers included).
        chunk_delay_s: wait before each stream chunk after the first.
        stream_usage: "requested" honours `stream_options.include_usage` like OpenAI; "never" ignores it (a server
            without streamed usage); "always" sends the usage chunk even when not asked (a sloppy server).
        status: answer with this HTTP status and an error body instead of a completion.
        error_message, error_type, error_code: override fields of the default OpenAI error body.
        error_body: send this JSON body verbatim instead of the OpenAI envelope.
        headers: extra response headers (e.g. `retry-after` on a 429).
        hang: never answer; the handler waits until the client goes away or the server stops.
        die_after_chunks: in a stream, close the socket abruptly after this many SSE events.
        finish_reason: reported finish reason when the reply is not truncated by `max_tokens`.
        response_model: model name reported in the body; `None` echoes the requested model.
        usage: report this `usage` object verbatim (JSON body and the stream's usage chunk) instead of the counted
            one: absurd or malformed usage (2**62, 1e308, -1, "10", ...).
        omit_usage: a JSON body without any `usage` field.
        raw_body: answer 200 with this text as the body (content type JSON): not JSON, or not an object.
        padding_bytes: pad the JSON body with a string field of this many bytes, sent chunked in 1 MB pieces.
        endless_event_bytes: in a stream, after the first chunk, send one `data:` line of this many bytes and no
            blank line after it, then hold the connection open until the client goes away.
        stream_error: in a stream, after the first chunk, send `data: {"error": <this>}` and end the stream.
    """

    reply: str = DEFAULT_REPLY
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    chunks: int | None = None
    delay_s: float = 0.0
    chunk_delay_s: float = 0.0
    stream_usage: StreamUsage = "requested"
    status: int | None = None
    error_message: str | None = None
    error_type: str | None = None
    error_code: str | None = None
    error_body: Mapping[str, Any] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    hang: bool = False
    die_after_chunks: int | None = None
    finish_reason: str = "stop"
    response_model: str | None = None
    usage: Mapping[str, Any] | None = None
    omit_usage: bool = False
    raw_body: str | None = None
    padding_bytes: int = 0
    endless_event_bytes: int | None = None
    stream_error: Mapping[str, Any] | None = None

    @classmethod
    def failing(cls, status: int, message: str | None = None, *, headers: Mapping[str, str] | None = None) -> Behavior:
        """Answer with `status` and OpenAI's error body for it."""
        return cls(status=status, error_message=message, headers=dict(headers or {}))

    @classmethod
    def hanging(cls) -> Behavior:
        """Never answer (for timeout tests)."""
        return cls(hang=True)

    @classmethod
    def dying_after(cls, events: int, *, chunk_delay_s: float = 0.0) -> Behavior:
        """Stream `events` SSE events, then close the socket without finishing the response."""
        return cls(die_after_chunks=events, chunk_delay_s=chunk_delay_s)

    def replace(self, **changes: Any) -> Behavior:
        """Return a copy with `changes` applied."""
        return dataclasses.replace(self, **changes)

    def merged(self, overrides: Mapping[str, Any]) -> Behavior:
        """Return a copy with a per-request override applied.

        Raises:
            ValueError: an override names a field `Behavior` does not have.
        """
        names = {f.name for f in dataclasses.fields(self)}
        unknown = set(overrides) - names
        if unknown:
            raise ValueError(f"unknown fake behaviour fields: {sorted(unknown)}")
        return dataclasses.replace(self, **dict(overrides))

    def error_json(self, status: int) -> dict[str, Any]:
        """Return the error body this behaviour sends with `status`."""
        if self.error_body is not None:
            return dict(self.error_body)
        return openai_error_body(status, self.error_message, self.error_type, self.error_code)


def count_words(value: object) -> int:
    """Count the words in a prompt-like value: a string, a list of strings or token ids, or content parts."""
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, int):
        return 1
    if isinstance(value, list):
        return sum(count_words(item) for item in value)
    if isinstance(value, dict):
        # A content part ({"type": "text", "text": ...}) or a message ({"role": ..., "content": ...}).
        if "text" in value:
            return count_words(value["text"])
        if "content" in value:
            return count_words(value["content"])
    return 0
