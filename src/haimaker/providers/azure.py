"""Azure OpenAI: deployment URLs, `api-version`, and the `api-key` header."""

from __future__ import annotations

from urllib.parse import quote

from haimaker.providers.base import Deployment, Route
from haimaker.providers.openai_compat import OpenAIProvider

DEFAULT_AZURE_API_VERSION = "2024-10-21"


class AzureProvider(OpenAIProvider):
    """`azure/<deployment>`: `<api_base>/openai/deployments/<deployment>/<route>?api-version=...`."""

    def url(self, deployment: Deployment, route: Route) -> str:
        base = (deployment.api_base or "").rstrip("/")
        version = deployment.api_version or DEFAULT_AZURE_API_VERSION
        name = quote(deployment.upstream_model, safe="")
        return f"{base}/openai/deployments/{name}/{route.value}?api-version={quote(version, safe='')}"

    def headers(self, deployment: Deployment) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if deployment.api_key:
            headers["api-key"] = deployment.api_key
        return headers
