"""OpenAI wire format: the JSON bodies and SSE events of chat completions, completions, embeddings and models.

Pure functions from a parsed request and a `Behavior` to response payloads, so the servers in
`openai_upstream.py` only do HTTP. Shapes follow api.openai.com as of 2025 (field order included); the Azure
variant adds the content-filter annotations Azure OpenAI sends, including its notorious first stream chunk with
empty `choices`.
"""

from __future__ import annotations

import base64
import hashlib
import math
import secrets
import string
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from .behavior import Behavior, count_words

_ALPHABET = string.ascii_letters + string.digits

_FILTER_OK = {"filtered": False, "severity": "safe"}
CONTENT_FILTER_RESULTS: dict[str, Any] = {
    "hate": _FILTER_OK,
    "self_harm": _FILTER_OK,
    "sexual": _FILTER_OK,
    "violence": _FILTER_OK,
}
PROMPT_FILTER_RESULTS: list[dict[str, Any]] = [{"prompt_index": 0, "content_filter_results": CONTENT_FILTER_RESULTS}]


def make_id(prefix: str) -> str:
    """Return an OpenAI-looking id such as `chatcmpl-AbC…` (29 random characters)."""
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(29))


def encode_sse(payload: dict[str, Any]) -> bytes:
    """Frame one JSON payload as an SSE `data:` event."""
    return b"data: " + orjson.dumps(payload) + b"\n\n"


SSE_DONE = b"data: [DONE]\n\n"


@dataclass(frozen=True, slots=True)
class Completion:
    """The text a request gets back and the usage it reports."""

    texts: list[str]
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    reasoning_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def plan_completion(body: dict[str, Any], behavior: Behavior, prompt: object) -> Completion:
    """Decide the reply text(s), finish reason and usage for a chat or text completion request."""
    n = body.get("n") or 1
    words = behavior.reply.split(" ")
    finish_reason = behavior.finish_reason
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    text = behavior.reply
    if isinstance(limit, int) and 0 < limit < len(behavior.reply.split()):
        text = " ".join(words[:limit])
        finish_reason = "length"
    completion_tokens = behavior.completion_tokens
    if completion_tokens is None:
        completion_tokens = len(text.split()) * n
    prompt_tokens = behavior.prompt_tokens if behavior.prompt_tokens is not None else count_words(prompt)
    return Completion(
        texts=[text] * n,
        finish_reason=finish_reason,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        cached_tokens=behavior.cached_tokens,
        reasoning_tokens=behavior.reasoning_tokens,
    )


def chat_usage(plan: Completion) -> dict[str, Any]:
    """The `usage` object of a chat completion, details included."""
    return {
        "prompt_tokens": plan.prompt_tokens,
        "completion_tokens": plan.completion_tokens,
        "total_tokens": plan.total_tokens,
        "prompt_tokens_details": {"cached_tokens": plan.cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": plan.reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def text_usage(plan: Completion) -> dict[str, Any]:
    """The `usage` object of a legacy text completion."""
    return {
        "prompt_tokens": plan.prompt_tokens,
        "completion_tokens": plan.completion_tokens,
        "total_tokens": plan.total_tokens,
    }


def split_text(text: str, chunks: int | None) -> list[str]:
    """Split `text` into stream pieces: one per word (leading space kept), or `chunks` near-equal pieces."""
    if chunks is None:
        words = text.split(" ")
        return [words[0], *(" " + w for w in words[1:])] if text else []
    if chunks <= 0:
        return []
    size = len(text)
    return [text[i * size // chunks : (i + 1) * size // chunks] for i in range(chunks)]


@dataclass(frozen=True, slots=True)
class ResponseMeta:
    """Fields shared by every chunk of one response."""

    id: str
    created: int
    model: str
    system_fingerprint: str
    azure: bool


def new_meta(prefix: str, model: str, *, azure: bool = False) -> ResponseMeta:
    """Return fresh ids and a timestamp for one response."""
    return ResponseMeta(
        id=make_id(prefix),
        created=int(time.time()),
        model=model,
        system_fingerprint="fp_" + secrets.token_hex(5),
        azure=azure,
    )


def chat_completion(meta: ResponseMeta, plan: Completion) -> dict[str, Any]:
    """A non-streaming `chat.completion` body."""
    choices: list[dict[str, Any]] = []
    for index, text in enumerate(plan.texts):
        choice: dict[str, Any] = {
            "index": index,
            "message": {"role": "assistant", "content": text, "refusal": None, "annotations": []},
            "logprobs": None,
            "finish_reason": plan.finish_reason,
        }
        if meta.azure:
            choice["content_filter_results"] = CONTENT_FILTER_RESULTS
        choices.append(choice)
    body: dict[str, Any] = {
        "id": meta.id,
        "object": "chat.completion",
        "created": meta.created,
        "model": meta.model,
        "choices": choices,
        "usage": chat_usage(plan),
        "service_tier": "default",
        "system_fingerprint": meta.system_fingerprint,
    }
    if meta.azure:
        body["prompt_filter_results"] = PROMPT_FILTER_RESULTS
    return body


def _chat_chunk(meta: ResponseMeta, choices: list[dict[str, Any]], with_usage_key: bool) -> dict[str, Any]:
    chunk: dict[str, Any] = {
        "id": meta.id,
        "object": "chat.completion.chunk",
        "created": meta.created,
        "model": meta.model,
        "service_tier": "default",
        "system_fingerprint": meta.system_fingerprint,
        "choices": choices,
    }
    if with_usage_key:
        chunk["usage"] = None
    return chunk


def chat_stream(
    meta: ResponseMeta, plan: Completion, *, chunks: int | None, send_usage: bool
) -> Iterator[dict[str, Any]]:
    """Yield the `chat.completion.chunk` payloads of one stream, in order (without the `[DONE]` sentinel)."""
    if meta.azure:
        # Azure opens with a chunk that has no choices, only the prompt filter results and an empty model.
        yield {
            "choices": [],
            "created": 0,
            "id": "",
            "model": "",
            "object": "",
            "prompt_filter_results": PROMPT_FILTER_RESULTS,
        }
    extra: dict[str, Any] = {"content_filter_results": {}} if meta.azure else {}
    for index in range(len(plan.texts)):
        delta = {"role": "assistant", "content": "", "refusal": None}
        yield _chat_chunk(
            meta, [{"index": index, "delta": delta, "logprobs": None, "finish_reason": None, **extra}], send_usage
        )
    pieces_per_choice = [split_text(text, chunks) for text in plan.texts]
    for step in range(max((len(p) for p in pieces_per_choice), default=0)):
        for index, pieces in enumerate(pieces_per_choice):
            if step < len(pieces):
                choice = {"index": index, "delta": {"content": pieces[step]}, "logprobs": None, "finish_reason": None}
                if meta.azure:
                    choice["content_filter_results"] = CONTENT_FILTER_RESULTS
                yield _chat_chunk(meta, [choice], send_usage)
    for index in range(len(plan.texts)):
        yield _chat_chunk(
            meta,
            [{"index": index, "delta": {}, "logprobs": None, "finish_reason": plan.finish_reason, **extra}],
            send_usage,
        )
    if send_usage:
        final = _chat_chunk(meta, [], False)
        final["usage"] = chat_usage(plan)
        yield final


def text_completion(meta: ResponseMeta, plan: Completion) -> dict[str, Any]:
    """A non-streaming legacy `text_completion` body."""
    choices: list[dict[str, Any]] = []
    for index, text in enumerate(plan.texts):
        choice: dict[str, Any] = {"text": text, "index": index, "logprobs": None, "finish_reason": plan.finish_reason}
        if meta.azure:
            choice["content_filter_results"] = CONTENT_FILTER_RESULTS
        choices.append(choice)
    body: dict[str, Any] = {
        "id": meta.id,
        "object": "text_completion",
        "created": meta.created,
        "model": meta.model,
        "choices": choices,
        "usage": text_usage(plan),
        "system_fingerprint": meta.system_fingerprint,
    }
    if meta.azure:
        body["prompt_filter_results"] = PROMPT_FILTER_RESULTS
    return body


def text_stream(
    meta: ResponseMeta, plan: Completion, *, chunks: int | None, send_usage: bool
) -> Iterator[dict[str, Any]]:
    """Yield the `text_completion` chunk payloads of one legacy completions stream."""

    def chunk(choices: list[dict[str, Any]]) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "id": meta.id,
            "object": "text_completion",
            "created": meta.created,
            "choices": choices,
            "model": meta.model,
            "system_fingerprint": meta.system_fingerprint,
        }
        if send_usage:
            payload["usage"] = None
        return payload

    pieces_per_choice = [split_text(text, chunks) for text in plan.texts]
    for step in range(max((len(p) for p in pieces_per_choice), default=0)):
        for index, pieces in enumerate(pieces_per_choice):
            if step < len(pieces):
                yield chunk([{"text": pieces[step], "index": index, "logprobs": None, "finish_reason": None}])
    for index in range(len(plan.texts)):
        yield chunk([{"text": "", "index": index, "logprobs": None, "finish_reason": plan.finish_reason}])
    if send_usage:
        final = chunk([])
        final["usage"] = text_usage(plan)
        yield final


def embedding_vector(text: str, dimensions: int) -> list[float]:
    """A deterministic unit vector derived from `text` (same text, same vector)."""
    seed = hashlib.sha256(text.encode()).digest()
    raw: list[float] = []
    counter = 0
    while len(raw) < dimensions:
        block = hashlib.sha256(seed + counter.to_bytes(4, "little")).digest()
        raw.extend((b - 127.5) / 127.5 for b in block)
        counter += 1
    raw = raw[:dimensions]
    norm = math.sqrt(sum(v * v for v in raw)) or 1.0
    # Round-trip through float32 so the float list and the base64 form carry the same numbers.
    return list(struct.unpack(f"<{dimensions}f", struct.pack(f"<{dimensions}f", *(v / norm for v in raw))))


def embedding_inputs(value: object) -> list[str]:
    """Normalise an embeddings `input` (string, strings, token ids, lists of token ids) to one string per item."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, int) for v in value):
        return [" ".join(str(v) for v in value)]
    if isinstance(value, list):
        return [v if isinstance(v, str) else " ".join(str(t) for t in v) for v in value]
    return []


def embeddings(
    model: str, inputs: list[str], dimensions: int, encoding_format: str, prompt_tokens: int
) -> dict[str, Any]:
    """An embeddings `list` body; `encoding_format="base64"` packs float32 little-endian like OpenAI."""
    data: list[dict[str, Any]] = []
    for index, text in enumerate(inputs):
        vector = embedding_vector(text, dimensions)
        encoded: list[float] | str = vector
        if encoding_format == "base64":
            encoded = base64.b64encode(struct.pack(f"<{dimensions}f", *vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": encoded})
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }


def model_list(models: list[str], created: int) -> dict[str, Any]:
    """A `GET /v1/models` body."""
    return {"object": "list", "data": [model_card(m, created) for m in models]}


def model_card(model: str, created: int) -> dict[str, Any]:
    """One entry of the models list."""
    return {"id": model, "object": "model", "created": created, "owned_by": "system"}
