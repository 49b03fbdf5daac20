"""examples/nginx.conf runs as written, as any user, beside a system nginx, in front of three haimaker instances.

nginx is started and stopped with the commands in the file's header (`nginx -p <dir> -c <file> -e stderr`, then
`-s quit`). As root the test runs nginx as `nobody`, so a path outside the prefix (the system nginx's
/run/nginx.pid, /var/lib/nginx, /var/log/nginx) fails the start, as it would for a user without privileges. The
example's ports (4000, instances on 4001-4003) are used when free; a busy one is replaced in a copy of the file,
the only change made to it. Needs Debian's `nginx` package: skipped without it, failed under CI=true.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.support.process import free_port, proxy_process
from tests.support.proxy import MASTER_KEY

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "nginx.conf"
LISTEN_PORT = 4000
INSTANCE_PORTS = (4001, 4002, 4003)
NOBODY = 65534

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]


def nginx_binary() -> str:
    found = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None)
    if found is None:
        message = "nginx is not installed (Debian package `nginx`; .ci/run installs it)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found


def is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("", port))
        except OSError:
            return False
        return True


def unprivileged() -> list[str]:
    """The prefix that runs a command as `nobody` when the test runs as root (nothing otherwise)."""
    return ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"] if os.geteuid() == 0 else []


@contextlib.contextmanager
def nginx_prefix() -> Iterator[Path]:
    """nginx's own directory, writable by the user it runs as (pytest's tmp_path is root's alone)."""
    prefix = Path(tempfile.mkdtemp(prefix="haimaker-nginx-"))
    try:
        if os.geteuid() == 0:
            os.chown(prefix, NOBODY, NOBODY)
        yield prefix
    finally:
        shutil.rmtree(prefix, ignore_errors=True)


def example_config(prefix: Path) -> tuple[Path, int, tuple[int, ...]]:
    """The example itself when its ports are free, else a copy with the busy ones replaced."""
    listen = LISTEN_PORT if is_free(LISTEN_PORT) else free_port()
    instances = tuple(port if is_free(port) else free_port() for port in INSTANCE_PORTS)
    if (listen, instances) == (LISTEN_PORT, INSTANCE_PORTS):
        return EXAMPLE, listen, instances
    text = EXAMPLE.read_text()
    replacements = {f"listen {LISTEN_PORT};": f"listen {listen};"}
    replacements |= {
        f"127.0.0.1:{old} ": f"127.0.0.1:{new} " for old, new in zip(INSTANCE_PORTS, instances, strict=True)
    }
    for old, new in replacements.items():
        assert text.count(old) == 1, f"examples/nginx.conf no longer has {old!r}"
        text = text.replace(old, new)
    copy = prefix / "nginx.conf"
    copy.write_text(text)
    return copy, listen, instances


def wait_listening(port: int, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {port}")


def instance_config(port: int) -> dict[str, object]:
    """One instance of the three: the mock model answers with the instance's port, so answers say who served."""
    mock = {"model": "mock/gpt-3.5-turbo", "mock_response": f"served by {port}"}
    return {
        "model_list": [{"model_name": "gpt-3.5-turbo", "litellm_params": mock}],
        "general_settings": {"master_key": MASTER_KEY},
    }


def test_llm_requests_go_through_the_example_as_written_run_by_an_unprivileged_user(tmp_path: Path) -> None:
    nginx = nginx_binary()
    with contextlib.ExitStack() as stack:
        prefix = stack.enter_context(nginx_prefix())
        config, listen, instances = example_config(prefix)
        for port in instances:
            (tmp_path / str(port)).mkdir()
            stack.enter_context(proxy_process(tmp_path / str(port), instance_config(port), port=port))
        command = [*unprivileged(), nginx, "-p", f"{prefix}/", "-c", str(config), "-e", "stderr"]
        started = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
        assert started.returncode == 0, started.stderr
        pid = int((prefix / "nginx.pid").read_text())
        stack.callback(stop, command, pid)
        wait_listening(listen)

        with openai.OpenAI(base_url=f"http://127.0.0.1:{listen}/v1", api_key=MASTER_KEY, max_retries=0) as client:
            served = set()
            for n in range(6):
                reply = client.chat.completions.create(
                    model="gpt-3.5-turbo", messages=[{"role": "user", "content": "hello"}], user=f"c{n}"
                )
                assert reply.usage is not None and reply.usage.completion_tokens > 0
                served.add(reply.choices[0].message.content)
            assert served == {f"served by {port}" for port in instances}  # least_conn reached all three

            stream = client.chat.completions.create(
                model="gpt-3.5-turbo",
                messages=[{"role": "user", "content": "hello"}],
                user="streamer",
                stream=True,
                stream_options={"include_usage": True},
            )
            chunks = list(stream)
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            assert text in {f"served by {port}" for port in instances}
            assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0

        stop(command, pid)
        # Everything nginx wrote is under its prefix: the access log holds the requests, the pid file is gone.
        assert (prefix / "access.log").read_text().count('"POST /v1/chat/completions HTTP/1.1" 200') == 7
        assert (prefix / "error.log").exists() and not (prefix / "nginx.pid").exists()
        assert {"client_body_temp", "proxy_temp"} <= {p.name for p in prefix.iterdir()}


def stop(command: list[str], pid: int) -> None:
    """`nginx … -s quit` (the header's stop command); the master is killed if it outlives 10 s."""
    if not pid_alive(pid):
        return
    subprocess.run([*command, "-s", "quit"], capture_output=True, timeout=30, check=False)
    deadline = time.monotonic() + 10
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if pid_alive(pid):
        os.kill(pid, signal.SIGKILL)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A daemonized master is re-parented, not ours to reap; a zombie counts as gone.
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z"):
            return False
    return True
