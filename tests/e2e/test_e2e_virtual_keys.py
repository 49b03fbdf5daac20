"""Virtual keys end to end: the official `openai` SDK presents a key from `/key/generate` to a proxy on SQLite and on
PostgreSQL, in front of a fake OpenAI upstream.

What a LiteLLM user's app relies on: the key calls chat (JSON and streaming), its spend shows in `/key/info` (exactly
the sum of its spend logs) and `/spend/logs?api_key=`; its rpm limit answers 429 with LiteLLM's headers, its budget
400, an expired, blocked or unknown key 401, a model outside its `models` 403. haimaker's trusted identity: a key
bound to a `customer_id` bills every call to that customer, and a call naming another customer (body `user`, header,
`metadata.user_id`) is refused with 403 before the upstream is called and charged to no one.

One proxy per engine (module scope) with a clock the tests move (`FakeClock`): keys and customers are per test.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from haimaker.clock import FakeClock
from haimaker.money import usd_to_nanos
from tests.api.mgmt_support import run
from tests.e2e.e2e_stack import openai_deployment, proxy_config, sync_client
from tests.support.databases import DATABASE_KINDS, DatabaseKind, drop_database, make_database_url
from tests.support.fakes import FakeOpenAI
from tests.support.proxy import RunningProxy, running_proxy

MODEL = "gpt-4o-mini"
OTHER_MODEL = "gpt-4o"
MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello"}]
# 1 µ$ per prompt token, 10 µ$ per completion token: exact in nano-dollars.
PRICES: dict[str, Any] = {"input_cost_per_token": 0.000001, "output_cost_per_token": 0.00001}


@pytest.fixture(scope="module", params=DATABASE_KINDS)
def clock_and_proxy(
    request: pytest.FixtureRequest, openai_server: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[FakeClock, RunningProxy]]:
    kind: DatabaseKind = request.param
    path = tmp_path_factory.mktemp(f"virtual-keys-{kind}")
    url = run(make_database_url(kind, path))
    clock = FakeClock()
    config = proxy_config(
        [openai_deployment(MODEL, openai_server, **PRICES), openai_deployment(OTHER_MODEL, openai_server, **PRICES)],
        general_settings={"database_url": url, "auth_failure_limit": 1000},
    )
    try:
        with running_proxy(path, config, clock=clock) as proxy:
            yield clock, proxy
    finally:
        run(drop_database(url))


@pytest.fixture
def proxy(clock_and_proxy: tuple[FakeClock, RunningProxy], openai_upstream: FakeOpenAI) -> RunningProxy:
    return clock_and_proxy[1]


@pytest.fixture
def clock(clock_and_proxy: tuple[FakeClock, RunningProxy]) -> FakeClock:
    return clock_and_proxy[0]


@pytest.fixture
def admin(proxy: RunningProxy) -> Iterator[httpx.Client]:
    with proxy.client() as client:
        yield client


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def generate(admin: httpx.Client, **fields: Any) -> dict[str, Any]:
    response = admin.post("/key/generate", json=fields)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def key_info(admin: httpx.Client, key: str) -> dict[str, Any]:
    response = admin.get("/key/info", params={"key": key})
    assert response.status_code == 200, response.text
    info: dict[str, Any] = response.json()["info"]
    return info


def flush(proxy: RunningProxy) -> None:
    """Every charge so far written to the store (the recorder batches them)."""
    proxy.call(proxy.state.recorder.flush())


def key_logs(admin: httpx.Client, token: str) -> list[dict[str, Any]]:
    response = admin.get("/spend/logs", params={"api_key": token})
    assert response.status_code == 200, response.text
    logs: list[dict[str, Any]] = response.json()
    return logs


def customer_spend(admin: httpx.Client, user: str) -> float | None:
    """A customer's spend, or None when the proxy has never seen it."""
    response = admin.get("/customer/info", params={"end_user_id": user})
    if response.status_code == 404:
        return None
    assert response.status_code == 200, response.text
    return float(response.json()["spend"])


def chat(proxy: RunningProxy, key: str, **extra: Any) -> Any:
    with sync_client(proxy, api_key=key) as client:
        return client.chat.completions.with_raw_response.create(
            model=extra.pop("model", MODEL), messages=MESSAGES, **extra
        )


def refused(proxy: RunningProxy, key: str, error: type[openai.APIStatusError], **extra: Any) -> dict[str, Any]:
    """A call the proxy must refuse with `error`; returns the envelope's `error` object."""
    with sync_client(proxy, api_key=key) as client, pytest.raises(error) as caught:
        client.chat.completions.create(model=extra.pop("model", MODEL), messages=MESSAGES, **extra)
    body = caught.value.response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    assert body["error"]["code"] == str(caught.value.status_code)
    detail: dict[str, Any] = body["error"]
    return detail


def test_a_virtual_key_calls_chat_json_and_streaming_and_its_spend_is_its_logs(
    proxy: RunningProxy, admin: httpx.Client, openai_upstream: FakeOpenAI
) -> None:
    created = generate(admin, key_alias=new_id("app"), models=[MODEL], rpm_limit=1000, max_budget=10)
    key, token = created["key"], created["token"]

    raw = chat(proxy, key, user="alice-" + token[:6])
    completion = raw.parse()
    assert completion.choices[0].message.content
    json_cost = float(raw.headers["x-litellm-response-cost"])
    assert json_cost > 0
    with sync_client(proxy, api_key=key) as client:
        stream = client.chat.completions.create(
            model=MODEL, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
        chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0
    # The upstream sees its own key, never the virtual key.
    assert all(key not in str(r.headers) for r in openai_upstream.requests_to("/chat/completions"))

    flush(proxy)
    logs = key_logs(admin, token)
    assert len(logs) == 2
    assert {log["api_key"] for log in logs} == {token}
    assert {log["call_type"] for log in logs} == {"acompletion"}
    spend = key_info(admin, key)["spend"]
    assert usd_to_nanos(spend) == sum(usd_to_nanos(log["spend"]) for log in logs)
    assert usd_to_nanos(spend) > usd_to_nanos(json_cost)
    # The master key's calls are not the key's.
    assert chat(proxy, proxy.master_key).status_code == 200
    flush(proxy)
    assert len(key_logs(admin, token)) == 2


def test_a_key_without_limits_shows_the_spend_of_its_logs(proxy: RunningProxy, admin: httpx.Client) -> None:
    """Regression: a key without limits of its own showed spend 0 in /key/info while its spend logs held its calls."""
    created = generate(admin)
    chat(proxy, created["key"])
    chat(proxy, created["key"], user=new_id("tenant"))
    flush(proxy)
    logs = key_logs(admin, created["token"])
    assert len(logs) == 2
    assert usd_to_nanos(key_info(admin, created["token"])["spend"]) == sum(usd_to_nanos(log["spend"]) for log in logs)


def test_key_rpm_limit_answers_429_with_litellms_headers(proxy: RunningProxy, admin: httpx.Client) -> None:
    created = generate(admin, rpm_limit=2, key_alias=new_id("rpm"))
    first = chat(proxy, created["key"])
    assert first.headers["x-ratelimit-api_key-limit-requests"] == "2"
    assert first.headers["x-ratelimit-api_key-remaining-requests"] == "1"
    second = chat(proxy, created["key"])
    assert second.headers["x-ratelimit-api_key-remaining-requests"] == "0"

    with sync_client(proxy, api_key=created["key"]) as client, pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model=MODEL, messages=MESSAGES)
    response = caught.value.response
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("rate_limit_error", "429")
    assert error["message"].startswith("Rate limit exceeded for api_key: ")
    assert "Limit type: requests. Current limit: 2, Remaining: 0." in error["message"]
    assert response.headers["rate_limit_type"] == "requests"
    assert 1 <= int(response.headers["retry-after"]) <= 60
    assert created["key"] not in response.text


def test_key_over_its_budget_answers_400_budget_exceeded(proxy: RunningProxy, admin: httpx.Client) -> None:
    created = generate(admin, max_budget=0.0000001, key_alias=new_id("poor"))
    first = chat(proxy, created["key"])  # the budget admits one call; it costs more than the budget
    cost = float(first.headers["x-litellm-response-cost"])
    assert cost > 0.0000001
    flush(proxy)

    error = refused(proxy, created["key"], openai.BadRequestError)
    assert error["type"] == "budget_exceeded"
    assert error["message"].startswith("Budget has been exceeded! Key=")
    assert f"Current cost: {cost}" in error["message"] and "Max budget: 1e-07" in error["message"]
    flush(proxy)
    assert len(key_logs(admin, created["token"])) == 1


def test_a_keys_budget_resets_on_its_budget_duration(
    proxy: RunningProxy, admin: httpx.Client, clock: FakeClock
) -> None:
    created = generate(admin, max_budget=0.0000001, budget_duration="1h")
    assert chat(proxy, created["key"]).status_code == 200
    assert refused(proxy, created["key"], openai.BadRequestError)["type"] == "budget_exceeded"
    clock.advance(2 * 3600)
    again = chat(proxy, created["key"])  # a new period: the spend starts from zero
    assert again.status_code == 200
    flush(proxy)
    info = key_info(admin, created["token"])
    assert usd_to_nanos(info["spend"]) == usd_to_nanos(float(again.headers["x-litellm-response-cost"]))
    assert len(key_logs(admin, created["token"])) == 2


def test_a_keys_model_rpm_limit_holds_on_that_model_only(proxy: RunningProxy, admin: httpx.Client) -> None:
    created = generate(admin, model_rpm_limit={MODEL: 1})
    assert chat(proxy, created["key"]).status_code == 200
    error = refused(proxy, created["key"], openai.RateLimitError)
    assert "Limit type: requests. Current limit: 1" in error["message"]
    assert chat(proxy, created["key"], model=OTHER_MODEL).status_code == 200


def test_an_expired_key_is_refused_with_401_when_the_clock_passes_its_expiry(
    proxy: RunningProxy, admin: httpx.Client, clock: FakeClock
) -> None:
    created = generate(admin, duration="1h")
    assert chat(proxy, created["key"]).status_code == 200
    clock.advance(3601)
    error = refused(proxy, created["key"], openai.AuthenticationError)
    assert error["type"] == "expired_key"
    assert error["message"].startswith("Authentication Error - Expired Key. Key Expiry time ")
    assert created["key"] not in error["message"]
    # The master key and unexpired keys still work.
    assert chat(proxy, proxy.master_key).status_code == 200


def test_blocked_and_unknown_keys_are_refused_with_401(proxy: RunningProxy, admin: httpx.Client) -> None:
    created = generate(admin)
    assert admin.post("/key/block", json={"key": created["key"]}).status_code == 200
    blocked = refused(proxy, created["key"], openai.AuthenticationError)
    assert blocked["message"] == "Authentication Error, Key is blocked. Update via `/key/unblock` if you're an admin."
    assert admin.post("/key/unblock", json={"key": created["token"]}).status_code == 200
    assert chat(proxy, created["key"]).status_code == 200

    unknown = refused(proxy, "sk-" + uuid.uuid4().hex, openai.AuthenticationError)
    assert unknown["message"] == "Authentication Error, Invalid proxy server token passed. Unable to find token."
    assert admin.post("/key/delete", json={"keys": [created["key"]]}).status_code == 200
    refused(proxy, created["key"], openai.AuthenticationError)


def test_a_model_outside_the_keys_models_is_refused_with_403(
    proxy: RunningProxy, admin: httpx.Client, openai_upstream: FakeOpenAI
) -> None:
    created = generate(admin, models=[MODEL])
    error = refused(proxy, created["key"], openai.PermissionDeniedError, model=OTHER_MODEL)
    assert error["type"] == "key_model_access_denied" and error["param"] == "model"
    assert OTHER_MODEL in error["message"]
    assert openai_upstream.requests_to("/chat/completions") == []
    assert chat(proxy, created["key"]).status_code == 200


def test_a_bound_key_bills_its_customer_without_user(proxy: RunningProxy, admin: httpx.Client) -> None:
    customer = new_id("acme")
    created = generate(admin, customer_id=customer)
    first = chat(proxy, created["key"])
    second = chat(proxy, created["key"], user=customer)  # naming its own customer is fine
    flush(proxy)
    charged = float(first.headers["x-litellm-response-cost"]) + float(second.headers["x-litellm-response-cost"])
    spend = customer_spend(admin, customer)
    assert spend is not None
    assert usd_to_nanos(spend) == usd_to_nanos(charged)
    assert {log["end_user"] for log in key_logs(admin, created["token"])} == {customer}


@pytest.mark.parametrize(
    "spoof",
    [
        pytest.param(lambda other: {"user": other}, id="body-user"),
        pytest.param(lambda other: {"extra_headers": {"x-litellm-customer-id": other}}, id="header"),
        pytest.param(lambda other: {"extra_headers": {"x-litellm-end-user-id": other}}, id="end-user-header"),
        pytest.param(lambda other: {"metadata": {"user_id": other}}, id="metadata-user_id"),
        pytest.param(lambda other: {"extra_body": {"litellm_metadata": {"user": other}}}, id="litellm_metadata-user"),
        pytest.param(lambda other: {"user": other, "stream": True}, id="streaming-body-user"),
    ],
)
def test_a_bound_key_naming_another_customer_is_refused_and_charges_nothing(
    proxy: RunningProxy, admin: httpx.Client, openai_upstream: FakeOpenAI, spoof: Any
) -> None:
    customer, other = new_id("bound"), new_id("victim")
    created = generate(admin, customer_id=customer)
    error = refused(proxy, created["key"], openai.PermissionDeniedError, **spoof(other))
    assert error["type"] == "customer_mismatch"
    assert openai_upstream.requests_to("/chat/completions") == []
    flush(proxy)
    assert customer_spend(admin, other) is None
    assert not customer_spend(admin, customer)
    assert key_logs(admin, created["token"]) == []
    assert key_info(admin, created["token"])["spend"] == 0


def test_an_unbound_key_bills_the_customer_the_request_names(proxy: RunningProxy, admin: httpx.Client) -> None:
    created = generate(admin, rpm_limit=1000)
    first, second = new_id("tenant"), new_id("tenant")
    cost_first = float(chat(proxy, created["key"], user=first).headers["x-litellm-response-cost"])
    cost_second = float(
        chat(proxy, created["key"], extra_headers={"x-litellm-customer-id": second}).headers["x-litellm-response-cost"]
    )
    chat(proxy, created["key"])  # no customer at all: only the key is charged
    flush(proxy)
    assert usd_to_nanos(customer_spend(admin, first) or 0) == usd_to_nanos(cost_first)
    assert usd_to_nanos(customer_spend(admin, second) or 0) == usd_to_nanos(cost_second)
    logs = key_logs(admin, created["token"])
    assert sorted(str(log["end_user"]) for log in logs) == sorted([first, second, ""])
    assert usd_to_nanos(key_info(admin, created["token"])["spend"]) == sum(usd_to_nanos(log["spend"]) for log in logs)


def test_a_customer_first_seen_through_a_key_gets_its_end_user_budget(proxy: RunningProxy, admin: httpx.Client) -> None:
    budget_id = new_id("key-tier")
    assert admin.post("/budget/new", json={"budget_id": budget_id, "rpm_limit": 2}).status_code == 200
    created = generate(admin, end_user_budget_id=budget_id)
    newcomer = new_id("newcomer")
    assert chat(proxy, created["key"], user=newcomer).headers["x-ratelimit-end_user-limit-requests"] == "2"
    # No flush between the calls: the first call's charge (which carries the budget) and the second's are written in
    # one group, and the customer keeps the key's budget (regression: the second call's log won).
    assert chat(proxy, created["key"], user=newcomer).status_code == 200
    error = refused(proxy, created["key"], openai.RateLimitError, user=newcomer)
    assert "Limit type: requests" in error["message"]
    flush(proxy)
    info = admin.get("/customer/info", params={"end_user_id": newcomer}).json()
    assert info["budget_id"] == budget_id
    assert info["litellm_budget_table"]["rpm_limit"] == 2
    # A customer seen first through the master key is not given the key's budget.
    plain = new_id("plain")
    assert chat(proxy, proxy.master_key, user=plain).status_code == 200
    flush(proxy)
    assert admin.get("/customer/info", params={"end_user_id": plain}).json()["budget_id"] is None
