"""Helpers of the management API tests: configs, proxies on a database of either engine, and envelope checks."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx

from tests.support.proxy import RunningProxy, base_config, running_proxy

# The user's document uses the publicly known example key; haimaker starts with it (and warns).
SEED_KEY = "sk-1234"
MOCK = {"model": "mock/gpt-3.5-turbo"}
MODEL_LIST = [
    {"model_name": "gpt-3.5-turbo", "litellm_params": MOCK},
    {"model_name": "azure-gpt-3.5", "litellm_params": MOCK},
    {"model_name": "mistral", "litellm_params": MOCK},
]
# The default budget of the shared proxy (conftest.py): rpm_limit 1000, max_budget $1000.
DEFAULT_TIER = "default-tier"
CHAT = {"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "Hello"}]}

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on a private loop (database setup from sync fixtures), leaving the thread's loop alone."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


def mgmt_config(database_url: str, **sections: Any) -> dict[str, Any]:
    """A proxy config on `database_url` with three mock models and the seed's master key."""
    general = {"master_key": SEED_KEY, "database_url": database_url, **sections.pop("general_settings", {})}
    return base_config(model_list=MODEL_LIST, general_settings=general, **sections)


@contextlib.contextmanager
def proxy_on(tmp_path: Path, config: dict[str, Any]) -> Iterator[RunningProxy]:
    """A running proxy whose `headers()` and `client()` carry the config's master key."""
    with running_proxy(tmp_path, config) as proxy:
        proxy.master_key = config["general_settings"].get("master_key") or ""
        yield proxy


def new_id(prefix: str = "cust") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def assert_error(
    response: httpx.Response, status: int, error_type: str, message: str | None = None, param: str | None = "<any>"
) -> dict[str, Any]:
    """The response is `status` with the OpenAI error envelope; returns its `error` object."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert error["type"] == error_type, error
    assert error["code"] == str(status), error
    if message is not None:
        assert error["message"] == message, error
    if param != "<any>":
        assert error["param"] == param, error
    return error


def chat(client: httpx.Client, user: str, model: str = "gpt-3.5-turbo") -> httpx.Response:
    return client.post("/chat/completions", json={**CHAT, "model": model, "user": user})
