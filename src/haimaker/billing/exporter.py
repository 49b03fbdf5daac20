"""UsageExporter: drains the usage outbox to every configured sink, each at its own pace, off the hot path.

Per sink, a loop: take the sink's job lock (one exporter per sink across instances; none needed on a lone SQLite
proxy), read the rows after its cursor, send them, and move the cursor over the prefix the sink acknowledged or
refused for good, in one transaction with those refusals (`OutboxRepository.advance`). A retryable failure records
the error and waits (exponential backoff with full jitter, capped), then tries the same rows again: nothing is
skipped and, since every attempt carries the same dedupe key per event, nothing counts twice. A crash between the
sink's acknowledgement and the cursor's move resends that batch; the sink's dedupe absorbs it.

The lock is held for one round (at most `_ROUND_S` of sending), then released, so a Redis lease never runs out under
a slow sink and another instance can take over when this one stops.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager, nullcontext
from typing import Final

from haimaker.billing.delivery import SinkClient, UsageSink
from haimaker.billing.lago import LagoSink
from haimaker.billing.openmeter import OpenMeterSink
from haimaker.billing.stripe import StripeSink
from haimaker.billing.webhook import WebhookSink
from haimaker.clock import Clock
from haimaker.config.usage_export import UsageExportSink
from haimaker.state.locks import JobLock
from haimaker.storage.outbox_repo import OutboxRepository

logger = logging.getLogger("haimaker.billing")

_ROUND_S: Final = 10.0
_PRUNE_EVERY_S: Final = 60.0


def build_sink(settings: UsageExportSink, client: SinkClient, clock: Clock | None = None) -> UsageSink:
    """The sink for a configured type."""
    if settings.type == "stripe":
        return StripeSink(settings, client)
    if settings.type == "lago":
        return LagoSink(settings, client, clock)
    if settings.type == "openmeter":
        return OpenMeterSink(settings, client, clock)
    return WebhookSink(settings, client, clock)


def backoff_s(settings: UsageExportSink, failures: int, rand: Callable[[], float] = random.random) -> float:
    """The wait after `failures` consecutive failed attempts: full jitter over a doubling, capped ceiling."""
    ceiling = min(settings.max_backoff_s, settings.retry_backoff_s * 2.0 ** max(failures - 1, 0))
    return float(ceiling * (0.5 + rand() / 2))  # never near zero: a failing sink is not hammered


class UsageExporter:
    """One background loop per sink; `run()` until cancelled, `aclose()` releases the HTTP connections."""

    def __init__(
        self,
        sinks: Sequence[UsageExportSink],
        outbox: OutboxRepository,
        *,
        lock: JobLock | None = None,
        clock: Clock | None = None,
    ) -> None:
        self._client = SinkClient()
        self._sinks = [build_sink(settings, self._client, clock) for settings in sinks]
        self._outbox = outbox
        self._lock = lock
        self._last_prune = 0.0
        # Per sink: consecutive failed attempts (status page: "retrying"); reset by a success.
        self.failures: dict[str, int] = {settings.name: 0 for settings in sinks}

    @property
    def sink_settings(self) -> list[UsageExportSink]:
        return [sink.settings for sink in self._sinks]

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            for sink in self._sinks:
                group.create_task(self._run_sink(sink), name=f"haimaker-usage-export-{sink.settings.name}")

    async def aclose(self) -> None:
        self._client.close()

    async def _run_sink(self, sink: UsageSink) -> None:
        settings = sink.settings
        while True:
            try:
                wait_s = await self._round(sink)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the store unreachable, a bug: logged, retried, never the end of the loop
                self.failures[settings.name] += 1
                logger.warning("usage export to %s: round failed: %s", settings.name, type(exc).__name__)
                wait_s = backoff_s(settings, self.failures[settings.name])
            await asyncio.sleep(wait_s)

    def _hold(self, name: str) -> AbstractAsyncContextManager[bool]:
        if self._lock is None:
            return nullcontext(True)
        return self._lock.hold(f"usage-export:{name}")

    async def _round(self, sink: UsageSink) -> float:
        """Send what waits for `sink` (for at most `_ROUND_S`); returns how long to wait before the next round."""
        settings = sink.settings
        async with self._hold(settings.name) as held:
            if not held:
                return settings.poll_interval_s  # another instance exports to this sink
            started = time.monotonic()
            # Read under the lock: another instance may have moved the cursor since this one last held it.
            cursor = await self._outbox.cursor(settings.name)
            while time.monotonic() - started < _ROUND_S:
                events = await self._outbox.read_after(cursor, settings.batch_size)
                if not events:
                    await self._maybe_prune()
                    return settings.poll_interval_s
                delivery = await sink.send(events)
                exported, rejections, done = 0, [], None
                rejected = {rejection.request_id: rejection for rejection in delivery.rejected}
                for event in events:
                    if event.request_id in delivery.acknowledged:
                        exported += 1
                    elif event.request_id in rejected:
                        rejections.append(rejected[event.request_id])
                    else:
                        break  # the first event not through: it and everything after it are sent again
                    done = event.position
                if done is not None:
                    await self._outbox.advance(settings.name, done, exported=exported, rejections=rejections)
                    cursor = done
                for rejection in rejections:
                    logger.warning(
                        "usage export to %s: event %s refused (HTTP %d), kept as failed: %s",
                        settings.name,
                        rejection.request_id,
                        rejection.status_code,
                        rejection.error,
                    )
                if delivery.retry_error is not None:
                    self.failures[settings.name] += 1
                    await self._outbox.record_error(settings.name, delivery.retry_error)
                    logger.warning("usage export to %s: %s (will retry)", settings.name, delivery.retry_error)
                    return backoff_s(settings, self.failures[settings.name])
                self.failures[settings.name] = 0
            return 0.0

    async def _maybe_prune(self) -> None:
        now = time.monotonic()
        if now - self._last_prune < _PRUNE_EVERY_S:
            return
        self._last_prune = now
        await self._outbox.prune([sink.settings.name for sink in self._sinks])
