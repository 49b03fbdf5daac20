"""What the spend journal costs on the hot path: `python -m bench.journal [--duration 5] [--rounds 2]`.

Starts the fake upstream and the load generator, then haimaker twice per round on one SQLite store, once with the
journal (the default) and once with `spend_journal: false`, alternating so that drift on a shared machine hits both
alike. Each run measures c=1 JSON (p50: the added latency of one request) and c=64 JSON and SSE (req/s), with every
request charged to one of 10,000 customers (the journal writes one line per charge). Prints one line per run and
the medians per setting; nothing is asserted.

`--micro` measures instead, in this process, what `SpendRecorder.record()` costs per charge with and without a
journal (the only hot-path work the journal adds): steadier than the end-to-end numbers on a busy machine.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from bench.load import LoadResult
from bench.processes import Haimaker, LoadGenerator, Upstream, sample
from bench.run import MASTER_KEY, Plan, Scenario, load_spec, write_config
from haimaker.accounting.journal import SpendJournal
from haimaker.accounting.recorder import SpendRecorder
from haimaker.state.counters import SpendReset
from haimaker.storage.records import Customer, SpendLog

SHAPES = (("c=1 json", 1, False), ("c=64 json", 64, False), ("c=64 stream", 64, True))


def journal_config(path: Path, upstream: Upstream, database_url: str, journal: bool, journal_dir: str | None) -> None:
    write_config(path, upstream, database_url, None)
    setting = (
        "  spend_journal: false\n" if not journal else f'  spend_journal_dir: "{journal_dir}"\n' if journal_dir else ""
    )
    path.write_text(path.read_text().replace("general_settings:\n", "general_settings:\n" + setting))


def measure(loader: LoadGenerator, proxy: Haimaker, plan: Plan) -> dict[str, tuple[LoadResult, float]]:
    """Each shape's result and the proxy's CPU ms per request (steadier than req/s on a shared machine)."""
    results = {}
    for name, concurrency, stream in SHAPES:
        scenario = Scenario("sqlite", concurrency, stream, "10k")
        before = sample(proxy.pid)
        result = loader.measure(load_spec(proxy.url + "/v1/chat/completions", MASTER_KEY, scenario, plan))
        cpu_ms = (sample(proxy.pid).cpu_s - before.cpu_s) * 1000 / max(result.total_requests, 1)
        results[name] = (result, cpu_ms)
    return results


class _NullSink:
    async def write_charges(self, new_customers: list[Customer], items: list[SpendLog | SpendReset]) -> int:
        return len(items)

    async def reset_budget(self, reset: object) -> None:
        return None


async def micro(charges: int = 50_000, rounds: int = 3) -> None:
    """µs per `record()` call, journal off and on (the recorder's writer is not started: only the call is timed)."""
    now = datetime.now(UTC)
    logs = [
        SpendLog(
            str(uuid.uuid4()),
            f"bench-c{i}",
            "gpt-3.5-turbo",
            "d1",
            MODEL_GROUP,
            "openai",
            "acompletion",
            9,
            12,
            21,
            123_000,
            now,
            now,
            api_key="ab" * 32,
        )
        for i in range(charges)
    ]
    timings: dict[bool, list[float]] = {False: [], True: []}
    with tempfile.TemporaryDirectory(prefix="haimaker-bench-journal-") as tmp:
        for _ in range(rounds):
            for journal_on in (False, True):
                journal = SpendJournal.open(Path(tmp), "bench") if journal_on else None
                recorder = SpendRecorder(_NullSink(), journal=journal, max_queued=charges)
                started = time.perf_counter()
                for log in logs:
                    recorder.record(log)
                timings[journal_on].append((time.perf_counter() - started) / charges * 1e6)
                if journal is not None:
                    journal.close(clean=True)
    off, on = statistics.median(timings[False]), statistics.median(timings[True])
    print(f"record(): {off:.2f} µs per charge without the journal, {on:.2f} µs with it (+{on - off:.2f} µs)")


MODEL_GROUP = "fake-gpt"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.journal", description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds at the start of each")
    parser.add_argument("--rounds", type=int, default=2, help="journal on/off pairs")
    parser.add_argument("--micro", action="store_true", help="time record() in this process instead")
    parser.add_argument("--journal-dir", default=None, help="where the journal goes (default: beside the config)")
    args = parser.parse_args(argv)
    if args.micro:
        asyncio.run(micro())
        return 0
    plan = Plan(args.duration, args.warmup, 10_000_000, 0, 0.0, (1, 64))
    repo = Path(__file__).resolve().parent.parent
    runs: dict[bool, list[dict[str, tuple[LoadResult, float]]]] = {True: [], False: []}
    with (
        tempfile.TemporaryDirectory(prefix="haimaker-bench-journal-") as tmp,
        Upstream(20, cwd=repo) as upstream,
        LoadGenerator(cwd=repo) as loader,
    ):
        workdir = Path(tmp)
        database_url = f"sqlite:///{(workdir / 'bench.db').absolute()}"
        for round_no in range(args.rounds):
            for journal in (True, False) if round_no % 2 == 0 else (False, True):
                config = workdir / "config.yaml"
                journal_config(config, upstream, database_url, journal, args.journal_dir)
                with Haimaker(config, workdir / "haimaker.log") as proxy:
                    proxy.wait_ready()
                    results = measure(loader, proxy, plan)
                runs[journal].append(results)
                label = "journal on " if journal else "journal off"
                cells = ", ".join(
                    f"{name}: {r.rps:,.0f} rps p50 {r.p50_ms:.3f} ms {cpu:.3f} CPU ms/req ({r.error_count} errors)"
                    for name, (r, cpu) in results.items()
                )
                print(f"round {round_no + 1} {label}: {cells}", flush=True)
    print("\nmedians over rounds:")
    for name, _, _ in SHAPES:
        on = [run[name] for run in runs[True]]
        off = [run[name] for run in runs[False]]
        p50_on, p50_off = statistics.median(r.p50_ms for r, _ in on), statistics.median(r.p50_ms for r, _ in off)
        rps_on, rps_off = statistics.median(r.rps for r, _ in on), statistics.median(r.rps for r, _ in off)
        cpu_on, cpu_off = statistics.median(c for _, c in on), statistics.median(c for _, c in off)
        print(
            f"  {name}: p50 {p50_on:.3f} ms with, {p50_off:.3f} ms without (added {p50_on - p50_off:+.3f} ms); "
            f"{rps_on:,.0f} rps with, {rps_off:,.0f} rps without ({(rps_on / rps_off - 1) * 100:+.1f}%); "
            f"CPU {cpu_on:.3f} vs {cpu_off:.3f} ms/req"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
