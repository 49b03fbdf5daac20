"""`gemini/<model>`: Google AI Studio's `generateContent` / `streamGenerateContent`, spoken in OpenAI chat.

    POST {base}/v1beta/models/<model>:generateContent                 (JSON)
    POST {base}/v1beta/models/<model>:streamGenerateContent?alt=sse   (SSE)
    x-goog-api-key: <api_key>

`base` is `https://generativelanguage.googleapis.com`; an `api_base` with a path (a gateway such as Cloudflare's,
`.../google-ai-studio/v1beta`) is used as is and `models/...` appended to it, as LiteLLM does. The key goes in the
`x-goog-api-key` header (documented beside `?key=`, which LiteLLM sends) so that it never sits in a URL or a log.

The translation both ways lives in `gemini_request.py` / `gemini_response.py`; `GoogleAnswer` is the response both
this provider and Vertex (`vertex.py`) hand back. Upstream errors (`{"error": {"code", "message", "status"}}`) are
mapped by the transport: a 4xx passed on with its scrubbed message (429 retryable), a 5xx as a 502.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from typing import Any, Final
from urllib.parse import urlsplit

import orjson

from haimaker.errors import BadGatewayError, BadRequestError, UpstreamStatusError
from haimaker.providers.base import Deployment, Route
from haimaker.providers.gemini_request import gemini_request
from haimaker.providers.gemini_response import GeminiStream, chat_completion
from haimaker.providers.http import HttpResponse, HttpTransport

GEMINI_API_BASE: Final = "https://generativelanguage.googleapis.com"
# OpenAI's error type for the statuses Google answers with (the rest stay invalid_request_error).
_ERROR_TYPES: Final = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
}


class GoogleAnswer:
    """A Gemini answer in OpenAI's wire format: a `chat.completion` (`read`) or chunk events (`iter_chunks`)."""

    __slots__ = ("_model", "_response", "_stream", "status")

    def __init__(self, response: HttpResponse, model: str, stream: GeminiStream | None) -> None:
        self._response = response
        self._model = model
        self._stream = stream
        self.status = response.status

    async def read(self) -> bytes:
        return chat_completion(await self._response.read(), self._model)

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        stream = self._stream or GeminiStream(self._model, with_usage=False)
        try:
            async for piece in self._response.iter_chunks():
                for event in stream.feed(piece):
                    yield event
            for event in stream.finish():
                yield event
            if not stream.is_complete:
                raise BadGatewayError("Gemini closed the stream before it was complete.")
        finally:
            self._response.close()

    def at_end(self) -> bool:
        # Once the upstream body is all read, what is left (the usage chunk, [DONE]) comes without waiting.
        return self._response.at_end()

    def close(self) -> None:
        self._response.close()


async def open_generate_content(
    transport: HttpTransport,
    deployment: Deployment,
    route: Route,
    body: dict[str, Any],
    *,
    stream: bool,
    url: str,
    headers: Mapping[str, str],
    secrets: tuple[str, ...],
) -> GoogleAnswer:
    """Translate `body`, POST it to a `generateContent` URL (`url` without the `:method`), translate the answer."""
    if route is not Route.CHAT:
        raise BadRequestError(
            f"{deployment.provider}/ deployments serve /chat/completions only, not /{route.value}.", param="model"
        )
    payload = orjson.dumps(gemini_request(body, drop_params=deployment.params.get("drop_params") is True))
    target = f"{url}:streamGenerateContent?alt=sse" if stream else f"{url}:generateContent"
    timeout_s = (deployment.stream_timeout_s if stream else None) or deployment.timeout_s
    try:
        response = await transport.post(
            target, headers, payload, timeout_s=timeout_s, secrets=secrets, verify=deployment.ssl_verify
        )
    except UpstreamStatusError as exc:
        exc.error_type = _ERROR_TYPES.get(exc.status_code, exc.error_type)
        raise
    if not stream:
        return GoogleAnswer(response, deployment.upstream_model, None)
    options = body.get("stream_options")
    with_usage = isinstance(options, dict) and options.get("include_usage") is True
    return GoogleAnswer(
        response, deployment.upstream_model, GeminiStream(deployment.upstream_model, with_usage=with_usage)
    )


def gemini_models_url(api_base: str | None, model: str) -> str:
    """`.../models/<model>` on AI Studio, or under an `api_base` (a bare host gets `/v1beta`, as LiteLLM's default)."""
    base = (api_base or GEMINI_API_BASE).rstrip("/")
    if urlsplit(base).path in ("", "/"):
        base += "/v1beta"
    return f"{base}/models/{model}"


class GeminiProvider:
    """`gemini/<model>` on Google AI Studio, keyed by `api_key`."""

    def __init__(self, transport: HttpTransport) -> None:
        self._transport = transport

    async def open(self, deployment: Deployment, route: Route, body: dict[str, Any], stream: bool) -> GoogleAnswer:
        # LiteLLM's environment fallback for a deployment without `api_key`.
        key = deployment.api_key or os.environ.get("GEMINI_API_KEY") or os.environ.get("GOOGLE_API_KEY")
        headers = {"Content-Type": "application/json"}
        if key:
            headers["x-goog-api-key"] = key
        return await open_generate_content(
            self._transport,
            deployment,
            route,
            body,
            stream=stream,
            url=gemini_models_url(deployment.api_base, deployment.upstream_model),
            headers=headers,
            secrets=(key,) if key else (),
        )

    async def aclose(self) -> None:
        """The transport is shared and closed by its owner."""
