"""Which provider serves each `litellm_params.model` prefix (`openai/...`, `anthropic/...`): one line per provider.

Every provider shares the app's one `HttpTransport` (connection pools, TLS, response caps, redaction of errors).
"""

from __future__ import annotations

import os

from haimaker.accounting.tokens import TokenCounter
from haimaker.providers.anthropic import AnthropicProvider
from haimaker.providers.azure import AzureProvider
from haimaker.providers.base import Provider
from haimaker.providers.bedrock import BedrockProvider
from haimaker.providers.gemini import GeminiProvider
from haimaker.providers.http import HttpTransport
from haimaker.providers.mock import MockProvider
from haimaker.providers.openai_compat import OpenAIProvider
from haimaker.providers.vertex import VertexProvider


def build_providers(transport: HttpTransport, tokens: TokenCounter) -> dict[str, Provider]:
    """The provider of each model prefix the config may use (`config/loader.py` checks names against these)."""
    return {
        "openai": OpenAIProvider(transport),
        "azure": AzureProvider(transport),
        "bedrock": BedrockProvider(transport),
        # LiteLLM reads ANTHROPIC_API_KEY for deployments that configure no api_key.
        "anthropic": AnthropicProvider(transport, default_api_key=os.environ.get("ANTHROPIC_API_KEY") or None),
        "gemini": GeminiProvider(transport),
        "vertex_ai": VertexProvider(transport),
        "mock": MockProvider(tokens),
    }
