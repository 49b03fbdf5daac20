"""`bedrock/` against the strict fake Bedrock runtime: SigV4 signatures the fake recomputes, credentials from the
config, a profile, the environment or a refreshing credential process, ConverseStream frames split across reads.

Guards signing that AWS would refuse (wrong path encoding, a session token left unsigned), credentials looked up on
the event loop or on every request, refreshable credentials that are never refreshed, and a region silently guessed.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from haimaker.errors import BadGatewayError, BadRequestError, UpstreamStatusError
from haimaker.providers.base import Deployment, Route
from haimaker.providers.bedrock import BedrockProvider, region_of
from haimaker.providers.http import HttpTransport
from tests.support.fakes import Behavior
from tests.support.fakes.bedrock import (
    ACCESS_KEY_ID,
    REGION,
    SECRET_ACCESS_KEY,
    SESSION_TOKEN,
    FakeBedrock,
    isolate_aws_environment,
)

MODEL = "anthropic.claude-3-5-sonnet-20241022-v2:0"
STATIC = {"aws_access_key_id": ACCESS_KEY_ID, "aws_secret_access_key": SECRET_ACCESS_KEY, "aws_region_name": REGION}


def make_deployment(fake: FakeBedrock, params: dict[str, Any], **overrides: Any) -> Deployment:
    fields: dict[str, Any] = {
        "model_id": "b1",
        "model_name": "claude",
        "provider": "bedrock",
        "upstream_model": MODEL,
        "api_base": fake.url,
        "api_key": None,
        "api_version": None,
        "timeout_s": 10.0,
        "stream_timeout_s": None,
        "max_retries": None,
        "region_name": None,
        "price": None,
        "max_output_tokens": None,
        "params": {"model": f"bedrock/{MODEL}", **params},
    }
    return Deployment(**{**fields, **overrides})


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    isolate_aws_environment(monkeypatch, tmp_path)


@pytest.fixture
async def fake() -> AsyncIterator[FakeBedrock]:
    async with FakeBedrock.running() as server:
        yield server


@pytest.fixture
async def transport() -> AsyncIterator[HttpTransport]:
    transport = HttpTransport()
    yield transport
    await transport.aclose()


def chat(**fields: Any) -> dict[str, Any]:
    return {"model": "claude", "messages": [{"role": "user", "content": "Say hello please"}], **fields}


async def sse(response: Any) -> list[Any]:
    raw = b"".join([piece async for piece in response.iter_chunks()])
    out: list[Any] = []
    for event in raw.split(b"\n\n"):
        if event.startswith(b"data: "):
            data = event[6:]
            out.append("[DONE]" if data == b"[DONE]" else orjson.loads(data))
    return out


async def test_json_call_is_signed_with_sigv4_and_answers_a_chat_completion(
    fake: FakeBedrock, transport: HttpTransport
) -> None:
    response = await BedrockProvider(transport).open(make_deployment(fake, STATIC), Route.CHAT, chat(), False)
    answer = orjson.loads(await response.read())

    assert fake.auth_failures == []
    request = fake.last_request
    assert request.path == f"/model/{MODEL}/converse"
    assert request.headers["authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY_ID}/")
    assert f"/{REGION}/bedrock/aws4_request" in request.headers["authorization"]
    assert "x-amz-security-token" not in request.headers
    assert request.json == {"messages": [{"role": "user", "content": [{"text": "Say hello please"}]}]}
    assert answer["object"] == "chat.completion"
    assert answer["model"] == MODEL
    assert answer["choices"][0]["message"] == {"role": "assistant", "content": Behavior().reply}
    assert answer["usage"]["prompt_tokens"] == 3


async def test_model_id_is_url_quoted_in_the_signed_path(fake: FakeBedrock, transport: HttpTransport) -> None:
    deployment = make_deployment(fake, STATIC, upstream_model=f"converse/us.{MODEL}")
    await (await BedrockProvider(transport).open(deployment, Route.CHAT, chat(), False)).read()
    assert fake.auth_failures == []
    assert fake.last_request.path == f"/model/us.{MODEL}/converse"


async def test_session_token_is_sent_and_signed(transport: HttpTransport) -> None:
    async with FakeBedrock.running(session_token=SESSION_TOKEN) as fake:
        params = {**STATIC, "aws_session_token": SESSION_TOKEN}
        await (await BedrockProvider(transport).open(make_deployment(fake, params), Route.CHAT, chat(), False)).read()
        assert fake.auth_failures == []
        assert fake.last_request.headers["x-amz-security-token"] == SESSION_TOKEN
        assert "x-amz-security-token" in fake.last_request.headers["authorization"]

        with pytest.raises(UpstreamStatusError) as caught:
            await BedrockProvider(transport).open(make_deployment(fake, STATIC), Route.CHAT, chat(), False)
        assert caught.value.status_code == 403


async def test_wrong_secret_is_a_403_that_never_echoes_the_secret(fake: FakeBedrock, transport: HttpTransport) -> None:
    wrong = "wrong-secret-key-0123456789abcdefghijklmn"
    params = {**STATIC, "aws_secret_access_key": wrong}
    with pytest.raises(UpstreamStatusError) as caught:
        await BedrockProvider(transport).open(make_deployment(fake, params), Route.CHAT, chat(), False)
    assert caught.value.status_code == 403
    assert wrong not in caught.value.message
    assert fake.auth_failures and "signature" in fake.auth_failures[0]


@pytest.mark.parametrize("split_bytes", [1, 7, 100_000])
async def test_stream_frames_split_across_reads_become_openai_chunks(
    transport: HttpTransport, split_bytes: int
) -> None:
    async with FakeBedrock.running(split_bytes=split_bytes) as fake:
        body = chat(stream=True, stream_options={"include_usage": True})
        response = await BedrockProvider(transport).open(make_deployment(fake, STATIC), Route.CHAT, body, True)
        chunks = await sse(response)
        assert response.at_end()
    assert fake.last_request.path == f"/model/{MODEL}/converse-stream"
    assert fake.auth_failures == []
    *body_chunks, usage_chunk, done = chunks
    assert done == "[DONE]"
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in body_chunks) == Behavior().reply
    assert body_chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert usage_chunk["usage"]["completion_tokens"] == len(Behavior().reply.split())


async def test_stream_exception_fails_the_stream(fake: FakeBedrock, transport: HttpTransport) -> None:
    fake.behavior = Behavior(stream_error={"type": "throttlingException", "message": "Too many tokens"})
    response = await BedrockProvider(transport).open(make_deployment(fake, STATIC), Route.CHAT, chat(stream=True), True)
    with pytest.raises(BadGatewayError, match="throttlingException"):
        await sse(response)


async def test_stream_cut_before_message_stop_ends_without_done(fake: FakeBedrock, transport: HttpTransport) -> None:
    fake.behavior = Behavior(die_after_chunks=3)
    response = await BedrockProvider(transport).open(make_deployment(fake, STATIC), Route.CHAT, chat(stream=True), True)
    try:
        chunks = await sse(response)
    except BadGatewayError:
        return  # the cut was seen as a broken connection: also an error, never a short answer
    assert chunks
    assert "[DONE]" not in chunks  # the relay reports the stream as incomplete
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks)


async def test_a_corrupted_frame_fails_the_stream_on_its_crc(fake: FakeBedrock, transport: HttpTransport) -> None:
    fake.corrupt_message = 2
    response = await BedrockProvider(transport).open(make_deployment(fake, STATIC), Route.CHAT, chat(stream=True), True)
    relayed: list[bytes] = []
    with pytest.raises(BadGatewayError, match="message CRC mismatch"):
        async for piece in response.iter_chunks():
            relayed.append(piece)
    assert b"Hello! " in b"".join(relayed)  # what came before the corrupt frame was relayed as it arrived
    assert b"[DONE]" not in b"".join(relayed)


async def test_bedrock_errors_keep_their_status(fake: FakeBedrock, transport: HttpTransport) -> None:
    fake.behavior = Behavior(status=429, error_message="Too many requests, please wait before trying again.")
    with pytest.raises(UpstreamStatusError) as caught:
        await BedrockProvider(transport).open(make_deployment(fake, STATIC), Route.CHAT, chat(), False)
    assert caught.value.status_code == 429
    assert caught.value.is_retryable


async def test_credentials_from_the_environment(
    fake: FakeBedrock, transport: HttpTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)
    monkeypatch.setenv("AWS_REGION", REGION)
    provider = BedrockProvider(transport)
    await (await provider.open(make_deployment(fake, {}), Route.CHAT, chat(), False)).read()
    assert fake.auth_failures == []


async def test_credentials_and_region_of_a_named_profile(
    fake: FakeBedrock, transport: HttpTransport, tmp_path: Path
) -> None:
    (tmp_path / "aws-credentials").write_text(
        f"[team]\naws_access_key_id = {ACCESS_KEY_ID}\naws_secret_access_key = {SECRET_ACCESS_KEY}\n"
    )
    (tmp_path / "aws-config").write_text(f"[profile team]\nregion = {REGION}\n")
    deployment = make_deployment(fake, {"aws_profile_name": "team"})
    await (await BedrockProvider(transport).open(deployment, Route.CHAT, chat(), False)).read()
    assert fake.auth_failures == []


def _credential_process(tmp_path: Path, expires_in_s: int) -> Path:
    """A `credential_process` profile whose program counts its runs and hands out credentials expiring soon."""
    counter = tmp_path / "runs"
    script = tmp_path / "creds.py"
    script.write_text(
        "import datetime, json, pathlib\n"
        f"p = pathlib.Path({str(counter)!r})\n"
        "p.write_text(str(int(p.read_text() if p.exists() else 0) + 1))\n"
        f"exp = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds={expires_in_s})\n"
        f"print(json.dumps({{'Version': 1, 'AccessKeyId': {ACCESS_KEY_ID!r}, "
        f"'SecretAccessKey': {SECRET_ACCESS_KEY!r}, 'SessionToken': {SESSION_TOKEN!r}, "
        "'Expiration': exp.strftime('%Y-%m-%dT%H:%M:%SZ')}))\n"
    )
    (tmp_path / "aws-config").write_text(
        f"[profile rotating]\nregion = {REGION}\ncredential_process = {sys.executable} {script}\n"
    )
    return counter


@pytest.mark.parametrize(("expires_in_s", "runs"), [(7200, 1), (300, 3)])
async def test_refreshable_credentials_are_cached_until_due_then_re_read(
    transport: HttpTransport, tmp_path: Path, expires_in_s: int, runs: int
) -> None:
    # botocore refreshes temporary credentials 15 minutes before they expire: ones expiring in 5 are always due.
    counter = _credential_process(tmp_path, expires_in_s)
    async with FakeBedrock.running(session_token=SESSION_TOKEN) as fake:
        provider = BedrockProvider(transport)
        deployment = make_deployment(fake, {"aws_profile_name": "rotating"})
        for _ in range(2):
            await (await provider.open(deployment, Route.CHAT, chat(), False)).read()
        assert fake.auth_failures == []
    assert int(counter.read_text()) == runs


async def test_bedrock_api_key_is_a_bearer_token(transport: HttpTransport) -> None:
    async with FakeBedrock.running(bearer_token="bedrock-api-key-0123456789") as fake:
        deployment = make_deployment(fake, {"aws_region_name": REGION}, api_key="bedrock-api-key-0123456789")
        await (await BedrockProvider(transport).open(deployment, Route.CHAT, chat(), False)).read()
        assert fake.auth_failures == []
        assert "x-amz-date" not in fake.last_request.headers


async def test_no_credentials_anywhere_is_a_clear_error(fake: FakeBedrock, transport: HttpTransport) -> None:
    with pytest.raises(BadGatewayError, match="No AWS credentials"):
        await BedrockProvider(transport).open(
            make_deployment(fake, {"aws_region_name": REGION}), Route.CHAT, chat(), False
        )
    assert fake.requests == []


async def test_no_region_anywhere_is_a_clear_error(fake: FakeBedrock, transport: HttpTransport) -> None:
    params = {k: v for k, v in STATIC.items() if k != "aws_region_name"}
    with pytest.raises(BadGatewayError, match="aws_region_name"):
        await BedrockProvider(transport).open(make_deployment(fake, params), Route.CHAT, chat(), False)


async def test_refusals_happen_before_any_call(fake: FakeBedrock, transport: HttpTransport) -> None:
    provider = BedrockProvider(transport)
    with pytest.raises(BadRequestError, match="n"):
        await provider.open(make_deployment(fake, STATIC), Route.CHAT, chat(n=2), False)
    with pytest.raises(BadRequestError, match="chat completions only"):
        await provider.open(make_deployment(fake, STATIC), Route.EMBEDDINGS, {"input": "x"}, False)
    assert fake.requests == []


def test_region_comes_from_config_then_model_arn_then_litellm_env() -> None:
    arn = "arn:aws:bedrock:eu-west-3:123456789012:inference-profile/eu.anthropic.claude-3-haiku-20240307-v1:0"
    assert region_of({"aws_region_name": "ap-south-1", "model": f"bedrock/{arn}"}, {"AWS_REGION": "x"}) == "ap-south-1"
    assert region_of({"model": f"bedrock/{arn}"}, {"AWS_REGION": "x"}) == "eu-west-3"
    assert region_of({"model": "bedrock/m"}, {"AWS_REGION_NAME": "us-west-2", "AWS_REGION": "x"}) == "us-west-2"
    assert region_of({"model": "bedrock/m"}, {}) is None


async def test_endpoint_is_api_base_then_runtime_endpoint_then_the_regional_host(transport: HttpTransport) -> None:
    provider = BedrockProvider(transport, environ={})
    async with FakeBedrock.running() as fake:
        deployment = make_deployment(fake, STATIC)
    assert provider.endpoint(deployment, REGION) == fake.url
    no_base = make_deployment(fake, {**STATIC, "aws_bedrock_runtime_endpoint": "https://vpce.example/"}, api_base=None)
    assert provider.endpoint(no_base, REGION) == "https://vpce.example"
    plain = make_deployment(fake, STATIC, api_base=None)
    assert provider.endpoint(plain, "eu-central-1") == "https://bedrock-runtime.eu-central-1.amazonaws.com"
