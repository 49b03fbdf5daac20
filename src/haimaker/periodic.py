"""Background jobs that run a round at a fixed interval for as long as the app runs (started by `app.py`).

One loop for all of them (the budget reset job, spend-log retention, the working set's sweep): a round that fails is
logged and the next one runs at its time, so one bad round never stops a job; cancellation (shutdown) ends it.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable

logger = logging.getLogger("haimaker")


async def repeat(
    round_: Callable[[], Awaitable[object] | object], interval_s: float, *, what: str, first_delay_s: float = 0.0
) -> None:
    """Run `round_` (sync or async) after `first_delay_s`, then every `interval_s` seconds after each round ends."""
    await asyncio.sleep(first_delay_s)
    while True:
        try:
            result = round_()
            if inspect.isawaitable(result):
                await result
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("%s failed; will retry", what)
        await asyncio.sleep(interval_s)
