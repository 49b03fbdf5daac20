"""`vertex_ai/` against the fake Vertex: a bearer token the fake's own OAuth endpoint issued to a test service
account (signature checked), reused until near expiry, refreshed once under concurrency; the project/location
path; credentials as a mapping, a JSON string or a file; failures as scrubbed 502s."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from haimaker.errors import BadGatewayError, BadRequestError, UpstreamStatusError
from haimaker.providers.base import Deployment, Route
from haimaker.providers.http import HttpTransport
from haimaker.providers.vertex import VertexProvider, vertex_models_url
from tests.support.fakes.gemini import FakeGoogle


def make_deployment(fake: FakeGoogle, credentials: object, **params: Any) -> Deployment:
    all_params = {"vertex_credentials": credentials, "vertex_location": fake.location, **params}
    return Deployment(
        model_id="v1",
        model_name="flash",
        provider="vertex_ai",
        upstream_model="gemini-2.5-flash",
        api_base=fake.url,
        api_key=None,
        api_version=None,
        timeout_s=10.0,
        stream_timeout_s=None,
        max_retries=None,
        region_name=None,
        price=None,
        max_output_tokens=None,
        params={k: v for k, v in all_params.items() if v is not None},
    )


@pytest.fixture
async def fake() -> AsyncIterator[FakeGoogle]:
    async with FakeGoogle.running() as server:
        yield server


@pytest.fixture
async def transport() -> AsyncIterator[HttpTransport]:
    transport = HttpTransport()
    yield transport
    await transport.aclose()


BODY = {"messages": [{"role": "user", "content": "hello there"}]}


async def test_calls_the_project_location_path_with_a_token_from_the_service_account(
    fake: FakeGoogle, transport: HttpTransport
) -> None:
    provider = VertexProvider(transport)
    deployment = make_deployment(fake, fake.service_account())
    answer = orjson.loads(await (await provider.open(deployment, Route.CHAT, BODY, False)).read())

    assert answer["choices"][0]["message"]["content"] == "Hello from the fake Gemini."
    request = fake.generation_requests()[-1]
    assert request.path == (
        "/v1/projects/fake-project/locations/europe-west4/publishers/google/models/gemini-2.5-flash:generateContent"
    )
    assert request.headers["authorization"].startswith("Bearer ya29.fake-")
    assert fake.accounts.issued == 1


async def test_the_token_is_reused_and_refreshed_once_under_concurrency(
    fake: FakeGoogle, transport: HttpTransport
) -> None:
    provider = VertexProvider(transport)
    deployment = make_deployment(fake, fake.service_account())

    async def call() -> bytes:
        return await (await provider.open(deployment, Route.CHAT, BODY, False)).read()

    await asyncio.gather(*(call() for _ in range(8)))
    await call()
    assert fake.accounts.issued == 1
    tokens = {r.headers["authorization"] for r in fake.generation_requests()}
    assert len(tokens) == 1


async def test_a_token_near_expiry_is_refreshed(fake: FakeGoogle, transport: HttpTransport) -> None:
    fake.accounts.token_lifetime_s = 60  # inside google-auth's refresh threshold: stale at once
    provider = VertexProvider(transport)
    deployment = make_deployment(fake, fake.service_account())
    for _ in range(2):
        await (await provider.open(deployment, Route.CHAT, BODY, False)).read()
    assert fake.accounts.issued == 2


async def test_credentials_as_a_json_string_or_a_file(
    fake: FakeGoogle, transport: HttpTransport, tmp_path: Path
) -> None:
    provider = VertexProvider(transport)
    as_string = json.dumps(fake.service_account())
    path = tmp_path / "sa.json"
    path.write_text(json.dumps(fake.service_account()))
    for credentials in (as_string, str(path)):
        await (await provider.open(make_deployment(fake, credentials), Route.CHAT, BODY, False)).read()
    assert fake.accounts.issued == 2


async def test_vertex_project_overrides_the_accounts_project(fake: FakeGoogle, transport: HttpTransport) -> None:
    deployment = make_deployment(fake, fake.service_account(project_id="other"), vertex_project="fake-project")
    await (await VertexProvider(transport).open(deployment, Route.CHAT, BODY, False)).read()
    with pytest.raises(UpstreamStatusError) as caught:
        deployment = make_deployment(fake, fake.service_account(project_id="other"))
        await VertexProvider(transport).open(deployment, Route.CHAT, BODY, False)
    assert caught.value.status_code == 403


async def test_no_project_anywhere_is_a_400_naming_vertex_project(
    fake: FakeGoogle, transport: HttpTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("VERTEXAI_PROJECT", raising=False)
    monkeypatch.delenv("GOOGLE_CLOUD_PROJECT", raising=False)
    deployment = make_deployment(fake, fake.service_account(project_id=None))
    with pytest.raises(BadRequestError, match="vertex_project"):
        await VertexProvider(transport).open(deployment, Route.CHAT, BODY, False)


async def test_a_key_the_token_endpoint_refuses_is_a_502(fake: FakeGoogle, transport: HttpTransport) -> None:
    foreign = FakeGoogle().accounts.create(fake.token_uri)  # a key the fake never trusted
    with pytest.raises(BadGatewayError, match="could not get an access token") as caught:
        await VertexProvider(transport).open(make_deployment(fake, foreign), Route.CHAT, BODY, False)
    assert foreign["private_key"][40:80] not in caught.value.message
    assert fake.generation_requests() == []


async def test_unreadable_credentials_are_a_502_that_quotes_nothing(fake: FakeGoogle, transport: HttpTransport) -> None:
    secret = '{"type": "service_account", "private_key": "-----BEGIN PRIVATE KEY-----abcdefgh"}'
    with pytest.raises(BadGatewayError) as caught:
        await VertexProvider(transport).open(make_deployment(fake, secret), Route.CHAT, BODY, False)
    assert "abcdefgh" not in caught.value.message


async def test_stream_through_vertex(fake: FakeGoogle, transport: HttpTransport) -> None:
    deployment = make_deployment(fake, fake.service_account())
    body = {**BODY, "stream": True, "stream_options": {"include_usage": True}}
    response = await VertexProvider(transport).open(deployment, Route.CHAT, body, True)
    raw = b"".join([piece async for piece in response.iter_chunks()])
    assert fake.generation_requests()[-1].path.endswith(":streamGenerateContent")
    assert raw.endswith(b"data: [DONE]\n\n")
    assert b'"usage":{"prompt_tokens":2' in raw


def test_urls_for_regions_global_and_api_bases() -> None:
    tail = "/projects/p/locations/{}/publishers/google/models/m"
    assert vertex_models_url(None, "p", "us-central1", "m") == (
        "https://us-central1-aiplatform.googleapis.com/v1" + tail.format("us-central1")
    )
    assert vertex_models_url(None, "p", "global", "m") == "https://aiplatform.googleapis.com/v1" + tail.format("global")
    assert vertex_models_url("https://proxy.example", "p", "l", "m") == "https://proxy.example/v1" + tail.format("l")
    assert vertex_models_url("https://proxy.example/v1beta1/", "p", "l", "m") == (
        "https://proxy.example/v1beta1" + tail.format("l")
    )
    named = "https://proxy.example/custom/models/m"
    assert vertex_models_url(named, "p", "l", "m") == named


async def test_without_vertex_credentials_application_default_credentials_are_used(
    fake: FakeGoogle, transport: HttpTransport, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "adc.json"
    path.write_text(json.dumps(fake.service_account(project_id="fake-project")))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(path))
    monkeypatch.delenv("VERTEXAI_PROJECT", raising=False)
    monkeypatch.delenv("GOOGLE_CLOUD_PROJECT", raising=False)
    deployment = make_deployment(fake, None)
    answer = orjson.loads(await (await VertexProvider(transport).open(deployment, Route.CHAT, BODY, False)).read())
    assert answer["choices"][0]["message"]["content"] == "Hello from the fake Gemini."
    assert fake.accounts.issued == 1
