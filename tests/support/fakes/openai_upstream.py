"""Fake OpenAI and Azure OpenAI upstream servers on 127.0.0.1 for end-to-end tests.

`FakeOpenAI` serves `/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`, `/v1/responses` (the Responses
API, `responses_wire.py`) and `/v1/models` (also without the `/v1` prefix) with `Authorization: Bearer` auth;
`FakeAzureOpenAI` serves `/openai/deployments/{deployment}/{chat/completions,completions,embeddings}?api-version=…`
with `api-key` auth.
Both speak the real wire format (see `wire.py`) and are scripted with `Behavior` values (see `behavior.py`).

Two ways to run one:

    with FakeOpenAI() as fake:                      # sync tests: own thread, own event loop
        client = openai.OpenAI(base_url=fake.base_url, api_key=fake.api_key)

    async with FakeOpenAI.running() as fake:        # async tests: on the running loop
        ...

This module owns the provider-specific parts: routes, authentication and their error bodies. Recording,
scripting, counters and the lifecycle are in `server.py`.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from typing import Any

from aiohttp import web

from . import responses_wire, wire
from .behavior import Behavior, azure_error_body, openai_error_body
from .recording import RecordedRequest
from .server import DEFAULT_API_KEY, DEFAULT_MODELS, FakeUpstream


class FakeOpenAI(FakeUpstream):
    """A fake api.openai.com: `/v1/...` (and the same paths without `/v1`) with Bearer auth."""

    kind = "openai"

    @property
    def base_url(self) -> str:
        """The URL to give an OpenAI client or a proxy's `api_base`: `http://127.0.0.1:<port>/v1`."""
        return f"{self.url}/v1"

    def _routes(self) -> list[web.RouteDef]:
        routes: list[web.RouteDef] = []
        for prefix in ("/v1", ""):
            routes += [
                web.post(f"{prefix}/chat/completions", self._chat),
                web.post(f"{prefix}/completions", self._completions),
                web.post(f"{prefix}/embeddings", self._embeddings),
                web.post(f"{prefix}/responses", self._responses),
                web.get(f"{prefix}/models", self._models),
                web.get(f"{prefix}/models/{{model:.+}}", self._model),
            ]
        return routes

    def _unauthorized(self, recorded: RecordedRequest) -> web.Response | None:
        if self.api_key is None:
            return None
        header = recorded.headers.get("authorization", "")
        scheme, _, presented = header.partition(" ")
        if not header or scheme.lower() != "bearer" or not presented:
            message = (
                "You didn't provide an API key. You need to provide your API key in an Authorization header using "
                "Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password field (with blank username) if "
                "you're accessing the API from your browser and are prompted for a username and password. You can "
                "obtain an API key from https://platform.openai.com/account/api-keys."
            )
            return self._json(401, openai_error_body(401, message, code=None))
        if presented != self.api_key:
            message = (
                f"Incorrect API key provided: {self._mask(presented)}. You can find your API key at "
                "https://platform.openai.com/account/api-keys."
            )
            return self._json(401, openai_error_body(401, message, code="invalid_api_key"))
        return None

    async def _api(self, request: web.Request, endpoint: str) -> web.StreamResponse:
        async def handle() -> web.StreamResponse:
            recorded = await self._record(request)
            denied = self._unauthorized(recorded)
            if denied is not None:
                return denied
            model = recorded.body.get("model") if isinstance(recorded.body, dict) else None
            name = model if isinstance(model, str) else None
            return await self._generate(request, recorded, endpoint, name, False, name)

        return await self._guarded(handle)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        return await self._api(request, "chat")

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        return await self._api(request, "completions")

    async def _embeddings(self, request: web.Request) -> web.StreamResponse:
        return await self._api(request, "embeddings")

    async def _responses(self, request: web.Request) -> web.StreamResponse:
        """The Responses API (`responses_wire.py`): strict request checks, JSON or its event stream (no [DONE])."""

        async def handle() -> web.StreamResponse:
            recorded = await self._record(request)
            denied = self._unauthorized(recorded)
            if denied is not None:
                return denied
            body = recorded.body
            if not isinstance(body, dict):
                return self._json(400, openai_error_body(400, "We could not parse the JSON body of your request."))
            problem = responses_wire.validate(body)
            if problem is not None:
                return self._json(400, problem)
            model = str(body["model"])
            behavior = self._choose_behavior(model, self._override(recorded))
            await self._wait(behavior.delay_s)
            if behavior.status is not None:
                return self._json(behavior.status, behavior.error_json(behavior.status), behavior.headers)
            if not body.get("stream"):
                return self._json(200, responses_wire.response(body, behavior, model), behavior.headers)
            return await self._stream_responses(request, responses_wire.events(body, behavior, model), behavior)

        return await self._guarded(handle)

    async def _stream_responses(
        self, request: web.Request, events: Iterator[dict[str, Any]], behavior: Behavior
    ) -> web.StreamResponse:
        response = web.StreamResponse(status=200, headers={"Content-Type": "text/event-stream; charset=utf-8"})
        await response.prepare(request)
        for sent, payload in enumerate(events):
            if behavior.die_after_chunks is not None and sent >= behavior.die_after_chunks:
                self._kill(request)
                return response
            await response.write(responses_wire.encode_event(payload))
        await response.write_eof()
        return response

    def _known_models(self) -> list[str]:
        return list(self.models if self.models is not None else DEFAULT_MODELS)

    async def _models(self, request: web.Request) -> web.StreamResponse:
        recorded = await self._record(request)
        denied = self._unauthorized(recorded)
        return denied or self._json(200, wire.model_list(self._known_models(), self._created))

    async def _model(self, request: web.Request) -> web.StreamResponse:
        recorded = await self._record(request)
        denied = self._unauthorized(recorded)
        if denied is not None:
            return denied
        model = request.match_info["model"]
        if self.models is not None and model not in self.models:
            message = f"The model '{model}' does not exist"
            return self._json(404, openai_error_body(404, message, code="model_not_found"))
        return self._json(200, wire.model_card(model, self._created))


AZURE_API_VERSIONS = (
    "2024-02-01",
    "2024-06-01",
    "2024-10-21",
    "2024-08-01-preview",
    "2024-10-01-preview",
    "2024-12-01-preview",
    "2025-01-01-preview",
    "2025-03-01-preview",
    "2025-04-01-preview",
)


class FakeAzureOpenAI(FakeUpstream):
    """A fake Azure OpenAI resource: `/openai/deployments/{deployment}/...?api-version=…` with `api-key` auth.

    Bodies are OpenAI's plus Azure's content-filter annotations (`content_filter=False` drops them); streams open
    with Azure's empty-`choices` chunk. The reported model is the deployment's model from `deployments`, or the
    deployment name.
    """

    kind = "azure"

    def __init__(
        self,
        *,
        api_key: str | None = DEFAULT_API_KEY,
        behavior: Behavior | None = None,
        deployments: Mapping[str, str] | None = None,
        api_versions: Collection[str] | None = AZURE_API_VERSIONS,
        content_filter: bool = True,
        embedding_dimensions: int = 8,
        reveal_key_in_errors: bool = True,
    ) -> None:
        """Configure an Azure fake.

        Args:
            deployments: deployment name → model name; `None` accepts any deployment.
            api_versions: accepted `api-version` values (400 otherwise); `None` accepts any. Missing → 404.
            content_filter: add `prompt_filter_results` / `content_filter_results` like Azure does.
        """
        super().__init__(
            api_key=api_key,
            behavior=behavior,
            embedding_dimensions=embedding_dimensions,
            reveal_key_in_errors=reveal_key_in_errors,
        )
        self.deployments = dict(deployments) if deployments is not None else None
        self.api_versions = frozenset(api_versions) if api_versions is not None else None
        self.content_filter = content_filter

    @property
    def azure_endpoint(self) -> str:
        """The resource endpoint to give `openai.AzureOpenAI(azure_endpoint=...)`."""
        return self.url

    def deployment_url(self, deployment: str) -> str:
        """`<endpoint>/openai/deployments/<deployment>` (the base URL for one deployment)."""
        return f"{self.url}/openai/deployments/{deployment}"

    def _routes(self) -> list[web.RouteDef]:
        base = "/openai/deployments/{deployment}"
        return [
            web.post(f"{base}/chat/completions", self._chat),
            web.post(f"{base}/completions", self._completions),
            web.post(f"{base}/embeddings", self._embeddings),
        ]

    def _rejected(self, recorded: RecordedRequest, deployment: str) -> web.Response | None:
        if self.api_key is not None and recorded.headers.get("api-key") != self.api_key:
            message = (
                "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid "
                "key for an active subscription and use a correct regional API endpoint for your resource."
            )
            return self._json(401, azure_error_body("401", message))
        version = recorded.query.get("api-version")
        if not version:
            return self._json(404, azure_error_body("404", "Resource not found"))
        if self.api_versions is not None and version not in self.api_versions:
            return self._json(400, azure_error_body("BadRequest", "API version not supported"))
        if self.deployments is not None and deployment not in self.deployments:
            message = (
                "The API deployment for this resource does not exist. If you created the deployment within the last "
                "5 minutes, please wait a moment and try again."
            )
            return self._json(404, azure_error_body("DeploymentNotFound", message))
        return None

    async def _api(self, request: web.Request, endpoint: str) -> web.StreamResponse:
        async def handle() -> web.StreamResponse:
            recorded = await self._record(request)
            deployment = request.match_info["deployment"]
            rejected = self._rejected(recorded, deployment)
            if rejected is not None:
                return rejected
            model = self.deployments.get(deployment, deployment) if self.deployments is not None else deployment
            return await self._generate(request, recorded, endpoint, model, self.content_filter, deployment)

        return await self._guarded(handle)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        return await self._api(request, "chat")

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        return await self._api(request, "completions")

    async def _embeddings(self, request: web.Request) -> web.StreamResponse:
        return await self._api(request, "embeddings")
