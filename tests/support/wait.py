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

    Raises AssertionError after `timeout` seconds, naming `message`, the last value returned and
    the last AssertionError raised by the predicate (other exceptions propagate at once).
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    value: object = None
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
            raise AssertionError(_timeout_message(message, timeout, value, last_error))
        await asyncio.sleep(interval)


def wait_until_sync(
    predicate: Callable[[], T],
    timeout: float = 10.0,
    interval: float = 0.05,
    message: str = "condition",
) -> T:
    """`wait_until` for synchronous tests and fixtures (the predicate must be sync)."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    value: object = None
    while True:
        try:
            value = predicate()
            if value:
                return value  # type: ignore[return-value]
        except AssertionError as exc:
            last_error = exc
        if time.monotonic() >= deadline:
            raise AssertionError(_timeout_message(message, timeout, value, last_error))
        time.sleep(interval)


def _timeout_message(message: str, timeout: float, value: object, error: BaseException | None) -> str:
    text = f"{message} not met within {timeout}s"
    if error is not None:
        text += f": {error}"
    else:
        text += f" (last value: {value!r:.300})"
    return text
