"""Everything a running proxy owns, built and closed by the app's lifespan (`app.py`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from haimaker.accounting.recorder import SpendRecorder
from haimaker.accounting.tokens import TokenCounter
from haimaker.clock import Clock
from haimaker.config.loader import Settings
from haimaker.identity import Authenticator
from haimaker.limits.auth_throttle import AuthThrottle
from haimaker.limits.engine import BudgetEngine
from haimaker.metrics import Metrics
from haimaker.pipeline import Pipeline
from haimaker.providers.router import Router

if TYPE_CHECKING:
    from haimaker.services.container import Services
    from haimaker.state.cluster import Cluster
    from haimaker.storage.dead_letters_repo import DeadLetterRepository
    from haimaker.storage.store_health import StoreMonitor

logger = logging.getLogger("haimaker")


@dataclass
class AppState:
    settings: Settings
    clock: Clock
    auth: Authenticator
    db: AsyncEngine
    tokens: TokenCounter
    recorder: SpendRecorder
    engine: BudgetEngine
    router: Router
    pipeline: Pipeline
    metrics: Metrics
    started_at: float
    # Failed-key attempts per client address (API and UI sign-in): `limits/auth_throttle.py`.
    auth_throttle: AuthThrottle
    redis_url: str | None = None
    # Several instances (a Redis URL is configured): shared counters, invalidations, job lock.
    cluster: Cluster | None = None
    services: Services | None = None
    sink: Any = None
    reset_job: Any = None
    # Watches the store for loss (deleted/replaced/read-only SQLite file, emptied PostgreSQL): readiness, fail-closed.
    store_monitor: StoreMonitor | None = None
    dead_letters: DeadLetterRepository | None = None
    background: list[asyncio.Task[Any]] = field(default_factory=list)
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    def dead_letter_count(self) -> int:
        """Spend items that could not be written: in the store's table (as of the store monitor's last check), in
        the dead-letter file, and those only logged."""
        box = self.recorder.dead_letters
        monitor = self.store_monitor
        in_table = monitor.status.dead_letters if monitor is not None else box.in_table
        return in_table + box.in_file + box.in_log_only

    async def store_is_reachable(self) -> bool:
        try:
            async with self.db.connect() as conn:
                await conn.execute(text("SELECT 1"))
            return True
        except Exception:
            logger.warning("database unreachable", exc_info=True)
            return False
