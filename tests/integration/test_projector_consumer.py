"""The live projector against the real Kafka and PostgreSQL.

Events are appended with `EventStore` (so the gap filler finds them) and published to a unique
topic the way the relay does (key = stream id, value = stored envelope, headers); the projector
consumes them in-process through `ProjectorConsumer` (the real ConsumerLoop). Whole read models
are compared in fresh databases.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Callable

import asyncpg
from aiokafka import AIOKafkaConsumer

from infra.db import create_engine
from infra.settings import Settings, plain_url
from eventstore.store import EventStore, RecordedEvent
from projector.adapters.engine import Target, apply_events
from projector.adapters.rebuild import Replay, ReplayOptions
from projector.bootstrap import create_pool
from projector.domain.events import ProjectedEvent
from projector.domain.projections import TABLES
from projector.service import Projector
from tests.support.projector_scenarios import (
    PLANS,
    Clock,
    History,
    append_history,
    plan_events,
    projected_versions,
    publish,
    random_account,
    read_models,
    running_projector,
    stored_versions,
)
from tests.support.wait import wait_until


def build_history(accounts: int, seed: int) -> History:
    history, clock, rng = History(), Clock(), random.Random(seed)
    for plan in PLANS:
        plan_events(history, clock, plan)
    for _ in range(accounts):
        random_account(history, clock, rng)
    return history


async def caught_up(settings: Settings) -> bool:
    return await projected_versions(settings.database_url) == await stored_versions(settings.database_url)


async def stored(settings: Settings, history: History) -> list[RecordedEvent]:
    engine = create_engine(settings, pool_size=8)
    try:
        return await append_history(EventStore(engine), history)
    finally:
        await engine.dispose()


async def test_table_specs_match_the_migrated_tables(engine: object, settings: Settings) -> None:
    conn = await asyncpg.connect(plain_url(settings.database_url))
    try:
        for name, spec in TABLES.items():
            rows = await conn.fetch(
                "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = 'read' "
                "AND table_name = $1 ORDER BY ordinal_position", name,
            )
            types = {"timestamp with time zone": "timestamptz"}
            assert [(c, types.get(t, t)) for c, t in rows] == list(spec.columns), name
    finally:
        await conn.close()


async def test_in_order_delivery_projects_every_event_once(
    fresh_database: Callable[..., Settings], unique_topic: Callable, unique_group: Callable
) -> None:
    settings = fresh_database()
    history = build_history(40, seed=11)
    events = await stored(settings, history)
    topic = await unique_topic(partitions=3)
    await publish(settings, topic, events)
    async with running_projector(settings, topic, unique_group()) as loop:
        await wait_until(lambda: caught_up(settings), timeout=60, message="projector caught up")
        assert loop.projector.applied == len(events)
        assert loop.projector.duplicates == 0
    report = await Replay(settings, ReplayOptions(mode="check")).run()
    assert report.differences == []
    assert report.events == len(events)


async def test_duplicated_and_reordered_delivery_gives_the_same_read_models_as_in_order(
    fresh_database: Callable[..., Settings], unique_topic: Callable, unique_group: Callable
) -> None:
    history = build_history(40, seed=12)
    in_order_db, messy_db = fresh_database(), fresh_database()
    in_order = await stored(in_order_db, history)
    messy_events = await stored(messy_db, history)
    # the same events in both stores (streams are appended concurrently: positions may interleave differently)
    assert sorted(e.event_id for e in in_order) == sorted(e.event_id for e in messy_events)

    # Reorder: for a third of the streams the first event is published after everything else (a
    # gap the projector must fill from the event store); duplicate a fifth of the events at random
    # later places; finally re-publish a prefix, as a relay that crashed before deleting its outbox rows.
    rng = random.Random(3)
    streams = sorted({e.stream_id for e in messy_events})
    late_first = set(rng.sample(streams, len(streams) // 3))
    held_back = [e for e in messy_events if e.stream_id in late_first and e.stream_version == 1]
    messy = [e for e in messy_events if e not in held_back]
    for event in rng.sample(messy_events, len(messy_events) // 5):
        messy.insert(rng.randrange(len(messy) + 1), event)
    messy = messy + held_back + messy_events[: len(messy_events) // 3]

    topic_a, topic_b = await unique_topic(partitions=3), await unique_topic(partitions=3)
    await publish(in_order_db, topic_a, in_order)
    await publish(messy_db, topic_b, messy)
    async with running_projector(in_order_db, topic_a, unique_group()):
        await wait_until(lambda: caught_up(in_order_db), timeout=60, message="in-order projector caught up")
    async with running_projector(messy_db, topic_b, unique_group()) as loop:
        await wait_until(lambda: caught_up(messy_db), timeout=60, message="messy projector caught up")
        # wait for the tail (duplicates) to be consumed too, then look at the counters
        await wait_until(lambda: loop.projector.applied + loop.projector.duplicates >= len(messy), timeout=60)
        assert loop.projector.gap_filled >= len(late_first) - 5  # a few streams' gaps may close within one batch
        assert loop.projector.duplicates > len(messy_events) // 5

    assert await read_models(messy_db.database_url) == await read_models(in_order_db.database_url)


async def test_a_gap_is_filled_from_the_event_store_never_applied_out_of_order(
    fresh_database: Callable[..., Settings], unique_topic: Callable, unique_group: Callable
) -> None:
    settings = fresh_database()
    history = build_history(1, seed=13)
    events = await stored(settings, history)
    account_events = [e for e in events if e.stream_id.startswith("account-")]
    last = account_events[-1]
    topic = await unique_topic(partitions=1)
    await publish(settings, topic, [last])  # only the stream's LAST event arrives
    async with running_projector(settings, topic, unique_group()) as loop:
        await wait_until(
            lambda: projected_versions(settings.database_url), timeout=30, message="the stream was projected"
        )
        assert (await projected_versions(settings.database_url))[last.stream_id] == last.stream_version
        assert loop.projector.gap_filled == last.stream_version - 1
    report = await Replay(settings, ReplayOptions(mode="check", tables=["subscriptions", "payments", "commands", "accounts"])).run()
    assert report.differences == []


async def test_poison_records_are_dead_lettered_and_the_partition_moves_on(
    fresh_database: Callable[..., Settings], unique_topic: Callable, unique_group: Callable, settings: Settings
) -> None:
    db = fresh_database()
    events = await stored(db, build_history(3, seed=14))
    topic = await unique_topic(partitions=1)
    half = len(events) // 2
    await publish(db, topic, events[:half])
    from infra.kafka import ensure_topics, make_producer

    await ensure_topics(settings, {f"{topic}.dlq": 1})
    producer = await make_producer(settings)
    try:
        await producer.send_and_wait(topic, value=b"not json at all", key=b"account-x")
        await producer.send_and_wait(topic, value=b'{"type": "NoSuchEvent", "stream_id": "account-x", "data": {}}',
                                     key=b"account-x", headers=[("stream_version", b"1")])
    finally:
        await producer.stop()
    await publish(db, topic, events[half:])
    async with running_projector(db, topic, unique_group(), max_attempts=2, retry_backoff_s=0.05) as loop:
        await wait_until(lambda: caught_up(db), timeout=60, message="projector caught up past the poison")
        await wait_until(lambda: loop.dead_lettered == 2, timeout=30, message="both poison records dead-lettered")
    consumer = AIOKafkaConsumer(f"{topic}.dlq", bootstrap_servers=settings.kafka_servers, auto_offset_reset="earliest",
                                group_id=f"dlq-{uuid.uuid4().hex[:8]}")
    await consumer.start()
    try:
        batch = await consumer.getmany(timeout_ms=10_000)
        values = sorted(r.value for records in batch.values() for r in records)
        assert values == sorted([b"not json at all", b'{"type": "NoSuchEvent", "stream_id": "account-x", "data": {}}'])
    finally:
        await consumer.stop()


async def test_apply_events_twice_changes_nothing_the_second_time(fresh_database: Callable[..., Settings]) -> None:
    settings = fresh_database()
    events = await stored(settings, build_history(10, seed=15))
    projected = [ProjectedEvent.from_recorded(e) for e in events]
    pool = await create_pool(settings)
    engine = create_engine(settings, pool_size=2)
    projector = Projector(pool, EventStore(engine))
    try:
        first = await projector.apply(projected)
        before = await read_models(settings.database_url)
        second = await projector.apply(list(reversed(projected)))
        assert (first.applied, first.duplicates) == (len(events), 0)
        assert (second.applied, second.duplicates, second.rows_written) == (0, len(events), 0)
        assert await read_models(settings.database_url) == before
    finally:
        await pool.close()
        await engine.dispose()


async def test_concurrent_batches_of_one_stream_serialize_on_the_positions_lock(fresh_database: Callable[..., Settings]) -> None:
    """Two projector instances during a rebalance may hold the same stream: one waits, then skips."""
    settings = fresh_database()
    events = [ProjectedEvent.from_recorded(e) for e in await stored(settings, build_history(5, seed=16))]
    pool = await create_pool(settings, size=4)
    engine = create_engine(settings, pool_size=2)
    projector = Projector(pool, EventStore(engine))
    try:
        results = await asyncio.gather(*(projector.apply(events) for _ in range(3)))
        assert sum(r.applied for r in results) == len(events)
        assert sum(r.duplicates for r in results) == 2 * len(events)
        async with pool.acquire() as conn, conn.transaction():
            again = await apply_events(conn, Target(), events, projector.read_stream)
        assert again.applied == 0
    finally:
        await pool.close()
        await engine.dispose()
