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

    def __init__(
        self, failures: dict[str, UpstreamError] | None = None, *, once: dict[str, list[UpstreamError]] | None = None
    ) -> None:
        self.failures = failures or {}
        # Failures a deployment raises on its next calls, one per call, before `failures` applies.
        self.once = once or {}
        self.calls: list[str] = []

    async def open(self, deployment: Deployment, route: Route, body: dict[str, Any], stream: bool) -> ScriptedAnswer:
        self.calls.append(deployment.model_id)
        pending = self.once.get(deployment.model_id)
        if pending:
            raise pending.pop(0)
        failure = self.failures.get(deployment.model_id)
        if failure is not None:
            raise failure
        return ScriptedAnswer()

    async def aclose(self) -> None:
        pass


async def no_sleep(seconds: float) -> None:
    """The router's backoff, skipped (tests that count waits record them instead)."""
