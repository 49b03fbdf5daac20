"""Clients written for Azure OpenAI (deployment URLs, `api-key` header) and `models.retrieve` work against us."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest

from tests.support.proxy import base_config, running_proxy


def test_azure_openai_sdk_client_calls_deployment_urls(tmp_path: Path) -> None:
    with running_proxy(tmp_path, base_config()) as proxy:
        with openai.AzureOpenAI(
            azure_endpoint=proxy.url, api_key=proxy.master_key, api_version="2024-10-21", max_retries=0
        ) as client:
            reply = client.chat.completions.create(
                model="gpt-3.5-turbo", messages=[{"role": "user", "content": "hi"}], user="azure-customer"
            )
            assert reply.choices[0].message.content
            chunks = list(
                client.chat.completions.create(
                    model="gpt-3.5-turbo", messages=[{"role": "user", "content": "hi"}], stream=True
                )
            )
            assert any(c.choices and c.choices[0].delta.content for c in chunks)
        with proxy.client() as admin:
            assert admin.get("/customer/info", params={"end_user_id": "azure-customer"}).status_code == 200


def test_models_retrieve_answers_configured_models_and_404s_others(tmp_path: Path) -> None:
    with running_proxy(tmp_path, base_config()) as proxy:
        with openai.OpenAI(base_url=proxy.url + "/v1", api_key=proxy.master_key, max_retries=0) as client:
            assert client.models.retrieve("gpt-3.5-turbo").id == "gpt-3.5-turbo"
            with pytest.raises(openai.NotFoundError):
                client.models.retrieve("no-such-model")
