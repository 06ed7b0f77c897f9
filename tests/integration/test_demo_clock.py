"""The demo moves business time and acts at once: every service's clock must already show it.

Each shiftable clock re-reads the shared offset every OFFSET_REFRESH_S; the demo once cancelled
within that half second and the processor refunded for 1 day used while the API had quoted 11.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from devstack import demo
from infra.clock import ShiftableClock, read_offset
from infra.db import create_engine


async def test_a_shift_is_seen_by_every_running_clock_when_the_demo_goes_on(fresh_database, monkeypatch) -> None:
    settings = fresh_database(migrate=True, prefix="democlock")
    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    engine = create_engine(settings, pool_size=1)
    clock = ShiftableClock(engine)  # as the processor runs it: refreshed in the background
    await clock.start()
    try:
        for days in (10, 3):
            before = await read_offset(engine)
            await asyncio.to_thread(demo._shift_days, days)
            assert clock.offset == before + timedelta(days=days), "a service still runs on the old business time"
        await asyncio.to_thread(demo._shift_days, None)
        assert clock.offset == timedelta(0)
    finally:
        await clock.stop()
        await engine.dispose()
