"""`drop_params` (LiteLLM's), one policy for every translating provider: a request-level field the provider has no
place for is a 400 naming it, unless the deployment (or `litellm_settings`) sets `drop_params: true`."""

from __future__ import annotations

import pytest

from haimaker.accounting.pricing import PriceTable
from haimaker.config.schema import Config
from haimaker.errors import BadRequestError
from haimaker.providers.anthropic_translate import messages_request
from haimaker.providers.converse import converse_request
from haimaker.providers.gemini_request import gemini_request
from haimaker.providers.router import build_deployments

MESSAGES = [{"role": "user", "content": "hi"}]


def test_gemini_refuses_logit_bias_unless_dropped() -> None:
    body = {"messages": MESSAGES, "logit_bias": {"50256": -100}}
    with pytest.raises(BadRequestError) as refused:
        gemini_request(dict(body))
    assert refused.value.param == "logit_bias"
    assert "logit_bias" not in str(gemini_request(dict(body), drop_params=True))


def test_bedrock_refuses_n_unless_dropped() -> None:
    body = {"messages": MESSAGES, "n": 2}
    with pytest.raises(BadRequestError) as refused:
        converse_request(body)
    assert refused.value.param == "n"
    assert converse_request(body, drop_params=True)["messages"]


def test_anthropic_refuses_openai_only_fields_unless_dropped() -> None:
    body = {"messages": MESSAGES, "seed": 7}
    with pytest.raises(BadRequestError):
        messages_request(body, "claude-3-5-sonnet", default_max_tokens=None)
    assert "seed" not in messages_request(body, "claude-3-5-sonnet", default_max_tokens=None, drop_params=True)


def test_litellm_settings_drop_params_is_every_deployments_default() -> None:
    config = Config.model_validate(
        {
            "model_list": [
                {"model_name": "a", "litellm_params": {"model": "gemini/gemini-2.0-flash", "api_key": "k"}},
                {"model_name": "b", "litellm_params": {"model": "openai/x", "drop_params": False}},
            ],
            "litellm_settings": {"drop_params": True},
        }
    )
    inherited, own = build_deployments(config, PriceTable.bundled())
    assert inherited.params["drop_params"] is True
    assert own.params["drop_params"] is False
