"""Runs the ASGI app under uvicorn (default) or granian, with graceful shutdown.

SIGTERM: stop accepting, let in-flight requests finish (bounded by `GRACEFUL_TIMEOUT_S`), then the
lifespan drains the spend recorder and closes every pool.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Generator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn

from haimaker.config.loader import Settings

GRACEFUL_TIMEOUT_S = 30


def run_server(
    settings: Settings, config_path: Path | None, *, host: str, port: int, workers: int, server: str, debug: bool
) -> None:
    if workers > 1 and not settings.redis_url:
        # Each worker keeps its own counters in memory: without Redis, N workers would enforce N budgets.
        from haimaker.config.loader import ConfigError

        raise ConfigError(["--num_workers > 1 needs shared state: set general_settings.redis_url (or env REDIS_URL)"])
    if config_path is not None:
        os.environ["HAIMAKER_CONFIG"] = str(config_path.resolve())
    if server == "granian":
        _run_granian(host, port, workers)
        return
    common: dict[str, Any] = {
        "host": host,
        "port": port,
        "loop": "uvloop",
        "http": "httptools",
        "log_level": "debug" if debug else "warning",
        "access_log": debug,
        "timeout_graceful_shutdown": GRACEFUL_TIMEOUT_S,
        "timeout_keep_alive": 65,
        "lifespan": "on",
        # We read no client address, so uvicorn's X-Forwarded-For rewriting is pure per-request cost.
        "proxy_headers": False,
        "server_header": False,
    }
    if workers > 1:
        uvicorn.run("haimaker.app:app_from_env", factory=True, workers=workers, **common)
        return
    from haimaker.app import create_app

    GracefulServer(uvicorn.Config(create_app(settings, serving=True), **common)).run()


class GracefulServer(uvicorn.Server):
    """uvicorn re-raises SIGTERM after its graceful shutdown, so the process dies "by signal" even when every
    request finished and every charge was written; we exit 0 instead, as process managers expect of a clean stop."""

    @contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handled = (signal.SIGINT, signal.SIGTERM)
        original = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)


def _run_granian(host: str, port: int, workers: int) -> None:
    from granian import Granian
    from granian.constants import Interfaces, Loops

    Granian(
        "haimaker.app:app_from_env",
        factory=True,
        address=host,
        port=port,
        workers=workers,
        interface=Interfaces.ASGI,
        loop=Loops.uvloop,
    ).serve()
