"""The event store against the real PostgreSQL: versions, conflicts, handled commands, the outbox."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy import text

import schemas as s
from eventstore.store import CommandAlreadyHandled, EventStore, HandledCommand, StreamVersionConflict


def _event(stream: str, n: int = 0) -> s.Envelope:
    payload = s.AutoRenewChanged(subscription_id=uuid.uuid4(), enabled=bool(n % 2), reason=f"r{n}")
    return s.new_envelope(payload, stream_id=stream, metadata=s.Metadata(correlation_id=f"c{n}", actor=s.SYSTEM))


def _stream() -> str:
    return s.account_stream(f"test-{uuid.uuid4()}")


async def test_append_and_read_back_in_order(event_store: EventStore) -> None:
    stream = _stream()
    first = [_event(stream, i) for i in range(3)]
    positions = await event_store.append(stream, 0, first)
    assert positions == sorted(positions) and len(positions) == 3
    await event_store.append(stream, 3, [_event(stream, 9)])
    events = await event_store.read_stream(stream)
    assert [e.stream_version for e in events] == [1, 2, 3, 4]
    assert [e.event_id for e in events[:3]] == [e.id for e in first]
    assert events[0].envelope() == first[0]
    assert await event_store.stream_version(stream) == 4
    assert [e.stream_version for e in await event_store.read_stream(stream, after_version=2)] == [3, 4]


async def test_a_wrong_expected_version_is_a_conflict(event_store: EventStore) -> None:
    stream = _stream()
    await event_store.append(stream, 0, [_event(stream)])
    with pytest.raises(StreamVersionConflict) as ahead:
        await event_store.append(stream, 5, [_event(stream)])
    assert ahead.value.actual == 1
    with pytest.raises(StreamVersionConflict):
        await event_store.append(stream, 0, [_event(stream)])
    assert await event_store.stream_version(stream) == 1


async def test_twenty_concurrent_appenders_one_winner_per_version(event_store: EventStore) -> None:
    stream = _stream()
    await event_store.append(stream, 0, [_event(stream)])
    start = asyncio.Event()

    async def writer(i: int) -> str:
        await start.wait()
        try:
            await event_store.append(stream, 1, [_event(stream, i), _event(stream, i + 100)])
            return "won"
        except StreamVersionConflict:
            return "conflict"

    tasks = [asyncio.create_task(writer(i)) for i in range(20)]
    start.set()
    outcomes = await asyncio.gather(*tasks)
    assert outcomes.count("won") == 1
    assert outcomes.count("conflict") == 19
    versions = [e.stream_version for e in await event_store.read_stream(stream)]
    assert versions == [1, 2, 3], "no gap, no duplicate version"


async def test_the_same_command_handled_twice_appends_once(event_store: EventStore) -> None:
    stream = _stream()
    command_id = uuid.uuid4()
    outcome = {"status": "succeeded", "subscription_id": str(uuid.uuid4())}
    handled = HandledCommand(command_id, "SetAutoRenew", outcome)
    await event_store.append(stream, 0, [_event(stream, 1)], command=handled)
    with pytest.raises(CommandAlreadyHandled) as again:
        await event_store.append(stream, 1, [_event(stream, 2)], command=handled)
    assert again.value.outcome == outcome
    assert len(await event_store.read_stream(stream)) == 1
    assert await event_store.handled_outcome(command_id) == outcome


async def test_read_all_pages_through_the_log(event_store: EventStore) -> None:
    stream = _stream()
    before = await event_store.last_position()
    await event_store.append(stream, 0, [_event(stream, i) for i in range(7)])
    pages = []
    async for page in event_store.iter_all(after_position=before, page_size=3):
        pages.append([e for e in page if e.stream_id == stream])
    mine = [e for page in pages for e in page]
    assert [e.stream_version for e in mine] == list(range(1, 8))


async def test_appended_events_wait_in_the_outbox(fresh_database) -> None:  # type: ignore[no-untyped-def]
    # A private database: a developer's running relay would drain the shared outbox.
    from infra.db import create_engine
    from infra.migrate import upgrade

    settings = fresh_database()
    upgrade(settings, ["eventstore"])
    engine = create_engine(settings, pool_size=2)
    try:
        stream = _stream()
        positions = await EventStore(engine).append(stream, 0, [_event(stream), _event(stream, 1)])
        async with engine.connect() as conn:
            queued = (await conn.execute(text("SELECT position FROM eventstore.outbox ORDER BY position"))).scalars().all()
        assert queued == positions
    finally:
        await engine.dispose()
