"""Who may call the LLM routes: the master key in each header clients use, and the exact 401s otherwise.

Guards an open proxy (requests served without the key, or with a wrong one), error bodies that break the
SDK's error parsing, and a master key from the environment being ignored when the config has none.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.e2e.e2e_stack import async_client, mock_deployment, proxy_config, sync_client
from tests.support.proxy import RunningProxy, running_proxy

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
CHAT = {"model": "gpt-3.5-turbo", "messages": MESSAGES}


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningProxy]:
    config = proxy_config([mock_deployment("gpt-3.5-turbo")])
    with running_proxy(tmp_path_factory.mktemp("auth"), config) as running:
        yield running


def _post_chat(proxy: RunningProxy, headers: dict[str, str], path: str = "/v1/chat/completions") -> httpx.Response:
    with httpx.Client(timeout=10) as http:
        return http.post(proxy.url + path, json=CHAT, headers=headers)


# ---- accepted keys --------------------------------------------------------------------------------------


def test_master_key_as_bearer_token(proxy: RunningProxy) -> None:
    with sync_client(proxy) as client:
        reply = client.chat.completions.create(model="gpt-3.5-turbo", messages=MESSAGES)
    assert reply.choices


@pytest.mark.parametrize("value", ["{key}", "Bearer {key}"])
async def test_master_key_in_x_litellm_api_key_wins_over_sdk_authorization(proxy: RunningProxy, value: str) -> None:
    # The SDK always sends `Authorization: Bearer <api_key>`; x-litellm-api-key must outrank it.
    headers = {"x-litellm-api-key": value.format(key=proxy.master_key)}
    async with openai.AsyncOpenAI(
        base_url=proxy.url + "/v1", api_key="sk-not-the-proxy-key", default_headers=headers, max_retries=0
    ) as client:
        reply = await client.chat.completions.create(model="gpt-3.5-turbo", messages=MESSAGES)
    assert reply.choices


def test_master_key_in_api_key_header(proxy: RunningProxy) -> None:
    response = _post_chat(proxy, {"api-key": proxy.master_key})
    assert response.status_code == 200, response.text


def test_master_key_in_x_litellm_api_key_alone(proxy: RunningProxy) -> None:
    response = _post_chat(proxy, {"x-litellm-api-key": proxy.master_key})
    assert response.status_code == 200, response.text


# ---- refused -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/chat/completions", "/v1/embeddings"])
def test_missing_key_is_401_with_openai_envelope(proxy: RunningProxy, path: str) -> None:
    response = _post_chat(proxy, {}, path)

    assert response.status_code == 401
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "error": {
            "message": "Authentication Error, No api key passed in.",
            "type": "auth_error",
            "param": None,
            "code": "401",
        }
    }


def test_wrong_key_is_401_through_the_sdk(proxy: RunningProxy) -> None:
    with sync_client(proxy, api_key="sk-wrong-key") as client, pytest.raises(openai.AuthenticationError) as raised:
        client.chat.completions.create(model="gpt-3.5-turbo", messages=MESSAGES)

    assert raised.value.status_code == 401
    assert raised.value.response.json() == {
        "error": {
            "message": "Authentication Error, Invalid proxy server token passed. Unable to find token.",
            "type": "auth_error",
            "param": None,
            "code": "401",
        }
    }


async def test_wrong_key_is_401_for_streams_and_model_list(proxy: RunningProxy) -> None:
    async with async_client(proxy, api_key="sk-wrong-key") as client:
        with pytest.raises(openai.AuthenticationError):
            await client.chat.completions.create(model="gpt-3.5-turbo", messages=MESSAGES, stream=True)
        with pytest.raises(openai.AuthenticationError):
            await client.models.list()


def test_wrong_key_is_refused_before_the_body_is_judged(proxy: RunningProxy) -> None:
    with httpx.Client(timeout=10) as http:
        response = http.post(proxy.url + "/v1/chat/completions", content=b"{not json", headers={"api-key": "bad"})
    assert response.status_code == 401


# ---- where the key comes from -------------------------------------------------------------------------------


def test_master_key_from_environment_when_config_has_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Both variables and their precedence are covered by tests/config/test_config_loader.py.
    monkeypatch.delenv("HAIMAKER_MASTER_KEY", raising=False)
    monkeypatch.setenv("LITELLM_MASTER_KEY", "sk-from-the-environment")
    config = {"model_list": [mock_deployment("gpt-3.5-turbo")]}
    with running_proxy(tmp_path, config) as proxy:
        accepted = _post_chat(proxy, {"Authorization": "Bearer sk-from-the-environment"})
        refused = _post_chat(proxy, {"Authorization": f"Bearer {proxy.master_key}"})

    assert accepted.status_code == 200
    assert refused.status_code == 401


def test_no_master_key_anywhere_refuses_llm_routes_with_a_hint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LITELLM_MASTER_KEY", raising=False)
    monkeypatch.delenv("HAIMAKER_MASTER_KEY", raising=False)
    with running_proxy(tmp_path, {"model_list": [mock_deployment("gpt-3.5-turbo")]}) as proxy:
        response = _post_chat(proxy, {"Authorization": "Bearer anything"})

    assert response.status_code == 403
    assert "master_key" in response.json()["error"]["message"]
    assert response.json()["error"]["code"] == "403"


def test_allow_unauthenticated_serves_without_a_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LITELLM_MASTER_KEY", raising=False)
    monkeypatch.delenv("HAIMAKER_MASTER_KEY", raising=False)
    config = {
        "model_list": [mock_deployment("gpt-3.5-turbo")],
        "general_settings": {"allow_unauthenticated": True},
    }
    with running_proxy(tmp_path, config) as proxy:
        response = _post_chat(proxy, {})
    assert response.status_code == 200
