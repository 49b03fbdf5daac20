"""What a virtual key costs on the hot path: `python -m bench.keys [--duration 5] [--rounds 3] [--smoke]`.

Starts the fake upstream, the load generator and one haimaker on a SQLite store, creates two virtual keys with
`POST /key/generate` (one without limits: authentication only; one with `rpm_limit`, `tpm_limit` and `max_budget`
so large that nothing is refused: the key's own admission, prompt count and reservation on every request), then
measures the master key and each virtual key at c=1 JSON (p50: the added latency of one request) and c=64 JSON and
SSE (req/s), without a customer so that only the key's work differs; and, for scale, the master key naming a customer
with the same limits (the same admission work on a customer). The kinds run in turns within each round,
in a rotated order per round, against the same process, so that drift on a shared machine hits all alike. Prints
one line per measurement and the medians per key; nothing is asserted.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from dataclasses import replace
from pathlib import Path

from bench.load import LoadResult
from bench.processes import Haimaker, LoadGenerator, Upstream, http_json, sample
from bench.run import MASTER_KEY, ONE_CUSTOMER, Plan, Scenario, load_spec, write_config

SHAPES = (("c=1 json", 1, False), ("c=64 json", 64, False), ("c=64 stream", 64, True))
# Limits so large that nothing is ever refused: every request still runs the key's admission.
HUGE_LIMITS = {"rpm_limit": 10**9, "tpm_limit": 10**12, "max_budget": 1e9}
KINDS = ("master key", "virtual key", "virtual key + limits", "master key + customer limits")
# The kind that names a customer (`bench-one`, with the same huge limits): the same admission work, on a customer.
CUSTOMER_KIND = "master key + customer limits"

Measured = dict[str, tuple[LoadResult, float]]  # shape -> (result, proxy CPU ms per request)


def make_keys(proxy: Haimaker) -> dict[str, str]:
    """The key each kind presents: the master key, a key without limits, a key with (huge) limits; and the customer
    `bench-one` with the same limits, for the kind that names it."""
    plain = http_json("POST", proxy.url + "/key/generate", {"key_alias": "bench-plain"}, MASTER_KEY)
    limited = http_json("POST", proxy.url + "/key/generate", {"key_alias": "bench-limits", **HUGE_LIMITS}, MASTER_KEY)
    http_json("POST", proxy.url + "/customer/new", {"user_id": ONE_CUSTOMER, **HUGE_LIMITS}, MASTER_KEY)
    return {
        "master key": MASTER_KEY,
        "virtual key": plain["key"],
        "virtual key + limits": limited["key"],
        CUSTOMER_KIND: MASTER_KEY,
    }


def measure(loader: LoadGenerator, proxy: Haimaker, key: str, plan: Plan, *, customer: bool = False) -> Measured:
    results = {}
    for name, concurrency, stream in SHAPES:
        scenario = Scenario("sqlite", concurrency, stream, "one" if customer else "none")
        before = sample(proxy.pid)
        result = loader.measure(load_spec(proxy.url + "/v1/chat/completions", key, scenario, plan))
        cpu_ms = (sample(proxy.pid).cpu_s - before.cpu_s) * 1000 / max(result.total_requests, 1)
        results[name] = (result, cpu_ms)
    return results


def summary(runs: dict[str, list[Measured]]) -> list[str]:
    """The medians per key kind, and what each virtual key adds over the master key."""
    lines = []
    for name, _, _ in SHAPES:
        base_p50 = statistics.median(run[name][0].p50_ms for run in runs["master key"])
        base_rps = statistics.median(run[name][0].rps for run in runs["master key"])
        for kind in KINDS:
            p50 = statistics.median(run[name][0].p50_ms for run in runs[kind])
            rps = statistics.median(run[name][0].rps for run in runs[kind])
            cpu = statistics.median(run[name][1] for run in runs[kind])
            errors = sum(run[name][0].error_count for run in runs[kind])
            added = "" if kind == "master key" else f" (added p50 {p50 - base_p50:+.3f} ms, {rps / base_rps - 1:+.1%})"
            lines.append(
                f"  {name} {kind}: p50 {p50:.3f} ms, {rps:,.0f} rps, {cpu:.3f} CPU ms/req, {errors} errors{added}"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.keys", description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds at the start of each")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the three keys")
    parser.add_argument("--smoke", action="store_true", help="tiny counts, one round: keeps the path working")
    args = parser.parse_args(argv)
    plan = Plan(args.duration, args.warmup, 10_000_000, 0, 0.0, (1, 64))
    rounds = args.rounds
    if args.smoke:
        plan, rounds = replace(Plan.smoke(), concurrencies=(1, 64)), 1
    repo = Path(__file__).resolve().parent.parent
    runs: dict[str, list[Measured]] = {kind: [] for kind in KINDS}
    with (
        tempfile.TemporaryDirectory(prefix="haimaker-bench-keys-") as tmp,
        Upstream(20, cwd=repo) as upstream,
        LoadGenerator(cwd=repo) as loader,
    ):
        workdir = Path(tmp)
        config = workdir / "config.yaml"
        write_config(config, upstream, f"sqlite:///{(workdir / 'bench.db').absolute()}", None)
        with Haimaker(config, workdir / "haimaker.log") as proxy:
            proxy.wait_ready()
            keys = make_keys(proxy)
            for round_no in range(rounds):
                order = KINDS[round_no % len(KINDS) :] + KINDS[: round_no % len(KINDS)]
                for kind in order:
                    results = runs[kind]
                    results.append(measure(loader, proxy, keys[kind], plan, customer=kind == CUSTOMER_KIND))
                    cells = ", ".join(
                        f"{name}: {r.rps:,.0f} rps p50 {r.p50_ms:.3f} ms {cpu:.3f} CPU ms/req ({r.error_count} errors)"
                        for name, (r, cpu) in results[-1].items()
                    )
                    print(f"round {round_no + 1} {kind}: {cells}", flush=True)
    print("\nmedians over rounds:")
    print("\n".join(summary(runs)))
    errors = sum(r.error_count for kind in KINDS for run in runs[kind] for r, _ in run.values())
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
