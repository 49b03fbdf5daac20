"""What the usage export costs on the hot path: `python -m bench.export [--duration 5] [--rounds 3] [--smoke]`.

Starts the fake upstream, the load generator and a local webhook receiver, then measures haimaker on a SQLite store
without a usage export sink and with one (a webhook sink: each charge batch also writes the outbox, and the exporter
drains it in the same process while the load runs), at c=1 JSON (p50) and c=64 JSON (req/s), every request naming
one customer so that every charge is exported. The two configs run in turns within each round, in a rotated order,
one process at a time. After each measurement with the sink, it also reports how long the exporter took to deliver
the last charge (the drain after the load stops). Prints one line per measurement and the medians; nothing asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import orjson
from aiohttp import web

from bench.load import LoadResult
from bench.processes import Haimaker, LoadGenerator, Upstream, free_port, sample
from bench.run import MASTER_KEY, Plan, Scenario, load_spec, write_config

SHAPES = (("c=1 json", 1), ("c=64 json", 64))
KINDS = ("no sink", "outbox only", "webhook sink")
# "outbox only": a sink whose receiver is down (a closed port, a minute between attempts): each charge batch writes
# the outbox but the exporter sends nothing, so the outbox write's own cost shows apart from the exporter's.
SIGNING_SECRET = "whsec_bench_0123456789abcdefghijklmnop"


class Receiver:
    """A webhook sink that answers 200 at once and counts the distinct event ids it received."""

    def __init__(self) -> None:
        self.ids: set[str] = set()
        self.port = 0
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        for event in orjson.loads(await request.read())["events"]:
            self.ids.add(event["id"])
        return web.Response(status=200)

    async def _serve(self, ready: threading.Event) -> None:
        self._stop = asyncio.Event()
        app = web.Application()
        app.router.add_post("/usage", self._handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.port = runner.addresses[0][1]
        ready.set()
        await self._stop.wait()
        await runner.cleanup()

    def __enter__(self) -> Receiver:
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(self._serve(ready))
            self._loop.close()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)


def sink_lines(port: int, *, down: bool = False) -> list[str]:
    return [
        "  usage_export:",
        "    - name: bench",
        "      type: webhook",
        f"      api_base: http://127.0.0.1:{port}/usage",
        f"      signing_secret: {SIGNING_SECRET}",
        "      poll_interval_s: 0.2",
        *(["      retry_backoff_s: 60", "      max_backoff_s: 60"] if down else []),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds at the start of each")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="tiny counts, one round: keeps the path working")
    args = parser.parse_args(argv)
    plan, rounds = Plan(args.duration, args.warmup, 10_000_000, 0, 0.0, (1, 64)), args.rounds
    if args.smoke:
        plan, rounds = replace(Plan.smoke(), concurrencies=(1, 64)), 1
    repo = Path(__file__).resolve().parent.parent
    runs: dict[str, list[dict[str, tuple[LoadResult, float]]]] = {kind: [] for kind in KINDS}
    drains: list[float] = []
    with (
        tempfile.TemporaryDirectory(prefix="haimaker-bench-export-") as tmp,
        Upstream(20, cwd=repo) as upstream,
        LoadGenerator(cwd=repo) as loader,
        Receiver() as receiver,
    ):
        for round_no in range(rounds):
            for kind in KINDS[round_no % len(KINDS) :] + KINDS[: round_no % len(KINDS)]:
                workdir = Path(tmp) / f"{kind.replace(' ', '-')}-{round_no}"
                workdir.mkdir()
                config = workdir / "config.yaml"
                write_config(config, upstream, f"sqlite:///{(workdir / 'bench.db').absolute()}", None)
                if kind != "no sink":
                    port = receiver.port if kind == "webhook sink" else free_port()
                    config.write_text(
                        config.read_text() + "\n".join(sink_lines(port, down=kind == "outbox only")) + "\n"
                    )
                results = {}
                with Haimaker(config, workdir / "haimaker.log") as proxy:
                    proxy.wait_ready()
                    for name, concurrency in SHAPES:
                        before = sample(proxy.pid)
                        spec = load_spec(
                            proxy.url + "/v1/chat/completions",
                            MASTER_KEY,
                            Scenario("sqlite", concurrency, False, "one"),
                            plan,
                        )
                        result = loader.measure(spec)
                        cpu_ms = (sample(proxy.pid).cpu_s - before.cpu_s) * 1000 / max(result.total_requests, 1)
                        results[name] = (result, cpu_ms)
                    if kind == "webhook sink":
                        sent = sum(r.total_requests for r, _ in results.values())
                        stopped = time.monotonic()
                        while len(receiver.ids) < sent and time.monotonic() - stopped < 60:
                            time.sleep(0.01)
                        drains.append(time.monotonic() - stopped)
                        print(f"  exported {len(receiver.ids):,} of {sent:,} charges (drain {drains[-1]:.2f} s)")
                        receiver.ids.clear()
                runs[kind].append(results)
                cells = ", ".join(
                    f"{name}: {r.rps:,.0f} rps p50 {r.p50_ms:.3f} ms {cpu:.3f} CPU ms/req ({r.error_count} errors)"
                    for name, (r, cpu) in results.items()
                )
                print(f"round {round_no + 1} {kind}: {cells}", flush=True)
    print("\nmedians over rounds:")
    for name, _ in SHAPES:
        base_p50 = statistics.median(run[name][0].p50_ms for run in runs["no sink"])
        base_rps = statistics.median(run[name][0].rps for run in runs["no sink"])
        for kind in KINDS:
            p50 = statistics.median(run[name][0].p50_ms for run in runs[kind])
            rps = statistics.median(run[name][0].rps for run in runs[kind])
            cpu = statistics.median(run[name][1] for run in runs[kind])
            added = "" if kind == "no sink" else f" (p50 {p50 - base_p50:+.3f} ms, {rps / base_rps - 1:+.1%})"
            print(f"  {name} {kind}: p50 {p50:.3f} ms, {rps:,.0f} rps, {cpu:.3f} CPU ms/req{added}")
    if drains:
        print(f"  drain after load (median): {statistics.median(drains):.2f} s")
    errors = sum(r.error_count for kind in KINDS for run in runs[kind] for r, _ in run.values())
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
