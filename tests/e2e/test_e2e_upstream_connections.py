"""The proxy's upstream connections under pressure (issue 11): TLS to a private CA, the per-origin connection bound.

Through a real proxy and the fake OpenAI upstream: a deployment's `ssl_verify` names the CA its upstream's certificate
comes from (one without it refuses that upstream: 502), and with `max_upstream_connections_per_origin` reached a
request waits for a connection, and past its timeout answers 504 in our envelope without reaching the upstream.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from haimaker.config.loader import ConfigError, load_config
from tests.e2e.e2e_stack import openai_deployment, proxy_config
from tests.support.certificates import CertificateAuthority, make_authority
from tests.support.fakes import BEHAVIOR_FIELD, FakeOpenAI
from tests.support.proxy import MASTER_KEY, running_proxy

MESSAGES = [{"role": "user", "content": "hi"}]
HEADERS = {"Authorization": f"Bearer {MASTER_KEY}"}


@pytest.fixture(scope="module")
def authority(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return make_authority(tmp_path_factory.mktemp("tls") / "ca")


@pytest.fixture(scope="module")
def tls_upstream(authority: CertificateAuthority) -> Iterator[FakeOpenAI]:
    with FakeOpenAI(tls=authority.server_context()) as fake:
        yield fake


def test_a_deployment_trusts_the_ca_its_ssl_verify_names_and_no_other(
    tmp_path: Path, tls_upstream: FakeOpenAI, authority: CertificateAuthority
) -> None:
    config = proxy_config(
        [
            openai_deployment("private", tls_upstream, upstream_model="gpt-4o", ssl_verify=str(authority.ca_file)),
            openai_deployment("system-cas", tls_upstream, upstream_model="gpt-4o"),
        ],
        router_settings={"num_retries": 0},
    )
    with running_proxy(tmp_path, config) as proxy, httpx.Client(base_url=proxy.url, headers=HEADERS) as client:
        answer = client.post("/v1/chat/completions", json={"model": "private", "messages": MESSAGES})
        assert answer.status_code == 200, answer.text
        assert answer.json()["choices"][0]["message"]["content"]
        streamed = client.post("/v1/chat/completions", json={"model": "private", "messages": MESSAGES, "stream": True})
        assert streamed.status_code == 200 and streamed.text.rstrip().endswith("data: [DONE]")

        refused = client.post("/v1/chat/completions", json={"model": "system-cas", "messages": MESSAGES})
    assert refused.status_code == 502
    error = refused.json()["error"]
    assert "certificate verify failed" in error["message"]
    assert set(error) == {"message", "type", "param", "code"}
    assert len(tls_upstream.requests) == 2, "the refused call never reached the upstream"


def test_litellm_settings_ssl_verify_is_the_trust_of_deployments_without_their_own(
    tmp_path: Path, tls_upstream: FakeOpenAI, authority: CertificateAuthority
) -> None:
    config = proxy_config(
        [openai_deployment("private", tls_upstream, upstream_model="gpt-4o")],
        litellm_settings={"ssl_verify": str(authority.ca_file)},
    )
    with running_proxy(tmp_path, config) as proxy, httpx.Client(base_url=proxy.url, headers=HEADERS) as client:
        answer = client.post("/v1/chat/completions", json={"model": "private", "messages": MESSAGES})
    assert answer.status_code == 200, answer.text


def test_a_ca_bundle_that_does_not_exist_stops_startup_with_its_path(tmp_path: Path, tls_upstream: FakeOpenAI) -> None:
    config = proxy_config([openai_deployment("private", tls_upstream, ssl_verify=str(tmp_path / "missing.pem"))])
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert any("model_list[0].litellm_params.ssl_verify" in problem for problem in raised.value.problems)


async def test_past_the_connection_bound_a_request_waits_then_answers_504_without_reaching_the_upstream(
    tmp_path: Path, openai_upstream: FakeOpenAI
) -> None:
    config = proxy_config(
        [
            openai_deployment("patient", openai_upstream, upstream_model="gpt-4o", timeout=10),
            openai_deployment("hasty", openai_upstream, upstream_model="gpt-4o", timeout=0.5),
        ],
        general_settings={"max_upstream_connections_per_origin": 1},
        router_settings={"num_retries": 0},
    )
    with running_proxy(tmp_path, config) as proxy:
        async with httpx.AsyncClient(base_url=proxy.url, headers=HEADERS, timeout=30) as client:
            slow = asyncio.ensure_future(
                client.post(
                    "/v1/chat/completions",
                    json={"model": "patient", "messages": MESSAGES, BEHAVIOR_FIELD: {"delay_s": 1.5}},
                )
            )
            await openai_upstream.wait_until(lambda stats: stats.in_flight == 1)
            hasty = await client.post("/v1/chat/completions", json={"model": "hasty", "messages": MESSAGES})
            waiting = asyncio.ensure_future(
                client.post("/v1/chat/completions", json={"model": "patient", "messages": MESSAGES})
            )
            first, second = await asyncio.gather(slow, waiting)
    assert hasty.status_code == 504
    error = hasty.json()["error"]
    assert error["code"] == "504" and "No upstream connection was free" in error["message"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (first.status_code, second.status_code) == (200, 200)
    peers = [request.peer for request in openai_upstream.requests]
    assert len(peers) == 2 and peers[0] == peers[1], "the waiting request went out on the connection freed for it"
