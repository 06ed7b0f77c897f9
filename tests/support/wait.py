"""Polling with a deadline: tests wait for a condition, never for a fixed time."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def wait_until(
    predicate: Callable[[], T | Awaitable[T]],
    timeout: float = 10.0,
    interval: float = 0.05,
    message: str = "condition",
) -> T:
    """Call `predicate` (sync or async) until it returns something truthy; return that value.

    Raises AssertionError after `timeout` seconds, with the last exception raised by the predicate.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            value = predicate()
            if inspect.isawaitable(value):
                value = await value
            if value:
                return value  # type: ignore[return-value]
        except AssertionError as exc:
            last_error = exc
        if time.monotonic() >= deadline:
            raise AssertionError(f"{message} not met within {timeout}s" + (f": {last_error}" if last_error else ""))
        await asyncio.sleep(interval)
