"""Random bodies and customer headers on the LLM routes: never a server error of our own (issue 10).

The LLM routes are raw ASGI, outside the OpenAPI document that schemathesis fuzzes, so hypothesis generates the
requests here: JSON built from the fields the pipeline reads (with values of every type), raw bytes that are not
JSON, and customer-id headers of any text. Over a mock upstream, every answer must be a success or a client error in
the envelope; 502/503/504 (an upstream's fault) are allowed, a 500 is not.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.e2e.e2e_stack import mock_deployment, proxy_config
from tests.support.proxy import RunningProxy, running_proxy

FIELDS = [
    "model",
    "messages",
    "prompt",
    "input",
    "user",
    "stream",
    "stream_options",
    "max_tokens",
    "max_completion_tokens",
    "n",
    "metadata",
    "litellm_metadata",
    "safety_identifier",
    "tools",
    "temperature",
]
UPSTREAM_FAULTS = {502, 503, 504}
ENVELOPE_KEYS = {"message", "type", "param", "code"}

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
    st.sampled_from(["gpt-3.5-turbo", "", "user", "\x00", "naïve"]),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.sampled_from([*FIELDS, "role", "content"]), inner, max_size=4)
    ),
    max_leaves=12,
)
messages = st.lists(
    st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "assistant", "x"]), "content": json_values}),
    max_size=3,
)
bodies = st.fixed_dictionaries(
    {"model": st.one_of(st.just("gpt-3.5-turbo"), json_values), "messages": st.one_of(messages, json_values)},
    optional={name: json_values for name in FIELDS if name not in ("model", "messages")},
)
# Header values a client can put on the wire: no control characters, no surrounding whitespace (HTTP forbids them).
header_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cc", "Cs"]), max_size=300).map(
    str.strip
)


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningProxy]:
    config = proxy_config([mock_deployment("gpt-3.5-turbo")])
    with running_proxy(tmp_path_factory.mktemp("llm-fuzz"), config) as running:
        yield running


@pytest.fixture(scope="module")
def http(proxy: RunningProxy) -> Iterator[httpx.Client]:
    with proxy.client() as client:
        yield client


def _assert_no_server_error(response: httpx.Response) -> None:
    assert response.status_code < 500 or response.status_code in UPSTREAM_FAULTS, response.text[:500]
    if response.status_code >= 400:
        assert set(response.json()["error"]) == ENVELOPE_KEYS, response.text[:500]


_SETTINGS = settings(max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck))


@_SETTINGS
@given(body=bodies, customer=st.one_of(st.none(), header_text))
def test_random_chat_bodies_and_customer_headers_never_get_a_500(
    http: httpx.Client, body: dict[str, Any], customer: str | None
) -> None:
    headers: list[tuple[bytes, bytes]] = [
        (b"authorization", http.headers["authorization"].encode()),
        (b"content-type", b"application/json"),
    ]
    if customer is not None:
        headers.append((b"x-litellm-customer-id", customer.encode()))
    content = orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS) if _is_encodable(body) else b"{}"
    _assert_no_server_error(http.post("/chat/completions", content=content, headers=headers))


@_SETTINGS
@given(content=st.binary(max_size=200), path=st.sampled_from(["/chat/completions", "/v1/completions", "/embeddings"]))
def test_random_bytes_as_a_body_never_get_a_500(http: httpx.Client, content: bytes, path: str) -> None:
    _assert_no_server_error(http.post(path, content=content, headers={"content-type": "application/json"}))


def _is_encodable(body: Any) -> bool:
    try:
        orjson.dumps(body)
    except orjson.JSONEncodeError:  # integers past 64 bits: not JSON orjson writes
        return False
    return True
