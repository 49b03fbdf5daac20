"""A fake Amazon Bedrock runtime: `POST /model/{modelId}/converse` and `/converse-stream`, checked strictly.

Authentication as AWS's: a SigV4 `Authorization` header recomputed from the known test credentials and compared
(plus `x-amz-date` within 15 minutes, `x-amz-security-token` signed and equal when the fake has a session token),
or a Bedrock API key as a bearer token when `bearer_token` is set. Failures answer 403 with AWS's JSON body
(`{"message": ...}`) and the `x-amzn-ErrorType` header. The body must be JSON (`Content-Type: application/json`)
and a valid Converse request (`bedrock_wire.converse_problem`), else 400 `ValidationException`.

The model: with tools offered and no tool result in the last turn, it calls the first tool (or the one
`toolChoice` names) with `tool_input`; with a tool result, it answers with text quoting it; otherwise
`Behavior.reply`, cut at a stop sequence (`stop_sequence`) or at `maxTokens` words (`max_tokens`). Usage:
`Behavior.usage` is sent verbatim as Converse's usage object when set (cache counts included), else
`inputTokens` = words of the prompt (or `Behavior.prompt_tokens`), `outputTokens` = words of the reply.

Streams are real event-stream binary (`bedrock_wire.encode_message`, CRCs included), written `split_bytes` bytes at
a time so that frames straddle the pieces the client reads. Behaviours: `status` answers AWS's error for it;
`stream_error` sends an exception message (its `type`, default `modelStreamErrorException`) after the first delta;
`die_after_chunks` cuts the stream after that many messages; `corrupt_message` flips a payload bit of one message.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import orjson
import pytest
from aiohttp import web
from botocore.credentials import ReadOnlyCredentials

from .bedrock_wire import converse_problem, event, exception, sigv4_problem
from .behavior import Behavior, count_words
from .recording import RecordedRequest
from .server import FakeUpstream

ACCESS_KEY_ID: Final = "AKIAIOSFODNN7EXAMPLE"
SECRET_ACCESS_KEY: Final = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
SESSION_TOKEN: Final = "IQoJb3JpZ2luX2VjEXAMPLE-session-token-0123456789"
REGION: Final = "us-east-1"
_ERRORS: Final = {
    400: "ValidationException",
    403: "AccessDeniedException",
    404: "ResourceNotFoundException",
    408: "ModelTimeoutException",
    424: "ModelErrorException",
    429: "ThrottlingException",
    500: "InternalServerException",
    503: "ServiceUnavailableException",
}


class FakeBedrock(FakeUpstream):
    """A fake Bedrock runtime endpoint on 127.0.0.1 (the `api_base` of a deployment)."""

    kind = "bedrock"

    def __init__(
        self,
        *,
        access_key_id: str = ACCESS_KEY_ID,
        secret_access_key: str = SECRET_ACCESS_KEY,
        session_token: str | None = None,
        region: str = REGION,
        bearer_token: str | None = None,
        split_bytes: int = 7,
        **kwargs: Any,
    ) -> None:
        super().__init__(api_key=None, **kwargs)
        self.credentials = ReadOnlyCredentials(access_key_id, secret_access_key, session_token)
        self.region = region
        self.bearer_token = bearer_token
        self.split_bytes = split_bytes
        self.tool_input: dict[str, Any] = {"city": "Paris", "unit": "celsius"}
        self.auth_failures: list[str] = []
        # Flip one payload bit of the stream's message at this index (its message CRC no longer matches).
        self.corrupt_message: int | None = None

    def _routes(self) -> list[web.RouteDef]:
        return [
            web.post("/model/{model_id}/converse", self._converse),
            web.post("/model/{model_id}/converse-stream", self._converse),
        ]

    def _error(self, status: int, message: str, error_type: str | None = None) -> web.Response:
        kind = error_type or _ERRORS.get(status, "InternalServerException")
        return self._json(status, {"message": message}, {"x-amzn-ErrorType": f"{kind}:http://internal.amazon.com/"})

    def _denied(self, request: web.Request, recorded: RecordedRequest) -> web.Response | None:
        if self.bearer_token is not None:
            if recorded.headers.get("authorization") != f"Bearer {self.bearer_token}":
                self.auth_failures.append("bearer token")
                return self._error(403, "Authentication failed: invalid API key.", "AccessDeniedException")
        else:
            url = f"{request.scheme}://{request.host}{request.raw_path}"
            problem = sigv4_problem(
                method=request.method,
                url=url,
                headers=recorded.headers,
                body=recorded.raw_body,
                credentials=self.credentials,
                region=self.region,
            )
            if problem is not None:
                self.auth_failures.append(problem[1])
                return self._error(403, problem[1], problem[0])
        if recorded.headers.get("content-type", "").split(";")[0] != "application/json":
            return self._error(400, "Content-Type must be application/json")
        return None

    async def _converse(self, request: web.Request) -> web.StreamResponse:
        async def handle() -> web.StreamResponse:
            recorded = await self._record(request)
            denied = self._denied(request, recorded)
            if denied is not None:
                return denied
            body = recorded.body
            if not isinstance(body, dict):
                return self._error(400, "Malformed input request, please reformat your input and try again.")
            model = request.match_info["model_id"]
            if self.models is not None and model not in self.models:
                return self._error(404, "The provided model identifier is invalid.")
            behavior = self._choose_behavior(model, None)
            await self._wait(behavior.delay_s)
            if behavior.hang:
                await self._hang()
            if behavior.status is not None:
                return self._error(behavior.status, behavior.error_message or "Error.", behavior.error_type)
            problem = converse_problem(body)
            if problem is not None:
                return self._error(400, problem)
            answer = self._answer(body, behavior)
            if request.path.endswith("/converse-stream"):
                return await self._event_stream(request, stream_messages(answer, behavior), behavior)
            return self._json(200, answer, behavior.headers)

        return await self._guarded(handle)

    def _answer(self, body: dict[str, Any], behavior: Behavior) -> dict[str, Any]:
        content, stop_reason = self._content(body, behavior)
        if behavior.usage is not None:
            usage = dict(behavior.usage)
        else:
            prompt = count_words(body["messages"]) + count_words(body.get("system") or [])
            input_tokens = behavior.prompt_tokens if behavior.prompt_tokens is not None else prompt
            output = sum(
                count_words(b["text"]) if "text" in b else count_words(orjson.dumps(b["toolUse"]["input"]).decode())
                for b in content
            )
            output = behavior.completion_tokens if behavior.completion_tokens is not None else output
            usage = {"inputTokens": input_tokens, "outputTokens": output, "totalTokens": input_tokens + output}
        return {
            "output": {"message": {"role": "assistant", "content": content}},
            "stopReason": stop_reason,
            "usage": usage,
            "metrics": {"latencyMs": 42},
        }

    def _content(self, body: dict[str, Any], behavior: Behavior) -> tuple[list[dict[str, Any]], str]:
        last = body["messages"][-1]["content"]
        results = [b["toolResult"] for b in last if "toolResult" in b]
        config = body.get("toolConfig") or {}
        if config and not results:
            choice = config.get("toolChoice") or {}
            name = choice["tool"]["name"] if "tool" in choice else config["tools"][0]["toolSpec"]["name"]
            use = {"toolUseId": f"tooluse_{len(self.requests):08d}", "name": name, "input": self.tool_input}
            return [{"text": "Let me check."}, {"toolUse": use}], "tool_use"
        if results:
            quoted = " ".join(p.get("text", "") for p in results[-1]["content"])
            return [{"text": f"The tool said: {quoted}"}], "end_turn"
        text = behavior.reply
        inference = body.get("inferenceConfig") or {}
        for sequence in inference.get("stopSequences") or ():
            at = text.find(sequence)
            if at >= 0:
                return [{"text": text[:at]}], "stop_sequence"
        words = text.split(" ")
        limit = inference.get("maxTokens")
        if isinstance(limit, int) and len(words) > limit:
            return [{"text": " ".join(words[:limit])}], "max_tokens"
        return [{"text": text}], "end_turn"

    async def _event_stream(
        self, request: web.Request, messages: Iterator[bytes], behavior: Behavior
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            status=200,
            headers={"Content-Type": "application/vnd.amazon.eventstream", **behavior.headers},
        )
        self._counters.bump(open_streams=1, streams_started=1)
        outcome = "cancelled"
        try:
            await response.prepare(request)
            for sent, message in enumerate(messages):
                if behavior.die_after_chunks is not None and sent >= behavior.die_after_chunks:
                    outcome = "killed"
                    self._kill(request)
                    return response
                if sent:
                    await self._wait(behavior.chunk_delay_s)
                if sent == self.corrupt_message:
                    message = message[:-5] + bytes([message[-5] ^ 0x01]) + message[-4:]
                for at in range(0, len(message), self.split_bytes):
                    await response.write(message[at : at + self.split_bytes])
            await response.write_eof()
            outcome = "completed"
            return response
        except ConnectionError:
            return response
        finally:
            deltas = {"open_streams": -1}
            deltas[{"completed": "streams_completed", "killed": "streams_killed"}.get(outcome, "streams_cancelled")] = 1
            self._counters.bump(**deltas)


def stream_messages(answer: dict[str, Any], behavior: Behavior) -> Iterator[bytes]:
    """ConverseStream's documented sequence for `answer`: messageStart, each block's start (tool use only), deltas
    and stop, messageStop, metadata (usage and metrics)."""
    yield event("messageStart", orjson.dumps({"role": "assistant", "p": "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMN"}))
    for index, block in enumerate(answer["output"]["message"]["content"]):
        if "text" in block:
            words = block["text"].split(" ")
            for i, word in enumerate(words):
                piece = word if i == len(words) - 1 else word + " "
                delta = {"contentBlockIndex": index, "delta": {"text": piece}, "p": "abcd"}
                yield event("contentBlockDelta", orjson.dumps(delta))
                if behavior.stream_error is not None:
                    kind = str(behavior.stream_error.get("type") or "modelStreamErrorException")
                    message = {"message": behavior.stream_error.get("message", "The model stream failed.")}
                    yield exception(kind, orjson.dumps(message))
                    return
        elif "reasoningContent" in block:
            reasoning = block["reasoningContent"]["reasoningText"]
            for delta_body in ({"text": reasoning["text"]}, {"signature": reasoning["signature"]}):
                delta = {"contentBlockIndex": index, "delta": {"reasoningContent": delta_body}}
                yield event("contentBlockDelta", orjson.dumps(delta))
        else:
            use = block["toolUse"]
            start = {
                "contentBlockIndex": index,
                "start": {"toolUse": {"toolUseId": use["toolUseId"], "name": use["name"]}},
            }
            yield event("contentBlockStart", orjson.dumps(start))
            arguments = orjson.dumps(use["input"]).decode()
            middle = len(arguments) // 2
            for piece in (arguments[:middle], arguments[middle:]):
                delta = {"contentBlockIndex": index, "delta": {"toolUse": {"input": piece}}}
                yield event("contentBlockDelta", orjson.dumps(delta))
        yield event("contentBlockStop", orjson.dumps({"contentBlockIndex": index}))
    yield event("messageStop", orjson.dumps({"stopReason": answer["stopReason"]}))
    yield event("metadata", orjson.dumps({"usage": answer["usage"], "metrics": {"latencyMs": 42}}))


def isolate_aws_environment(monkeypatch: pytest.MonkeyPatch, directory: Path) -> None:
    """No AWS setting of the machine reaches the test: every `AWS_*` variable unset, the shared files pointed at
    (absent) files in `directory`, the instance metadata service off (botocore would wait for it)."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(directory / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(directory / "aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
