"""`vertex_ai/<model>`: Gemini models on Vertex AI, with a bearer token from a service account (or ADC).

    POST https://{location}-aiplatform.googleapis.com/v1/projects/{project}/locations/{location}
         /publishers/google/models/<model>:generateContent   (and :streamGenerateContent?alt=sse)
    Authorization: Bearer <access token>

`location` `global` is served by `aiplatform.googleapis.com`. An `api_base` replaces the host (a bare host, or one
ending in `/v1` / `/v1beta1`, gets the path above grafted on); an `api_base` with any other path names the model
itself and only `:generateContent` is appended (LiteLLM's rules). The body and the answer are Gemini's
(`gemini_request.py`, `gemini_response.py`).

Credentials (`litellm_params`, LiteLLM's names): `vertex_credentials` is a service-account JSON file's path, or its
JSON inline (a string or a mapping); without it, Application Default Credentials (`google.auth.default`). The project
is `vertex_project`, else env `VERTEXAI_PROJECT`, else the credentials' own project; the location `vertex_location`,
else env `VERTEXAI_LOCATION`, else `us-central1`.

Invariants: google-auth's token refresh is blocking HTTP, so it runs in a thread (`asyncio.to_thread`) on a
connection pool of its own that is closed after it; one refresh at a time per credential (an `asyncio.Lock`, with
the validity re-checked under it); a token is reused until google-auth deems it near expiry (its refresh threshold,
minutes before `expiry`). A credential that cannot be loaded or refreshed is a 502 whose message is scrubbed.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import google.auth
import google.auth.credentials
import google.auth.exceptions
import google.oauth2.credentials
import orjson
import urllib3
from google.auth.transport.urllib3 import Request
from google.oauth2 import service_account

from haimaker.errors import BadGatewayError, BadRequestError
from haimaker.providers.base import Deployment, Route
from haimaker.providers.gemini import GoogleAnswer, open_generate_content
from haimaker.providers.http import HttpTransport

CLOUD_PLATFORM_SCOPE: Final = "https://www.googleapis.com/auth/cloud-platform"
DEFAULT_LOCATION: Final = "us-central1"


class TokenSource:
    """One Google credential and its current access token, refreshed off the event loop, one refresh at a time."""

    __slots__ = ("_credentials", "_lock", "project")

    def __init__(self, credentials: google.auth.credentials.Credentials, project: str | None) -> None:
        self._credentials = credentials
        self.project = project
        self._lock = asyncio.Lock()

    async def token(self) -> str:
        """A valid access token (refreshed first when missing or near its expiry)."""
        if not self._credentials.valid:
            async with self._lock:
                if not self._credentials.valid:  # another request may have refreshed it while this one waited
                    await asyncio.to_thread(_refresh, self._credentials)
        token = self._credentials.token
        if not isinstance(token, str) or not token:
            raise BadGatewayError("Vertex AI: the credentials gave no access token.")
        return token


def _refresh(credentials: google.auth.credentials.Credentials) -> None:
    pool = urllib3.PoolManager()
    try:
        credentials.refresh(Request(pool))  # type: ignore[no-untyped-call]  # google-auth is untyped
    finally:
        pool.clear()


def load_token_source(credentials: object) -> TokenSource:
    """The credential `vertex_credentials` names (path, JSON string or mapping), or ADC when it is None (blocking).

    Only the two kinds a config names are loaded (`service_account`, `authorized_user`), each with its own
    type-specific loader: google-auth's generic loader would also run whatever an `external_account` file says.
    """
    try:
        if credentials is None:
            found, project = google.auth.default(scopes=[CLOUD_PLATFORM_SCOPE])
            return TokenSource(found, project)
        if isinstance(credentials, Mapping):
            info: object = dict(credentials)
        elif isinstance(credentials, str) and credentials.lstrip().startswith("{"):
            info = orjson.loads(credentials)
        elif isinstance(credentials, str):
            info = orjson.loads(Path(credentials).read_bytes())
        else:
            raise BadRequestError("vertex_credentials: a file path, or the service account's JSON.")
        if not isinstance(info, dict):
            raise ValueError("not a JSON object")
        kind = info.get("type")
        if kind == "service_account":
            account = service_account.Credentials.from_service_account_info(  # type: ignore[no-untyped-call]
                info, scopes=[CLOUD_PLATFORM_SCOPE]
            )
            return TokenSource(account, info.get("project_id"))
        if kind == "authorized_user":
            user = google.oauth2.credentials.Credentials.from_authorized_user_info(  # type: ignore[no-untyped-call]
                info, scopes=[CLOUD_PLATFORM_SCOPE]
            )
            return TokenSource(user, info.get("quota_project_id"))
    except (google.auth.exceptions.GoogleAuthError, orjson.JSONDecodeError, ValueError, KeyError, OSError) as exc:
        # The exception's text may quote the JSON it could not read: say only what kind of failure it was.
        raise BadGatewayError(f"Vertex AI: the credentials could not be loaded ({type(exc).__name__}).") from None
    raise BadRequestError(
        f"vertex_credentials: credentials of type {str(kind)[:40]!r} are not supported "
        "(use a service_account or authorized_user JSON)."
    )


def vertex_models_url(api_base: str | None, project: str, location: str, model: str) -> str:
    """The model's URL without the `:method` (see the module docstring for `api_base`)."""
    path = f"/v1/projects/{project}/locations/{location}/publishers/google/models/{model}"
    if api_base is None:
        host = "aiplatform.googleapis.com" if location == "global" else f"{location}-aiplatform.googleapis.com"
        return f"https://{host}{path}"
    base = api_base.rstrip("/")
    base_path = urlsplit(base).path
    if base_path == "":
        return base + path
    if base_path in ("/v1", "/v1beta1"):
        return base[: -len("/v1")] + path if base_path == "/v1" else base + path[len("/v1") :]
    return base


class VertexProvider:
    """`vertex_ai/<model>`: one token source per distinct credential, loaded on first use."""

    def __init__(self, transport: HttpTransport) -> None:
        self._transport = transport
        self._sources: dict[str, TokenSource] = {}
        self._loading = asyncio.Lock()

    async def open(self, deployment: Deployment, route: Route, body: dict[str, Any], stream: bool) -> GoogleAnswer:
        source = await self._source(deployment.params.get("vertex_credentials"))
        params = deployment.params
        project = (
            params.get("vertex_project")
            or os.environ.get("VERTEXAI_PROJECT")
            or os.environ.get("GOOGLE_CLOUD_PROJECT")
            or source.project
        )
        if not project:
            raise BadRequestError(
                "vertex_project: not configured, and the credentials name no project.", param="vertex_project"
            )
        location = params.get("vertex_location") or os.environ.get("VERTEXAI_LOCATION") or DEFAULT_LOCATION
        token = await self._token(source)
        return await open_generate_content(
            self._transport,
            deployment,
            route,
            body,
            stream=stream,
            url=vertex_models_url(deployment.api_base, str(project), str(location), deployment.upstream_model),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
            secrets=(token,),
        )

    async def _source(self, credentials: object) -> TokenSource:
        key = orjson.dumps(credentials, option=orjson.OPT_SORT_KEYS).decode()
        source = self._sources.get(key)
        if source is None:
            async with self._loading:
                source = self._sources.get(key)
                if source is None:
                    source = await asyncio.to_thread(load_token_source, credentials)
                    self._sources[key] = source
        return source

    async def _token(self, source: TokenSource) -> str:
        try:
            return await source.token()
        except google.auth.exceptions.GoogleAuthError as exc:
            message = self._transport.redactor.message(str(exc))[:500]
            raise BadGatewayError(f"Vertex AI: could not get an access token: {message}") from None

    async def aclose(self) -> None:
        """Nothing held open: the transport is shared, token refreshes close their own pool."""
