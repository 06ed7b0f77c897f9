"""The projector as a real process: SIGKILL in the middle of its batches, restart, nothing wrong.

`python -m projector` consumes a unique topic into a fresh database with small batches; it is
killed with SIGKILL twice while it works (each time inside or between its batch
transactions), restarted, and must end with read models equal to a fresh replay of the log
(`replay --check`: zero differences) and every stream at its last version.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from infra.db import create_engine
from infra.settings import Settings
from eventstore.store import EventStore
from projector.adapters.rebuild import Replay, ReplayOptions
from tests.support.processes import ManagedProcess
from tests.support.projector_scenarios import (
    PLANS,
    Clock,
    History,
    append_history,
    plan_events,
    projected_versions,
    publish,
    random_account,
    stored_versions,
)
from tests.support.wait import wait_until

pytestmark = pytest.mark.slow


async def test_projector_killed_mid_batch_and_restarted_equals_a_fresh_replay(
    fresh_database: Callable[..., Settings], unique_topic: Callable, unique_group: Callable
) -> None:
    db = fresh_database()
    history, clock, rng = History(), Clock(), random.Random(21)
    for plan in PLANS:
        plan_events(history, clock, plan)
    for _ in range(150):
        random_account(history, clock, rng)
    engine = create_engine(db, pool_size=8)
    try:
        events = await append_history(EventStore(engine), history)
    finally:
        await engine.dispose()
    topic = await unique_topic(partitions=3)
    await publish(db, topic, events)
    total = len(events)

    async def applied() -> int:
        return sum((await projected_versions(db.database_url)).values())

    projector = ManagedProcess(
        "projector-sigkill",
        "projector",
        env={
            "DATABASE_URL": db.database_url,
            "KAFKA_BOOTSTRAP_SERVERS": db.kafka_bootstrap_servers,
            "EVENTS_TOPIC": topic,
            "EVENTS_DLQ_TOPIC": f"{topic}.dlq",
            "PROJECTOR_GROUP_ID": unique_group("projector"),
            "PROJECTOR_BATCH_MAX": "20",
            "PROJECTOR_SESSION_TIMEOUT_MS": "6000",  # the broker minimum: a killed instance releases its partitions sooner
            "LOG_FORMAT": "json",
        },
    )
    kills = []
    try:
        for fraction in (0.15, 0.5):
            projector.start()
            await wait_until(lambda: _at_least(applied, int(total * fraction)), timeout=120,
                             message=f"projector applied {fraction:.0%} of {total}")
            projector.kill()
            kills.append(await applied())
        projector.start()
        await wait_until(
            lambda: _equal(projected_versions(db.database_url), stored_versions(db.database_url)),
            timeout=180, message="projector caught up after restarts",
        )
    finally:
        projector.terminate()
    assert kills == sorted(kills) and kills[-1] < total, f"every kill happened while work was left: {kills} of {total}"
    assert projector.starts == 3

    report = await Replay(db, ReplayOptions(mode="check")).run()
    assert report.events == total
    assert report.differences == [], report.differences[:10]
    assert report.reconciled_streams == 0, "the live positions equal the fresh replay's"


async def _at_least(count: Callable, threshold: int) -> bool:
    return await count() >= threshold


async def _equal(left: object, right: object) -> bool:
    return await left == await right  # type: ignore[misc]
