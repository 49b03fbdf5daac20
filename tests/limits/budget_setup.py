"""Helpers for the budget tests: a priced mock model and HTTP calls as a customer."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

# 1 µ$ per prompt token, 10 µ$ per completion token: exact in nano-dollars.
INPUT_COST = 0.000001
OUTPUT_COST = 0.00001
REPLY = "alpha beta gamma delta epsilon"
MAX_TOKENS = 5


def priced_model(latency_ms: float = 50) -> dict[str, Any]:
    return {
        "model_name": "priced",
        "litellm_params": {
            "model": "mock/gpt-3.5-turbo",
            "mock_response": REPLY,
            "mock_latency_ms": latency_ms,
            "input_cost_per_token": INPUT_COST,
            "output_cost_per_token": OUTPUT_COST,
        },
    }


def chat_body(user: str | None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "priced",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": MAX_TOKENS,
        **extra,
    }
    if user is not None:
        body["user"] = user
    return body


async def fire(client: httpx.AsyncClient, user: str, count: int) -> list[httpx.Response]:
    """`count` simultaneous chat requests as `user`."""
    return await asyncio.gather(*(client.post("/v1/chat/completions", json=chat_body(user)) for _ in range(count)))


def async_client(url: str, key: str) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=300, max_keepalive_connections=300)
    return httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60, limits=limits)


def cost_of(response: httpx.Response) -> float:
    return float(response.headers["x-litellm-response-cost"])
