"""The outbox relay: publishes committed events to Kafka, in stream order, never skipping one.

Every append inserts its events' positions into `eventstore.outbox` in the same transaction
(eventstore/store.py). This process reads the lowest-positioned outbox rows it can see, publishes
them to `settings.events_topic` (key = stream id, value = `RecordedEvent.to_wire()`, headers =
`RecordedEvent.kafka_headers()`) through the idempotent producer, waits for every ack, and only
then deletes exactly those positions. Run it with `python -m eventstore.relay`.

Why this never skips and keeps per-stream order (docs/decisions/0010-outbox-relay.md):
- An append of version n+1 can only succeed after version n committed (the expected-version check
  and the unique (stream_id, stream_version) index see to that). So whenever an outbox row of a
  stream is visible, every earlier unpublished event of that stream is visible too, with a lower
  position: publishing visible rows in position order publishes each stream as a prefix, in order.
- An append that commits late (a low position, committed after higher ones were published) just
  becomes visible later and is published then: the outbox holds "what is left", not a cursor.
- Only ONE relay publishes at a time: leadership is a PostgreSQL session advisory lock held on the
  very connection that reads and deletes outbox rows. A standby polls for the lock; when the
  leader dies its connection closes, the lock is released and the standby takes over.
- Crash at any line: rows are deleted only after Kafka acked them, so the worst case is
  publishing some events again (same event id, same key, consumers de-duplicate).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from collections.abc import Sequence
from typing import Any

import asyncpg
import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from eventstore.kafka import ensure_topics, make_producer
from eventstore.logging import configure_logging, get_logger
from eventstore.settings import Settings, plain_url
from eventstore.store import RecordedEvent

log = get_logger(__name__)

# Distinct from eventstore.migrate.MIGRATION_LOCK_KEY; every relay of one database contends for it.
RELAY_LOCK_KEY = 7_220_431_010
DEFAULT_BATCH_SIZE = 2000
DEFAULT_EVENTS_PARTITIONS = 6

# The lowest visible outbox rows with their events. No cursor, no "position > x": a late commit
# below the last published position must still be found (see the module docstring).
_READ_BATCH = """
    SELECT e.position, e.stream_id, e.stream_version, e.event_id, e.type, e.schema_version,
           e.data::text, e.metadata::text, e.occurred_at, e.recorded_at
    FROM eventstore.outbox o
    JOIN eventstore.events e ON e.position = o.position
    ORDER BY o.position
    LIMIT $1
"""

# Exactly the published positions — never a range: a late commit inside the range is unpublished.
_DELETE_BATCH = "DELETE FROM eventstore.outbox WHERE position = ANY($1::bigint[])"


class LostLeadership(Exception):
    """The connection holding the relay lock broke: another relay may be publishing now."""


def _to_event(row: asyncpg.Record) -> RecordedEvent:
    return RecordedEvent(
        position=row[0],
        stream_id=row[1],
        stream_version=row[2],
        event_id=row[3],
        type=row[4],
        schema_version=row[5],
        data=orjson.loads(row[6]),
        metadata=orjson.loads(row[7]),
        occurred_at=row[8],
        recorded_at=row[9],
    )


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
        progress_every_s: float = 10.0,
        lock_key: int = RELAY_LOCK_KEY,
        producer_options: dict[str, Any] | None = None,
        name: str = "relay",
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
        self.published = 0  # records acked by Kafka (including re-publications after a takeover)
        self.batches = 0
        self.leader = asyncio.Event()  # set while this relay holds the lock
        self._stop = asyncio.Event()
        self._log = log.bind(relay=name, topic=self.topic)

    # ------------------------------------------------------------------ public

    def stop(self) -> None:
        """Finish the batch in hand (publish, ack, delete), then return from `run()`."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    async def run(self) -> None:
        """Ensure the topic, then contend for leadership and publish until `stop()`."""
        await ensure_topics(self.settings, {self.topic: self.partitions})
        producer = await make_producer(self.settings, **self.producer_options)
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
            await producer.stop()  # flushes anything still queued
            self._log.info("relay_stopped", published=self.published, batches=self.batches)

    # ------------------------------------------------------------------ internals

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
            },
        )

    async def _serve(self, producer: AIOKafkaProducer) -> None:
        conn = await self._connect()
        try:
            if not await self._become_leader(conn):
                return
            self.leader.set()
            self._log.info("relay_leader", pid=conn.get_server_pid())
            await self._publish_until_stopped(conn, producer)
        finally:
            self.leader.clear()
            # closing the session releases the advisory lock for a standby
            try:
                await asyncio.wait_for(conn.close(), 5)
            except (OSError, asyncpg.InterfaceError, TimeoutError):
                conn.terminate()

    async def _become_leader(self, conn: asyncpg.Connection) -> bool:
        """Poll for the lock (a blocking pg_advisory_lock would hold up a graceful stop)."""
        announced = False
        while not self._stop.is_set():
            if await conn.fetchval("SELECT pg_try_advisory_lock($1)", self.lock_key):
                return True
            if not announced:
                self._log.info("relay_standby")
                announced = True
            await self._sleep(self.standby_poll_s)
        return False

    async def _publish_until_stopped(self, conn: asyncpg.Connection, producer: AIOKafkaProducer) -> None:
        idle = self.idle_min_s
        window_start, window_count, window_batches = time.monotonic(), 0, 0
        while not self._stop.is_set():
            try:
                count = await self.publish_batch(conn, producer)
            except KafkaError as exc:
                # Nothing was deleted: the whole batch is published again (duplicates, never a gap).
                self._log.error("relay_publish_failed", error=repr(exc))
                await self._sleep(self.error_backoff_s)
                continue
            window_count += count
            window_batches += 1 if count else 0
            now = time.monotonic()
            if window_count and now - window_start >= self.progress_every_s:
                self._log.info(
                    "relay_progress",
                    published=window_count,
                    batches=window_batches,
                    events_per_s=round(window_count / (now - window_start)),
                    published_total=self.published,
                )
                window_start, window_count, window_batches = now, 0, 0
            if count == 0:
                await self._sleep(idle)
                idle = min(idle * 2, self.idle_max_s)
                if now - window_start >= self.progress_every_s:
                    window_start = now
            else:
                idle = self.idle_min_s

    async def publish_batch(self, conn: asyncpg.Connection, producer: AIOKafkaProducer) -> int:
        """Publish the lowest visible outbox rows, wait for every ack, delete them. Returns the count."""
        rows = await conn.fetch(_READ_BATCH, self.batch_size)
        if not rows:
            return 0
        events = [_to_event(r) for r in rows]
        await self._publish(producer, events)
        # If this fails the batch is simply published again by whoever leads next.
        status = await conn.execute(_DELETE_BATCH, [e.position for e in events])
        deleted = int(status.rsplit(" ", 1)[-1])
        if deleted != len(events):
            # Only a second publisher could have deleted them: the lock is not held any more.
            raise LostLeadership(f"deleted {deleted} of {len(events)} outbox rows")
        self.published += len(events)
        self.batches += 1
        self._log.debug("relay_batch", count=len(events), first=events[0].position, last=events[-1].position)
        return len(events)

    async def _publish(self, producer: AIOKafkaProducer, events: Sequence[RecordedEvent]) -> None:
        # Queue everything first (aiokafka batches per partition, one request in flight per
        # broker, so order within a partition holds), then wait for all the acks at once.
        futures = [
            await producer.send(self.topic, value=e.to_wire(), key=e.stream_id.encode(), headers=e.kafka_headers())
            for e in events
        ]
        results = await asyncio.gather(*futures, return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0] if isinstance(errors[0], KafkaError) else KafkaError(repr(errors[0]))

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but wake at once on stop()."""
        try:
            await asyncio.wait_for(self._stop.wait(), seconds)
        except TimeoutError:
            pass


async def run_relay(settings: Settings, **options: Any) -> None:
    """Run one relay until SIGTERM/SIGINT."""
    relay = OutboxRelay(settings, **options)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, relay.stop)
    await relay.run()


def main(argv: list[str] | None = None) -> int:
    """`python -m eventstore.relay [--batch-size N] [--partitions N] [--name NAME]`: configuration from the environment."""
    parser = argparse.ArgumentParser(prog="python -m eventstore.relay", description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="outbox rows per batch")
    parser.add_argument(
        "--partitions", type=int, default=DEFAULT_EVENTS_PARTITIONS, help="partitions when the events topic is created"
    )
    parser.add_argument("--name", default="relay", help="instance name (logs, PostgreSQL application_name)")
    args = parser.parse_args(argv)
    configure_logging("relay")
    asyncio.run(run_relay(Settings(), batch_size=args.batch_size, partitions=args.partitions, name=args.name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
