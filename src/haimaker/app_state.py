"""Everything a running proxy owns: built once by the app's lifespan (`app.py`), read-only afterwards.

The lifespan opens each resource under one exit stack, which closes them again; this record only names them, for the
routes (through `api/deps.py`) and the tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncEngine

from haimaker.accounting.recorder import SpendRecorder
from haimaker.accounting.store_sink import StoreSink
from haimaker.accounting.tokens import TokenCounter
from haimaker.billing.exporter import UsageExporter
from haimaker.clock import Clock
from haimaker.config.loader import Settings
from haimaker.identity import Authenticator
from haimaker.limits.auth_throttle import AuthThrottle
from haimaker.limits.engine import BudgetEngine
from haimaker.metrics import Metrics
from haimaker.pipeline import Pipeline
from haimaker.providers.router import Router
from haimaker.services.container import Services
from haimaker.services.resets import ResetJob
from haimaker.state.ui_sessions import LiveSessions
from haimaker.storage.dead_letters_repo import DeadLetterRepository
from haimaker.storage.store_health import StoreMonitor

if TYPE_CHECKING:
    from haimaker.state.cluster import Cluster  # the module is imported only when Redis is configured (`app.py`)


@dataclass(frozen=True, slots=True)
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
    # The repositories the recorder writes through (tests read the store through them).
    sink: StoreSink
    services: Services
    # Watches the store for loss (deleted/replaced/read-only SQLite file, emptied PostgreSQL): readiness, fail-closed.
    store_monitor: StoreMonitor
    dead_letters: DeadLetterRepository
    # Signed-in admin UI sessions: in Redis with several instances, else in this process.
    ui_sessions: LiveSessions
    # Several instances (a Redis URL is configured): shared counters, invalidations, job lock.
    cluster: Cluster | None = None
    redis_url: str | None = None
    # None when `general_settings.disable_reset_budget` is set.
    reset_job: ResetJob | None = None
    # Usage export (`general_settings.usage_export`): drains the outbox to the sinks; None without sinks.
    usage_exporter: UsageExporter | None = None

    def dead_letter_count(self) -> int:
        """Spend items that could not be written: in the store's table (as of the store monitor's last check), in
        the dead-letter file, and those only logged."""
        box = self.recorder.dead_letters
        return self.store_monitor.status.dead_letters + box.in_file + box.in_log_only
