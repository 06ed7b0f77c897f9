"""The outbox relay: publishes committed events to Kafka, in stream order, never skipping one.

Every append inserts its events' positions into `eventstore.outbox` in the same transaction
(eventstore/store.py). This process reads the lowest-positioned outbox rows it can see, publishes
them to `settings.events_topic` (key = stream id, value = the stored envelope JSON, the same
document as `RecordedEvent.to_wire()`, headers = `RecordedEvent.kafka_headers()`) through the
idempotent producer, waits for every ack, and only then deletes exactly those positions.
Run it with `python -m relay`; several may run, one publishes.

Why this never skips and keeps per-stream order (docs/decisions/0010-outbox-relay.md):
- An append of version n+1 can only succeed after version n committed (the expected-version check
  and the unique (stream_id, stream_version) index see to that). So whenever an outbox row of a
  stream is visible, every earlier unpublished event of that stream is visible too, with a lower
  position: publishing visible rows in position order publishes each stream as a prefix, in order.
- An append that commits late (a low position, committed after higher ones were published) just
  becomes visible later and is published then: the outbox holds "what is left", not a cursor.
- Only ONE relay publishes at a time: leadership is a PostgreSQL session advisory lock held on the
  connection that reads the outbox (so every read also proves the lock is still held). A standby
  polls for the lock; when the leader dies its connection closes, the lock is released and the
  standby takes over. Two publishers at once could interleave one stream's events.
- Crash at any line: rows are deleted only after Kafka acked them, so the worst case is
  publishing some events again (same event id, same key, consumers de-duplicate).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner

from infra.kafka import ensure_topics, make_producer
from infra.logging import get_logger
from infra.metrics import RELAYS
from infra.settings import Settings, plain_url


log = get_logger(__name__)

# Distinct from infra.migrate.MIGRATION_LOCK_KEY; every relay of one database contends for it.
RELAY_LOCK_KEY = 7_220_431_010

DEFAULT_BATCH_SIZE = 5000

DEFAULT_EVENTS_PARTITIONS = 6

_PARTITIONER = DefaultPartitioner()  # the same murmur2 mapping as producer.send(key=...)

# The lowest visible outbox rows with their events, minus the batch still in flight. No cursor,
# no "position > x": a late commit below the last published position must still be found (see
# the module docstring). The positions are picked first and the events fetched by primary key:
# a plain join let the planner choose a merge join that walks `events` from position 1 up to the
# outbox's first row — every batch a scan of the whole log. PostgreSQL builds the message body
# (json keeps the keys in this order, the order of `RecordedEvent.envelope_dict()`) and the header
# values on its own core, and the reading connection returns text as UTF-8 bytes
# (`_read_as_bytes`), so the relay's Python does almost nothing per event. `<> ALL($2)` is hashed
# because the plan is custom (see `_connect`).
_READ_BATCH = """
    SELECT e.position,
           e.stream_id,
           json_build_object(
               'id', e.event_id, 'type', e.type, 'schema_version', e.schema_version,
               'occurred_at', e.occurred_at, 'stream_id', e.stream_id, 'data', e.data, 'metadata', e.metadata
           )::text,
           e.event_id::text,
           e.type,
           e.stream_version::text,
           e.position::text,
           coalesce(e.metadata->>'correlation_id', '')
    FROM eventstore.events e
    WHERE e.position = ANY(ARRAY(
        SELECT o.position FROM eventstore.outbox o
        WHERE o.position <> ALL($2::bigint[])
        ORDER BY o.position
        LIMIT $1
    ))
    ORDER BY e.position
"""

# Exactly the published positions — never a range: a late commit inside the range is unpublished.
_DELETE_BATCH = "DELETE FROM eventstore.outbox WHERE position = ANY($1::bigint[])"

Headers = list[tuple[str, bytes]]

def wire_record(row: Sequence[Any]) -> tuple[bytes, bytes, Headers]:
    """(key, value, headers) of one `_READ_BATCH` row read with text as bytes.

    The value is the stored envelope: the same JSON document as `RecordedEvent.to_wire()` (the
    bytes differ only in whitespace and in trailing zeros of fractional seconds), the headers are
    exactly `RecordedEvent.kafka_headers()`. tests/integration/test_relay.py checks both.
    """
    _, key, value, event_id, type_, stream_version, position, correlation_id = row
    headers = [
        ("event_id", event_id),
        ("type", type_),
        ("stream_version", stream_version),
        ("position", position),
        ("correlation_id", correlation_id),
    ]
    return key, value, headers

async def _read_as_bytes(conn: asyncpg.Connection) -> None:
    """Text columns arrive as their UTF-8 bytes: Kafka wants bytes, so no decode + encode per field."""
    await conn.set_type_codec("text", schema="pg_catalog", encoder=bytes, decoder=bytes, format="binary")

class _BatchAbandoned(Exception):
    """Stopping while Kafka does not ack: leave the batch in the outbox rather than hang."""

class LostLeadership(Exception):
    """The connection holding the relay lock broke: another relay may be publishing now."""

class OutboxRelay:
    """One relay process's work: become leader, then publish outbox batches until `stop()`.

    Several may run (for availability); only the holder of the advisory lock publishes.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        partitions: int = DEFAULT_EVENTS_PARTITIONS,
        idle_min_s: float = 0.02,
        idle_max_s: float = 0.2,
        standby_poll_s: float = 0.25,
        error_backoff_s: float = 1.0,
        shutdown_timeout_s: float = 10.0,
        progress_every_s: float = 10.0,
        lock_key: int = RELAY_LOCK_KEY,
        producer_options: dict[str, Any] | None = None,
        name: str = "relay",
        heartbeat_file: str | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.settings = settings
        self.topic = settings.events_topic
        self.batch_size = batch_size
        self.partitions = partitions
        self.idle_min_s = idle_min_s
        self.idle_max_s = idle_max_s
        self.standby_poll_s = standby_poll_s
        self.error_backoff_s = error_backoff_s
        self.shutdown_timeout_s = shutdown_timeout_s
        self.progress_every_s = progress_every_s
        self.lock_key = lock_key
        self.producer_options = {
            "client_id": f"billing-{name}",
            # big batches: the relay sends thousands of small records at once
            "linger_ms": 2,
            "max_batch_size": 512 * 1024,
            **(producer_options or {}),
        }
        self.name = name
        # Touched while leading or standing by, like ConsumerLoop's: the container health check
        # tests its age (docker-compose.yml). Not while Kafka or PostgreSQL is unreachable.
        heartbeat = heartbeat_file or os.environ.get("HEARTBEAT_FILE")
        self.heartbeat_file = Path(heartbeat) if heartbeat else None
        self.published = 0  # records acked by Kafka (including re-publications after a takeover)
        self.batches = 0
        self.leader = asyncio.Event()  # set while this relay holds the lock
        self._stop = asyncio.Event()
        self._partition_cache: dict[bytes, int] = {}
        self._partition_count = 0
        self._log = log.bind(relay=name, topic=self.topic)
        RELAYS.add(self)  # /metrics: `published` and leadership, read when scraped

    # ------------------------------------------------------------------ public

    def stop(self) -> None:
        """Finish the batch in hand (publish, ack, delete), then return from `run()`."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    async def run(self) -> None:
        """Ensure the topic, then contend for leadership and publish until `stop()`."""
        producer = await self._start_producer()
        if producer is None:
            return
        self._log.info("relay_started", batch_size=self.batch_size)
        try:
            while not self._stop.is_set():
                try:
                    await self._serve(producer)
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, LostLeadership, TimeoutError) as exc:
                    # The database went away (or our lock with it): stand down, then contend again.
                    self._log.warning("relay_database_error", error=repr(exc), published=self.published)
                    await self._sleep(self.error_backoff_s)
        finally:
            self.leader.clear()
            try:
                # flushes anything still queued; bounded, since with the broker down it never would
                await asyncio.wait_for(producer.stop(), self.shutdown_timeout_s)
            except TimeoutError:
                self._log.warning("relay_producer_stop_timed_out")
            self._log.info("relay_stopped", published=self.published, batches=self.batches)

    # ------------------------------------------------------------------ internals

    async def _start_producer(self) -> AIOKafkaProducer | None:
        """Create the events topic if missing and start the producer, retrying while Kafka is away."""
        while not self._stop.is_set():
            try:
                await ensure_topics(self.settings, {self.topic: self.partitions})
                return await make_producer(self.settings, **self.producer_options)
            except (KafkaError, OSError) as exc:
                self._log.warning("relay_kafka_unavailable", error=repr(exc))
                await self._sleep(self.error_backoff_s)
        return None

    async def _connect(self) -> asyncpg.Connection:
        return await asyncpg.connect(
            plain_url(self.settings.database_url),
            timeout=10,
            command_timeout=60,
            server_settings={
                "application_name": f"billing-{self.name}",
                # a vanished client (network cut) must not keep the lock forever
                "tcp_keepalives_idle": "10",
                "tcp_keepalives_interval": "5",
                "tcp_keepalives_count": "3",
                # the message body's timestamps, like Python's isoformat() of a UTC datetime
                "timezone": "UTC",
                # plan with the actual in-flight array, so `<> ALL($2)` is a hash lookup per row
                "plan_cache_mode": "force_custom_plan",
            },
        )

    async def _serve(self, producer: AIOKafkaProducer) -> None:
        conn = await self._connect()
        try:
            if not await self._become_leader(conn):
                return
            await _read_as_bytes(conn)
            self.leader.set()
            self._log.info("relay_leader", pid=conn.get_server_pid())
            await self._publish_until_stopped(conn, producer)
        finally:
            self.leader.clear()
            await _close(conn)  # closing the session releases the advisory lock for a standby

    async def _become_leader(self, conn: asyncpg.Connection) -> bool:
        """Poll for the lock (a blocking pg_advisory_lock would hold up a graceful stop)."""
        announced = False
        while not self._stop.is_set():
            self._beat()
            if await conn.fetchval("SELECT pg_try_advisory_lock($1)", self.lock_key):
                return True
            if not announced:
                self._log.info("relay_standby")
                announced = True
            await self._sleep(self.standby_poll_s)
        return False

    async def _publish_until_stopped(self, conn: asyncpg.Connection, producer: AIOKafkaProducer) -> None:
        """Batches until stop(), as a pipeline: while batch i is published, batch i+1 is read and
        batch i-1 deleted.

        Reads run on `conn` (the lock's session, so each read also proves we still lead), deletes
        on a second connection. A read excludes the positions not deleted yet (batches i and i-1),
        and at most one delete is outstanding. Batch i+1 is only SENT after batch i was acked in
        full, so a failed batch is never overtaken by a later one.
        """
        deleter = await self._connect()
        next_rows: asyncio.Task[list[asyncpg.Record]] | None = None
        deleting: asyncio.Task[None] | None = None
        deleting_positions: list[int] = []
        idle = self.idle_min_s
        progress = _Progress(self.progress_every_s)
        try:
            while not self._stop.is_set():
                self._beat()
                if next_rows is not None:
                    rows, next_rows = await next_rows, None
                else:
                    rows = await self._read(conn, deleting_positions)
                if not rows:
                    if deleting is not None:
                        await self._finish_delete(deleting, progress)
                        deleting, deleting_positions = None, []
                        continue
                    self._report(progress.tick(0))
                    await self._sleep(idle)
                    idle = min(idle * 2, self.idle_max_s)
                    continue
                idle = self.idle_min_s
                positions = [row[0] for row in rows]
                if len(rows) == self.batch_size:  # a backlog: read ahead
                    next_rows = asyncio.create_task(self._read(conn, positions + deleting_positions))
                    await asyncio.sleep(0)  # let it send its query before we get busy building batches
                try:
                    await self._publish(producer, rows)
                except _BatchAbandoned:
                    self._log.warning("relay_batch_abandoned_on_stop", count=len(rows))
                    break  # not deleted: whoever leads next publishes it again
                except KafkaError as exc:
                    # Not deleted: the batch is published again (duplicates, never a gap).
                    self._log.error("relay_publish_failed", error=repr(exc), count=len(rows))
                    next_rows = await _discard(next_rows)
                    await self._sleep(self.error_backoff_s)
                    continue
                if deleting is not None:
                    await self._finish_delete(deleting, progress)
                deleting = asyncio.create_task(self._delete(deleter, positions))
                deleting_positions = positions
            if deleting is not None:
                await self._finish_delete(deleting, progress)
                deleting = None
        finally:
            await _discard(next_rows)
            await _discard(deleting)
            await _close(deleter)

    async def _finish_delete(self, deleting: asyncio.Task[int], progress: _Progress) -> None:
        count = await deleting
        self.published += count
        self.batches += 1
        self._report(progress.tick(count))

    async def _read(self, conn: asyncpg.Connection, in_flight: Sequence[int]) -> list[asyncpg.Record]:
        return await conn.fetch(_READ_BATCH, self.batch_size, in_flight)

    async def _delete(self, conn: asyncpg.Connection, positions: list[int]) -> int:
        """Delete a published batch. If this fails (or we die first) the next leader publishes it again."""
        status = await conn.execute(_DELETE_BATCH, positions)
        deleted = int(status.rsplit(" ", 1)[-1])
        if deleted != len(positions):
            # Only another publisher could have deleted them: we do not hold the lock any more.
            raise LostLeadership(f"deleted {deleted} of {len(positions)} outbox rows")
        self._log.debug("relay_batch", count=len(positions), first=positions[0], last=positions[-1])
        return len(positions)

    def _report(self, window: dict[str, int | float] | None) -> None:
        if window is not None:
            self._log.info("relay_progress", **window, published_total=self.published)

    async def _publish(self, producer: AIOKafkaProducer, rows: Sequence[Sequence[Any]]) -> None:
        """Send every event, then wait for every ack (raises KafkaError if any record failed).

        Records are packed into one record batch per partition ourselves (`create_batch`) rather
        than sent one by one: `producer.send()` costs a future and a trip through the accumulator
        per record, several times the cost of everything else the relay does. Order within a
        partition holds: the batches of a partition are queued in position order and aiokafka
        keeps one request in flight per broker (the idempotent producer retries in order).
        """
        partitions = sorted(await producer.partitions_for(self.topic))
        builders: dict[int, Any] = {}
        futures: list[asyncio.Future[Any]] = []
        for row in rows:
            key, value, headers = wire_record(row)
            partition = self._partition_of(key, partitions)
            builder = builders.get(partition)
            if builder is None:
                builder = builders[partition] = producer.create_batch()
            if builder.append(key=key, value=value, timestamp=None, headers=headers) is None:
                futures.append(await producer.send_batch(builder, self.topic, partition=partition))
                builder = builders[partition] = producer.create_batch()
                builder.append(key=key, value=value, timestamp=None, headers=headers)  # a first record always fits
        for partition, builder in builders.items():
            futures.append(await producer.send_batch(builder, self.topic, partition=partition))
        results = await self._acks(asyncio.gather(*futures, return_exceptions=True))
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0] if isinstance(errors[0], KafkaError) else KafkaError(repr(errors[0]))

    async def _acks(self, acks: asyncio.Future[list[Any]]) -> list[Any]:
        """Wait for the acks; after stop(), for at most `shutdown_timeout_s` (the broker may be down)."""
        stopping = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({acks, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not acks.done():
                await asyncio.wait({acks}, timeout=self.shutdown_timeout_s)
            if not acks.done():
                raise _BatchAbandoned()
            return acks.result()
        finally:
            stopping.cancel()

    def _partition_of(self, key: bytes, partitions: list[int]) -> int:
        """The producer's default (murmur2) partition of a key, cached: streams repeat a lot."""
        if len(partitions) != self._partition_count:
            self._partition_cache.clear()
            self._partition_count = len(partitions)
        partition = self._partition_cache.get(key)
        if partition is None:
            if len(self._partition_cache) >= 200_000:
                self._partition_cache.clear()
            partition = self._partition_cache[key] = _PARTITIONER(key, partitions, partitions)
        return partition

    def _beat(self) -> None:
        if self.heartbeat_file is not None:
            try:
                self.heartbeat_file.touch()
            except OSError as exc:
                self._log.warning("heartbeat_failed", path=str(self.heartbeat_file), error=repr(exc))

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but wake at once on stop()."""
        try:
            await asyncio.wait_for(self._stop.wait(), seconds)
        except TimeoutError:
            pass

class _Progress:
    """Counts for a `relay_progress` log line every `every_s` seconds of activity."""

    def __init__(self, every_s: float) -> None:
        self.every_s = every_s
        self.start, self.events, self.batches = time.monotonic(), 0, 0

    def tick(self, events: int) -> dict[str, int | float] | None:
        self.events += events
        self.batches += 1 if events else 0
        now = time.monotonic()
        elapsed = now - self.start
        if elapsed < self.every_s:
            return None
        window = {"published": self.events, "batches": self.batches, "events_per_s": round(self.events / elapsed)}
        self.start, self.events, self.batches = now, 0, 0
        return window if window["published"] else None

async def _discard(task: asyncio.Task[Any] | None) -> None:
    """Wait for a read-ahead nobody needs any more, ignoring its outcome (a cancel of ours still propagates)."""
    if task is not None:
        await asyncio.gather(task, return_exceptions=True)
    return None

async def _close(conn: asyncpg.Connection) -> None:
    try:
        await asyncio.wait_for(conn.close(), 5)
    except (OSError, asyncpg.InterfaceError, TimeoutError):
        conn.terminate()
