"""`bedrock/<modelId>` (and `bedrock/converse/<modelId>`): Amazon Bedrock's Converse and ConverseStream APIs.

`POST {endpoint}/model/{modelId, URL-quoted}/converse` (or `/converse-stream`), where the endpoint is `api_base`,
else `aws_bedrock_runtime_endpoint`, else env `AWS_BEDROCK_RUNTIME_ENDPOINT`, else
`https://bedrock-runtime.{region}.amazonaws.com` (LiteLLM's `get_runtime_endpoint` order). The region is
`aws_region_name`, else the region of a model ARN, else env `AWS_REGION_NAME` / `AWS_REGION`, else botocore's own
(`AWS_DEFAULT_REGION`, the profile's config); without one the config is refused (`config/loader.py`).

Authentication: a deployment `api_key` is a Bedrock API key, sent as a bearer token (as LiteLLM does); otherwise
the request is signed with SigV4 (service `bedrock`) by botocore, with `aws_access_key_id` /
`aws_secret_access_key` / `aws_session_token` from the config, else the credentials of `aws_profile_name` or of
the standard AWS chain (environment, shared files, SSO, container and instance roles).

Invariants: no credential chain lookup or refresh runs on the event loop (botocore does file and network IO for
them); a chain's credentials are resolved once per profile and re-read only when botocore says they are due for
refresh; the answer reaches the pipeline already in OpenAI's wire format (`converse.py` translates both ways).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Mapping
from typing import Any, Final
from urllib.parse import quote

import botocore.session
import orjson
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials, ReadOnlyCredentials, RefreshableCredentials
from botocore.exceptions import BotoCoreError

from haimaker.errors import BadGatewayError, BadRequestError
from haimaker.providers.base import Deployment, Route
from haimaker.providers.converse import StreamTranslator, chat_completion, converse_request
from haimaker.providers.eventstream import EventStreamDecoder, EventStreamError
from haimaker.providers.http import HttpResponse, HttpTransport
from haimaker.providers.redaction import Redactor

SERVICE: Final = "bedrock"
_REGION_ENV: Final = ("AWS_REGION_NAME", "AWS_REGION")  # LiteLLM's order, before botocore's own lookup


def model_id(deployment: Deployment) -> str:
    """The Bedrock model id (or ARN) of a deployment: `bedrock/converse/<id>` and `bedrock/<id>` alike."""
    upstream = deployment.upstream_model
    return upstream.removeprefix("converse/")


def region_of(params: Mapping[str, Any], environ: Mapping[str, str]) -> str | None:
    """The region from the config, a model ARN or LiteLLM's environment variables (not botocore's files)."""
    configured = params.get("aws_region_name")
    if isinstance(configured, str) and configured:
        return configured
    model = str(params.get("model", "")).removeprefix("bedrock/").removeprefix("converse/")
    if model.startswith("arn:"):
        parts = model.split(":")
        if len(parts) > 3 and parts[3]:
            return parts[3]
    for name in _REGION_ENV:
        if environ.get(name):
            return environ[name]
    return None


def profile_region(profile: str | None) -> str | None:
    """botocore's region for `profile` (env `AWS_DEFAULT_REGION`, then the config file); blocking file IO."""
    try:
        region = botocore.session.Session(profile=profile).get_config_variable("region")
    except BotoCoreError:
        return None
    return region if isinstance(region, str) and region else None


def _text_param(params: Mapping[str, Any], name: str) -> str | None:
    value = params.get(name)
    return value if isinstance(value, str) and value else None


class AwsCredentials:
    """Credentials by deployment: static ones from the config, else a profile's or the default chain's, cached."""

    def __init__(self) -> None:
        self._chains: dict[str | None, Credentials] = {}
        self._lock = asyncio.Lock()

    async def frozen(self, params: Mapping[str, Any]) -> ReadOnlyCredentials:
        """A consistent (key, secret, token) triple for one signature."""
        key_id = _text_param(params, "aws_access_key_id")
        secret = _text_param(params, "aws_secret_access_key")
        if key_id and secret:
            return ReadOnlyCredentials(key_id, secret, _text_param(params, "aws_session_token"))
        profile = _text_param(params, "aws_profile_name")
        credentials = self._chains.get(profile)
        if credentials is None:
            async with self._lock:  # one lookup per profile, however many requests arrive at once
                credentials = self._chains.get(profile)
                if credentials is None:
                    credentials = await asyncio.to_thread(_chain_credentials, profile)
                    self._chains[profile] = credentials
        if isinstance(credentials, RefreshableCredentials) and credentials.refresh_needed():
            # A refresh may call STS, SSO or the instance metadata service: off the loop.
            return await asyncio.to_thread(credentials.get_frozen_credentials)
        return credentials.get_frozen_credentials()


def _chain_credentials(profile: str | None) -> Credentials:
    try:
        credentials = botocore.session.Session(profile=profile).get_credentials()
    except BotoCoreError as exc:
        raise BadGatewayError(f"AWS credentials for Bedrock could not be loaded: {exc}") from None
    if credentials is None:
        raise BadGatewayError(
            "No AWS credentials for Bedrock: set aws_access_key_id and aws_secret_access_key (or aws_profile_name) "
            "in litellm_params, or AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY in the environment."
        )
    return credentials


class BedrockProvider:
    """Opens Converse / ConverseStream calls and hands back their answers in OpenAI's format."""

    def __init__(self, transport: HttpTransport, environ: Mapping[str, str] | None = None) -> None:
        self._transport = transport
        self._environ = os.environ if environ is None else environ
        self._credentials = AwsCredentials()
        self._regions: dict[str, str] = {}

    async def region(self, deployment: Deployment) -> str:
        """The deployment's region (see the module docstring); botocore's files are read once, off the loop."""
        cached = self._regions.get(deployment.model_id)
        if cached is not None:
            return cached
        region = region_of(deployment.params, self._environ) or await asyncio.to_thread(
            profile_region, _text_param(deployment.params, "aws_profile_name")
        )
        if region is None:
            raise BadGatewayError("No AWS region for this Bedrock deployment: set aws_region_name in litellm_params.")
        self._regions[deployment.model_id] = region
        return region

    def endpoint(self, deployment: Deployment, region: str) -> str:
        base = (
            deployment.api_base
            or _text_param(deployment.params, "aws_bedrock_runtime_endpoint")
            or self._environ.get("AWS_BEDROCK_RUNTIME_ENDPOINT")
            or f"https://bedrock-runtime.{region}.amazonaws.com"
        )
        return base.rstrip("/")

    async def open(self, deployment: Deployment, route: Route, body: dict[str, Any], stream: bool) -> BedrockResponse:
        if route is not Route.CHAT:
            raise BadRequestError(f"bedrock/ deployments serve chat completions only, not /{route.value}.")
        payload = orjson.dumps(converse_request(body, drop_params=deployment.params.get("drop_params") is True))
        region = await self.region(deployment)
        action = "converse-stream" if stream else "converse"
        url = f"{self.endpoint(deployment, region)}/model/{quote(model_id(deployment), safe='')}/{action}"
        headers = {"Content-Type": "application/json"}
        secrets: tuple[str, ...]
        if deployment.api_key:
            headers["Authorization"] = f"Bearer {deployment.api_key}"
            secrets = (deployment.api_key,)
        else:
            credentials = await self._credentials.frozen(deployment.params)
            headers = _signed_headers(url, headers, payload, credentials, region)
            secrets = tuple(s for s in (credentials.secret_key, credentials.token) if s)
        timeout_s = (deployment.stream_timeout_s if stream else None) or deployment.timeout_s
        response = await self._transport.post(
            url, headers, payload, timeout_s=timeout_s, secrets=secrets, verify=deployment.ssl_verify
        )
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        return BedrockResponse(response, model_id(deployment), self._transport.redactor, include_usage=include_usage)

    async def aclose(self) -> None:
        """The transport is shared and closed by its owner."""


def _signed_headers(
    url: str, headers: Mapping[str, str], payload: bytes, credentials: ReadOnlyCredentials, region: str
) -> dict[str, str]:
    """`headers` plus SigV4's `X-Amz-Date`, `X-Amz-Security-Token` (temporary credentials) and `Authorization`."""
    request = AWSRequest(method="POST", url=url, data=payload, headers=dict(headers))
    SigV4Auth(credentials, SERVICE, region).add_auth(request)
    return {name: str(value) for name, value in request.headers.items()}


class BedrockResponse:
    """A Converse answer read as a `chat.completion`, or a ConverseStream relayed as OpenAI SSE chunks."""

    __slots__ = ("_done", "_include_usage", "_model", "_redactor", "_upstream", "status")

    def __init__(self, upstream: HttpResponse, model: str, redactor: Redactor, *, include_usage: bool) -> None:
        self._upstream = upstream
        self._model = model
        self._redactor = redactor
        self._include_usage = include_usage
        self._done = False
        self.status = upstream.status

    async def read(self) -> bytes:
        raw = await self._upstream.read()
        try:
            answer = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise BadGatewayError("Bedrock answered with a body that is not JSON.") from None
        return orjson.dumps(chat_completion(answer, self._model))

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        decoder = EventStreamDecoder()
        translator = StreamTranslator(self._model, include_usage=self._include_usage, redactor=self._redactor)
        async for piece in self._upstream.iter_chunks():
            try:
                messages = decoder.feed(piece)
            except EventStreamError as exc:
                raise BadGatewayError(f"Bedrock stream is corrupt: {exc}.") from None
            out = b"".join(translator.events(message) for message in messages)
            if out:
                yield out
        try:
            decoder.close()
        except EventStreamError as exc:
            raise BadGatewayError(f"Bedrock stream is corrupt: {exc}.") from None
        self._done = True
        end = translator.finish()
        if end:
            yield end

    def at_end(self) -> bool:
        return self._done and self._upstream.at_end()

    def close(self) -> None:
        self._upstream.close()
