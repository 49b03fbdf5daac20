"""Enforcement before any upstream call, on every identity path: blocked, model allow-list, budget,
rpm/tpm/parallel limits, soft budget alerts, enforce_user_param, unpriced models."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.limits.budget_setup import async_client, chat_body, cost_of, priced_model
from tests.support.proxy import base_config, running_proxy


def _config(**sections: Any) -> dict[str, Any]:
    return base_config(model_list=[priced_model(latency_ms=0)], **sections)


IDENTITY_PATHS: dict[str, tuple[dict[str, str], dict[str, Any]]] = {
    "body-user": ({}, {"user": "who"}),
    "customer-header": ({"x-litellm-customer-id": "who"}, {}),
    "end-user-header": ({"x-litellm-end-user-id": "who"}, {}),
    "metadata-user-id": ({}, {"metadata": {"user_id": "who"}}),
    "litellm-metadata-user": ({}, {"litellm_metadata": {"user": "who"}}),
    "safety-identifier": ({}, {"safety_identifier": "who"}),
}


@pytest.mark.parametrize("path", list(IDENTITY_PATHS))
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_blocked_customer_is_refused_with_403_on_every_identity_path(
    tmp_path: Path, path: str, stream: bool
) -> None:
    headers, body_extra = IDENTITY_PATHS[path]
    with running_proxy(tmp_path, _config()) as proxy:
        async with async_client(proxy.url, proxy.master_key) as client:
            blocked = await client.post("/customer/block", json={"user_ids": ["who"]})
            assert blocked.status_code == 200, blocked.text
            body = {**chat_body(None), **body_extra, "stream": stream}
            response = await client.post("/v1/chat/completions", json=body, headers=headers)
            assert response.status_code == 403
            assert response.json() == {
                "error": {
                    "message": "User blocked from making LLM API Calls. User=who",
                    "type": "customer_blocked",
                    "param": None,
                    "code": "403",
                }
            }
            assert (await client.post("/customer/unblock", json={"user_ids": ["who"]})).status_code == 200
            assert (await client.post("/v1/chat/completions", json=body, headers=headers)).status_code == 200


async def test_model_outside_the_allow_list_is_refused_with_403(tmp_path: Path) -> None:
    config = _config()
    config["model_list"].append({"model_name": "other", "litellm_params": {"model": "mock/gpt-4o-mini"}})
    with running_proxy(tmp_path, config) as proxy:
        async with async_client(proxy.url, proxy.master_key) as client:
            created = await client.post("/customer/new", json={"user_id": "picky", "models": ["priced"]})
            assert created.status_code == 200, created.text
            assert (await client.post("/v1/chat/completions", json=chat_body("picky"))).status_code == 200
            refused = await client.post("/v1/chat/completions", json={**chat_body("picky"), "model": "other"})
            assert refused.status_code == 403
            assert refused.json()["error"]["type"] == "customer_model_access_denied"
            assert "'other'" in refused.json()["error"]["message"]


async def test_max_budget_zero_admits_no_request_and_status_code_is_configurable(tmp_path: Path) -> None:
    config = _config(litellm_settings={"budget_exceeded_status_code": 429})
    with running_proxy(tmp_path, config) as proxy:
        async with async_client(proxy.url, proxy.master_key) as client:
            created = await client.post("/customer/new", json={"user_id": "zero", "max_budget": "0"})
            assert created.status_code == 200, created.text
            refused = await client.post("/v1/chat/completions", json=chat_body("zero"))
            assert refused.status_code == 429
            error = refused.json()["error"]
            assert error["type"] == "budget_exceeded" and error["code"] == "429"
            assert error["message"].startswith("Budget has been exceeded! EndUser=zero Current cost: 0")
            # Recorded as a refusal (issue 14: tests/accounting/test_refusals.py), never charged.
            [log] = (await client.get("/spend/logs", params={"end_user": "zero"})).json()
            assert (log["status"], log["spend"], log["metadata"]["status_code"]) == ("failure", 0.0, 429)


async def test_max_parallel_requests_refuses_the_extra_concurrent_request(tmp_path: Path) -> None:
    config = base_config(model_list=[priced_model(latency_ms=300)])
    with running_proxy(tmp_path, config) as proxy:
        async with async_client(proxy.url, proxy.master_key) as client:
            created = await client.post("/customer/new", json={"user_id": "par", "max_parallel_requests": 2})
            assert created.status_code == 200, created.text
            responses = await asyncio.gather(
                *(client.post("/v1/chat/completions", json=chat_body("par")) for _ in range(5))
            )
            assert sorted(r.status_code for r in responses) == [200, 200, 429, 429, 429]
            limited = next(r for r in responses if r.status_code == 429)
            assert "Limit type: parallel_requests" in limited.json()["error"]["message"]
            # Slots come back when requests finish.
            assert (await client.post("/v1/chat/completions", json=chat_body("par"))).status_code == 200


async def test_tpm_limit_admits_the_first_request_of_a_window_then_refuses(tmp_path: Path) -> None:
    with running_proxy(tmp_path, _config()) as proxy:
        async with async_client(proxy.url, proxy.master_key) as client:
            created = await client.post("/customer/new", json={"user_id": "tok", "tpm_limit": 2})
            assert created.status_code == 200, created.text
            first = await client.post("/v1/chat/completions", json=chat_body("tok"))
            assert first.status_code == 200
            assert first.headers["x-ratelimit-end_user-limit-tokens"] == "2"
            second = await client.post("/v1/chat/completions", json=chat_body("tok"))
            assert second.status_code == 429
            assert second.headers["rate_limit_type"] == "tokens"


async def test_remaining_tokens_count_what_a_request_used_not_its_reservation(tmp_path: Path) -> None:
    """A request without max_tokens reserves thousands of tokens; the header after it counts the tokens it used."""
    with running_proxy(tmp_path, _config()) as proxy:
        async with async_client(proxy.url, proxy.master_key) as client:
            created = await client.post("/customer/new", json={"user_id": "few", "tpm_limit": 100_000})
            assert created.status_code == 200, created.text
            used = 0
            for _ in range(2):
                answer = await client.post("/v1/chat/completions", json=chat_body("few"))
                assert answer.status_code == 200
                used += answer.json()["usage"]["total_tokens"]
                assert int(answer.headers["x-ratelimit-end_user-remaining-tokens"]) == 100_000 - used


async def test_enforce_user_param_refuses_requests_without_a_customer(tmp_path: Path) -> None:
    with running_proxy(tmp_path, _config(general_settings={"enforce_user_param": True})) as proxy:
        async with async_client(proxy.url, proxy.master_key) as client:
            refused = await client.post("/v1/chat/completions", json=chat_body(None))
            assert refused.status_code == 401
            assert "'user' param not passed in" in refused.json()["error"]["message"]
            assert (await client.post("/v1/chat/completions", json=chat_body("someone"))).status_code == 200


async def test_customer_id_longer_than_256_characters_is_refused(tmp_path: Path) -> None:
    with running_proxy(tmp_path, _config()) as proxy:
        async with async_client(proxy.url, proxy.master_key) as client:
            refused = await client.post("/v1/chat/completions", json=chat_body("x" * 257))
            assert refused.status_code == 400
            assert refused.json()["error"]["param"] == "user"


async def test_unpriced_models_are_refused_when_pricing_is_required(tmp_path: Path) -> None:
    config = base_config(
        model_list=[{"model_name": "mystery", "litellm_params": {"model": "mock/no-such-priced-model"}}],
        litellm_settings={"block_requests_for_models_without_pricing": True},
    )
    with running_proxy(tmp_path, config) as proxy:
        async with async_client(proxy.url, proxy.master_key) as client:
            body = {"model": "mystery", "messages": [{"role": "user", "content": "hi"}], "user": "u"}
            refused = await client.post("/v1/chat/completions", json=body)
            assert refused.status_code == 403
            assert refused.json()["error"]["type"] == "model_cost_map_missing"


class _Webhook:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        received = self.events

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                received.append(json.loads(self.rfile.read(length)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)


@pytest.fixture
def webhook() -> Iterator[_Webhook]:
    hook = _Webhook()
    hook.thread.start()
    yield hook
    hook.server.shutdown()
    hook.server.server_close()


async def test_soft_budget_header_and_one_webhook_alert_per_crossing(
    tmp_path: Path, webhook: _Webhook, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WEBHOOK_URL", webhook.url)
    config = _config(general_settings={"alerting": ["webhook"]})
    with running_proxy(tmp_path, config) as proxy:
        async with async_client(proxy.url, proxy.master_key) as client:
            probe = await client.post("/v1/chat/completions", json=chat_body("probe"))
            cost = cost_of(probe)
            created = await client.post(
                "/customer/new", json={"user_id": "soft", "soft_budget": round(cost * 1.5, 9), "max_budget": 1}
            )
            assert created.status_code == 200, created.text
            first = await client.post("/v1/chat/completions", json=chat_body("soft"))
            assert "x-litellm-soft-budget-exceeded" not in first.headers
            for _ in range(3):
                later = await client.post("/v1/chat/completions", json=chat_body("soft"))
                assert later.status_code == 200  # a soft budget never blocks
                assert later.headers["x-litellm-soft-budget-exceeded"] == "true"
            for _ in range(50):
                if webhook.events:
                    break
                await asyncio.sleep(0.05)
            crossed = [e for e in webhook.events if e["event"] == "soft_budget_crossed"]
            assert len(crossed) == 1
            assert crossed[0]["customer_id"] == "soft" and crossed[0]["event_group"] == "customer"
            assert crossed[0]["soft_budget"] == pytest.approx(cost * 1.5)


async def test_a_dead_webhook_never_slows_or_fails_requests(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBHOOK_URL", "http://127.0.0.1:9/unreachable")
    config = _config(general_settings={"alerting": ["webhook"]})
    with running_proxy(tmp_path, config) as proxy:
        async with async_client(proxy.url, proxy.master_key) as client:
            created = await client.post(
                "/customer/new", json={"user_id": "s2", "soft_budget": 0.0000001, "max_budget": 1}
            )
            assert created.status_code == 200, created.text
            for _ in range(3):
                response = await client.post("/v1/chat/completions", json=chat_body("s2"))
                assert response.status_code == 200
                assert float(response.headers["x-litellm-overhead-duration-ms"]) < 500
