"""What the translated APIs add over `/v1/chat/completions`: `/v1/messages` (the Anthropic Messages API) and
`/v1/responses` (the OpenAI Responses API, translated to chat): `python -m bench.apis [--duration 5] [--rounds 3]
[--smoke]`.

One haimaker on SQLite in front of the fake OpenAI upstream; the same one-message request sent as a chat request, as
an Anthropic message (with `max_tokens`, which chat leaves out) and as a Responses request (with
`max_output_tokens`; the deployment sets `use_chat_completions_api`, so it is translated to chat and back rather
than forwarded), at c=1 (p50: the added latency of one request) and c=64 (req/s), JSON only: the load generator ends
a stream at `data: [DONE]`, which neither translated stream sends. The routes run in turns, rotated per round,
against the same process. Prints medians; asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from dataclasses import replace
from pathlib import Path

from bench.load import LoadResult, LoadSpec
from bench.processes import Haimaker, LoadGenerator, Upstream
from bench.run import MASTER_KEY, MODEL, Plan, write_config

ROUTES = {
    "chat": ("/v1/chat/completions", f'{{"model":"{MODEL}","messages":[{{"role":"user","content":"hello"}}]}}'),
    "messages": (
        "/v1/messages",
        f'{{"model":"{MODEL}","max_tokens":256,"messages":[{{"role":"user","content":"hello"}}]}}',
    ),
    "responses": ("/v1/responses", f'{{"model":"{MODEL}","max_output_tokens":256,"input":"hello"}}'),
}
CONCURRENCIES = (1, 64)


def measure(loader: LoadGenerator, proxy: Haimaker, route: str, concurrency: int, plan: Plan) -> LoadResult:
    path, body = ROUTES[route]
    spec = LoadSpec(
        url=proxy.url + path,
        concurrency=concurrency,
        duration_s=plan.duration_s,
        max_requests=plan.max_requests,
        warmup_s=plan.warmup_s,
        body=body,
        headers={"Authorization": f"Bearer {MASTER_KEY}"},
    )
    return loader.measure(spec)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.apis", description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds at the start of each")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the two routes")
    parser.add_argument("--smoke", action="store_true", help="tiny counts, one round: keeps the path working")
    args = parser.parse_args(argv)
    plan = Plan(args.duration, args.warmup, 10_000_000, 0, 0.0, CONCURRENCIES)
    rounds = args.rounds
    if args.smoke:
        plan, rounds = replace(Plan.smoke(), concurrencies=CONCURRENCIES), 1
    repo = Path(__file__).resolve().parent.parent
    runs: dict[tuple[str, int], list[LoadResult]] = {(r, c): [] for r in ROUTES for c in CONCURRENCIES}
    with (
        tempfile.TemporaryDirectory(prefix="haimaker-bench-apis-") as tmp,
        Upstream(20, cwd=repo) as upstream,
        LoadGenerator(cwd=repo) as loader,
    ):
        workdir = Path(tmp)
        config = workdir / "config.yaml"
        write_config(
            config,
            upstream,
            f"sqlite:///{(workdir / 'bench.db').absolute()}",
            None,
            params={"use_chat_completions_api": "true"},
        )
        with Haimaker(config, workdir / "haimaker.log") as proxy:
            proxy.wait_ready()
            for round_no in range(rounds):
                order = list(ROUTES)[round_no % len(ROUTES) :] + list(ROUTES)[: round_no % len(ROUTES)]
                for route in order:
                    for concurrency in CONCURRENCIES:
                        result = measure(loader, proxy, route, concurrency, plan)
                        runs[route, concurrency].append(result)
                        print(
                            f"round {round_no + 1} {route} c={concurrency}: {result.rps:,.0f} rps "
                            f"p50 {result.p50_ms:.3f} ms ({result.error_count} errors)",
                            flush=True,
                        )
    print("\nmedians over rounds:")
    for concurrency in CONCURRENCIES:
        base = runs["chat", concurrency]
        base_p50 = statistics.median(r.p50_ms for r in base)
        base_rps = statistics.median(r.rps for r in base)
        for route in ROUTES:
            p50 = statistics.median(r.p50_ms for r in runs[route, concurrency])
            rps = statistics.median(r.rps for r in runs[route, concurrency])
            added = "" if route == "chat" else f" (added p50 {p50 - base_p50:+.3f} ms, {rps / base_rps - 1:+.1%})"
            print(f"  c={concurrency} {route}: p50 {p50:.3f} ms, {rps:,.0f} rps{added}")
    errors = sum(r.error_count for results in runs.values() for r in results)
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
