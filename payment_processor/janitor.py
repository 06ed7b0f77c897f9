"""The janitor: asks YooKassa again about payments and refunds whose final answer is missing.

It never writes state. It finds due rows in `processor.open_operations` (locked with SKIP
LOCKED, so several processor instances share the work without asking twice) and publishes a
SyncPayment / SyncRefund command to `billing.commands`, keyed by the account's user id. The
command id is derived from (operation, check number), so a janitor that crashes after
publishing and publishes again produces the same command, which the processor handles once.
The processor then re-reads the object from YooKassa (or repeats the create with the same key
when YooKassa never gave it an id) and appends what it hears; a final answer deletes the row.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime

from aiokafka import AIOKafkaProducer
from sqlalchemy.ext.asyncio import AsyncEngine

from eventstore.clock import Clock
from eventstore.logging import get_logger
from payment_processor.config import ProcessorSettings
from payment_processor.operations import OpenOperation, lock_due, mark_checked
from schemas import Actor, Envelope, Metadata, SyncPayment, SyncRefund, account_user_id, derived_id, new_envelope

log = get_logger(__name__)
JANITOR = Actor(kind="system", id="janitor")


def sync_command(operation: OpenOperation, now: datetime) -> Envelope:
    """The deterministic SyncPayment/SyncRefund for check number `operation.checks + 1`."""
    attempt = operation.checks + 1
    command_id = derived_id("sync", operation.kind, operation.operation_id, attempt)
    payload = SyncPayment(payment_id=operation.operation_id) if operation.kind == "payment" else SyncRefund(refund_id=operation.operation_id)
    metadata = Metadata(
        correlation_id=f"janitor:{operation.operation_id}",
        causation_id=str(operation.operation_id),
        command_id=command_id,
        actor=JANITOR,
    )
    return new_envelope(payload, stream_id=operation.stream_id, metadata=metadata, id=command_id, occurred_at=now)


class Janitor:
    def __init__(
        self,
        *,
        engine: AsyncEngine,
        producer: AIOKafkaProducer,
        commands_topic: str,
        clock: Clock,
        config: ProcessorSettings,
    ) -> None:
        self.engine = engine
        self.producer = producer
        self.commands_topic = commands_topic
        self.clock = clock
        self.config = config
        self.published = 0
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        """Tick until stopped; an error in one tick is logged and retried on the next."""
        log.info("janitor_started", schedule_s=self.config.janitor_schedule_s)
        while not self._stop.is_set():
            try:
                found = await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the janitor must outlive a database or broker hiccup
                log.warning("janitor_tick_failed", error=repr(exc))
                found = 0
            if found < self.config.janitor_batch:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), self.config.janitor_tick_s)
        log.info("janitor_stopped", published=self.published)

    async def tick(self) -> int:
        """Publish one sync command per due operation; returns how many were due."""
        now = self.clock.now()
        async with self.engine.begin() as conn:
            due = await lock_due(conn, now, self.config.janitor_batch)
            if not due:
                return 0
            sends = []
            checked = []
            for operation in due:
                command = sync_command(operation, now)
                user_id = account_user_id(operation.stream_id) or operation.stream_id
                sends.append(
                    await self.producer.send(
                        self.commands_topic,
                        value=command.to_json(),
                        key=user_id.encode(),
                        headers=[("correlation_id", command.metadata.correlation_id.encode())],
                    )
                )
                checked.append((operation.operation_id, self.config.next_check_at(operation.opened_at, operation.checks + 1, now)))
            # Published before the rows move on: a crash here republishes the same command ids.
            await asyncio.gather(*sends)
            await mark_checked(conn, checked, now)
        self.published += len(due)
        log.info("janitor_published", count=len(due))
        return len(due)
