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

from datetime import datetime

from aiokafka import AIOKafkaProducer
from sqlalchemy.ext.asyncio import AsyncEngine

from infra.clock import Clock
from infra.logging import get_logger
from payment_processor.config import ProcessorSettings
from payment_processor.metrics import JANITOR_SYNCS
from payment_processor.entrypoints.ticker import CommandTicker
from payment_processor.adapters.operations import OpenOperation, lock_due, mark_checked
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


class Janitor(CommandTicker):
    name = "janitor"

    def __init__(
        self,
        *,
        engine: AsyncEngine,
        producer: AIOKafkaProducer,
        commands_topic: str,
        clock: Clock,
        config: ProcessorSettings,
    ) -> None:
        super().__init__(engine=engine, producer=producer, commands_topic=commands_topic, clock=clock,
                         batch=config.janitor_batch, tick_s=config.janitor_tick_s)
        self.config = config

    async def run(self) -> None:
        log.info("janitor_started", schedule_s=self.config.janitor_schedule_s)
        await super().run()

    async def tick(self) -> int:
        """Publish one sync command per due operation; returns how many were due."""
        now = self.clock.now()
        async with self.engine.begin() as conn:
            due = await lock_due(conn, now, self.config.janitor_batch)
            if not due:
                return 0
            commands = [(sync_command(op, now), account_user_id(op.stream_id) or op.stream_id) for op in due]
            checked = [(op.operation_id, self.config.next_check_at(op.opened_at, op.checks + 1, now)) for op in due]
            # Published before the rows move on: a crash here republishes the same command ids.
            await self.publish(commands)
            await mark_checked(conn, checked, now)
        for op in due:
            JANITOR_SYNCS.labels(op.kind).inc()
        log.info("janitor_published", count=len(due))
        return len(due)
