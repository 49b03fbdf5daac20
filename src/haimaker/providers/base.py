"""What every provider adapter shares: the deployment it calls, the route, the response it opens.

A provider turns one OpenAI-shaped request body into one upstream call and hands back an
`UpstreamResponse` whose bytes are already in OpenAI's wire format (JSON or SSE), so the pipeline
relays them without caring who answered.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from haimaker.accounting.pricing import ModelPrice


class Route(enum.Enum):
    """An LLM route and the upstream path it maps to."""

    CHAT = "chat/completions"
    COMPLETIONS = "completions"
    EMBEDDINGS = "embeddings"
    RESPONSES = "responses"  # the OpenAI Responses API, forwarded natively (api/responses_api.py)

    @property
    def call_type(self) -> str:
        return _CALL_TYPES[self.value]


# LiteLLM's spend-log `call_type` of each route.
_CALL_TYPES = {
    "chat/completions": "acompletion",
    "completions": "atext_completion",
    "embeddings": "aembedding",
    "responses": "aresponses",
}


@dataclass(frozen=True, slots=True)
class Deployment:
    """One `model_list` entry: a concrete upstream behind a public model name."""

    model_id: str
    model_name: str
    provider: str
    upstream_model: str
    api_base: str | None
    api_key: str | None
    api_version: str | None
    timeout_s: float
    stream_timeout_s: float | None
    max_retries: int | None
    region_name: str | None
    price: ModelPrice | None
    max_output_tokens: int | None
    mock_response: str | None = None
    mock_latency_ms: float = 0.0
    ssl_verify: bool | str | None = None  # `litellm_params.ssl_verify`, parsed (see tls.py); None: the environment's
    # Every `litellm_params` key as configured (LiteLLM's names, extras included): provider-specific settings such as
    # `vertex_project`, `vertex_credentials`, `aws_region_name`, `aws_access_key_id`, read by their provider only.
    params: Mapping[str, Any] = field(default_factory=dict)


class UpstreamResponse(Protocol):
    """An upstream answer that arrived with a 2xx status (errors are raised instead)."""

    status: int

    async def read(self) -> bytes:
        """The whole body (non-streaming calls)."""
        ...

    def iter_chunks(self) -> AsyncIterator[bytes]:
        """Raw body pieces as they arrive (streaming calls): SSE bytes in OpenAI's format."""
        ...

    def at_end(self) -> bool:
        """Every byte of the body has arrived and been read: iterating further returns without waiting."""
        ...

    def close(self) -> None:
        """Release the upstream connection now (idempotent, never awaits)."""
        ...


class Provider(Protocol):
    """Opens one upstream call for a deployment."""

    async def open(self, deployment: Deployment, route: Route, body: dict[str, Any], stream: bool) -> UpstreamResponse:
        """Send the request; raise a `haimaker.errors.UpstreamError` (or subclass) on failure."""
        ...

    async def aclose(self) -> None: ...
