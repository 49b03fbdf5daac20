"""Runs a real haimaker proxy on 127.0.0.1 for tests: uvicorn in a background thread, port 0.

    with running_proxy(tmp_path, {"model_list": [...]}) as proxy:
        client = openai.OpenAI(base_url=proxy.url + "/v1", api_key=proxy.master_key)

The proxy goes through its real lifespan (migrations, catalog load, recorder) and its real shutdown
(the recorder drains) when the block exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import uvicorn
import yaml

from haimaker.app import HaimakerApp, create_app
from haimaker.app_state import AppState
from haimaker.clock import Clock
from haimaker.config.loader import load_config
from haimaker.server import server_config

MASTER_KEY = "sk-test-master-1234"


class RunningProxy:
    def __init__(self, app: HaimakerApp, server: uvicorn.Server, thread: threading.Thread, port: int) -> None:
        self.app = app
        self.server = server
        self.thread = thread
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.master_key = MASTER_KEY
        self.loop: asyncio.AbstractEventLoop | None = None

    @property
    def state(self) -> AppState:
        return self.app.state

    def headers(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.master_key}"}

    def client(self) -> httpx.Client:
        """An httpx client with the master key (close it, or use it as a context manager)."""
        return httpx.Client(base_url=self.url, headers=self.headers(), timeout=30)

    def call(self, coro: Any) -> Any:
        """Run a coroutine on the proxy's own event loop (e.g. `state.recorder.flush()`)."""
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)


def base_config(**sections: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "model_list": [{"model_name": "gpt-3.5-turbo", "litellm_params": {"model": "mock/gpt-3.5-turbo"}}],
        # Every test client is 127.0.0.1 and shared proxies see many deliberate wrong keys: the failed-key throttle
        # (10 a minute by default) is relaxed here; tests of the throttle set their own limit.
        "general_settings": {"master_key": MASTER_KEY, "auth_failure_limit": 1000},
    }
    for name, value in sections.items():
        if isinstance(value, dict) and isinstance(config.get(name), dict):
            config[name] = {**config[name], **value}
        else:
            config[name] = value
    return config


@contextlib.contextmanager
def running_proxy(tmp_path: Path, config: dict[str, Any], *, clock: Clock | None = None) -> Iterator[RunningProxy]:
    """Start a proxy for `config` (written to tmp_path/config.yaml; SQLite beside it unless set)."""
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    settings = load_config(path)
    app = create_app(settings, clock=clock)
    # The CLI's own server config (protocol, client read deadlines, no proxy-header rewriting), on a free port.
    uv_config = server_config(
        app, settings, host="127.0.0.1", port=0, loop="asyncio", log_level="warning", timeout_graceful_shutdown=10
    )
    server = uvicorn.Server(uv_config)
    holder: dict[str, Any] = {}

    def serve() -> None:
        loop = asyncio.new_event_loop()
        holder["loop"] = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(server.serve())
        except BaseException as exc:  # surfaced to the test below
            holder["error"] = exc
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    thread = threading.Thread(target=serve, name="haimaker-test-proxy", daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError(f"proxy failed to start: {holder.get('error')!r}")
        thread.join(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    proxy = RunningProxy(app, server, thread, port)
    proxy.loop = holder["loop"]
    try:
        yield proxy
    finally:
        server.should_exit = True
        thread.join(30)
