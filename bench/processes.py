"""The processes a benchmark run owns: the fake upstream, the load generator and haimaker, and what /proc says.

Every process is started by `bench.run` with its output captured (a pipe or a log file) and is stopped by the same
object that started it: SIGTERM, then SIGKILL after a grace period, always by pid. Nothing here is asynchronous:
the orchestrator only waits on subprocesses and makes a handful of admin calls, so blocking calls are fine.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

from bench.load import LoadResult, LoadSpec

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# A direct opener: a benchmark on 127.0.0.1 must never go through an HTTP proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port() -> int:
    """A port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def http_json(method: str, url: str, body: Any = None, token: str | None = None, timeout_s: float = 10.0) -> Any:
    """One JSON request; returns the decoded body.

    Raises:
        RuntimeError: a non-2xx status (with the start of the body).
    """
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with _OPENER.open(request, timeout=timeout_s) as response:
            raw = response.read()
    except urllib.error.HTTPError as exc:
        detail = exc.read()[:500].decode(errors="replace")
        exc.close()
        raise RuntimeError(f"{method} {url} -> {exc.code}: {detail}") from None
    return json.loads(raw) if raw else None


def http_status(url: str, timeout_s: float = 2.0) -> int | None:
    """GET `url` and return its status, or None when nothing answers."""
    try:
        with _OPENER.open(url, timeout=timeout_s) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as exc:
        exc.close()
        return exc.code
    except (OSError, urllib.error.URLError):
        return None


@dataclass(frozen=True, slots=True)
class ProcSample:
    """CPU time and memory of a process tree at one instant."""

    cpu_s: float
    rss_mb: float
    hwm_mb: float


def _tree(pid: int) -> list[int]:
    """`pid` and its descendants (uvicorn/granian may fork workers)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    result, todo = [], [pid]
    while todo:
        current = todo.pop()
        result.append(current)
        todo.extend(children.get(current, []))
    return result


def sample(pid: int) -> ProcSample:
    """utime+stime from /proc/<pid>/stat and VmRSS/VmHWM from /proc/<pid>/status, summed over the tree."""
    cpu = rss = hwm = 0.0
    for member in _tree(pid):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
            status = Path(f"/proc/{member}/status").read_text()
        except OSError:
            continue
        cpu += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                rss += int(line.split()[1]) / 1024
            elif line.startswith("VmHWM:"):
                hwm += int(line.split()[1]) / 1024
    return ProcSample(cpu_s=cpu, rss_mb=rss, hwm_mb=hwm)


class ManagedProcess:
    """A child process stopped by pid on exit: SIGTERM, then SIGKILL after `grace_s`."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        log_path: Path | None = None,
        stdin: int | None = None,
        stdout: int | None = None,
        cwd: Path | None = None,
        grace_s: float = 10.0,
    ) -> None:
        self.argv = list(argv)
        self.log_path = log_path
        self.grace_s = grace_s
        self._log: IO[bytes] | None = open(log_path, "wb") if log_path is not None else None
        self.popen = subprocess.Popen(
            self.argv,
            stdin=stdin,
            stdout=stdout if stdout is not None else (self._log or subprocess.DEVNULL),
            stderr=self._log or subprocess.DEVNULL,
            cwd=cwd,
            text=stdout is not None or stdin is not None,
            bufsize=1 if stdout is not None or stdin is not None else -1,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def is_running(self) -> bool:
        return self.popen.poll() is None

    def stop(self) -> str:
        """Stop the process and return what it still had to say on a stdout pipe."""
        tail = ""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        try:
            out, _ = self.popen.communicate(timeout=self.grace_s)
            tail = out or ""
        except subprocess.TimeoutExpired:
            self.popen.kill()
            out, _ = self.popen.communicate()
            tail = out or ""
        if self._log is not None:
            self._log.close()
            self._log = None
        return tail

    def log_tail(self, lines: int = 30) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class Upstream(ManagedProcess):
    """`python -m bench.upstream` on a free port; `stats` holds its STATS line after `stop()`."""

    def __init__(self, chunks: int, *, per_event: bool = False, cwd: Path | None = None) -> None:
        argv = [sys.executable, "-m", "bench.upstream", "--port", "0", "--chunks", str(chunks)]
        if per_event:
            argv.append("--per-event")
        super().__init__(argv, stdout=subprocess.PIPE, cwd=cwd)
        assert self.popen.stdout is not None
        line = self.popen.stdout.readline()
        if not line.startswith("LISTENING "):
            self.stop()
            raise RuntimeError(f"bench.upstream did not start: {line!r}")
        self.port = int(line.split()[1])
        self.stats: dict[str, Any] = {}

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def stop(self) -> str:
        out = super().stop()
        for line in out.splitlines():
            if line.startswith("STATS "):
                self.stats = json.loads(line[len("STATS ") :])
        return out


class LoadGenerator(ManagedProcess):
    """`python -m bench.load --serve`: one long-lived process answering one measurement per request line."""

    def __init__(self, cwd: Path | None = None) -> None:
        argv = [sys.executable, "-m", "bench.load", "--serve"]
        super().__init__(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=cwd)

    def measure(self, spec: LoadSpec) -> LoadResult:
        """Run one measurement in the generator process.

        Raises:
            RuntimeError: the generator rejected the spec or died.
        """
        assert self.popen.stdin is not None and self.popen.stdout is not None
        fields = {name: getattr(spec, name) for name in spec.__dataclass_fields__}
        self.popen.stdin.write(json.dumps(fields) + "\n")
        self.popen.stdin.flush()
        line = self.popen.stdout.readline()
        if not line:
            raise RuntimeError("the load generator exited")
        data = json.loads(line)
        if "error" in data:
            raise RuntimeError(f"load generator: {data['error']}")
        return LoadResult(**data)

    def stop(self) -> str:
        if self.popen.stdin is not None:
            self.popen.stdin.close()  # EOF ends --serve cleanly
            self.popen.stdin = None  # so communicate() does not flush it
        try:
            self.popen.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        return super().stop()


def haimaker_command() -> list[str]:
    """The command that runs haimaker: the venv's console script, else `python -m haimaker`."""
    script = Path(sys.executable).with_name("haimaker")
    return [str(script)] if script.exists() else [sys.executable, "-m", "haimaker"]


class Haimaker(ManagedProcess):
    """haimaker serving `config_path` on a free port of 127.0.0.1, logging to `log_path`."""

    def __init__(self, config_path: Path, log_path: Path, *, command: Sequence[str] | None = None) -> None:
        self.port = free_port()
        argv = [*(command or haimaker_command()), "--config", str(config_path), "--host", "127.0.0.1"]
        argv += ["--port", str(self.port)]
        super().__init__(argv, log_path=log_path, cwd=config_path.parent, grace_s=15.0)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Poll `GET /health/readiness` until it answers 200.

        Raises:
            RuntimeError: the process exited or did not become ready in time (with the end of its log).
        """
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.is_running():
                raise RuntimeError(f"haimaker exited with {self.popen.returncode}:\n{self.log_tail()}")
            if http_status(self.url + "/health/readiness") == 200:
                return
            time.sleep(0.1)
        raise RuntimeError(f"haimaker not ready after {timeout_s}s:\n{self.log_tail()}")
