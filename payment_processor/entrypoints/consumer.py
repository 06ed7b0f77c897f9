"""The entry point on `billing.commands`: a consumer loop that feeds the command handler.

`ConsumerLoop` (shared library) commits offsets only after the handler returned, retries a
failing record a bounded number of times and then copies it to the dead-letter topic; here
`on_give_up` turns that into a `CommandFailed` terminal event on the command's own stream, so
the command shows how it ended and never blocks its partition forever.

`KeyedConsumerLoop` keeps all of that and handles records of DIFFERENT keys concurrently
(docs/decisions/0049): commands are keyed by user id (plan id for plan commands), so each
account's commands still run strictly one after another, in partition order, while up to
`PROCESSOR_CONCURRENCY` accounts are handled at once — one Kafka consumer per process instead of
one per partition, and most of a command's time (database and YooKassa round trips) overlaps
with other commands'. A partition's committed offset only ever moves past records that are
finished (handled or dead-lettered): it is the first offset still in flight.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from infra.kafka import ConsumerLoop, StopRequested, correlation_id_of
from infra.logging import bind_correlation, get_logger
from infra.settings import Settings
from payment_processor.config import ProcessorSettings
from payment_processor.domain import command_id_of
from payment_processor.handlers import CommandHandler, command_from_record_value, identity_from_raw

log = get_logger(__name__)


def give_up_reason(exc: BaseException, attempts: int) -> str:
    if isinstance(exc, ValueError):  # includes pydantic's ValidationError: retrying will not help
        return f"The command is not valid and cannot be processed: {exc}"[:1000]
    return f"The command could not be processed after {attempts} attempts ({type(exc).__name__}: {exc})."[:1000]


class _PartitionWork:
    """One partition's records in flight, by offset in arrival order; `closed` once revoked or stopping."""

    __slots__ = ("pending", "tasks", "closed")

    def __init__(self) -> None:
        self.pending: dict[int, bool] = {}  # offset → finished
        self.tasks: set[asyncio.Task[bool]] = set()
        self.closed = False


class KeyedConsumerLoop(ConsumerLoop):
    """A `ConsumerLoop` that runs records of different keys concurrently, each key in order.

    Every fetched record becomes a task that first waits for the previous record of its key
    (same partition, same key) and then for one of `concurrency` slots. Retries, back-off,
    dead-lettering and `on_give_up` are the base class's, per record. A partition's offset is
    committed up to its first unfinished record (at most every `commit_interval_s`, and always on
    revocation and stop). On revocation or stop, records not yet started are left for the next
    owner (or the restart); records in hand are finished first. If dead-lettering itself fails,
    later records of every key stop being started and `run()` raises after committing what is
    finished — the failed record is redelivered after a restart, never lost.
    """

    def __init__(self, settings: Settings, *, concurrency: int, max_buffered: int | None = None,
                 commit_interval_s: float = 0.5, **kwargs: Any) -> None:
        super().__init__(settings, commit_interval_s=commit_interval_s, **kwargs)
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.concurrency = concurrency
        self.max_buffered = max_buffered or max(self.batch_max, concurrency * 8)
        self._slots = asyncio.Semaphore(concurrency)
        self._tails: dict[tuple[TopicPartition, bytes | None], asyncio.Task[bool]] = {}
        self._work: dict[TopicPartition, _PartitionWork] = {}
        self._tasks: set[asyncio.Task[bool]] = set()
        self._fatal: BaseException | None = None

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    async def run(self) -> None:
        """Consume until `stop()`; finishes the records in hand and commits before returning."""
        consumer = await self.open_consumer(concurrency=self.concurrency)
        try:
            while not self.stopping:
                if len(self._tasks) >= self.max_buffered:
                    await asyncio.wait(self._tasks, timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
                    self.beat()
                else:
                    # A batch drained before a revocation began comes back empty: dispatched, it
                    # would open a new bookkeeping under the old assignment, whose commits could
                    # pass records still to be handled (docs/decisions/0128).
                    batch = await self.next_batch(consumer)
                    for tp, records in batch.items():
                        if tp not in consumer.assignment():
                            continue  # revoked while fetching: the new owner starts from our last commit
                        for record in records:
                            self._dispatch(tp, record)
                await self.commit_if_due()
        finally:
            try:
                self.stop()
                for work in self._work.values():
                    work.closed = True
                if self._tasks:
                    await asyncio.wait(set(self._tasks))
                await self.commit()
            finally:
                await self.close_consumer(consumer)
        if self._fatal is not None:
            raise self._fatal

    # ------------------------------------------------------------------ records as tasks

    def _dispatch(self, tp: TopicPartition, record: ConsumerRecord) -> None:
        work = self._work.get(tp)
        if work is None or work.closed:
            work = self._work[tp] = _PartitionWork()
        chain = (tp, record.key)
        task = asyncio.create_task(self._run_record(work, record, self._tails.get(chain)))
        work.pending[record.offset] = False
        work.tasks.add(task)
        self._tasks.add(task)
        self._tails[chain] = task
        task.add_done_callback(functools.partial(self._finished, work, tp, record.offset, chain))

    async def _run_record(self, work: _PartitionWork, record: ConsumerRecord, previous: asyncio.Task[bool] | None) -> bool:
        """True once the record is finished (handled or given up); False if left for redelivery."""
        if previous is not None:
            await asyncio.wait({previous})  # the key's order; its outcome is its own business
        if work.closed or self.stopping:
            return False  # not started: left for the next owner (or the restart)
        async with self._slots:
            if work.closed or self.stopping:
                return False
            with bind_correlation(correlation_id_of(record), topic=record.topic, partition=record.partition, offset=record.offset):
                try:
                    return await self.handle_with_retries(record)
                except StopRequested:
                    return False

    def _finished(self, work: _PartitionWork, tp: TopicPartition, offset: int, chain: tuple[TopicPartition, bytes | None],
                  task: asyncio.Task[bool]) -> None:
        self._tasks.discard(task)
        work.tasks.discard(task)
        if self._tails.get(chain) is task:
            del self._tails[chain]
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            # Dead-lettering failed: start nothing more (the key's order would break), commit what
            # is finished, let run() raise. The record is redelivered after the restart.
            self.log.error("record_not_finished", error=repr(exc), partition=tp.partition, offset=offset)
            if self._fatal is None:
                self._fatal = exc
            self.stop()
            return
        if not task.result() or self._work.get(tp) is not work:
            return
        work.pending[offset] = True
        while work.pending:
            first = next(iter(work.pending))
            if not work.pending[first]:
                break
            del work.pending[first]
            self.mark_done(tp, first + 1)

    async def on_partitions_revoked(self, partitions: list[TopicPartition]) -> None:
        """Before `partitions` move away: start nothing new there, finish what is in hand, commit."""
        works = [self._work[tp] for tp in partitions if tp in self._work]
        for work in works:
            work.closed = True
        in_hand = set().union(*(work.tasks for work in works)) if works else set()
        if in_hand:
            await asyncio.wait(in_hand)
        await self.commit(partitions)
        self.forget_partitions(partitions)
        for tp in partitions:
            if tp in self._work and self._work[tp].closed:
                del self._work[tp]


def build_loops(settings: Settings, config: ProcessorSettings, handler: CommandHandler) -> list[ConsumerLoop]:
    async def handle(record: ConsumerRecord) -> None:
        await handler.handle_record_value(record.value)

    async def on_give_up(record: ConsumerRecord, exc: BaseException) -> None:
        reason = give_up_reason(exc, config.max_attempts)
        command = command_from_record_value(record.value)
        if command is not None:
            await handler.fail(
                command_id_of(command),
                command.type,
                command.stream_id,
                reason,
                correlation_id=command.metadata.correlation_id,
                actor=command.metadata.actor,
            )
            return
        identity = identity_from_raw(record.value)
        if identity is None:
            log.error("unreadable_command_dead_lettered", topic=record.topic, partition=record.partition, offset=record.offset)
            return
        command_id, command_type, stream_id = identity
        await handler.fail(command_id, command_type, stream_id, reason)

    return [
        KeyedConsumerLoop(
            settings,
            concurrency=config.concurrency,
            topics=[settings.commands_topic],
            group_id=config.group_id,
            handle=handle,
            name=f"payment-processor-{i}",
            max_attempts=config.max_attempts,
            dead_letter_topic=settings.commands_dlq_topic,
            on_give_up=on_give_up,
            batch_max=500,
            consumer_options={
                "session_timeout_ms": config.session_timeout_ms,
                "heartbeat_interval_ms": min(2000, config.session_timeout_ms // 4),
            },
        )
        for i in range(config.consumers)
    ]
