"""One clock for business time, injectable so tests and the demo can move time.

Production uses `SystemClock`. With `BILLING_CLOCK=shiftable` (development, tests, the demo) every
process uses `ShiftableClock`, which adds an offset kept in `eventstore.clock_offset`: moving time
forward there moves it for the API, the processor and the scheduler at once. The offset is
refreshed in the background, never on the hot path.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from datetime import datetime, timedelta, timezone
from typing import Protocol

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(timezone.utc)


class FixedClock:
    """A clock that only moves when told; for unit tests of pure logic."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def now(self) -> datetime:
        return self.at

    def advance(self, delta: timedelta) -> None:
        self.at += delta


OFFSET_REFRESH_S = 0.5
"""How often every shiftable clock re-reads the shared offset: a shift is seen everywhere within it."""


class ShiftableClock:
    """System time plus a shared offset read from the database every `refresh_s` seconds."""

    def __init__(self, engine: AsyncEngine, refresh_s: float = OFFSET_REFRESH_S) -> None:
        self.engine = engine
        self.refresh_s = refresh_s
        self.offset = timedelta(0)
        self._task: asyncio.Task[None] | None = None

    def now(self) -> datetime:
        return datetime.now(timezone.utc) + self.offset

    async def refresh(self) -> None:
        self.offset = await read_offset(self.engine)

    async def start(self) -> None:
        await self.refresh()
        self._task = asyncio.create_task(self._loop(), name="clock-refresh")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_s)
            with contextlib.suppress(Exception):
                await self.refresh()


async def read_offset(engine: AsyncEngine) -> timedelta:
    async with engine.connect() as conn:
        value = (await conn.execute(text("SELECT offset_seconds FROM eventstore.clock_offset WHERE id = 1"))).scalar()
    return timedelta(seconds=float(value or 0))


async def shift_time(engine: AsyncEngine, delta: timedelta) -> timedelta:
    """Move business time forward (or back) for every process; returns the new offset."""
    async with engine.begin() as conn:
        value = (
            await conn.execute(
                text(
                    "INSERT INTO eventstore.clock_offset (id, offset_seconds) VALUES (1, :d) "
                    "ON CONFLICT (id) DO UPDATE SET offset_seconds = eventstore.clock_offset.offset_seconds + :d "
                    "RETURNING offset_seconds"
                ),
                {"d": delta.total_seconds()},
            )
        ).scalar_one()
    return timedelta(seconds=float(value))


async def build_clock(engine: AsyncEngine) -> Clock:
    """The clock a service should use, chosen by `BILLING_CLOCK` (system | shiftable)."""
    if os.environ.get("BILLING_CLOCK", "system") == "shiftable":
        clock = ShiftableClock(engine)
        await clock.start()
        return clock
    return SystemClock()
