"""The outbox relay against the real PostgreSQL and Kafka: late commits, crashes, two relays.

Every test runs on its own fresh database (the outbox is shared by everything that appends to a
database: a relay on the dev database would publish other tests' events) and its own topic.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from datetime import datetime

import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import ConsumerRecord

import schemas as s
from infra.db import create_engine
from infra.kafka import ensure_topics
from relay.outbox import DEFAULT_EVENTS_PARTITIONS, RELAY_LOCK_KEY, OutboxRelay
from infra.settings import Settings, plain_url
from eventstore.store import EventStore
from tests.support.processes import ManagedProcess
from tests.support.wait import wait_until


def _event(stream: str, n: int = 0) -> s.Envelope:
    payload = s.AutoRenewChanged(subscription_id=uuid.uuid4(), enabled=bool(n % 2), reason=f"r{n}")
    return s.new_envelope(payload, stream_id=stream, metadata=s.Metadata(correlation_id=f"c{n}", actor=s.SYSTEM))


def _stream() -> str:
    return s.account_stream(f"relay-{uuid.uuid4()}")


class TopicReader:
    """Reads a whole topic from the beginning in the background (no consumer group)."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self.settings, self.topic = settings, topic
        self.records: list[ConsumerRecord] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> "TopicReader":
        # Subscribed without a group: aiokafka assigns every partition, read from the beginning.
        self._consumer = AIOKafkaConsumer(
            self.topic,
            bootstrap_servers=self.settings.kafka_servers,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            request_timeout_ms=15000,
        )
        await self._consumer.start()
        self._task = asyncio.create_task(self._read())
        return self

    async def records_in_kafka(self) -> int:
        """How many records the topic holds (the sum of its partitions' end offsets)."""
        assignment = await wait_until(self._consumer.assignment, 15, message="partitions assigned")
        return sum((await self._consumer.end_offsets(list(assignment))).values())

    async def caught_up(self) -> bool:
        """True once every record that is in Kafka right now has been read."""
        assignment = self._consumer.assignment()
        if not assignment:
            return False
        ends = await self._consumer.end_offsets(list(assignment))
        for tp, end in ends.items():
            if await self._consumer.position(tp) < end:
                return False
        return True

    async def _read(self) -> None:
        while True:
            batch = await self._consumer.getmany(timeout_ms=200, max_records=5000)
            for records in batch.values():
                self.records.extend(records)

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self._consumer.stop()

    @staticmethod
    def header(record: ConsumerRecord, name: str) -> str:
        return dict(record.headers)[name].decode()

    def event_ids(self) -> set[str]:
        return {self.header(r, "event_id") for r in self.records}

    def first_versions_per_key(self) -> dict[str, list[int]]:
        """Per key, the stream versions in the order they FIRST arrived (re-publications dropped)."""
        seen: set[str] = set()
        versions: dict[str, list[int]] = defaultdict(list)
        by_partition: dict[int, list[ConsumerRecord]] = defaultdict(list)
        for r in self.records:
            by_partition[r.partition].append(r)
        for records in by_partition.values():
            for r in sorted(records, key=lambda r: r.offset):
                event_id = self.header(r, "event_id")
                if event_id not in seen:
                    seen.add(event_id)
                    versions[r.key.decode()].append(int(self.header(r, "stream_version")))
        return versions


@pytest.fixture
async def relay_env(fresh_database: Callable[..., Settings]) -> AsyncIterator[tuple[Settings, EventStore]]:
    """Settings for a fresh, migrated database and a unique events topic, plus a store on them."""
    base = fresh_database(migrate=True, prefix="relay")
    settings = base.model_copy(update={"events_topic": f"test.events.{uuid.uuid4().hex[:12]}"})
    await ensure_topics(settings, {settings.events_topic: DEFAULT_EVENTS_PARTITIONS})  # before readers subscribe
    engine = create_engine(settings, pool_size=4, application_name="test-relay")
    yield settings, EventStore(engine)
    await engine.dispose()


@contextlib.asynccontextmanager
async def running(relay: OutboxRelay) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(relay.run())
    try:
        await wait_until(lambda: relay.leader.is_set() or task.done(), 30, message="relay leads")
        if task.done():
            task.result()
        yield task
    finally:
        relay.stop()
        await asyncio.wait_for(task, 30)


async def outbox_positions(settings: Settings) -> set[int]:
    conn = await asyncpg.connect(plain_url(settings.database_url), timeout=10)
    try:
        return {r[0] for r in await conn.fetch("SELECT position FROM eventstore.outbox")}
    finally:
        await conn.close()


async def outbox_size(settings: Settings) -> int:
    conn = await asyncpg.connect(plain_url(settings.database_url), timeout=10)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM eventstore.outbox"))
    finally:
        await conn.close()


async def test_an_append_committed_late_is_published_too(relay_env: tuple[Settings, EventStore]) -> None:
    settings, store = relay_env
    late, early_a, early_b = _stream(), _stream(), _stream()
    relay = OutboxRelay(settings)
    async with running(relay), TopicReader(settings, settings.events_topic) as reader:
        # Hold an append open: its position is taken, its transaction not committed.
        held = await store.engine.connect()
        held_tx = await held.begin()
        late_event = _event(late, 1)
        [late_position] = await store.append(late, 0, [late_event], conn=held)

        # Later appends (higher positions) commit and get published meanwhile.
        early_events = [_event(early_a, 1), _event(early_a, 2)], [_event(early_b, 1)]
        early_positions = await store.append(early_a, 0, early_events[0]) + await store.append(early_b, 0, early_events[1])
        assert min(early_positions) > late_position
        early_ids = {str(e.id) for e in early_events[0] + early_events[1]}
        await wait_until(lambda: early_ids <= reader.event_ids(), 15, message="later appends published")
        assert str(late_event.id) not in reader.event_ids()

        # The held append commits below the published positions: the relay still finds it.
        await held_tx.commit()
        await held.close()
        await wait_until(lambda: str(late_event.id) in reader.event_ids(), 15, message="late commit published")

        # And the stream carries on in order after it.
        follow_up = _event(late, 2)
        await store.append(late, 1, [follow_up])
        await wait_until(lambda: str(follow_up.id) in reader.event_ids(), 15, message="follow-up published")
        assert reader.first_versions_per_key()[late] == [1, 2]
        assert reader.first_versions_per_key()[early_a] == [1, 2]

        record = next(r for r in reader.records if TopicReader.header(r, "event_id") == str(late_event.id))
        assert record.key == late.encode()
        assert s.parse_envelope(orjson.loads(record.value)) == late_event
        # The message is the stored envelope: the document of RecordedEvent.to_wire(), its headers.
        recorded = (await store.read_stream(late))[0]
        published, stored = orjson.loads(record.value), orjson.loads(recorded.to_wire())
        assert datetime.fromisoformat(published.pop("occurred_at")) == datetime.fromisoformat(stored.pop("occurred_at"))
        assert published == stored and list(published) == list(stored)
        assert list(record.headers) == recorded.kafka_headers()
        assert TopicReader.header(record, "position") == str(late_position)
    assert await outbox_size(settings) == 0
    assert relay.published == 5


# ---------------------------------------------------------------------------- real relay processes


def relay_process(settings: Settings, name: str, *args: str) -> ManagedProcess:
    """`python -m relay` on the test's database and topic, logging every batch as JSON."""
    return ManagedProcess(
        f"relay-{name}",
        [sys.executable, "-m", "relay", "--name", name, *args],
        env={
            "DATABASE_URL": settings.database_url,
            "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
            "EVENTS_TOPIC": settings.events_topic,
            "LOG_FORMAT": "json",
            "LOG_LEVEL": "DEBUG",
        },
        ready_check=lambda: _contains(connected_relays(settings), name),
        ready_timeout=30,
    )


async def _query(settings: Settings, sql: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(plain_url(settings.database_url), timeout=10)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


async def connected_relays(settings: Settings) -> set[str]:
    rows = await _query(
        settings,
        "SELECT application_name FROM pg_stat_activity WHERE datname = current_database() AND application_name LIKE 'billing-%'",
    )
    return {r[0].removeprefix("billing-") for r in rows}


async def leaders(settings: Settings) -> list[str]:
    """Names of the relays holding the relay lock in this database (pg_locks splits the bigint key)."""
    rows = await _query(
        settings,
        """
        SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
        WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
          AND l.classid = $1::bigint::oid AND l.objid = $2::bigint::oid
          AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
        """,
        RELAY_LOCK_KEY >> 32,
        RELAY_LOCK_KEY & 0xFFFFFFFF,
    )
    return [r[0].removeprefix("billing-") for r in rows]


def logged(process: ManagedProcess, event: str) -> list[dict[str, object]]:
    lines = []
    for line in process.log_path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            with contextlib.suppress(orjson.JSONDecodeError):
                record = orjson.loads(line)
                if record.get("event") == event:
                    lines.append(record)
    return lines


async def fill(store: EventStore, streams: int, per_stream: int, chunk: int, writers: int = 8) -> dict[str, list[str]]:
    """Append `per_stream` events to each of `streams` new streams, `chunk` events per append."""
    names = [_stream() for _ in range(streams)]
    ids: dict[str, list[str]] = {}
    queue: asyncio.Queue[str] = asyncio.Queue()
    for name in names:
        queue.put_nowait(name)

    async def writer() -> None:
        while not queue.empty():
            name = queue.get_nowait()
            ids[name] = []
            for start in range(0, per_stream, chunk):
                events = [_event(name, start + i) for i in range(min(chunk, per_stream - start))]
                await store.append(name, start, events)
                ids[name].extend(str(e.id) for e in events)

    await asyncio.gather(*(writer() for _ in range(writers)))
    return ids


@pytest.mark.slow
async def test_relay_killed_mid_batch_loses_nothing_and_keeps_stream_order(
    relay_env: tuple[Settings, EventStore],
) -> None:
    settings, store = relay_env
    ids = await fill(store, streams=200, per_stream=50, chunk=25)
    total = sum(len(v) for v in ids.values())
    assert await outbox_size(settings) == total == 10_000

    relay = relay_process(settings, "crashing", "--batch-size", "2000")
    probe = await asyncpg.connect(plain_url(settings.database_url), timeout=10)
    async with TopicReader(settings, settings.events_topic) as reader:
        try:
            # SIGKILL while Kafka holds records whose outbox rows are not deleted yet (published,
            # not yet deleted: a batch in flight), then confirm it from Kafka's side once the reader
            # caught up. A kill can still land just between two batches: then the relay is started
            # and killed again (one more crash it must survive). The test holds the relay lock while
            # the relay starts, so the relay (a standby until then) begins only once we watch.
            for _attempt in range(5):
                await probe.execute("SELECT pg_advisory_lock($1)", RELAY_LOCK_KEY)
                relay.start()
                await relay.wait_ready()
                published_before = await reader.records_in_kafka()
                deleted_before = total - await probe.fetchval("SELECT count(*) FROM eventstore.outbox")

                async def in_flight_or_drained() -> str | None:
                    published = await reader.records_in_kafka() - published_before  # read before `deleted`
                    remaining = await probe.fetchval("SELECT count(*) FROM eventstore.outbox")
                    if published > total - remaining - deleted_before:
                        return "in flight"
                    return "drained" if remaining == 0 else None

                await probe.execute("SELECT pg_advisory_unlock($1)", RELAY_LOCK_KEY)
                state = await wait_until(in_flight_or_drained, 30, interval=0.001, message="a batch in flight")
                relay.kill()
                await wait_until(reader.caught_up, 15, message="the reader has everything Kafka has")
                left = await outbox_positions(settings)
                in_flight = {int(TopicReader.header(r, "position")) for r in reader.records} & left
                if in_flight:
                    break
                if state == "drained" or not left:
                    # The relay published and deleted everything before the kill landed (a fast run on
                    # a busy machine): give it another 10,000 events and try again.
                    more = await fill(store, streams=200, per_stream=50, chunk=25)
                    ids.update(more)
                    total += sum(len(v) for v in more.values())
            else:
                pytest.fail("never killed in the middle of a batch")
            assert not logged(relay, "relay_stopped"), "it was killed, not stopped"

            relay.start()  # the same command again, as a supervisor would
            await wait_until(lambda: len(reader.event_ids()) >= total, 60, message="every event in Kafka")
            await wait_until(lambda: _is(outbox_size(settings), 0), 15, message="outbox drained")
        finally:
            relay.terminate()
            await probe.close()

    received = reader.event_ids()
    assert received == {i for v in ids.values() for i in v}, "nothing lost"
    versions = reader.first_versions_per_key()
    assert set(versions) == set(ids)
    for stream, seen in versions.items():
        assert seen == list(range(1, 51)), f"{stream} out of order: {seen[:20]}"
    assert len(reader.records) >= total  # duplicates allowed (same event id), counted above as one


async def test_two_relays_only_the_leader_publishes_and_the_standby_takes_over(
    relay_env: tuple[Settings, EventStore],
) -> None:
    settings, store = relay_env
    first, second = relay_process(settings, "first"), relay_process(settings, "second")
    async with TopicReader(settings, settings.events_topic) as reader:
        try:
            await first.astart()
            await wait_until(lambda: leaders(settings), 30, message="a leader")
            await second.astart()
            assert await leaders(settings) == ["first"]

            before = await fill(store, streams=20, per_stream=10, chunk=5, writers=4)
            before_ids = {i for v in before.values() for i in v}
            await wait_until(lambda: before_ids <= reader.event_ids(), 20, message="published by the leader")
            assert await leaders(settings) == ["first"]
            # its log line for a batch may land a moment after the batch itself
            await wait_until(lambda: sum(r["count"] for r in logged(first, "relay_batch")) >= len(before_ids), 10,
                             message="the leader logged its batches")
            assert logged(second, "relay_batch") == [], "the standby published"
            assert logged(second, "relay_standby")

            first.kill()
            await wait_until(lambda: _is(leaders(settings), ["second"]), 15, message="the standby takes over")
            after = await fill(store, streams=20, per_stream=10, chunk=5, writers=4)
            after_ids = {i for v in after.values() for i in v}
            await wait_until(lambda: after_ids <= reader.event_ids(), 20, message="published by the new leader")
            await wait_until(lambda: logged(second, "relay_batch"), 10, message="the new leader logged its batches")
            await wait_until(lambda: _is(outbox_size(settings), 0), 10, message="the outbox emptied after the acks")
            for stream, seen in reader.first_versions_per_key().items():
                assert seen == list(range(1, 11)), f"{stream} out of order: {seen}"
        finally:
            first.terminate()
            second.terminate()
    assert logged(second, "relay_stopped"), "SIGTERM stops the relay gracefully"


async def _is(value: object, expected: object) -> bool:
    return await value == expected  # type: ignore[misc]


async def _contains(value: object, item: object) -> bool:
    return item in await value  # type: ignore[operator,misc]
