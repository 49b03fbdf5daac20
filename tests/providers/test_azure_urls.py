"""Azure OpenAI URLs: chat and the rest under the deployment, the Responses API at `/openai/responses` with the
api-version LiteLLM uses (a dated GA chat version means `preview` for Responses; `responses_api_version` wins)."""

from __future__ import annotations

from typing import Any

import pytest

from haimaker.providers.azure import AzureProvider
from haimaker.providers.base import Deployment, Route
from haimaker.providers.http import HttpTransport
from haimaker.providers.redaction import Redactor


def _deployment(api_version: str | None, **params: Any) -> Deployment:
    return Deployment(
        model_id="m",
        model_name="gpt-4o",
        provider="azure",
        upstream_model="my deployment",
        api_base="https://acme.openai.azure.com/",
        api_key="k" * 32,
        api_version=api_version,
        timeout_s=30,
        stream_timeout_s=None,
        max_retries=None,
        region_name=None,
        price=None,
        max_output_tokens=None,
        params=params,
    )


@pytest.fixture
def azure() -> AzureProvider:
    return AzureProvider(HttpTransport(Redactor()))


def test_chat_goes_to_the_deployment_with_its_api_version(azure: AzureProvider) -> None:
    url = azure.url(_deployment("2024-10-21"), Route.CHAT)
    assert (
        url
        == "https://acme.openai.azure.com/openai/deployments/my%20deployment/chat/completions?api-version=2024-10-21"
    )
    assert azure.headers(_deployment(None))["api-key"] == "k" * 32


@pytest.mark.parametrize(
    ("api_version", "params", "expected"),
    [
        ("2024-10-21", {}, "preview"),  # a dated GA version has no Responses API
        (None, {}, "preview"),
        ("2025-04-01-preview", {}, "2025-04-01-preview"),
        ("2024-10-21", {"responses_api_version": "2025-03-01-preview"}, "2025-03-01-preview"),
    ],
)
def test_responses_go_to_openai_responses_with_its_own_api_version(
    azure: AzureProvider, api_version: str | None, params: dict[str, Any], expected: str
) -> None:
    url = azure.url(_deployment(api_version, **params), Route.RESPONSES)
    assert url == f"https://acme.openai.azure.com/openai/responses?api-version={expected}"
