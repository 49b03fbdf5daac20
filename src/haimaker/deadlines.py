"""Awaiting a future with a deadline, at the cost of one timer.

`asyncio.wait_for` wraps every wait in a second future with its callbacks; the upstream client waits once per
request and once per streamed read, and the Redis script client once per call, so they use this instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


async def wait_until(future: asyncio.Future[T], timeout_s: float, error: Callable[[], BaseException]) -> T:
    """The future's result, or `error()` raised from it when it is not done within `timeout_s`."""
    timer = future.get_loop().call_later(timeout_s, _fail, future, error)
    try:
        return await future
    finally:
        timer.cancel()


def _fail(future: asyncio.Future[T], error: Callable[[], BaseException]) -> None:
    if not future.done():
        future.set_exception(error())
