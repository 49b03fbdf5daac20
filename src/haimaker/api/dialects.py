"""Other LLM APIs served over the one pipeline: the Anthropic Messages API (`/v1/messages`) and the OpenAI Responses
API (`/v1/responses`). A `Dialect` translates its request into one the pipeline serves (a chat request, or the same
body on a native route), and the pipeline's answer back into its own wire format, JSON and streaming, errors
included. Authentication, the customer, budgets, reservations, rate limits and spend logs are the pipeline's, so they
hold the same on every route.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from haimaker.errors import ProxyError
    from haimaker.pipeline import JsonResult, StreamResult
    from haimaker.providers.base import Route
    from haimaker.providers.router import Router


@dataclass(frozen=True, slots=True)
class Translated:
    """A request as the pipeline serves it, and what its dialect needs to translate the answer back."""

    route: Route
    body: bytes
    # The dialect's own view of the request (its parsed body, say), handed back with the answer; None: not needed.
    request: Any = None


class Dialect(Protocol):
    """One API's translation to and from the pipeline."""

    # The spend log's `call_type` for its requests (LiteLLM's names, e.g. "anthropic_messages", "aresponses").
    call_type: str

    def translate_request(self, raw: bytes, headers: Mapping[str, str]) -> Translated:
        """The route and body the pipeline serves for this request.

        Raises:
            ProxyError: the request is not valid for this API (a 400/422 the client reads in this API's error shape).
        """
        ...

    def translate_json(self, result: JsonResult, request: Any) -> JsonResult:
        """The pipeline's whole answer (OpenAI's format, or the native route's) as this API's answer."""
        ...

    def translate_stream(self, result: StreamResult, request: Any) -> StreamResult:
        """The pipeline's stream as this API's stream; the pipeline's relay (settling) must still run to its end."""
        ...

    def error_body(self, error: ProxyError) -> bytes:
        """An error in this API's error shape (status and headers stay the pipeline's)."""
        ...


# Providers whose requests carry Anthropic's `cache_control` (prompt caching) through to the upstream.
CACHE_CONTROL_PROVIDERS: frozenset[str] = frozenset({"anthropic", "bedrock", "vertex_ai"})

# Every path a dialect serves: `build_dialects` maps each of them (the app dispatches on this before it has built them).
DIALECT_PATHS: frozenset[str] = frozenset({"/v1/messages", "/messages", "/v1/responses", "/responses"})


def build_dialects(router: Router) -> dict[str, Dialect]:
    """The dialect of each path in `DIALECT_PATHS`."""
    # Imported here: the dialects import `Translated` from this module.
    from haimaker.api.anthropic_messages import AnthropicMessages
    from haimaker.api.responses_api import ResponsesDialect

    dialects: dict[str, Dialect] = {}
    dialects["/v1/messages"] = dialects["/messages"] = AnthropicMessages(
        lambda model: (
            model in router.model_names and all(d.provider in CACHE_CONTROL_PROVIDERS for d in router.group(model))
        )
    )
    dialects["/v1/responses"] = dialects["/responses"] = ResponsesDialect(router)
    return dialects
