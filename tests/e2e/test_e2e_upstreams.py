"""What the upstream receives: path, query, headers and body, for `openai/` and `azure/` deployments.

Guards the pass-through promise (every field the proxy does not own reaches the upstream untouched, only
`model` is replaced by the upstream's name) and the credential boundary (the upstream sees its own key, never
the proxy key; the client never sees the upstream key).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.e2e.e2e_stack import (
    async_client,
    azure_deployment,
    openai_deployment,
    proxy_config,
    sync_client,
)
from tests.support.fakes import FakeAzureOpenAI, FakeOpenAI, RecordedRequest
from tests.support.proxy import RunningProxy, running_proxy

MESSAGES: list[ChatCompletionMessageParam] = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "héllo wörld ✓"},
]
# Fields the proxy has no business touching, including ones OpenAI does not know (yet).
EXTRA_FIELDS: dict[str, Any] = {
    "temperature": 0.25,
    "top_p": 0.9,
    "seed": 7,
    "logit_bias": {"50256": -100},
    "response_format": {"type": "json_object"},
    "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}],
    "vendor_extension": {"nested": [1, 2.5, None, True, "ünïcode"], "deep": {"x": {"y": []}}},
    "user": "customer-42",
}
AZURE_DEPLOYMENT = "prod-gpt4o"
AZURE_API_VERSION = "2024-08-01-preview"


@pytest.fixture(scope="module")
def proxy(
    tmp_path_factory: pytest.TempPathFactory, openai_server: FakeOpenAI, azure_server: FakeAzureOpenAI
) -> Iterator[RunningProxy]:
    config = proxy_config(
        [
            openai_deployment("public-chat", openai_server, upstream_model="gpt-4o-mini"),
            openai_deployment("public-embed", openai_server, upstream_model="text-embedding-3-small"),
            azure_deployment("azure-chat", azure_server, AZURE_DEPLOYMENT, api_version=AZURE_API_VERSION),
            _without_api_version(azure_deployment("azure-default", azure_server, AZURE_DEPLOYMENT)),
        ]
    )
    with running_proxy(tmp_path_factory.mktemp("upstreams"), config) as running:
        yield running


def _without_api_version(entry: dict[str, Any]) -> dict[str, Any]:
    del entry["litellm_params"]["api_version"]
    return entry


def _assert_no_proxy_credentials(request: RecordedRequest, proxy: RunningProxy) -> None:
    for name, value in request.headers.items():
        assert proxy.master_key not in value, f"the proxy key leaked upstream in {name}"
    assert "x-litellm-api-key" not in request.headers
    assert proxy.master_key.encode() not in request.raw_body


# ---- openai/ --------------------------------------------------------------------------------------------


def test_openai_upstream_gets_every_unknown_field_untouched_and_its_own_model_name(
    proxy: RunningProxy, openai_upstream: FakeOpenAI
) -> None:
    with sync_client(proxy) as client:
        client.chat.completions.create(model="public-chat", messages=MESSAGES, extra_body=EXTRA_FIELDS)

    received = openai_upstream.last_request
    assert received.method == "POST"
    assert received.path == "/v1/chat/completions"
    assert received.query == {}
    assert received.json == {"messages": MESSAGES, "model": "gpt-4o-mini", **EXTRA_FIELDS}
    assert "stream_options" not in received.json, "nothing injected into a non-streaming call"


def test_openai_upstream_sees_its_own_bearer_key_never_the_proxy_key(
    proxy: RunningProxy, openai_upstream: FakeOpenAI
) -> None:
    with sync_client(proxy) as client:
        client.chat.completions.create(model="public-chat", messages=MESSAGES)

    received = openai_upstream.last_request
    assert received.headers["authorization"] == f"Bearer {openai_upstream.api_key}"
    assert received.headers["content-type"] == "application/json"
    _assert_no_proxy_credentials(received, proxy)


async def test_openai_streaming_request_asks_upstream_for_usage(
    proxy: RunningProxy, openai_upstream: FakeOpenAI
) -> None:
    async with async_client(proxy) as client:
        stream = await client.chat.completions.create(
            model="public-chat", messages=MESSAGES, stream=True, extra_body=EXTRA_FIELDS
        )
        [chunk async for chunk in stream]

    body = openai_upstream.last_request.json
    assert body == {
        "messages": MESSAGES,
        "model": "gpt-4o-mini",
        "stream": True,
        **EXTRA_FIELDS,
        "stream_options": {"include_usage": True},
    }


def test_openai_stream_options_of_the_client_are_kept_alongside_include_usage(
    proxy: RunningProxy, openai_upstream: FakeOpenAI
) -> None:
    with sync_client(proxy) as client:
        list(
            client.chat.completions.create(
                model="public-chat",
                messages=MESSAGES,
                stream=True,
                stream_options={"include_usage": False},
                extra_body={"stream_options": {"include_usage": False, "include_obfuscation": False}},
            )
        )

    options = openai_upstream.last_request.json["stream_options"]
    assert options == {"include_usage": True, "include_obfuscation": False}


def test_openai_embeddings_and_completions_reach_their_upstream_paths(
    proxy: RunningProxy, openai_upstream: FakeOpenAI
) -> None:
    with sync_client(proxy) as client:
        client.embeddings.create(model="public-embed", input=["a", "b"], dimensions=4, extra_body={"x_tag": 1})
        client.completions.create(model="public-chat", prompt=["p1", "p2"], max_tokens=3, extra_body={"x_tag": 2})

    embed, complete = openai_upstream.requests
    assert embed.path == "/v1/embeddings"
    assert embed.json == {
        "input": ["a", "b"],
        "model": "text-embedding-3-small",
        "dimensions": 4,
        "encoding_format": "base64",
        "x_tag": 1,
    }
    assert complete.path == "/v1/completions"
    assert complete.json == {"model": "gpt-4o-mini", "prompt": ["p1", "p2"], "max_tokens": 3, "x_tag": 2}


# ---- azure/ ---------------------------------------------------------------------------------------------


def test_azure_upstream_gets_deployment_url_api_version_and_api_key_header(
    proxy: RunningProxy, azure_upstream: FakeAzureOpenAI
) -> None:
    with sync_client(proxy) as client:
        reply = client.chat.completions.create(model="azure-chat", messages=MESSAGES, extra_body=EXTRA_FIELDS)

    received = azure_upstream.last_request
    assert received.path == f"/openai/deployments/{AZURE_DEPLOYMENT}/chat/completions"
    assert received.query == {"api-version": AZURE_API_VERSION}
    assert received.headers["api-key"] == azure_upstream.api_key
    assert "authorization" not in received.headers
    assert received.json == {"messages": MESSAGES, "model": AZURE_DEPLOYMENT, **EXTRA_FIELDS}
    _assert_no_proxy_credentials(received, proxy)
    assert reply.choices[0].message.content == "Hello! This is the fake upstream speaking."


async def test_azure_stream_relays_content_filter_chunks_and_the_reply(
    proxy: RunningProxy, azure_upstream: FakeAzureOpenAI
) -> None:
    async with async_client(proxy) as client:
        stream = await client.chat.completions.create(model="azure-chat", messages=MESSAGES, stream=True)
        chunks = [chunk async for chunk in stream]

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello! This is the fake upstream speaking."
    received = azure_upstream.last_request
    assert received.json["stream_options"] == {"include_usage": True}
    assert all(c.usage is None for c in chunks), "the usage chunk the proxy asked for is not the client's"


def test_azure_embeddings_and_completions_use_deployment_paths(
    proxy: RunningProxy, azure_upstream: FakeAzureOpenAI
) -> None:
    with sync_client(proxy) as client:
        client.embeddings.create(model="azure-chat", input="text")
        client.completions.create(model="azure-chat", prompt="text")

    paths = [r.path for r in azure_upstream.requests]
    assert paths == [
        f"/openai/deployments/{AZURE_DEPLOYMENT}/embeddings",
        f"/openai/deployments/{AZURE_DEPLOYMENT}/completions",
    ]
    assert all(r.query == {"api-version": AZURE_API_VERSION} for r in azure_upstream.requests)


def test_azure_default_api_version_is_one_azure_accepts(proxy: RunningProxy, azure_upstream: FakeAzureOpenAI) -> None:
    with sync_client(proxy) as client:
        reply = client.chat.completions.create(model="azure-default", messages=MESSAGES)

    assert reply.choices  # the fake refuses api-versions Azure does not serve
    assert azure_upstream.last_request.query["api-version"]
