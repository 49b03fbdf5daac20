"""Millions of customers: `python -m bench.scale [--sizes 100000,1000000,10000000] [--stores sqlite,postgres]
[--redis] [--gap-seconds 90] [--smoke]`.

For each store and size: a fresh database migrated by `haimaker db upgrade` and filled by bulk SQL
(`bench/scale_fill.py`: N customers on a tier, a tenth on a tier that gets deleted, one rollup row each), then:

1. start-up: seconds from spawning `haimaker` to `/health/readiness` 200, and RSS after it;
2. traffic at c=16 for `--duration` seconds: 100 hot customers, then customers spread evenly over all N (a sample
   of up to 100,000 ids, each a store read on first sight with a 10,000-customer working set); req/s, p99, max;
   RSS after;
3. admin latency, each call made while the uniform load runs (the load's max latency says whether traffic
   stalled): `/customer/info`, `/customer/list` first page and a deep page (cursor), a tier edit
   (`/budget/update`), the all-customer 7-day activity report (`/customer/daily/activity`), `/global/spend/end_users`,
   and a delete of the tier holding N/10 customers (`/budget/delete`);
4. a reset boundary: the store filled with every customer and the tier due an hour ago, the proxy started under
   the uniform load: the peak of `haimaker_spend_writes_pending`, the seconds until no customer is left due (the
   reset job's batches), and the load's p99/max meanwhile;
5. with `--redis`: the same store with `redis_url` set, uniform load for `--gap-seconds` (90 by default: three of
   the catalog resyncs that used to reload every customer), the longest gap (max latency).

Prints one line per measurement and a Markdown table at the end (paste into bench/RESULTS.md). Nothing is
asserted; exit status 1 when a measurement saw errors.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sqlite3
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import asyncpg  # type: ignore[import-untyped]

from bench.load import LoadResult, LoadSpec
from bench.processes import Haimaker, LoadGenerator, Upstream, haimaker_command, http_json, sample
from bench.run import MASTER_KEY, MODEL, write_config
from bench.scale_fill import DOOMED, PREFIX, TIER, fill_postgres, fill_sqlite
from bench.stores import postgres_database

ADMIN_DSN: Final = "postgresql://postgres@127.0.0.1:5432/test"
REDIS_URL: Final = "redis://127.0.0.1:6379/0"
CACHE: Final = 10_000
UNIFORM_SAMPLE: Final = 100_000


@dataclass
class Row:
    store: str
    customers: int
    cells: dict[str, str] = field(default_factory=dict)
    errors: int = 0

    def put(self, name: str, value: str) -> None:
        self.cells[name] = value
        print(f"{self.store} {self.customers:,} {name}: {value}", flush=True)


def _body(user: str) -> str:
    return f'{{"model":"{MODEL}","messages":[{{"role":"user","content":"hello"}}],"user":"{user}"}}'


def _spec(proxy: Haimaker, duration_s: float, customers: int, step: int) -> LoadSpec:
    return LoadSpec(
        url=proxy.url + "/v1/chat/completions",
        concurrency=16,
        duration_s=duration_s,
        warmup_s=0.0,
        body=_body("{customer}"),
        customers=customers,
        customer_prefix=PREFIX,
        customer_step=step,
        headers={"Authorization": f"Bearer {MASTER_KEY}"},
    )


def _uniform(proxy: Haimaker, n: int, duration_s: float) -> LoadSpec:
    sample_size = min(n, UNIFORM_SAMPLE)
    return _spec(proxy, duration_s, sample_size, max(1, n // sample_size))


def _load_cell(result: LoadResult) -> str:
    return f"{result.rps:,.0f} req/s, p99 {result.p99_ms:.1f} ms, max {result.max_ms:.0f} ms" + (
        f", {result.error_count} errors" if result.error_count else ""
    )


@contextmanager
def _background(loader: LoadGenerator, spec: LoadSpec) -> Iterator[Callable[[], LoadResult]]:
    """Run `spec` in the load generator while the block runs; the callable waits for and returns its result."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["result"] = loader.measure(spec)
        except BaseException as exc:  # surfaced by the callable
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    time.sleep(0.5)  # the load is running before the first call

    def result() -> LoadResult:
        thread.join()
        if "error" in box:
            raise box["error"]
        return box["result"]  # type: ignore[no-any-return]

    yield result
    thread.join()


def _timed(call: Callable[[], Any]) -> str:
    started = time.perf_counter()
    try:
        call()
    except Exception as exc:  # a failed call is a result too
        return f"failed ({type(exc).__name__}: {str(exc)[:80]})"
    return f"{(time.perf_counter() - started) * 1000:,.0f} ms"


def _gauge(proxy: Haimaker, name: str) -> float:
    text = _get_text(proxy.url + "/metrics")
    match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else float("nan")


def _get_text(url: str) -> str:
    import urllib.request

    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {MASTER_KEY}"})
    with urllib.request.urlopen(request, timeout=60) as response:
        text: str = response.read().decode()
        return text


def _get(proxy: Haimaker, path: str) -> None:
    http_json("GET", proxy.url + path, None, MASTER_KEY, timeout_s=300)


class Store:
    """A fresh database of one kind: its URL for haimaker, fill, and the count of due customers."""

    def __init__(self, kind: str, workdir: Path, dsn: str | None) -> None:
        self.kind = kind
        self.dsn = dsn
        self.path = workdir / f"scale-{uuid.uuid4().hex[:8]}.db"

    @property
    def url(self) -> str:
        return f"sqlite:///{self.path}" if self.kind == "sqlite" else str(self.dsn)

    def fill(self, n: int, due: bool) -> None:
        if self.kind == "sqlite":
            fill_sqlite(str(self.path), n, due=due)
        else:
            assert self.dsn is not None
            fill_postgres(self.dsn, n, due=due)

    def due_customers(self) -> int:
        query = f"SELECT count(*) FROM customers WHERE budget_id = '{TIER}' AND spend_reset_at <= "
        if self.kind == "sqlite":
            with sqlite3.connect(self.path, timeout=30) as connection:
                now = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
                return int(connection.execute(query + "?", (now,)).fetchone()[0])
        return int(asyncio.run(_pg_scalar(str(self.dsn), query + "now()")))


async def _pg_scalar(dsn: str, query: str) -> Any:
    connection = await asyncpg.connect(dsn)
    try:
        return await connection.fetchval(query)
    finally:
        await connection.close()


def _migrate(config: Path) -> None:
    import subprocess

    subprocess.run([*haimaker_command(), "db", "upgrade", "--config", str(config)], check=True, capture_output=True)


def _config(path: Path, upstream: Upstream, url: str, redis: bool) -> None:
    write_config(path, upstream, url, None)
    extra = f"  customer_cache_max: {CACHE}\n"
    if redis:
        extra += f'  redis_url: "{REDIS_URL}"\n  redis_key_prefix: "bench-scale-{uuid.uuid4().hex[:8]}"\n'
    text = path.read_text().replace("general_settings:\n", "general_settings:\n" + extra)
    path.write_text(text)


@contextmanager
def _store(kind: str, workdir: Path) -> Iterator[Store]:
    if kind == "sqlite":
        yield Store("sqlite", workdir, None)
        return
    with postgres_database(ADMIN_DSN, f"haimaker_bench_scale_{uuid.uuid4().hex[:12]}") as pg:
        if pg.skip_reason:
            raise RuntimeError(pg.skip_reason)
        yield Store("postgres", workdir, pg.database_url)


def measure_size(
    kind: str, n: int, args: argparse.Namespace, upstream: Upstream, loader: LoadGenerator, workdir: Path
) -> Row:
    row = Row(kind, n)
    with _store(kind, workdir) as store:
        config = workdir / f"config-{kind}-{n}.yaml"
        _config(config, upstream, store.url, redis=False)
        _migrate(config)
        started = time.perf_counter()
        store.fill(n, due=False)
        row.put("fill", f"{time.perf_counter() - started:.1f} s")
        spawned = time.perf_counter()
        with Haimaker(config, workdir / f"haimaker-{kind}-{n}.log") as proxy:
            proxy.wait_ready(timeout_s=600)
            row.put("start-up", f"{time.perf_counter() - spawned:.2f} s")
            row.put("RSS after start-up", f"{sample(proxy.pid).rss_mb:,.0f} MB")
            hot = loader.measure(_spec(proxy, args.duration, 100, max(1, n // 100)))
            row.put("100 hot customers", _load_cell(hot))
            uniform = loader.measure(_uniform(proxy, n, args.duration))
            row.put("uniform over N", _load_cell(uniform))
            row.put("RSS after traffic", f"{sample(proxy.pid).rss_mb:,.0f} MB")
            row.errors += hot.error_count + uniform.error_count
            middle = f"{PREFIX}{n // 2}"
            with _background(loader, _uniform(proxy, n, args.duration * 2)) as background:
                row.put("/customer/info", _timed(lambda: _get(proxy, f"/customer/info?end_user_id={middle}")))
                row.put("/customer/list first page", _timed(lambda: _get(proxy, "/customer/list?page_size=50")))
                row.put(
                    "/customer/list deep page",
                    _timed(lambda: _get(proxy, f"/customer/list?page_size=50&after={PREFIX}{n - 1000}")),
                )
                row.put(
                    "tier edit",
                    _timed(
                        lambda: http_json(
                            "POST", proxy.url + "/budget/update", {"budget_id": TIER, "max_budget": 2e6}, MASTER_KEY
                        )
                    ),
                )
                row.put("activity, all customers, 7 days", _timed(lambda: _get(proxy, _activity_path())))
                row.put(
                    "/global/spend/end_users",
                    _timed(lambda: http_json("POST", proxy.url + "/global/spend/end_users", {}, MASTER_KEY, 300)),
                )
                row.put(
                    f"budget delete ({n // 10:,} customers)",
                    _timed(lambda: http_json("POST", proxy.url + "/budget/delete", {"id": DOOMED}, MASTER_KEY)),
                )
                during = background()
            row.put("traffic during the admin calls", _load_cell(during))
            row.errors += during.error_count
    with _store(kind, workdir) as store:
        config = workdir / f"config-{kind}-{n}-due.yaml"
        _config(config, upstream, store.url, redis=False)
        _migrate(config)
        store.fill(n, due=True)
        with Haimaker(config, workdir / f"haimaker-{kind}-{n}-due.log") as proxy:
            proxy.wait_ready(timeout_s=600)
            with _background(loader, _uniform(proxy, n, args.reset_seconds)) as background:
                peak, drained = _watch_reset(proxy, store, args.reset_seconds)
                during = background()
            row.put("reset boundary: peak pending writes", f"{peak:,.0f}")
            row.put("reset boundary: all customers reset after", drained)
            row.put("reset boundary: traffic", _load_cell(during))
            row.errors += during.error_count
    if args.redis:
        with _store(kind, workdir) as store:
            config = workdir / f"config-{kind}-{n}-redis.yaml"
            _config(config, upstream, store.url, redis=True)
            _migrate(config)
            store.fill(n, due=False)
            with Haimaker(config, workdir / f"haimaker-{kind}-{n}-redis.log") as proxy:
                proxy.wait_ready(timeout_s=600)
                result = loader.measure(_uniform(proxy, n, args.gap_seconds))
                row.put(f"Redis, {args.gap_seconds:.0f} s uniform", _load_cell(result))
                row.errors += result.error_count
    return row


def _activity_path() -> str:
    end = time.strftime("%Y-%m-%d", time.gmtime())
    start = time.strftime("%Y-%m-%d", time.gmtime(time.time() - 6 * 86400))
    return f"/customer/daily/activity?start_date={start}&end_date={end}"


def _watch_reset(proxy: Haimaker, store: Store, seconds: float) -> tuple[float, str]:
    """Poll pending writes and due customers until none is due (or `seconds` pass)."""
    started = time.perf_counter()
    peak = 0.0
    while time.perf_counter() - started < seconds:
        peak = max(peak, _gauge(proxy, "haimaker_spend_writes_pending"))
        if store.due_customers() == 0:
            return peak, f"{time.perf_counter() - started:.1f} s"
        time.sleep(0.5)
    return peak, f"not within {seconds:.0f} s ({store.due_customers():,} left)"


def table(rows: list[Row]) -> str:
    names = list(dict.fromkeys(name for row in rows for name in row.cells))
    header = "| measurement | " + " | ".join(f"{row.store} {row.customers:,}" for row in rows) + " |"
    lines = [header, "|---" * (len(rows) + 1) + "|"]
    for name in names:
        lines.append(f"| {name} | " + " | ".join(row.cells.get(name, "") for row in rows) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100000,1000000,10000000", help="comma-separated customer counts")
    parser.add_argument("--stores", default="sqlite,postgres", help="sqlite, postgres, or both")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per traffic measurement")
    parser.add_argument("--reset-seconds", type=float, default=120.0, help="how long to watch a reset boundary")
    parser.add_argument("--redis", action="store_true", help="also measure with redis_url (the longest gap)")
    parser.add_argument("--gap-seconds", type=float, default=90.0, help="uniform load with Redis, for the longest gap")
    parser.add_argument("--smoke", action="store_true", help="1,000 customers, SQLite, 2 s: keeps the path working")
    args = parser.parse_args(argv)
    sizes = [int(size) for size in args.sizes.split(",")]
    stores = args.stores.split(",")
    if args.smoke:
        sizes, stores, args.duration, args.reset_seconds, args.gap_seconds = [1_000], ["sqlite"], 2.0, 20.0, 3.0
    repo = Path(__file__).resolve().parent.parent
    rows: list[Row] = []
    with (
        tempfile.TemporaryDirectory(prefix="haimaker-bench-scale-") as tmp,
        Upstream(20, cwd=repo) as upstream,
        LoadGenerator(cwd=repo) as loader,
    ):
        for kind in stores:
            for n in sizes:
                rows.append(measure_size(kind, n, args, upstream, loader, Path(tmp)))
    print("\n" + table(rows))
    return 1 if any(row.errors for row in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
