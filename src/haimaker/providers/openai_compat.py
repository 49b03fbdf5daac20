"""OpenAI and every OpenAI-compatible server (vLLM, Ollama, llama.cpp, Groq, Together, Mistral...)."""

from __future__ import annotations

from typing import Any

import orjson

from haimaker.providers.base import Deployment, Route
from haimaker.providers.http import HttpResponse, HttpTransport

OPENAI_API_BASE = "https://api.openai.com/v1"


class OpenAIProvider:
    """`openai/<model>`: POST `<api_base>/<route>` with a bearer key."""

    def __init__(self, transport: HttpTransport) -> None:
        self._transport = transport

    def url(self, deployment: Deployment, route: Route) -> str:
        return f"{(deployment.api_base or OPENAI_API_BASE).rstrip('/')}/{route.value}"

    def headers(self, deployment: Deployment) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if deployment.api_key:
            headers["Authorization"] = f"Bearer {deployment.api_key}"
        return headers

    async def open(self, deployment: Deployment, route: Route, body: dict[str, Any], stream: bool) -> HttpResponse:
        payload = orjson.dumps({**body, "model": deployment.upstream_model})
        timeout_s = (deployment.stream_timeout_s if stream else None) or deployment.timeout_s
        secrets = (deployment.api_key,) if deployment.api_key else ()
        return await self._transport.post(
            self.url(deployment, route),
            self.headers(deployment),
            payload,
            timeout_s=timeout_s,
            secrets=secrets,
            verify=deployment.ssl_verify,
        )

    async def aclose(self) -> None:
        """The transport is shared and closed by its owner."""
