"""The benchmark in one command: `python -m bench.run [--smoke] [--out bench/RESULTS.md]`.

One invocation starts the fake upstream (`bench.upstream`) and the load generator (`bench.load --serve`), measures
the upstream directly, then for each store (SQLite, PostgreSQL) starts haimaker as a subprocess with a generated
config and measures through it: concurrency 1/16/64 × JSON/SSE × no customer / one customer / 10,000 customers,
with customer tracking, budgets, rpm/tpm limits and reservation on (a budget with a huge `max_budget` and huge
limits, so nothing is refused, set as `litellm_settings.max_end_user_budget_id`), plus a memory row (100k requests
from 10k customers). Each store gets a fresh database (PostgreSQL: `haimaker_bench_<hex>`, dropped afterwards).

The direct numbers are measured once per (concurrency, JSON/SSE) and shared by the rows of both stores; the
upstream ignores customers. Proxy CPU per request is the utime+stime delta of the haimaker process tree over the
run divided by the requests completed; peak RSS is VmHWM. Nothing here asserts timings: `--smoke` runs tiny
counts so CI keeps the whole path working, and writes a report only when `--out` is given; the full mode writes
`bench/RESULTS.md` by default. Exit status 1 when a scenario failed or saw errors.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from bench.load import LoadResult, LoadSpec
from bench.processes import Haimaker, LoadGenerator, Upstream, http_json, sample
from bench.report import Row, machine_lines, report_text
from bench.stores import Store, postgres_database

MASTER_KEY = "sk-bench-1234"
UPSTREAM_KEY = "sk-fake"
MODEL = "fake-gpt"
BUDGET_ID = "bench-budget"
ONE_CUSTOMER = "bench-one"
MANY_CUSTOMERS = 10_000
MEMORY_REQUESTS = 100_000
CUSTOMER_MODES = ("none", "one", "10k")
# A realistic chat turn: a long system prompt and a 20-message history (about 17,000 characters), as a chat client
# resends on every turn. With a tpm limit every prompt is counted before admission; this row shows what that and
# the bigger bodies cost.
LONG_CHAT: list[dict[str, str]] = [
    {"role": "system", "content": "You are the helpful support assistant of ACME Inc. Answer briefly. " * 90},
    *(
        {
            "role": "user" if turn % 2 == 0 else "assistant",
            "content": f"Message {turn}: " + "the quick brown fox jumps over the lazy dog, again and again. " * 8,
        }
        for turn in range(20)
    ),
]
_CUSTOMER_LABELS = {"none": "no customer", "one": "1 customer", "10k": "10k customers"}


@dataclass(frozen=True, slots=True)
class Plan:
    """How long and how hard each measurement runs."""

    duration_s: float
    warmup_s: float
    max_requests: int
    memory_requests: int
    memory_duration_s: float
    concurrencies: tuple[int, ...]

    @classmethod
    def full(cls, duration_s: float, warmup_s: float) -> Plan:
        return cls(duration_s, warmup_s, 10_000_000, MEMORY_REQUESTS, 60.0, (1, 16, 64))

    @classmethod
    def smoke(cls) -> Plan:
        return cls(0.1, 0.0, 40, 300, 5.0, (1, 16, 64))


@dataclass(frozen=True, slots=True)
class Scenario:
    """One proxied measurement."""

    store: str
    concurrency: int
    stream: bool
    customers: str
    memory: bool = False
    chat: bool = False  # the LONG_CHAT prompt instead of "hello"

    @property
    def name(self) -> str:
        if self.memory:
            return f"{self.store} memory: 10k customers c={self.concurrency}"
        mode = "stream" if self.stream else "json"
        chat = ", 17k-char chat" if self.chat else ""
        return f"{self.store} c={self.concurrency} {mode} {_CUSTOMER_LABELS[self.customers]}{chat}"


def scenarios_for(store: str, plan: Plan) -> list[Scenario]:
    """Every row measured for one store, in the order they run."""
    rows = [
        Scenario(store, concurrency, stream, customers)
        for concurrency in plan.concurrencies
        for stream in (False, True)
        for customers in CUSTOMER_MODES
    ]
    rows.append(Scenario(store, max(plan.concurrencies), False, "10k", chat=True))
    rows.append(Scenario(store, max(plan.concurrencies), False, "10k", memory=True))
    return rows


def request_body(customers: str, stream: bool, chat: bool = False) -> str:
    """The JSON body template; `{customer}` is filled in by the load generator."""
    user = {"none": "", "one": f',"user":"{ONE_CUSTOMER}"', "10k": ',"user":"{customer}"'}[customers]
    streaming = ',"stream":true' if stream else ""
    messages = json.dumps(LONG_CHAT) if chat else '[{"role":"user","content":"hello"}]'
    return f'{{"model":"{MODEL}","messages":{messages}{user}{streaming}}}'


def load_spec(url: str, key: str, scenario: Scenario, plan: Plan) -> LoadSpec:
    spec = LoadSpec(
        url=url,
        concurrency=scenario.concurrency,
        duration_s=plan.duration_s,
        max_requests=plan.max_requests,
        warmup_s=plan.warmup_s,
        body=request_body(scenario.customers, scenario.stream, scenario.chat),
        customers=MANY_CUSTOMERS if scenario.customers == "10k" else 0,
        customer_prefix="bench-c",
        stream=scenario.stream,
        headers={"Authorization": f"Bearer {key}"},
    )
    if scenario.memory:
        spec = replace(spec, duration_s=plan.memory_duration_s, max_requests=plan.memory_requests, warmup_s=0.0)
    return spec


def write_config(
    path: Path, upstream: Upstream, database_url: str, budget_id: str | None, *, params: Mapping[str, str] | None = None
) -> None:
    """Write the LiteLLM-style config haimaker reads (JSON scalars are valid YAML); `params` add litellm_params."""
    lines = [
        "model_list:",
        f"  - model_name: {MODEL}",
        "    litellm_params:",
        "      model: openai/gpt-3.5-turbo",
        f"      api_base: {upstream.base_url}",
        f"      api_key: {UPSTREAM_KEY}",
        *(f"      {name}: {value}" for name, value in (params or {}).items()),
        "general_settings:",
        f"  master_key: {MASTER_KEY}",
        f'  database_url: "{database_url}"',
    ]
    if budget_id is not None:
        lines += ["litellm_settings:", f"  max_end_user_budget_id: {budget_id}"]
    path.write_text("\n".join(lines) + "\n")


def prepare_store(workdir: Path, upstream: Upstream, database_url: str, budgets: bool) -> Path:
    """Create the budget and the one named customer, then write the config that uses the budget for everyone."""
    config = workdir / "config.yaml"
    write_config(config, upstream, database_url, None)
    if not budgets:
        return config
    with Haimaker(config, workdir / "haimaker-setup.log") as proxy:
        proxy.wait_ready()
        budget = {"budget_id": BUDGET_ID, "max_budget": 1e9, "rpm_limit": 10**9, "tpm_limit": 10**12}
        http_json("POST", proxy.url + "/budget/new", budget, MASTER_KEY)
        customer = {"user_id": ONE_CUSTOMER, "budget_id": BUDGET_ID}
        http_json("POST", proxy.url + "/customer/new", customer, MASTER_KEY)
    write_config(config, upstream, database_url, BUDGET_ID)
    return config


DirectKey = tuple[int, bool, bool]  # concurrency, stream, long chat


def measure_direct(loader: LoadGenerator, upstream: Upstream, plan: Plan) -> dict[DirectKey, LoadResult]:
    results = {}
    shapes = [(concurrency, stream, False) for concurrency in plan.concurrencies for stream in (False, True)]
    shapes.append((max(plan.concurrencies), False, True))
    for concurrency, stream, chat in shapes:
        scenario = Scenario("direct", concurrency, stream, "one", chat=chat)
        spec = load_spec(upstream.base_url + "/chat/completions", UPSTREAM_KEY, scenario, plan)
        result = results[(concurrency, stream, chat)] = loader.measure(spec)
        print(f"  {scenario.name}: {result.rps:,.0f} rps")
    return results


# Sections of the report that other scripts measure (bench/multi_instance.sh): kept when the table is rewritten.
KEPT_SECTIONS = "## Several instances"
WRITER_LAG_NOTE_S = 1.0


def kept_sections(report: Path) -> str:
    """The part of an existing report from `KEPT_SECTIONS` on, or ""."""
    if not report.exists():
        return ""
    text = report.read_text()
    start = text.find(KEPT_SECTIONS)
    return "" if start < 0 else "\n" + text[start:]


def writer_lag(url: str, limit_s: float = 60.0) -> float | None:
    """Seconds until every charge of the run is durable (`spend_writes_pending` 0), or None past `limit_s`."""
    started = time.monotonic()
    while time.monotonic() - started < limit_s:
        if http_json("GET", url + "/health/readiness").get("spend_writes_pending", 0) == 0:
            return time.monotonic() - started
        time.sleep(0.05)
    return None


def measure_store(
    store: Store,
    loader: LoadGenerator,
    upstream: Upstream,
    plan: Plan,
    direct: dict[DirectKey, LoadResult],
    workdir: Path,
    budgets: bool,
) -> list[Row]:
    """Measure every scenario of one store through a fresh haimaker process."""
    rows: list[Row] = []
    scenarios = scenarios_for(store.name, plan)
    if store.skip_reason is not None:
        return [Row(s.name, None, None, None, None, f"skipped: {store.skip_reason}") for s in scenarios]
    try:
        config = prepare_store(workdir, upstream, store.database_url, budgets)
        with Haimaker(config, workdir / "haimaker.log") as proxy:
            proxy.wait_ready()
            for scenario in scenarios:
                before = sample(proxy.pid)
                result = loader.measure(load_spec(proxy.url + "/v1/chat/completions", MASTER_KEY, scenario, plan))
                after = sample(proxy.pid)
                cpu_ms = (after.cpu_s - before.cpu_s) * 1000 / max(result.total_requests, 1)
                notes = [] if budgets else ["budgets off"]
                lag_s = writer_lag(proxy.url)
                if lag_s is None or lag_s > WRITER_LAG_NOTE_S:
                    # Requests served faster than their charges are stored would be a throughput the proxy cannot
                    # sustain: say so next to the number.
                    notes.append(
                        "spend writer did not drain in 60 s" if lag_s is None else f"writer drained in {lag_s:.1f} s"
                    )
                if scenario.memory:
                    notes.append(f"{result.total_requests:,} requests, RSS now {after.rss_mb:.0f} MB")
                note = "; ".join(notes)
                row = Row(
                    scenario.name,
                    direct.get((scenario.concurrency, scenario.stream, scenario.chat)),
                    result,
                    cpu_ms,
                    after.hwm_mb,
                    note,
                )
                rows.append(row)
                print(f"  {row.summary()}")
    except RuntimeError as exc:
        done = {row.scenario for row in rows}
        reason = str(exc).splitlines()[0][:160]
        print(f"  {store.name}: FAILED: {exc}", file=sys.stderr)
        rows += [Row(s.name, None, None, None, None, f"failed: {reason}") for s in scenarios if s.name not in done]
    return rows


@contextlib.contextmanager
def stores(names: list[str], workdir: Path, pg_dsn: str) -> Iterator[list[Store]]:
    """Fresh databases for the requested stores; PostgreSQL's is dropped on exit."""
    with contextlib.ExitStack() as stack:
        result: list[Store] = []
        for name in names:
            if name == "sqlite":
                result.append(Store("sqlite", f"sqlite:///{(workdir / 'sqlite' / 'bench.db').absolute()}"))
            elif name == "postgres":
                database = f"haimaker_bench_{secrets.token_hex(4)}"
                result.append(stack.enter_context(postgres_database(pg_dsn, database)))
            else:
                raise SystemExit(f"unknown store {name!r} (sqlite, postgres)")
        yield result


def run(args: argparse.Namespace) -> int:
    plan = Plan.smoke() if args.smoke else Plan.full(args.duration, args.warmup)
    command = " ".join(["python -m bench.run", *sys.argv[1:]])
    load_before = os.getloadavg()
    started = time.monotonic()
    rows: list[Row] = []
    repo = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory(prefix="haimaker-bench-") as tmp:
        workdir = Path(tmp)
        with (
            Upstream(args.chunks, per_event=args.per_event_writes, cwd=repo) as upstream,
            LoadGenerator(cwd=repo) as loader,
        ):
            print(f"upstream on :{upstream.port}; measuring it directly")
            direct = measure_direct(loader, upstream, plan)
            if not args.direct_only:
                with stores(args.stores.split(","), workdir, args.pg_dsn) as selected:
                    for store in selected:
                        store_dir = workdir / store.name
                        store_dir.mkdir(parents=True, exist_ok=True)
                        print(f"{store.name}: starting haimaker")
                        rows += measure_store(store, loader, upstream, plan, direct, store_dir, not args.no_budgets)
        upstream_stats = upstream.stats
    direct_rows = [
        Row(
            f"direct c={c} {'stream' if s else 'json'}{', 17k-char chat' if chat else ''}", result, None, None, None, ""
        )
        for (c, s, chat), result in direct.items()
    ]
    elapsed = time.monotonic() - started
    lines = machine_lines(command, load_before, os.getloadavg(), elapsed, args.chunks, upstream_stats)
    text = report_text(lines, direct_rows + rows, plan.memory_requests, smoke=args.smoke, budgets=not args.no_budgets)
    print()
    print(text)
    out = args.out if args.out is not None else (None if args.smoke else repo / "bench" / "RESULTS.md")
    if out is not None:
        Path(out).write_text(text + kept_sections(Path(out)))
        print(f"written to {out}")
    skipped = [row for row in rows if row.note.startswith("skipped")]
    if skipped:
        print(f"{len(skipped)} scenario(s) skipped: {skipped[0].note}", file=sys.stderr)
    failed = [
        row for row in rows if row not in skipped and (row.proxy is None or row.proxy.error_count or not row.proxy.ok)
    ]
    if failed:
        print(f"{len(failed)} scenario(s) failed or saw errors", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (`python -m bench.run`)."""
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny counts, a few seconds; for CI")
    parser.add_argument("--out", type=Path, default=None, help="report path (default bench/RESULTS.md in full mode)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measurement (full mode)")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds at the start of each")
    parser.add_argument("--chunks", type=int, default=20, help="content chunks per streamed reply")
    parser.add_argument("--stores", default="sqlite,postgres", help="comma-separated: sqlite, postgres")
    parser.add_argument("--pg-dsn", default="postgresql://postgres@127.0.0.1:5432/postgres", help="admin DSN")
    parser.add_argument("--per-event-writes", action="store_true", help="upstream writes each SSE event separately")
    parser.add_argument("--direct-only", action="store_true", help="measure the upstream only (no haimaker)")
    parser.add_argument(
        "--no-budgets", action="store_true", help="no budget, no max_end_user_budget_id: customer tracking only"
    )
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
