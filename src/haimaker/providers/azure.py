"""Azure OpenAI: deployment URLs, `api-version`, and the `api-key` header.

The Responses API is not under a deployment: `<api_base>/openai/responses?api-version=...` with the deployment as
the body's `model` (LiteLLM's `AzureOpenAIResponsesAPIConfig.get_complete_url`). Dated GA api-versions predate it
there and 404, so, as LiteLLM, a deployment pinned to one for chat asks for `preview` unless it sets
`responses_api_version`.
"""

from __future__ import annotations

import re
from urllib.parse import quote

from haimaker.providers.base import Deployment, Route
from haimaker.providers.openai_compat import OpenAIProvider

DEFAULT_AZURE_API_VERSION = "2024-10-21"
DEFAULT_AZURE_RESPONSES_API_VERSION = "preview"
_DATED_GA_API_VERSION = re.compile(r"\d{4}-\d{2}-\d{2}")


class AzureProvider(OpenAIProvider):
    """`azure/<deployment>`: `<api_base>/openai/deployments/<deployment>/<route>?api-version=...`."""

    def url(self, deployment: Deployment, route: Route) -> str:
        base = (deployment.api_base or "").rstrip("/")
        if route is Route.RESPONSES:
            return f"{base}/openai/responses?api-version={quote(_responses_api_version(deployment), safe='')}"
        version = deployment.api_version or DEFAULT_AZURE_API_VERSION
        name = quote(deployment.upstream_model, safe="")
        return f"{base}/openai/deployments/{name}/{route.value}?api-version={quote(version, safe='')}"

    def headers(self, deployment: Deployment) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if deployment.api_key:
            headers["api-key"] = deployment.api_key
        return headers


def _responses_api_version(deployment: Deployment) -> str:
    configured = deployment.params.get("responses_api_version")
    if isinstance(configured, str) and configured:
        return configured
    version = deployment.api_version
    if version is None or _DATED_GA_API_VERSION.fullmatch(version):
        return DEFAULT_AZURE_RESPONSES_API_VERSION
    return version
