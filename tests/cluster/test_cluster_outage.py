"""Three instances and a Redis that goes away under load, in both outage policies.

fail_closed_budget_enforcement: true → requests with limits get 503 `Budget enforcement unavailable: …` while
Redis is down; false → they are served against each instance's own counters. Either way there are no 500s, every
instance recovers by itself when Redis returns (empty: it ran without persistence), and the durable store has every
acknowledged charge exactly once. The cluster runs on a private redis-server that the test stops and restarts.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest
from redis.asyncio import Redis

from haimaker.money import usd_to_nanos
from tests.cluster.cluster_setup import Answer, Instance, ProxyCluster, cluster_config, connected, started
from tests.support.databases import drop_database, make_database_url
from tests.support.redis_servers import PREFIX_STEM, PrivateRedis

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.postgres]

PROPAGATION_S = 1.0
STOP_AT_S, START_AT_S, LOAD_S = 1.5, 4.0, 8.0
# Back within: the probe (50 ms), the reseed fence 0.5 s ahead, seeds 0.5 s past it, the flushes (and a margin).
RECOVERY_S = 2.5


@dataclass
class Outage:
    fail_closed: bool
    redis: PrivateRedis
    database_url: str
    prefix: str
    instances: list[Instance]


@pytest.fixture(scope="module", params=[True, False], ids=["fail-closed", "fail-open"])
def outage(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outage]:
    fail_closed: bool = request.param
    directory = tmp_path_factory.mktemp("outage-fail-closed" if fail_closed else "outage-fail-open")
    redis_server = PrivateRedis(directory)
    redis_server.start()
    database_url = asyncio.run(make_database_url("postgres", directory))
    try:
        prefix = f"{PREFIX_STEM}{uuid.uuid4().hex[:12]}"
        config = cluster_config(database_url, redis_server.url, prefix, fail_closed_budget_enforcement=fail_closed)
        with started(directory, config) as instances:
            yield Outage(fail_closed, redis_server, database_url, prefix, instances)
    finally:
        redis_server.stop()
        asyncio.run(drop_database(database_url))


@pytest.fixture
async def cluster(outage: Outage) -> AsyncIterator[ProxyCluster]:
    if not outage.redis.is_running:
        outage.redis.start()
    async with connected(outage.instances, outage.database_url) as cluster:
        yield cluster


async def test_300_simultaneous_requests_respect_the_budget(outage: Outage, cluster: ProxyCluster) -> None:
    probe = await cluster.chat(0, "probe")
    assert probe.status == 200 and probe.cost is not None, probe.body
    budget = round(probe.cost * 20.5, 9)
    await cluster.admin(0, "/budget/new", {"budget_id": "hot-tier", "max_budget": budget})
    await cluster.admin(0, "/customer/new", {"user_id": "hot", "budget_id": "hot-tier"})
    await asyncio.sleep(PROPAGATION_S)

    answers = await cluster.burst("hot", 300)

    admitted = [a for a in answers if a.status == 200]
    assert all(a.status == 400 and a.error_type == "budget_exceeded" for a in answers if a.status != 200)
    charges = await cluster.settled_charges("hot", len(admitted))
    assert set(charges) == {a.call_id for a in admitted}
    spend, cost, budget_n = sum(charges.values()), usd_to_nanos(probe.cost), usd_to_nanos(budget)
    mode = "fail-closed" if outage.fail_closed else "default mode"
    print(f"\n[{mode}] admitted {len(admitted)}/300, spend {spend} n$, budget {budget_n} n$, over {spend - budget_n}")
    assert spend == await cluster.stored_spend("hot")
    assert spend <= budget_n + (0 if outage.fail_closed else cost)
    assert spend >= budget_n - 2 * cost


def _window(answers: list[Answer], start: float, end: float) -> list[Answer]:
    """The requests sent and answered within [start, end)."""
    return [a for a in answers if start <= a.sent and a.at < end]


async def test_redis_stopped_and_restarted_under_load_loses_and_doubles_no_charge(
    outage: Outage, cluster: ProxyCluster
) -> None:
    await cluster.admin(0, "/budget/new", {"budget_id": "steady-tier", "max_budget": 1000.0, "rpm_limit": 100_000})
    await cluster.admin(0, "/customer/new", {"user_id": "steady", "budget_id": "steady-tier"})
    await asyncio.sleep(PROPAGATION_S)
    marks: dict[str, float] = {}

    def stop() -> None:
        marks["stop"] = time.monotonic()
        outage.redis.stop()

    def start() -> None:
        outage.redis.start()
        marks["start"] = time.monotonic()

    answers = await cluster.sustained(
        "steady", workers=12, seconds=LOAD_S, events=[(STOP_AT_S, stop), (START_AT_S, start)]
    )

    stopped, restarted = marks["stop"], marks["start"]
    statuses = {a.status for a in answers}
    refused = [a for a in answers if a.status == 503]
    during = _window(answers, stopped + 0.3, restarted)
    after = _window(answers, restarted + RECOVERY_S, float("inf"))
    back = [
        min((a.at for a in answers if a.instance == i and a.status == 200 and a.at > restarted), default=float("inf"))
        - restarted
        for i in range(3)
    ]
    mode = "fail-closed" if outage.fail_closed else "fail-open"
    print(
        f"\n[{mode} outage] {len(answers)} answers, statuses {sorted(statuses)}; while down: "
        f"{sum(a.status == 200 for a in during)} served, {sum(a.status == 503 for a in during)} refused (503); "
        f"first success after restart per instance: {', '.join(f'{b * 1000:.0f} ms' for b in back)}"
    )
    assert during and after
    if outage.fail_closed:
        assert statuses <= {200, 503}
        assert all(a.body["error"]["message"].startswith("Budget enforcement unavailable: ") for a in refused)
        assert all(a.status == 503 for a in during)
        late = [round(a.at - restarted, 3) for a in refused if not stopped <= a.at <= restarted + RECOVERY_S]
        assert not late, f"503s after the restart (s): {late}"
    else:
        assert statuses == {200}
    assert all(a.status == 200 for a in after)
    assert max(back) < RECOVERY_S

    acked = {a.call_id: a for a in answers if a.status == 200 and a.call_id}
    charges = await cluster.settled_charges("steady", len(acked))
    assert set(charges) == set(acked), "a charge was lost, or stored without an answer"
    assert all(charges[call_id] == usd_to_nanos(a.cost or 0) for call_id, a in acked.items())
    stored = await cluster.stored_spend("steady")
    assert stored == sum(charges.values())

    # Redis was reseeded from the durable store after its restart: its counter agrees with the store.
    client = Redis.from_url(outage.redis.url)
    try:
        counted = int((await client.hget(f"{outage.prefix}:{{steady}}:c", "s")) or -1)
    finally:
        await client.aclose()
    print(f"[{mode} outage] spend in the store {stored} n$, in Redis {counted} n$ (difference {counted - stored})")
    if outage.fail_closed:
        assert counted == stored  # nothing was charged locally: the reseed is exact
    else:
        # Charges made locally by an instance still recovering when another one reseeded can be missing from the
        # counter (documented residual); never more than what was charged around the recovery.
        around = [a for a in answers if restarted - 0.5 <= a.at <= restarted + RECOVERY_S]
        window = sum(charges.get(a.call_id or "", 0) for a in around)
        assert stored - window <= counted <= stored
