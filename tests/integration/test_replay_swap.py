"""Replay with swap while the live projector runs and events keep arriving: nothing is lost.

The whole pipeline downstream of the event store is real: a writer appends account histories
through `EventStore`, the outbox relay (`relay.outbox.OutboxRelay`) publishes them to a unique
topic, the live projector (the real ConsumerLoop) applies them. In the middle of that traffic a
full rebuild is swapped in, then a partial one (two read models). Afterwards every stream is at
its last version and a fresh `--check` finds the live read models equal to a replay of the log.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

import asyncpg
import pytest

from infra.db import create_engine
from relay.outbox import OutboxRelay
from infra.settings import Settings, plain_url
from eventstore.store import EventStore
from projector.adapters.rebuild import Replay, ReplayOptions
from tests.support.projector_scenarios import (
    PLANS,
    Clock,
    History,
    append_history,
    plan_events,
    projected_versions,
    random_account,
    running_projector,
    stored_versions,
)
from tests.support.wait import wait_until

pytestmark = pytest.mark.slow


async def table_oid(settings: Settings, table: str) -> int:
    conn = await asyncpg.connect(plain_url(settings.database_url))
    try:
        return await conn.fetchval("SELECT $1::regclass::oid", f"read.{table}")
    finally:
        await conn.close()


async def test_replay_swaps_while_the_projector_runs_and_events_keep_arriving(
    fresh_database: Callable[..., Settings], unique_topic: Callable, unique_group: Callable
) -> None:
    db = fresh_database()
    topic = await unique_topic(partitions=3)
    settings = db.model_copy(update={"events_topic": topic})
    engine = create_engine(db, pool_size=8)
    store = EventStore(engine)
    relay = OutboxRelay(settings, partitions=3)
    relay_task = asyncio.create_task(relay.run())

    clock, rng = Clock(), random.Random(31)
    plans = History()
    for plan in PLANS:
        plan_events(plans, clock, plan)
    await append_history(store, plans)
    written = {"accounts": 0}
    stop_writing = asyncio.Event()

    async def writer() -> None:
        while not stop_writing.is_set():
            history = History()
            for _ in range(3):
                random_account(history, clock, rng)
            await append_history(store, history)
            written["accounts"] += 3
            await asyncio.sleep(0.01)

    try:
        async with running_projector(db, topic, unique_group(), batch_max=200):
            writing = asyncio.create_task(writer())
            await wait_until(lambda: written["accounts"] >= 60, timeout=120, message="some traffic before the replay")
            before = await table_oid(db, "subscriptions"), await table_oid(db, "commands")

            full = await Replay(db, ReplayOptions(mode="swap")).run()
            accounts_at_swap = written["accounts"]
            await wait_until(lambda: written["accounts"] >= accounts_at_swap + 30, timeout=120, message="traffic after the swap")
            partial = await Replay(db, ReplayOptions(mode="swap", tables=["payments", "commands"])).run()
            accounts_at_partial = written["accounts"]
            await wait_until(lambda: written["accounts"] >= accounts_at_partial + 30, timeout=120,
                             message="traffic after the partial swap")
            stop_writing.set()
            await writing
            await wait_until(
                lambda: _equal(projected_versions(db.database_url), stored_versions(db.database_url)),
                timeout=120, message="the live projector caught up with everything written",
            )
            after = await table_oid(db, "subscriptions"), await table_oid(db, "commands")
    finally:
        stop_writing.set()
        relay.stop()
        await asyncio.wait_for(relay_task, 30)
        await engine.dispose()

    assert full.events > 0 and partial.events > full.events
    assert before[0] != after[0] and before[1] != after[1], "the tables were really swapped"
    # traffic never stopped: each swap had to take in events written after its bulk read
    assert full.caught_up_events > 0 and partial.caught_up_events > 0
    check = await Replay(db, ReplayOptions(mode="check")).run()
    assert check.differences == [], check.differences[:10]
    stored = await stored_versions(db.database_url)
    assert check.events == sum(stored.values())
    assert len([s for s in stored if s.startswith("account-")]) == written["accounts"]
    conn = await asyncpg.connect(plain_url(db.database_url))
    try:
        assert await conn.fetchval("SELECT count(*) FROM read.accounts") == written["accounts"]
        runs = await conn.fetch("SELECT mode, status, tables FROM projector.replay_runs ORDER BY run_id")
        assert [(r["mode"], r["status"]) for r in runs] == [("swap", "succeeded"), ("swap", "succeeded"), ("check", "succeeded")]
        leftovers = await conn.fetch("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'read\\_%'")
        assert leftovers == [], "rebuild and old schemas are dropped"
    finally:
        await conn.close()


async def _equal(left: object, right: object) -> bool:
    return await left == await right  # type: ignore[misc]
