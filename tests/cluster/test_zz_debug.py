import asyncio, sys
sys.path[:0] = ["/work/main/tests/cluster", "/work/main/tests"]
import pytest
from cluster_setup import *
from redis.asyncio import Redis
pytestmark = [pytest.mark.slow]

async def test_debug(deployment, tmp_path):
    config = cluster_config(deployment.database_url, deployment.redis_url, deployment.prefix)
    with started(tmp_path, config) as instances:
        async with connected(instances, deployment.database_url) as cluster:
            probe = await cluster.chat(0, "probe")
            cost = probe.cost
            budget = round(cost * 20.5, 9)
            await cluster.admin(0, "/budget/new", {"budget_id": "t", "max_budget": budget})
            await cluster.admin(0, "/customer/new", {"user_id": "hot", "budget_id": "t"})
            await asyncio.sleep(1.0)
            answers = await cluster.burst("hot", 300)
            ok = [a for a in answers if a.status == 200]
            print("admitted per instance", [sum(1 for a in ok if a.instance == i) for i in range(3)])
            await asyncio.sleep(0.5)
            client = Redis.from_url(deployment.redis_url)
            print(await client.hgetall(f"{deployment.prefix}:{{hot}}:c"))
            print(await client.zrange(f"{deployment.prefix}:{{hot}}:r", 0, -1))
            await client.aclose()
