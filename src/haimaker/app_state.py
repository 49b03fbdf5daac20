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
    background: list[asyncio.Task[Any]] = field(default_factory=list)
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    async def store_is_reachable(self) -> bool:
        try:
            async with self.db.connect() as conn:
                await conn.execute(text("SELECT 1"))
            return True
        except Exception:
            logger.warning("database unreachable", exc_info=True)
            return False
