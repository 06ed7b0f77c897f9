"""The outbox relay against the real PostgreSQL and Kafka: late commits, crashes, two relays.

Every test runs on its own fresh database (the outbox is shared by everything that appends to a
database: a relay on the dev database would publish other tests' events) and its own topic.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable

import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import ConsumerRecord

import schemas as s
from eventstore.db import create_engine
from eventstore.relay import OutboxRelay
from eventstore.settings import Settings, plain_url
from eventstore.store import EventStore
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
        assert TopicReader.header(record, "position") == str(late_position)
    assert await outbox_size(settings) == 0
    assert relay.published == 5
