"""Virtual keys over three instances sharing PostgreSQL and Redis: a key's rpm is exact across the cluster (one Lua
script per admission), a key created on one instance works on another at once, and a key blocked or deleted on one
is refused by the others within a second."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from typing import Any

import httpx
import pytest

from haimaker.money import usd_to_nanos
from tests.cluster.cluster_setup import (
    Deployment,
    Instance,
    ProxyCluster,
    chat_body,
    cluster_config,
    connected,
    started,
)

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.postgres]


@pytest.fixture(scope="module")
def instances(module_deployment: Deployment, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Instance]]:
    config = cluster_config(module_deployment.database_url, module_deployment.redis_url, module_deployment.prefix)
    with started(tmp_path_factory.mktemp("cluster-keys"), config) as instances:
        yield instances


@pytest.fixture
async def cluster(instances: list[Instance], module_deployment: Deployment) -> AsyncIterator[ProxyCluster]:
    async with connected(instances, module_deployment.database_url) as cluster:
        yield cluster


class KeyClients:
    """One HTTP client per instance presenting a virtual key."""

    def __init__(self, clients: list[httpx.AsyncClient]) -> None:
        self.clients = clients

    async def chat(self, index: int, user: str | None = None) -> httpx.Response:
        body = chat_body(user or "")
        if user is None:
            del body["user"]
        return await self.clients[index].post("/v1/chat/completions", json=body)

    async def burst(self, count: int, user: str | None = None) -> list[httpx.Response]:
        """`count` simultaneous requests, round-robin over the instances."""
        return await asyncio.gather(*(self.chat(n % len(self.clients), user) for n in range(count)))


class _KeyStack:
    def __init__(self, instances: list[Instance]) -> None:
        self.instances = instances
        self.stack = AsyncExitStack()

    async def open(self, key: str) -> KeyClients:
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        clients = [
            await self.stack.enter_async_context(
                httpx.AsyncClient(
                    base_url=instance.url, headers={"Authorization": f"Bearer {key}"}, timeout=30, limits=limits
                )
            )
            for instance in self.instances
        ]
        return KeyClients(clients)


@pytest.fixture
async def with_key(instances: list[Instance]) -> AsyncIterator[_KeyStack]:
    keys = _KeyStack(instances)
    async with keys.stack:
        yield keys


async def generate(cluster: ProxyCluster, index: int, **fields: Any) -> dict[str, Any]:
    return await cluster.admin(index, "/key/generate", fields)


async def refused_after(clients: KeyClients, index: int, since: float, status: int) -> float:
    """Seconds from `since` until instance `index` answers the key with `status` (it answers 200 until then)."""
    while True:
        response = await clients.chat(index)
        if response.status_code == status:
            return time.monotonic() - since
        assert response.status_code == 200, response.text
        assert time.monotonic() - since < 5, "never refused"


async def test_a_keys_rpm_over_three_instances_is_exact(cluster: ProxyCluster, with_key: _KeyStack) -> None:
    created = await generate(cluster, 0, rpm_limit=30)
    clients = await with_key.open(created["key"])

    responses = await clients.burst(100)

    statuses = [r.status_code for r in responses]
    print(f"\n[key rpm 30] admitted {statuses.count(200)}/100 over 3 instances, refused {statuses.count(429)}")
    assert statuses.count(200) == 30 and statuses.count(429) == 70
    limited = next(r for r in responses if r.status_code == 429)
    message = limited.json()["error"]["message"]
    assert message.startswith("Rate limit exceeded for api_key: ") and "Current limit: 30" in message
    # The key's spend over the cluster is the sum of what its calls cost, once written.
    costs = [usd_to_nanos(float(r.headers["x-litellm-response-cost"])) for r in responses if r.status_code == 200]
    deadline = time.monotonic() + 10
    while True:
        rows = await cluster.query("SELECT spend FROM virtual_keys WHERE token = :token", token=created["token"])
        if int(rows[0][0]) == sum(costs) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert int(rows[0][0]) == sum(costs)


async def stored_key_spend(cluster: ProxyCluster, token: str, expected: int, timeout_s: float = 10.0) -> int:
    """The key's stored spend once it reaches `expected` (the recorders write every 100 ms), or what it is then."""
    deadline = time.monotonic() + timeout_s
    while True:
        rows = await cluster.query("SELECT spend FROM virtual_keys WHERE token = :token", token=token)
        spend = int(rows[0][0])
        if spend == expected or time.monotonic() > deadline:
            return spend
        await asyncio.sleep(0.1)


async def test_300_simultaneous_requests_on_a_key_over_three_instances_overspend_by_at_most_one_request(
    cluster: ProxyCluster, with_key: _KeyStack
) -> None:
    probe = await cluster.chat(0, "key-probe")
    assert probe.status == 200 and probe.cost is not None, probe.body
    cost = usd_to_nanos(probe.cost)
    budget = round(probe.cost * 20.5, 9)
    created = await generate(cluster, 0, max_budget=budget)
    clients = await with_key.open(created["key"])

    responses = await clients.burst(300)
    # A burst's reservations hold each request's estimate until its usage is known, so requests can be refused that
    # the actual charges would have let in; what is left is used one request at a time until one is refused.
    for _ in range(40):
        [more] = await clients.burst(1)
        responses.append(more)
        if more.status_code != 200:
            break

    admitted = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code != 200]
    assert all(r.status_code == 400 and r.json()["error"]["type"] == "budget_exceeded" for r in refused)
    charged = sum(usd_to_nanos(float(r.headers["x-litellm-response-cost"])) for r in admitted)
    print(f"\n[key budget] admitted {len(admitted)}/{len(responses)}, charged {charged}, budget {usd_to_nanos(budget)}")
    assert usd_to_nanos(budget) - cost <= charged <= usd_to_nanos(budget) + cost
    assert await stored_key_spend(cluster, created["token"], charged) == charged


async def test_key_and_customer_rpm_over_three_instances_admit_all_or_nothing(
    cluster: ProxyCluster, with_key: _KeyStack
) -> None:
    await cluster.admin(0, "/budget/new", {"budget_id": "key-rpm20", "rpm_limit": 20})
    await cluster.admin(0, "/customer/new", {"user_id": "key-tenant", "budget_id": "key-rpm20"})
    await asyncio.sleep(1.0)  # every instance hears of the new customer
    created = await generate(cluster, 1, rpm_limit=30)
    clients = await with_key.open(created["key"])

    responses = await clients.burst(100, user="key-tenant")

    assert sum(r.status_code == 200 for r in responses) == 20
    # The 80 the customer's limit refused took no slot of the key: 10 of its 30 are left, cluster-wide.
    rest = await clients.burst(30)
    assert sum(r.status_code == 200 for r in rest) == 10


async def test_a_key_created_on_one_instance_works_at_once_on_another(
    cluster: ProxyCluster, with_key: _KeyStack
) -> None:
    created = await generate(cluster, 0, key_alias="made-on-one")
    clients = await with_key.open(created["key"])
    answers = [await clients.chat(index) for index in (1, 2, 0)]
    assert [a.status_code for a in answers] == [200, 200, 200], [a.text for a in answers]


async def test_a_key_blocked_on_one_instance_is_refused_by_the_others_within_a_second(
    cluster: ProxyCluster, with_key: _KeyStack
) -> None:
    created = await generate(cluster, 0)
    clients = await with_key.open(created["key"])
    # Every instance has served the key (it is in their catalogs) before it is blocked.
    assert [(await clients.chat(i)).status_code for i in range(3)] == [200, 200, 200]

    await cluster.admin(0, "/key/block", {"key": created["token"]})
    blocked_at = time.monotonic()
    delays = await asyncio.gather(*(refused_after(clients, i, blocked_at, 401) for i in range(3)))
    print(f"\n[key block] refused by instance 1/2/3 after {', '.join(f'{d * 1000:.0f} ms' for d in delays)}")
    assert max(delays) < 1.0

    await cluster.admin(2, "/key/unblock", {"key": created["token"]})
    await asyncio.sleep(1.0)
    assert [(await clients.chat(i)).status_code for i in range(3)] == [200, 200, 200]


async def test_a_key_deleted_on_one_instance_is_refused_by_the_others_within_a_second(
    cluster: ProxyCluster, with_key: _KeyStack
) -> None:
    created = await generate(cluster, 1)
    clients = await with_key.open(created["key"])
    assert [(await clients.chat(i)).status_code for i in range(3)] == [200, 200, 200]

    await cluster.admin(1, "/key/delete", {"keys": [created["token"]]})
    deleted_at = time.monotonic()
    delays = await asyncio.gather(*(refused_after(clients, i, deleted_at, 401) for i in range(3)))
    assert max(delays) < 1.0
