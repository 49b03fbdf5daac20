"""Where a `haimaker` process's log lines go and at which level: ours at INFO (DEBUG with `--detailed_debug`),
every library's at WARNING whatever the flag.

`--detailed_debug` is LiteLLM's flag (its environment twin `DETAILED_DEBUG` too): in LiteLLM it sets LiteLLM's
own loggers to DEBUG, and so it does here for `haimaker.*`, plus the access log (`api/access_log.py`). The
database driver, SQLAlchemy, Redis and httpx stay at WARNING: their DEBUG output is hundreds of lines per request
(aiosqlite logs every cursor call) and shows SQL parameters.

The flag reaches worker processes (uvicorn `--num_workers`, granian) through the environment, which they
inherit: `configure_logging` runs again in each (`app.app_from_env`).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from typing import Final

DEBUG_ENV: Final = "DETAILED_DEBUG"
FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_TRUE: Final = frozenset({"1", "true", "yes", "on", "y", "t"})  # what click accepts for a flag's env variable
# Libraries that log at INFO or DEBUG per query, connection or request: WARNING even when the root is lowered.
QUIET_LOGGERS: Final = (
    "sqlalchemy",
    "aiosqlite",
    "asyncpg",
    "redis",
    "httpx",
    "httpcore",
    "alembic",
    "asyncio",
    "multipart",
    "python_multipart",
    "botocore",
    "urllib3",
)


def is_detailed_debug(environ: Mapping[str, str]) -> bool:
    """Whether `DETAILED_DEBUG` is set to a true value (as `--detailed_debug` sets it for its workers)."""
    return environ.get(DEBUG_ENV, "").strip().lower() in _TRUE


def configure_logging(*, debug: bool) -> None:
    """One stderr handler on the root logger (kept if one is there), `haimaker.*` at INFO or DEBUG, libraries at
    WARNING. Safe to call again (a worker process that inherited the parent's configuration)."""
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(FORMAT))
        root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("haimaker").setLevel(logging.DEBUG if debug else logging.INFO)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
