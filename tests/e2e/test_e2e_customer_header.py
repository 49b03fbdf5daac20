"""A customer id sent in a header is the same customer as in the body, whatever its characters (issue 10, finding 3).

Header values arrive as bytes; clients send UTF-8. Decoding them as latin-1 turned `naïve` into `naÃ¯ve`, another,
unblocked customer without a budget: blocks and budgets were bypassed by sending the id in a header instead of `user`.
The bytes here are put on the wire as they are (httpx sends bytes header values untouched).
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.e2e_stack import mock_deployment, proxy_config
from tests.support.proxy import RunningProxy, running_proxy

CHAT = {"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningProxy]:
    config = proxy_config([mock_deployment("gpt-3.5-turbo")])
    with running_proxy(tmp_path_factory.mktemp("customer-header"), config) as running:
        yield running


@pytest.fixture
def http(proxy: RunningProxy) -> Iterator[httpx.Client]:
    with proxy.client() as client:
        yield client


def _chat_with_header(http: httpx.Client, name: bytes, value: bytes) -> httpx.Response:
    headers = [(b"authorization", http.headers["authorization"].encode()), (name, value)]
    return http.post("/chat/completions", json=CHAT, headers=headers)


@pytest.mark.parametrize("customer_id", ["naïve", "Zoë-Ø", "顧客-7", "emoji-😀"])
def test_a_blocked_customer_with_a_non_ascii_id_is_blocked_in_a_header_too(
    http: httpx.Client, customer_id: str
) -> None:
    assert http.post("/customer/block", json={"user_ids": [customer_id]}).status_code == 200
    by_body = http.post("/chat/completions", json={**CHAT, "user": customer_id})
    assert by_body.status_code == 403, by_body.text
    for header in (b"x-litellm-customer-id", b"x-litellm-end-user-id"):
        by_header = _chat_with_header(http, header, customer_id.encode())
        assert by_header.status_code == 403, by_header.text
        assert by_header.json()["error"]["type"] == "customer_blocked"


def test_a_customer_over_budget_with_a_non_ascii_id_is_refused_in_a_header_too(http: httpx.Client) -> None:
    created = http.post("/customer/new", json={"user_id": "Ærø-budget", "max_budget": 0})
    assert created.status_code == 200, created.text
    response = _chat_with_header(http, b"x-litellm-customer-id", "Ærø-budget".encode())
    assert response.status_code == 400, response.text
    assert response.json()["error"]["type"] == "budget_exceeded"


def test_a_header_id_is_stored_under_the_same_id_as_in_the_body(http: httpx.Client, proxy: RunningProxy) -> None:
    assert _chat_with_header(http, b"x-litellm-customer-id", "café-7".encode()).status_code == 200
    proxy.call(proxy.state.recorder.flush())
    info = http.get("/customer/info", params={"end_user_id": "café-7"})
    assert info.status_code == 200, info.text
    assert info.json()["user_id"] == "café-7"


@pytest.mark.parametrize("value", [b"na\xefve", b"\xff\xfe", b"ok\xc3"])
def test_a_customer_header_that_is_not_utf8_is_a_400_naming_the_header(http: httpx.Client, value: bytes) -> None:
    response = _chat_with_header(http, b"x-litellm-customer-id", value)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == "x-litellm-customer-id"
    assert "UTF-8" in error["message"]


def test_a_header_we_do_not_read_may_carry_bytes_that_are_not_utf8(http: httpx.Client) -> None:
    # Only the headers read as ids or keys must be UTF-8; a client's latin-1 note elsewhere is not our business.
    headers = [(b"authorization", http.headers["authorization"].encode()), (b"x-note", b"caf\xe9")]
    assert http.get("/customer/list", headers=headers).status_code == 200
    assert _chat_with_header(http, b"x-note", b"caf\xe9").status_code == 200


def test_a_key_that_is_not_utf8_is_a_401_not_a_500(http: httpx.Client) -> None:
    response = http.get("/customer/list", headers=[(b"authorization", b"Bearer sk-\xff\xfe")])
    assert response.status_code == 401, response.text


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"user": "pg-nul\x00x"}, "user"),
        ({"user": "u" * 257}, "user"),
        ({"metadata": {"user_id": "nul\x00"}}, "metadata.user_id"),
        ({"litellm_metadata": {"user": "nul\x00"}}, "litellm_metadata.user"),
        ({"safety_identifier": "nul\x00"}, "safety_identifier"),
    ],
)
def test_a_body_customer_id_the_store_cannot_hold_is_a_400(
    http: httpx.Client, fields: dict[str, object], param: str
) -> None:
    response = http.post("/chat/completions", json={**CHAT, **fields})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert error["message"].startswith("Customer id ")
