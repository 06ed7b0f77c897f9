"""The asyncpg door to the event store keeps the SQLAlchemy door's contract, on the same tables.

Whatever one door writes, the other reads identically; versions, conflicts and handled commands
behave the same; and the one-statement append never leaves half of itself behind.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

import schemas as s
from eventstore import asyncpg_store
from infra.settings import Settings, plain_url
from eventstore.store import CommandAlreadyHandled, EventStore, HandledCommand, StreamVersionConflict


def _event(stream: str, n: int = 0, command_id: uuid.UUID | None = None) -> s.Envelope:
    payload = s.AutoRenewChanged(subscription_id=uuid.uuid4(), enabled=bool(n % 2), reason=f"r{n}")
    meta = s.Metadata(correlation_id=f"c{n}", command_id=command_id, actor=s.SYSTEM)
    return s.new_envelope(payload, stream_id=stream, metadata=meta)


def _stream() -> str:
    return s.account_stream(f"test-{uuid.uuid4()}")


@pytest.fixture
async def pool(settings: Settings, engine) -> AsyncIterator[asyncpg.Pool]:  # type: ignore[no-untyped-def]
    # `engine` first: it migrates the session database.
    p = await asyncpg.create_pool(plain_url(settings.database_url), min_size=1, max_size=8, timeout=10)
    yield p
    await p.close()


async def test_what_one_door_writes_the_other_reads_the_same(pool: asyncpg.Pool, event_store: EventStore) -> None:
    account, plan, missing = _stream(), s.plan_stream(f"p{uuid.uuid4().hex[:10]}"), _stream()
    written = [_event(account, i) for i in range(3)]
    async with pool.acquire() as conn:
        positions = await asyncpg_store.append(conn, account, 0, written)
        await event_store.append(plan, 0, [_event(plan, 7)])
        read = await asyncpg_store.read_streams(conn, [account, plan, missing])
        queued = await conn.fetch("SELECT position FROM eventstore.outbox WHERE position = ANY($1::bigint[])", positions)
    assert positions == sorted(positions) and len(positions) == 3
    assert sorted(r[0] for r in queued) == positions  # waiting for the relay, like any append
    assert read[account] == await event_store.read_stream(account)
    assert read[plan] == await event_store.read_stream(plan)
    assert read[missing] == []
    assert [e.envelope() for e in read[account]] == written
    assert [e.stream_version for e in read[account]] == [1, 2, 3]


async def test_a_wrong_expected_version_is_a_conflict_and_writes_nothing(pool: asyncpg.Pool, event_store: EventStore) -> None:
    stream = _stream()
    command = HandledCommand(uuid.uuid4(), "SetAutoRenew", {"status": "succeeded"})
    await event_store.append(stream, 0, [_event(stream)])
    async with pool.acquire() as conn:
        with pytest.raises(StreamVersionConflict) as ahead:
            await asyncpg_store.append(conn, stream, 5, [_event(stream, 1, command.command_id)], commands=[command])
        assert ahead.value.actual == 1
        with pytest.raises(StreamVersionConflict):
            await asyncpg_store.append(conn, stream, 0, [_event(stream, 2, command.command_id)], commands=[command])
    assert await event_store.stream_version(stream) == 1
    assert await event_store.handled_outcome(command.command_id) is None  # the handled row went nowhere either


async def test_twenty_concurrent_appenders_one_winner_per_version(pool: asyncpg.Pool, event_store: EventStore) -> None:
    stream = _stream()
    await event_store.append(stream, 0, [_event(stream)])
    start = asyncio.Event()

    async def writer(i: int) -> str:
        command = HandledCommand(uuid.uuid4(), "SetAutoRenew", {"i": i})
        await start.wait()
        async with pool.acquire() as conn:
            try:
                await asyncpg_store.append(conn, stream, 1, [_event(stream, i), _event(stream, i + 100)], commands=[command])
                return "won"
            except StreamVersionConflict:
                assert await event_store.handled_outcome(command.command_id) is None
                return "conflict"

    tasks = [asyncio.create_task(writer(i)) for i in range(20)]
    start.set()
    outcomes = await asyncio.gather(*tasks)
    assert outcomes.count("won") == 1 and outcomes.count("conflict") == 19
    assert [e.stream_version for e in await event_store.read_stream(stream)] == [1, 2, 3]


async def test_a_command_handled_through_either_door_appends_once(pool: asyncpg.Pool, event_store: EventStore) -> None:
    stream = _stream()
    outcome = {"status": "succeeded", "subscription_id": str(uuid.uuid4())}
    first = HandledCommand(uuid.uuid4(), "SetAutoRenew", outcome)
    second = HandledCommand(uuid.uuid4(), "SetAutoRenew", {"n": 2})
    async with pool.acquire() as conn:
        await asyncpg_store.append(conn, stream, 0, [_event(stream, 1)], commands=[first])
        with pytest.raises(CommandAlreadyHandled) as again:
            await asyncpg_store.append(conn, stream, 1, [_event(stream, 2)], commands=[first])
        assert again.value.command_id == first.command_id and again.value.outcome == outcome
        await event_store.append(stream, 1, [_event(stream, 3)], command=second)
        with pytest.raises(CommandAlreadyHandled):
            await asyncpg_store.append(conn, stream, 2, [_event(stream, 4)], commands=[second])
    assert len(await event_store.read_stream(stream)) == 2
    assert await event_store.handled_outcome(first.command_id) == outcome


async def test_several_commands_go_in_together_or_not_at_all(pool: asyncpg.Pool, event_store: EventStore) -> None:
    stream = _stream()
    old = HandledCommand(uuid.uuid4(), "PurchaseSubscription", {"old": True})
    new = HandledCommand(uuid.uuid4(), "SyncPayment", {"new": True})
    await event_store.append(stream, 0, [_event(stream)], command=old)
    async with pool.acquire() as conn:
        with pytest.raises(CommandAlreadyHandled) as again:
            await asyncpg_store.append(conn, stream, 1, [_event(stream, 1)], commands=[new, old])
        assert again.value.command_id == old.command_id and again.value.outcome == {"old": True}
        assert await event_store.handled_outcome(new.command_id) is None  # not half of it
        assert await event_store.stream_version(stream) == 1
        with pytest.raises(ValueError, match="events"):
            await asyncpg_store.append(conn, stream, 1, [], commands=[new])
        third = HandledCommand(uuid.uuid4(), "SyncPayment", {})
        positions = await asyncpg_store.append(conn, stream, 1, [_event(stream, 2)], commands=[third, new])
    assert len(positions) == 1
    assert await event_store.handled_outcome(new.command_id) == {"new": True}
    assert await event_store.handled_outcome(third.command_id) == {}
    assert await event_store.stream_version(stream) == 2


@pytest.fixture
async def scratch(pool: asyncpg.Pool) -> AsyncIterator[str]:
    table = f"public.side_{uuid.uuid4().hex[:10]}"
    async with pool.acquire() as conn:
        await conn.execute(f"CREATE TABLE {table} (stream_id text, note text)")
    yield table
    async with pool.acquire() as conn:
        await conn.execute(f"DROP TABLE {table}")


async def test_side_writes_commit_with_the_append_and_only_with_it(pool: asyncpg.Pool, event_store: EventStore, scratch: str) -> None:
    stream = _stream()
    command = HandledCommand(uuid.uuid4(), "SetAutoRenew", {})

    def note(text: str) -> asyncpg_store.SideWrite:
        return asyncpg_store.SideWrite(
            f"INSERT INTO {scratch} (stream_id, note) SELECT :stream, :note WHERE EXISTS (SELECT 1 FROM appended)",
            {"stream": stream, "note": text},
        )

    async with pool.acquire() as conn:
        await asyncpg_store.append(conn, stream, 0, [_event(stream)], side_writes=[note("first"), note("second")])
        with pytest.raises(StreamVersionConflict):
            await asyncpg_store.append(conn, stream, 0, [_event(stream, 1)], commands=[command], side_writes=[note("stale")])
        await event_store.append(stream, 1, [_event(stream, 2)], command=command)
        with pytest.raises(CommandAlreadyHandled):
            await asyncpg_store.append(conn, stream, 2, [_event(stream, 3)], commands=[command], side_writes=[note("again")])
        notes = [r[0] for r in await conn.fetch(f"SELECT note FROM {scratch} ORDER BY note")]
    assert notes == ["first", "second"]
    with pytest.raises(ValueError, match="appended"):
        asyncpg_store.SideWrite(f"INSERT INTO {scratch} VALUES ('x', 'y')")


def test_named_parameters_become_positional_and_casts_stay() -> None:
    from eventstore.sql import positional

    sql, names = positional("SELECT CAST(:ids AS uuid[]), e.data::jsonb, :a + :b, :a FROM t WHERE x = :b")
    assert sql == "SELECT CAST($1 AS uuid[]), e.data::jsonb, $2 + $3, $2 FROM t WHERE x = $3"
    assert names == ("ids", "a", "b")
    shifted, _ = positional("WHERE x = :b AND y = :a", start=12)  # after the append's own parameters
    assert shifted == "WHERE x = $12 AND y = $13"
