"""A fake Google AI Studio and Vertex AI (Gemini models) on 127.0.0.1, with its own OAuth token endpoint.

    POST /v1beta/models/{model}:generateContent                     x-goog-api-key (AI Studio)
    POST /v1beta/models/{model}:streamGenerateContent?alt=sse
    POST /v1/projects/{p}/locations/{l}/publishers/google/models/{model}:generateContent    Bearer (Vertex)
    POST /v1/projects/{p}/locations/{l}/publishers/google/models/{model}:streamGenerateContent?alt=sse
    POST /token                                                     the JWT bearer grant (`google_accounts.py`)

Requests are checked strictly (`gemini_wire.check_request`); a wrong key is Google's 400 `API key not valid`, a
missing or unknown bearer token its 401 `UNAUTHENTICATED`, a project or location other than the fake's a 403/404.
Streams are framed as Google frames them: `data: <json>\r\n\r\n`, no `[DONE]`. Answers are scripted with
`GeminiReply` values (`reply` is the default, `script()` queues one-shot ones).
"""

from __future__ import annotations

import asyncio
import collections
import threading
from typing import Any

import orjson
from aiohttp import web

from .gemini_wire import GeminiReply, InvalidRequest, Plan, check_request, error_body
from .google_accounts import ServiceAccounts, TokenRefused
from .recording import RecordedRequest
from .server import FakeUpstream

GEMINI_KEY = "AIzaSyFake-gemini-key-0123456789abcdef"


class FakeGoogle(FakeUpstream):
    """AI Studio (`api_key`) and Vertex AI (`project`, `location`, service accounts) on one port."""

    kind = "google"

    def __init__(self, *, api_key: str = GEMINI_KEY, project: str = "fake-project", location: str = "europe-west4"):
        super().__init__(api_key=api_key)
        self.project = project
        self.location = location
        self.accounts = ServiceAccounts()
        self.reply = GeminiReply()
        self._replies: collections.deque[GeminiReply] = collections.deque()
        self._reply_lock = threading.Lock()

    @property
    def token_uri(self) -> str:
        return f"{self.url}/token"

    def service_account(self, *, project_id: str | None = "fake-project") -> dict[str, Any]:
        """A new service-account JSON (mapping) whose `token_uri` is this fake's `/token`."""
        return self.accounts.create(self.token_uri, project_id=project_id)

    def script(self, *replies: Any) -> None:  # GeminiReply values (the base class scripts Behavior ones)
        with self._reply_lock:
            self._replies.extend(replies)

    def reset(self) -> None:
        super().reset()
        with self._reply_lock:
            self._replies.clear()
        self.reply = GeminiReply()

    def generation_requests(self) -> list[RecordedRequest]:
        return [r for r in list(self.requests) if r.path != "/token"]

    def _routes(self) -> list[web.RouteDef]:
        vertex = "/v1/projects/{project}/locations/{location}/publishers/google/models/{name}"
        return [
            web.post("/v1beta/models/{name}", self._studio),
            web.post(vertex, self._vertex),
            web.post("/token", self._token),
        ]

    async def _token(self, request: web.Request) -> web.StreamResponse:
        recorded = await self._record(request)
        if not recorded.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            return self._json(400, {"error": "invalid_request", "error_description": "form body expected"})
        form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        try:
            return self._json(200, self.accounts.exchange(form))
        except TokenRefused as exc:
            return self._json(400, {"error": "invalid_grant", "error_description": str(exc)})

    async def _studio(self, request: web.Request) -> web.StreamResponse:
        recorded = await self._record(request)
        if "key" in recorded.query:
            return self._json(400, error_body(400, "the test expects the key in x-goog-api-key, not in the URL"))
        if recorded.headers.get("x-goog-api-key") != self.api_key:
            return self._json(400, error_body(400, "API key not valid. Please pass a valid API key."))
        return await self._guarded(lambda: self._generate_content(request, recorded))

    async def _vertex(self, request: web.Request) -> web.StreamResponse:
        recorded = await self._record(request)
        auth = recorded.headers.get("authorization", "")
        if not auth.startswith("Bearer ") or not self.accounts.is_valid(auth[7:]):
            message = "Request had invalid authentication credentials. Expected OAuth 2 access token."
            return self._json(401, error_body(401, message))
        if request.match_info["project"] != self.project:
            return self._json(403, error_body(403, f"Permission denied on project {request.match_info['project']}"))
        if request.match_info["location"] != self.location:
            return self._json(404, error_body(404, f"Location {request.match_info['location']} is not served here"))
        if request.host.split(":")[0] != "127.0.0.1":
            return self._json(400, error_body(400, "unexpected host"))
        return await self._guarded(lambda: self._generate_content(request, recorded))

    async def _generate_content(self, request: web.Request, recorded: RecordedRequest) -> web.StreamResponse:
        model, _, method = request.match_info["name"].partition(":")
        if method not in ("generateContent", "streamGenerateContent"):
            return self._json(404, error_body(404, f"method {method!r} not found"))
        stream = method == "streamGenerateContent"
        if stream != (recorded.query.get("alt") == "sse"):
            return self._json(400, error_body(400, "the test expects alt=sse exactly on streamGenerateContent"))
        if not recorded.headers.get("content-type", "").startswith("application/json"):
            return self._json(400, error_body(400, "Content-Type application/json expected"))
        try:
            body = check_request(orjson.loads(recorded.raw_body))
        except (InvalidRequest, orjson.JSONDecodeError) as exc:
            return self._json(400, error_body(400, str(exc)))
        with self._reply_lock:
            reply = self._replies.popleft() if self._replies else self.reply
        if reply.status is not None:
            return self._json(reply.status, error_body(reply.status, reply.error_message))
        plan = Plan.of(body, reply, model)
        if not stream:
            return self._json(200, plan.whole())
        response = web.StreamResponse(status=200, headers={"Content-Type": "text/event-stream"})
        self._counters.bump(open_streams=1, streams_started=1)
        try:
            await response.prepare(request)
            for sent, event in enumerate(plan.events()):
                if reply.cut_after is not None and sent >= reply.cut_after:
                    self._kill(request)
                    self._counters.bump(streams_killed=1)
                    return response
                await response.write(b"data: " + orjson.dumps(event) + b"\r\n\r\n")
                await asyncio.sleep(0)
            await response.write_eof()
            self._counters.bump(streams_completed=1)
        except ConnectionError:
            self._counters.bump(disconnects=1)
        finally:
            self._counters.bump(open_streams=-1)
        return response
