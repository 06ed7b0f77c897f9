"""The live projector: `billing.events` → read models, a whole fetched batch per transaction.

`infra.kafka.ConsumerLoop` gives the discipline (commit offsets only after the effect,
bounded retries, dead-letter topic, graceful stop). Its handler is per record; to reach the
pipeline's rate the projector applies each FETCHED batch in one PostgreSQL transaction before the
loop walks the records (`fetch_batch` below), and the per-record handler then has nothing left to do.
If the batch transaction fails, nothing of it was committed and the loop's per-record path takes
over for that batch: each record in its own transaction with the loop's retries and dead-letter
topic, so one poison record cannot stop the partition. Either way offsets are committed only
after the records' effects are, and a redelivery is a no-op (stream versions, see projector/adapters/engine.py).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

from infra.kafka import ConsumerLoop
from projector.adapters.engine import BatchResult
from projector.config import ProjectorSettings
from projector.domain.events import PoisonEvent, ProjectedEvent
from projector.service import Projector

TRANSIENT_ERRORS = (OSError, TimeoutError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError, asyncpg.CannotConnectNowError)


class ProjectorConsumer(ConsumerLoop):
    """A ConsumerLoop that applies every fetched batch in one transaction (see module docstring)."""

    def __init__(self, settings: ProjectorSettings, projector: Projector, **options: Any) -> None:
        self.projector = projector
        self._preapplied: set[tuple[str, int, int]] = set()
        options.setdefault("batch_max", settings.projector_batch_max)
        options.setdefault("dead_letter_topic", settings.events_dlq_topic)
        options.setdefault("commit_interval_s", settings.projector_commit_interval_s)
        session_ms = settings.projector_session_timeout_ms
        options.setdefault(
            "consumer_options", {"session_timeout_ms": session_ms, "heartbeat_interval_ms": max(300, session_ms // 5)}
        )
        super().__init__(
            settings,
            topics=[settings.events_topic],
            group_id=settings.projector_group_id,
            handle=self._handle_one,
            name="projector",
            **options,
        )
        self._last_report = time.monotonic()

    async def fetch_batch(self, consumer: AIOKafkaConsumer) -> dict[TopicPartition, list[ConsumerRecord]]:
        batch = await super().fetch_batch(consumer)
        self._preapplied = set()
        if not batch:
            return batch
        records = [r for rs in batch.values() for r in rs]
        good: list[ConsumerRecord] = []
        events: list[ProjectedEvent] = []
        for record in records:  # decode one by one so a poison record only drops itself to the slow path
            try:
                events.extend(await self.projector.decode([record]))
                good.append(record)
            except PoisonEvent as exc:
                self.log.warning("poison_record", error=str(exc), offset=record.offset, partition=record.partition)
        try:
            result = await self.projector.apply(events)
        except Exception as exc:  # noqa: BLE001 - the per-record path retries and dead-letters
            self.log.warning("batch_failed_per_record_fallback", error=repr(exc), records=len(records))
            return batch
        self._preapplied = {(r.topic, r.partition, r.offset) for r in good}
        self._report(result)
        return batch

    async def _handle_one(self, record: ConsumerRecord) -> None:
        if (record.topic, record.partition, record.offset) in self._preapplied:
            return
        # A database outage is not the record's fault: wait for PostgreSQL instead of spending the
        # loop's bounded attempts (which end in the dead-letter topic). Other errors go to the loop.
        delay = 0.2
        while True:
            try:
                await self.projector.apply_records([record])
                return
            except TRANSIENT_ERRORS as exc:
                if self.stopping:
                    raise
                self.log.warning("database_unavailable_waiting", error=repr(exc), delay_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _report(self, result: BatchResult) -> None:
        self.log.debug(
            "batch_applied", applied=result.applied, duplicates=result.duplicates,
            gap_filled=result.gap_filled, streams=result.streams, rows=result.rows_written,
        )
        now = time.monotonic()
        if now - self._last_report >= 10:
            self.log.info(
                "projector_progress", applied_total=self.projector.applied, duplicates_total=self.projector.duplicates,
                gap_filled_total=self.projector.gap_filled, batches=self.projector.batches,
            )
            self._last_report = now
