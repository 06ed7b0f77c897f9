"""The consumer loop every service consumes with: at-least-once delivery made safe.

Kafka delivers at least once; the promises of this product (never charge twice, every operation
ends) come from consumers that make their effects idempotent in PostgreSQL and commit offsets
only AFTER the effect. `ConsumerLoop` is that discipline written once: manual commits after the
handler returns, bounded retries, a dead-letter topic so one poison message never blocks its
partition, a rebalance listener that commits finished work before giving partitions away, and a
graceful stop on SIGTERM.

A subclass that walks records differently (the payment processor's `KeyedConsumerLoop`, the
projector's batch transaction) uses the public hooks only: `open_consumer` / `close_consumer`,
`fetch_batch` (overridable), `handle_with_retries` (retries, dead-lettering, `on_give_up`),
`mark_done` + `commit`, `on_partitions_revoked` (overridable) + `forget_partitions`, `beat`,
`stop` / `stopping` / `started`, and `log`.
"""


from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from aiokafka.structs import ConsumerRecord

from infra.logging import bind_correlation, get_logger
from infra.metrics import CONSUMERS, DEAD_LETTERS, count_dead_letter
from infra.settings import Settings
from infra.kafka.producer import make_producer

log = get_logger(__name__)


Handler = Callable[[ConsumerRecord], Awaitable[None]]

GiveUp = Callable[[ConsumerRecord, BaseException], Awaitable[None]]

def header(record: ConsumerRecord, name: str) -> str | None:
    """A record header's value as text (the relay writes the event type, stream and ids as headers)."""
    for key, value in record.headers or ():
        if key == name and value is not None:
            return value.decode("utf-8", "replace")
    return None


def correlation_id_of(record: ConsumerRecord) -> str | None:
    """The record's correlation id: header `correlation_id`, else the envelope's `metadata.correlation_id`."""
    if found := header(record, "correlation_id"):
        return found
    if record.value:
        try:
            body = orjson.loads(record.value)
        except orjson.JSONDecodeError:
            return None
        if isinstance(body, dict) and isinstance(body.get("metadata"), dict):
            cid = body["metadata"].get("correlation_id")
            return str(cid) if cid is not None else None
    return None

class StopRequested(Exception):
    """Raised inside the loop when stop() interrupts a retry wait: the record stays uncommitted."""

def consumer_options(settings: Settings, group_id: str, name: str) -> dict[str, Any]:
    """The AIOKafkaConsumer options every consumer loop starts from (manual commits, committed reads).

    Fetches are answered as soon as there is a record (aiokafka's fetch_min_bytes=1): holding them
    to gather bigger batches was measured (bench.e2e) to cost the broker more than it saved.
    """
    return {
        "bootstrap_servers": settings.kafka_servers,
        "group_id": group_id,
        "client_id": f"{name}-{settings.environment}",
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "isolation_level": "read_committed",
        "request_timeout_ms": 40000,
        "session_timeout_ms": 10000,
        "heartbeat_interval_ms": 2000,
        "max_poll_interval_ms": 300000,
    }

class ConsumerLoop:
    """Consume `topics` as `group_id`, calling `handle(record)` per record in partition order.

    Offsets are committed only after the handler returned (after each fetched batch, and for the
    finished part of a batch when partitions are revoked or the loop stops), so a crash means
    redelivery, never a lost message: handlers must be idempotent. A handler that keeps failing is
    retried `max_attempts` times with exponential back-off, then the record is copied to
    `dead_letter_topic` (headers say why and where from), `on_give_up(record, exc)` is awaited
    (e.g. to record a terminal "failed" state), and the record is committed, so the partition
    moves on. If the dead-letter write or `on_give_up` itself fails, `run()` raises without
    committing: the record is redelivered after a restart rather than lost.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        topics: Iterable[str],
        group_id: str,
        handle: Handler,
        name: str,
        max_attempts: int = 5,
        dead_letter_topic: str | None = None,
        on_give_up: GiveUp | None = None,
        batch_max: int = 500,
        retry_backoff_s: float = 0.2,
        retry_backoff_max_s: float = 5.0,
        consumer_options: Mapping[str, Any] | None = None,
        heartbeat_file: str | None = None,
        commit_interval_s: float = 0.0,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.settings = settings
        self.topics = list(topics)
        self.group_id = group_id
        self.handle = handle
        self.name = name
        self.max_attempts = max_attempts
        self.dead_letter_topic = dead_letter_topic
        self.on_give_up = on_give_up
        self.batch_max = batch_max
        self.retry_backoff_s = retry_backoff_s
        self.retry_backoff_max_s = retry_backoff_max_s
        self.consumer_options = dict(consumer_options or {})
        # Offsets are committed at most this often while records keep coming (0: after every
        # batch). Every commit is a request the broker writes to __consumer_offsets; handlers are
        # idempotent, so a longer interval only means a little more redelivery after a crash.
        self.commit_interval_s = commit_interval_s
        self._last_commit = 0.0
        # Touched after every poll: a container health check tests its age (see docker-compose.yml).
        heartbeat = heartbeat_file or os.environ.get("HEARTBEAT_FILE")
        self.heartbeat_file = Path(heartbeat) if heartbeat else None
        self._stop = asyncio.Event()
        self._started = asyncio.Event()
        self._lock = asyncio.Lock()  # held while a record is handled; the revoke callback waits for it
        self._done: dict[TopicPartition, int] = {}  # next offset to commit, per partition
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self.log = log.bind(consumer=name, group=group_id)  # this loop's logger (consumer and group bound)
        self.handled = 0
        self.dead_lettered = 0
        self.commits = 0  # offset commit requests sent (/metrics: billing_consumer_offset_commits)
        # Per partition, the offset from which records are ours and unfinished: our last commit, or
        # before one the first offset fetched since assignment. Lag is measured from it.
        self._committed: dict[TopicPartition, int] = {}
        # Revocations begun, and how many had begun when the last batch was drained from the
        # consumer. Rebalances are eager: a revocation takes every partition away and the next
        # assignment starts each one again from the committed offset. A batch drained before a
        # revocation that began before it is dispatched is stale (`batch_is_stale`): handling it
        # would run records the group has moved on from, beside their new owner, or into the
        # bookkeeping of the next assignment, whose commits could then pass unhandled records.
        self._revocations = 0
        self._drained_under = 0

    # ------------------------------------------------------------------ public

    def stop(self) -> None:
        """Ask the loop to finish the record in hand, commit and return from `run()`."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        """True once `stop()` was called (or the loop is shutting down): start no new record."""
        return self._stop.is_set()

    @property
    def started(self) -> bool:
        """True once the consumer is started and subscribed (what a health check waits for)."""
        return self._started.is_set()

    async def wait_started(self, timeout: float = 30.0) -> None:
        """Wait until the consumer is started and subscribed (partitions may still be assigning)."""
        await asyncio.wait_for(self._started.wait(), timeout)

    def assignment(self) -> set[TopicPartition]:
        return set(self._consumer.assignment()) if self._consumer else set()

    def lag(self) -> Iterator[tuple[str, int, int]]:
        """(topic, partition, records not yet handled and committed) per assigned partition.

        Read on scrape from what the last fetch reported (no broker round trip): the end is the
        last stable offset (read_committed), else the high watermark; the start is our last
        commit, else the first offset fetched since the assignment, else the fetch position (no
        record fetched: nothing in hand). A partition the consumer knows no end of is left out.
        """
        consumer = self._consumer
        if consumer is None:
            return
        for tp in consumer.assignment():
            end = consumer.last_stable_offset(tp)
            if end is None or end < 0:
                end = consumer.highwater(tp)
            done = self._committed.get(tp)
            if done is None:  # nothing fetched since assignment: where the fetcher stands (aiokafka internals)
                state = consumer._subscription.subscription.assignment.state_value(tp)
                done = state.position if state.has_valid_position else None
            if end is not None and done is not None:
                yield tp.topic, tp.partition, max(0, end - done)

    # ------------------------------------------------------------------ hooks for subclasses

    async def open_consumer(self, **log_fields: Any) -> AIOKafkaConsumer:
        """Start the consumer (and the dead-letter producer) and subscribe; `close_consumer` undoes it.

        Revocations go to `on_partitions_revoked`; `log_fields` are added to the start log line.
        """
        options = {**consumer_options(self.settings, self.group_id, self.name), **self.consumer_options}
        self._consumer = consumer = AIOKafkaConsumer(**options)
        await consumer.start()
        try:
            if self.dead_letter_topic:
                self._producer = await make_producer(self.settings, client_id=f"{self.name}-dlq")
            consumer.subscribe(self.topics, listener=_Rebalance(self))
        except BaseException:
            await self.close_consumer(consumer)
            raise
        self._started.set()
        for topic in self.topics if self.dead_letter_topic else ():  # at 0 from the start: increase() sees the first
            DEAD_LETTERS.labels(self.group_id, topic, "gave_up")
        CONSUMERS.add(self)  # /metrics: records handled and lag, read when scraped
        self.log.info("consumer_started", topics=self.topics, **log_fields)
        return consumer

    async def close_consumer(self, consumer: AIOKafkaConsumer) -> None:
        """Stop the dead-letter producer and the consumer (nothing is committed here: `commit` first)."""
        self.log.info("consumer_stopping", handled=self.handled, dead_lettered=self.dead_lettered)
        CONSUMERS.discard(self)
        if self._producer is not None:
            await self._producer.stop()
        await consumer.stop()
        self._consumer = None

    async def run(self) -> None:
        """Consume until `stop()`; commits what was handled before returning."""
        consumer = await self.open_consumer()
        try:
            while not self._stop.is_set():
                batch = await self.next_batch(consumer)
                try:
                    for tp, records in batch.items():
                        for record in records:
                            if self._stop.is_set() or tp not in consumer.assignment():
                                break  # revoked: the new owner starts from our last commit
                            await self._process(record)
                except BaseException:
                    await self.commit()
                    raise
                await self.commit_if_due()
        except StopRequested:
            pass
        finally:
            try:
                await self.commit()
            finally:
                await self.close_consumer(consumer)

    def beat(self) -> None:
        """Touch the heartbeat file (if any): call after every fetch, even an empty one."""
        if self.heartbeat_file is not None:
            try:
                self.heartbeat_file.touch()
            except OSError as exc:
                self.log.warning("heartbeat_failed", path=str(self.heartbeat_file), error=repr(exc))

    async def fetch_batch(self, consumer: AIOKafkaConsumer) -> dict[TopicPartition, list[ConsumerRecord]]:
        """One fetch: getmany, but returns early (empty) when stop() is called while it waits.

        Overridable (the projector applies the whole batch here); an override calls this first.
        """
        async def drain() -> tuple[dict[TopicPartition, list[ConsumerRecord]], int]:
            batch = await consumer.getmany(timeout_ms=1000, max_records=self.batch_max)
            return batch, self._revocations  # read in the same step as the drain: no revocation in between

        fetch = asyncio.ensure_future(drain())
        stopper = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({fetch, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
        if not fetch.done():
            fetch.cancel()
            try:
                await fetch
            except asyncio.CancelledError:
                pass
            return {}
        batch, self._drained_under = fetch.result()
        if self.batch_is_stale():
            return {}
        for tp, records in batch.items():  # per partition of a batch, not per record
            if records and tp not in self._committed:
                self._committed[tp] = records[0].offset
        return batch

    async def next_batch(self, consumer: AIOKafkaConsumer) -> dict[TopicPartition, list[ConsumerRecord]]:
        """`fetch_batch`, then the heartbeat; empty when a revocation began since the drain (an
        override of `fetch_batch` may await after it): what each loop dispatches."""
        batch = await self.fetch_batch(consumer)
        self.beat()
        if batch and self.batch_is_stale():
            self.log.info("stale_batch_dropped", records=sum(len(r) for r in batch.values()))
            return {}
        return batch

    def batch_is_stale(self) -> bool:
        """True when a revocation began after the last batch was drained: drop that batch unhandled.

        Its partitions were all revoked (eager rebalancing) and start again from the committed
        offset wherever they are assigned next, so nothing is lost by dropping it. Checked where
        the batch is fetched and again where it is dispatched (an override may await in between).
        """
        return self._drained_under != self._revocations

    async def _process(self, record: ConsumerRecord) -> None:
        tp = TopicPartition(record.topic, record.partition)
        async with self._lock:
            with bind_correlation(
                correlation_id_of(record), topic=record.topic, partition=record.partition, offset=record.offset
            ):
                await self.handle_with_retries(record)
                self.mark_done(tp, record.offset + 1)

    def mark_done(self, tp: TopicPartition, next_offset: int) -> None:
        """Records of `tp` before `next_offset` are finished: the next `commit` commits up to there."""
        self._done[tp] = next_offset

    async def handle_with_retries(self, record: ConsumerRecord) -> bool:
        """Handle one record: retry failures with backoff, dead-letter after `max_attempts`.

        True once the record is done (handled or dead-lettered); raises StopRequested when a stop
        interrupts a backoff pause (the record is then not done and is redelivered).
        """
        attempt = 0
        while True:
            attempt += 1
            try:
                await self.handle(record)
                self.handled += 1
                return True
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any handler failure is retried, then dead-lettered
                if attempt >= self.max_attempts:
                    self.log.error("handler_gave_up", attempts=attempt, error=repr(exc), exc_info=exc)
                    await self._give_up(record, exc, attempt)
                    return True
                delay = min(self.retry_backoff_s * 2 ** (attempt - 1), self.retry_backoff_max_s)
                self.log.warning("handler_failed_retrying", attempt=attempt, delay_s=delay, error=repr(exc))
                await self._sleep_unless_stopped(delay)

    async def _sleep_unless_stopped(self, delay: float) -> None:
        try:
            await asyncio.wait_for(self._stop.wait(), delay)
        except TimeoutError:
            return
        raise StopRequested()

    async def _give_up(self, record: ConsumerRecord, exc: BaseException, attempts: int) -> None:
        if self.dead_letter_topic and self._producer is not None:
            headers = list(record.headers or ()) + [
                ("dlq_reason", repr(exc)[:2000].encode()),
                ("dlq_original_topic", record.topic.encode()),
                ("dlq_original_partition", str(record.partition).encode()),
                ("dlq_original_offset", str(record.offset).encode()),
                ("dlq_consumer_group", self.group_id.encode()),
                ("dlq_attempts", str(attempts).encode()),
                ("dlq_failed_at", datetime.now(UTC).isoformat().encode()),
            ]
            await self._producer.send_and_wait(self.dead_letter_topic, value=record.value, key=record.key, headers=headers)
            self.dead_lettered += 1
            count_dead_letter(self.group_id, record.topic, "gave_up")
        if self.on_give_up is not None:
            await self.on_give_up(record, exc)

    async def commit(self, partitions: Iterable[TopicPartition] | None = None) -> None:
        """Commit what `mark_done` recorded (for `partitions` only, when given); a lost partition is logged, not raised."""
        consumer = self._consumer
        if consumer is None or not self._done:
            return
        wanted = set(partitions) if partitions is not None else set(self._done)
        offsets = {tp: off for tp, off in self._done.items() if tp in wanted}
        if not offsets:
            return
        try:
            self.commits += 1
            await consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as exc:
            # Another member owns the partition now; it re-handles from the last commit (idempotently).
            self.log.warning("commit_failed", error=repr(exc), offsets={f"{tp.topic}/{tp.partition}": o for tp, o in offsets.items()})
        else:
            self._committed.update(offsets)
        for tp in offsets:
            if self._done.get(tp) == offsets[tp]:
                del self._done[tp]

    async def commit_if_due(self) -> None:
        """`commit` when `commit_interval_s` has passed since the last one. Called after every fetch,
        an empty one included, so the last records of a burst are committed within the interval
        plus one fetch timeout even when nothing else arrives."""
        now = time.monotonic()
        if now - self._last_commit >= self.commit_interval_s:
            self._last_commit = now
            await self.commit()

    def forget_partitions(self, partitions: Iterable[TopicPartition]) -> None:
        """Drop what is known of partitions that moved away (after their last `commit`)."""
        for tp in partitions:
            self._done.pop(tp, None)
            self._committed.pop(tp, None)

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        """Before partitions move to another member: finish the record in hand, commit what is done, forget them.

        Overridable (the payment processor drains its records in flight instead).
        """
        async with self._lock:
            await self.commit(revoked)
        self.forget_partitions(revoked)


class _Rebalance(ConsumerRebalanceListener):
    """Hands revocations to the loop's `on_partitions_revoked` and logs both directions."""

    def __init__(self, loop: ConsumerLoop) -> None:
        self.loop = loop

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        self.loop._revocations += 1  # noqa: SLF001 - the listener is the loop's own helper
        await self.loop.on_partitions_revoked(list(revoked))
        if revoked:
            self.loop.log.info("partitions_revoked", partitions=sorted(f"{tp.topic}/{tp.partition}" for tp in revoked))

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        if assigned:
            self.loop.log.info("partitions_assigned", partitions=sorted(f"{tp.topic}/{tp.partition}" for tp in assigned))

def install_signal_handlers(*loops: ConsumerLoop, extra: Callable[[], None] | None = None) -> None:
    """SIGTERM/SIGINT → `stop()` on every loop (and `extra()`), for a graceful shutdown."""
    event_loop = asyncio.get_running_loop()

    def _stop() -> None:
        log.info("shutdown_signal")
        for consumer_loop in loops:
            consumer_loop.stop()
        if extra is not None:
            extra()

    for sig in (signal.SIGTERM, signal.SIGINT):
        event_loop.add_signal_handler(sig, _stop)
