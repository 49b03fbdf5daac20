"""Where a running haimaker spends its CPU, by component: `python -m bench.profile --pid <haimaker pid>`.

Samples the process with py-spy (`pip install py-spy`; not a project dependency) for a few seconds while you load it
(e.g. with `python -m bench.load`), then attributes every sample to the innermost frame that belongs to a known
component. This is the profile behind the "where the CPU goes" section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

# (component, substrings of a frame's file path), tried from the innermost frame outwards.
COMPONENTS: list[tuple[str, tuple[str, ...]]] = [
    (
        "spend recording (recorder, SQL, driver)",
        ("accounting/recorder", "storage/", "sqlalchemy/", "aiosqlite/", "asyncpg/"),
    ),
    ("token counting (tpm reservation)", ("accounting/tokens", "tiktoken/")),
    ("metrics (Prometheus)", ("haimaker/metrics", "prometheus_client/")),
    ("upstream HTTP client", ("providers/http1", "providers/http.py", "providers/openai_compat", "providers/azure")),
    ("SSE relay and usage tap", ("providers/sse",)),
    ("routing", ("providers/router",)),
    ("budget engine and counters", ("haimaker/limits/", "haimaker/state/")),
    ("pipeline (auth, parse, settle)", ("haimaker/pipeline", "haimaker/identity", "haimaker/accounting/pricing")),
    ("LLM endpoint (ASGI glue)", ("haimaker/api/llm", "haimaker/app.py")),
    ("HTTP server (uvicorn / granian)", ("uvicorn/", "granian/", "httptools")),
]
LOOP = "event loop and sockets (uvloop, C)"


def component(frames: list[str]) -> str:
    for frame in reversed(frames):
        for name, markers in COMPONENTS:
            if any(marker in frame for marker in markers):
                return name
    return LOOP if frames and frames[-1].startswith("Runner.run") else "other"


def summarize(raw: Path) -> tuple[Counter[str], int]:
    """Samples of the main thread (the event loop) per component, and their total; other threads are left out
    (their CPU is reported from /proc: py-spy cannot tell a thread waiting for the GIL from a running one)."""
    counts: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        thread, frames = frames[0], frames[1:]
        if "MainThread" not in thread:
            continue
        total += int(count)
        counts[component(frames)] += int(count)
    return counts, total


def thread_cpu_s(pid: int) -> dict[str, float]:
    """CPU seconds (user + system) per thread of the process, keyed by "name (tid)"."""
    ticks = os.sysconf("SC_CLK_TCK")
    result: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the thread ended
        result[f"{name} ({task.name})"] = (int(fields[11]) + int(fields[12])) / ticks
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pid", type=int, required=True, help="the haimaker process (a worker, with --num_workers)")
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rate", type=int, default=300, help="samples per second")
    args = parser.parse_args(argv)
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    with tempfile.TemporaryDirectory() as work:
        raw = Path(work) / "profile.txt"
        command = [py_spy, "record", "-p", str(args.pid), "-d", str(args.seconds), "-r", str(args.rate)]
        before = thread_cpu_s(args.pid)
        subprocess.run([*command, "-f", "raw", "-t", "--nonblocking", "-o", str(raw)], check=True, capture_output=True)
        after = thread_cpu_s(args.pid)
        counts, total = summarize(raw)
    print(f"CPU per thread over the {args.seconds} s window (from /proc, not sampled):")
    for thread, cpu in sorted(after.items(), key=lambda item: -(item[1] - before.get(item[0], 0.0))):
        used = cpu - before.get(thread, 0.0)
        if used > 0.005:
            print(f"  {thread}: {used:.2f} s ({used / args.seconds:.0%} of a core)")
    print(f"main thread: {total} samples ({args.rate}/s) by component")
    print("| component | share of the main thread's samples |")
    print("|---|---|")
    for name, count in counts.most_common():
        print(f"| {name} | {count / total:.0%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
