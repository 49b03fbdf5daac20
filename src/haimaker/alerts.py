"""Webhook alerts for customer budgets: soft budget crossed, budget crossed, budget reset.

`general_settings.alerting: ["webhook"]` with `WEBHOOK_URL` turns them on. Events are queued without
awaiting and posted by a background task with retries, so a slow or dead webhook never slows or fails
an LLM request; past `_MAX_QUEUED` undelivered events the oldest are dropped (and counted in the log).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
from typing import Any

from haimaker.clock import Clock
from haimaker.config.loader import Settings
from haimaker.money import Nanos, nanos_to_usd, optional_nanos_to_usd
from haimaker.providers.http import post_json
from haimaker.state.counters import Limits
from haimaker.storage.records import Budget

logger = logging.getLogger("haimaker.alerts")

_MAX_QUEUED = 10_000
_ATTEMPTS = 5


class Alerter:
    def __init__(self, webhook_url: str | None, clock: Clock) -> None:
        self.webhook_url = webhook_url
        self._clock = clock
        self._queue: collections.deque[dict[str, Any]] = collections.deque(maxlen=_MAX_QUEUED)
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.delivered = 0

    @classmethod
    def from_settings(cls, settings: Settings, clock: Clock) -> Alerter:
        wants_webhook = "webhook" in settings.config.general_settings.alerting
        url = os.environ.get("WEBHOOK_URL") if wants_webhook else None
        if wants_webhook and not url:
            logger.warning("general_settings.alerting has 'webhook' but WEBHOOK_URL is not set: alerts are off")
        return cls(url, clock)

    @property
    def enabled(self) -> bool:
        return self.webhook_url is not None

    def after_charge(self, limits: Limits, before: Nanos, after: Nanos) -> None:
        if not self.enabled:
            return
        if limits.soft_budget is not None and before < limits.soft_budget <= after:
            self._emit("soft_budget_crossed", limits, after, "Customer crossed its soft budget")
        if limits.max_budget is not None and before < limits.max_budget <= after:
            self._emit("budget_crossed", limits, after, "Customer crossed its budget")

    def budget_reset(self, customer_id: str, budget: Budget) -> None:
        if not self.enabled:
            return
        limits = Limits(
            customer_id,
            budget.budget_id,
            budget.max_budget,
            budget.soft_budget,
            None,
            None,
            None,
            budget.budget_duration,
            budget.budget_reset_at,
        )
        self._emit("budget_reset", limits, 0, "Customer budget period reset")

    def _emit(self, event: str, limits: Limits, spend: Nanos, text: str) -> None:
        self._queue.append(
            {
                "event": event,
                "event_group": "customer",
                "event_message": f"{text}. Customer={limits.customer_id}, spend={nanos_to_usd(spend)}",
                "customer_id": limits.customer_id,
                "budget_id": limits.budget_id,
                "spend": nanos_to_usd(spend),
                "max_budget": optional_nanos_to_usd(limits.max_budget),
                "soft_budget": optional_nanos_to_usd(limits.soft_budget),
                "timestamp": self._clock.now().isoformat(),
            }
        )
        self._wakeup.set()

    def start(self) -> None:
        if self.enabled:
            self._task = asyncio.create_task(self._run(), name="haimaker-alerts")

    async def _run(self) -> None:
        assert self.webhook_url is not None
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                payload = self._queue[0]
                delay = 0.2
                for attempt in range(_ATTEMPTS):
                    if await post_json(self.webhook_url, payload, timeout_s=5.0):
                        self.delivered += 1
                        break
                    if attempt < _ATTEMPTS - 1:
                        await asyncio.sleep(delay)
                        delay *= 2
                else:
                    logger.warning("webhook alert %s not delivered after %d attempts", payload["event"], _ATTEMPTS)
                if self._queue and self._queue[0] is payload:
                    self._queue.popleft()

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
