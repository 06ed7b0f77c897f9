"""Long-polling without a query per waiting request: one poller answers every waiter of a kind.

Clients that would otherwise poll (`Prefer: wait=N` on a command, or on a GET with
`If-None-Match`) park a future here. While any are parked, a single task fetches the current
value of all their keys in ONE indexed query every `interval_s` and wakes each waiter whose
condition holds, so a thousand waiting clients cost one query per interval instead of a thousand
— and the clients send one request instead of a poll every few hundred milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

from infra.logging import get_logger

log = get_logger(__name__)

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

Fetch = Callable[[list[K]], Awaitable[dict[K, V]]]


class BatchedWatcher(Generic[K, V]):
    """Waits for a condition on a keyed value, with one poller for all keys (see the module docstring)."""

    def __init__(self, fetch: Fetch[K, V], *, name: str, interval_s: float = 0.05) -> None:
        self.fetch = fetch
        self.name = name
        self.interval_s = interval_s
        self._waiters: dict[K, list[tuple[asyncio.Future[V], Callable[[V], bool]]]] = {}
        self._task: asyncio.Task[None] | None = None

    async def wait(self, key: K, ready: Callable[[V], bool], timeout_s: float) -> V | None:
        """The key's value once `ready(value)` holds, or None after `timeout_s` (or at once for ≤ 0)."""
        if timeout_s <= 0:
            return None
        future: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        entry = (future, ready)
        self._waiters.setdefault(key, []).append(entry)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._poll(), name=f"{self.name}-poller")
        try:
            return await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            return None
        finally:
            entries = self._waiters.get(key)
            if entries is not None:
                with contextlib.suppress(ValueError):
                    entries.remove(entry)
                if not entries:
                    self._waiters.pop(key, None)

    async def _poll(self) -> None:
        while self._waiters:
            await asyncio.sleep(self.interval_s)
            keys = list(self._waiters)
            if not keys:
                break
            try:
                values = await self.fetch(keys)
            except Exception as exc:  # noqa: BLE001 - a DB hiccup must not kill the poller; waiters time out
                log.warning("watch_poll_failed", watcher=self.name, error=repr(exc)[:300])
                continue
            for key, value in values.items():
                for future, ready in self._waiters.get(key, ()):
                    if not future.done() and ready(value):
                        future.set_result(value)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
