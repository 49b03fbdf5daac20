"""Start-up does not grow with the customers in the store: a 100,000-customer store starts as fast as an empty one,
holds none of them in memory, and serves any of them with its stored spend on its first request.
(The 1M and 10M rows are `bench/scale.py`'s.)"""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import make_url

from bench.scale_fill import fill_postgres_async, fill_sqlite
from tests.limits.budget_setup import chat_body
from tests.support.proxy import base_config, running_proxy

CUSTOMERS = 100_000
# Generous for a shared CI machine: the same start on an empty store takes ~0.3 s here; loading every customer
# took ~2.2 s per 100k before the working set.
START_BOUND_S = 1.5


async def _fill(url: str, count: int) -> None:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        assert parsed.database is not None
        fill_sqlite(parsed.database, count)
    else:
        await fill_postgres_async(parsed.set(drivername="postgresql").render_as_string(hide_password=False), count)


def _timed_start(tmp_path: Path, url: str) -> tuple[float, float, float]:
    """(seconds to serve, customers cached after start, cust-77's spend after one request less that request's)."""
    config = base_config(general_settings={"database_url": url})
    started = time.perf_counter()
    with running_proxy(tmp_path, config) as proxy:
        elapsed = time.perf_counter() - started
        headers = {"Authorization": f"Bearer {proxy.master_key}"}
        with httpx.Client(base_url=proxy.url, headers=headers, timeout=30) as client:
            cached = _gauge(client.get("/metrics").text, "haimaker_cached_customers")
            body = chat_body("cust-77") | {"model": "gpt-3.5-turbo"}
            answer = client.post("/v1/chat/completions", json=body)
            assert answer.status_code == 200, answer.text
            info = client.get("/customer/info", params={"end_user_id": "cust-77"})
            assert info.status_code == 200, info.text
            return elapsed, cached, float(info.json()["spend"]) - float(answer.headers["x-litellm-response-cost"])


def _gauge(metrics: str, name: str) -> float:
    match = re.search(rf"^{name} (\S+)$", metrics, re.MULTILINE)
    assert match, name
    return float(match.group(1))


@pytest.mark.slow
async def test_a_store_of_100k_customers_starts_within_the_bound_and_loads_none(
    tmp_path: Path, migrated_database_url: str
) -> None:
    await _fill(migrated_database_url, CUSTOMERS)

    elapsed, cached, spend = _timed_start(tmp_path, migrated_database_url)

    assert elapsed < START_BOUND_S, f"start-up took {elapsed:.2f} s with {CUSTOMERS:,} customers"
    assert cached == 0
    assert spend == pytest.approx(1e-6, abs=1e-12)  # its stored 1 µ$: read back on its request, not started at zero
