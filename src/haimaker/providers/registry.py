"""Which provider serves each `litellm_params.model` prefix (`openai/...`, `anthropic/...`): one line per provider.

Every provider shares the app's one `HttpTransport` (connection pools, TLS, response caps, redaction of errors).
"""

from __future__ import annotations

from haimaker.accounting.tokens import TokenCounter
from haimaker.providers.azure import AzureProvider
from haimaker.providers.base import Provider
from haimaker.providers.http import HttpTransport
from haimaker.providers.mock import MockProvider
from haimaker.providers.openai_compat import OpenAIProvider


def build_providers(transport: HttpTransport, tokens: TokenCounter) -> dict[str, Provider]:
    """The provider of each model prefix the config may use (`config/loader.py` checks names against these)."""
    return {
        "openai": OpenAIProvider(transport),
        "azure": AzureProvider(transport),
        "mock": MockProvider(tokens),
    }
