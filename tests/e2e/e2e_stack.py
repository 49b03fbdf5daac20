"""The stack the end-to-end tests drive: config builders for deployments on the fake upstreams, SDK clients
pointed at a running proxy, and small wire-level readers (SSE bodies, Prometheus text).

Every proxy here is a real one (`support.proxy.running_proxy`: uvicorn on 127.0.0.1 in a thread) and every
upstream a real fake server on loopback (`fakes`), so a test crosses the same sockets a deployment would.
"""

from __future__ import annotations

import socket
import uuid
from typing import Any

import httpx
import openai
import orjson

from haimaker.money import usd_to_nanos
from tests.support.fakes import FakeAzureOpenAI, FakeOpenAI
from tests.support.proxy import MASTER_KEY, RunningProxy

# The key the deployments present upstream; it must never reach a client or a log line.
UPSTREAM_KEY = "sk-upstream-secret-0123456789abcdef"


def mock_deployment(model_name: str, **params: Any) -> dict[str, Any]:
    """A `model_list` entry served by the built-in `mock/` provider."""
    return {"model_name": model_name, "litellm_params": {"model": f"mock/{model_name}", **params}}


def openai_deployment(
    model_name: str,
    fake: FakeOpenAI,
    *,
    upstream_model: str | None = None,
    model_info: dict[str, Any] | None = None,
    **params: Any,
) -> dict[str, Any]:
    """A `model_list` entry for `openai/<upstream_model>` pointed at a fake OpenAI upstream."""
    litellm_params = {
        "model": f"openai/{upstream_model or model_name}",
        "api_base": fake.base_url,
        "api_key": fake.api_key,
        **params,
    }
    entry: dict[str, Any] = {"model_name": model_name, "litellm_params": litellm_params}
    if model_info is not None:
        entry["model_info"] = model_info
    return entry


def azure_deployment(
    model_name: str, fake: FakeAzureOpenAI, deployment: str, *, api_version: str = "2024-10-21", **params: Any
) -> dict[str, Any]:
    """A `model_list` entry for `azure/<deployment>` pointed at a fake Azure OpenAI resource."""
    litellm_params = {
        "model": f"azure/{deployment}",
        "api_base": fake.azure_endpoint,
        "api_key": fake.api_key,
        "api_version": api_version,
        **params,
    }
    return {"model_name": model_name, "litellm_params": litellm_params}


def proxy_config(model_list: list[dict[str, Any]], **sections: dict[str, Any]) -> dict[str, Any]:
    """A whole config: the models, the test master key, and any extra sections merged in."""
    config: dict[str, Any] = {"model_list": model_list, "general_settings": {"master_key": MASTER_KEY}}
    for name, section in sections.items():
        config[name] = {**config.get(name, {}), **section}
    return config


def sync_client(proxy: RunningProxy, *, prefix: str = "/v1", api_key: str | None = None) -> openai.OpenAI:
    """An SDK client on the proxy that never retries (tests count upstream calls); use it in a `with` block."""
    return openai.OpenAI(base_url=proxy.url + prefix, api_key=api_key or proxy.master_key, max_retries=0, timeout=15)


def async_client(proxy: RunningProxy, *, prefix: str = "/v1", api_key: str | None = None) -> openai.AsyncOpenAI:
    """The async twin of `sync_client`; use it in an `async with` block."""
    return openai.AsyncOpenAI(
        base_url=proxy.url + prefix, api_key=api_key or proxy.master_key, max_retries=0, timeout=15
    )


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released), for connection-refused upstreams."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def sse_payloads(raw: bytes) -> list[Any]:
    """The `data:` payloads of an SSE body, JSON-decoded; the `[DONE]` sentinel is kept as the string."""
    payloads: list[Any] = []
    for event in raw.replace(b"\r\n", b"\n").split(b"\n\n"):
        lines = [line[5:].strip() for line in event.split(b"\n") if line.startswith(b"data:")]
        if not lines:
            continue
        data = b"\n".join(lines)
        payloads.append("[DONE]" if data == b"[DONE]" else orjson.loads(data))
    return payloads


def metric_samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """The samples of one metric in Prometheus text format, as (labels, value) pairs."""
    samples: list[tuple[dict[str, str], float]] = []
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        metric, _, label_text = head.partition("{")
        if metric != name:
            continue
        labels: dict[str, str] = {}
        for pair in label_text.rstrip("}").split(","):
            if pair:
                key, _, quoted = pair.partition("=")
                labels[key] = quoted.strip('"')
        samples.append((labels, float(value)))
    return samples


def new_customer(admin: httpx.Client, **fields: Any) -> str:
    """Create a customer with a fresh id (and any fields); return the id."""
    user_id = f"cust-{uuid.uuid4().hex[:10]}"
    created = admin.post("/customer/new", json={"user_id": user_id, **fields})
    assert created.status_code == 200, created.text
    return user_id


def customer_spend_nanos(admin: httpx.Client, customer: str) -> int:
    """A customer's spend as `/customer/info` reports it, in nano-dollars."""
    response = admin.get("/customer/info", params={"end_user_id": customer})
    assert response.status_code == 200, response.text
    return usd_to_nanos(response.json()["spend"])


def spend_logs(proxy: RunningProxy, admin: httpx.Client, customer: str) -> list[dict[str, Any]]:
    """A customer's spend log rows, once every pending charge is written."""
    proxy.call(proxy.state.recorder.flush())
    response = admin.get("/spend/logs", params={"end_user": customer})
    assert response.status_code == 200, response.text
    rows: list[dict[str, Any]] = response.json()
    return rows
