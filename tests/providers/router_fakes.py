"""A provider for router tests: answers, or fails with the error scripted for a deployment id."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from haimaker.errors import UpstreamError
from haimaker.providers.base import Deployment, Route


class ScriptedAnswer:
    status = 200

    async def read(self) -> bytes:
        return b"{}"

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        yield b""

    def at_end(self) -> bool:
        return True

    def close(self) -> None:
        pass


class ScriptedProvider:
    """Answers, or fails with the error scripted for a deployment id; records the ids it was asked to call."""

    def __init__(self, failures: dict[str, UpstreamError] | None = None) -> None:
        self.failures = failures or {}
        self.calls: list[str] = []

    async def open(self, deployment: Deployment, route: Route, body: dict[str, Any], stream: bool) -> ScriptedAnswer:
        self.calls.append(deployment.model_id)
        failure = self.failures.get(deployment.model_id)
        if failure is not None:
            raise failure
        return ScriptedAnswer()

    async def aclose(self) -> None:
        pass
