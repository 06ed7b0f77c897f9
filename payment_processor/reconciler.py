"""One reconciliation run: list YooKassa's side, read ours, compare, send the facts, store it all.

Used by the processor's daily `DailyReconciliation` (entrypoints/reconcile.py) and by
`billing reconcile --from … --to …`. The comparison is the pure `domain.reconcile.compare`; the
facts it finds go out as SyncPayment / SyncRefund commands on `billing.commands` (actor
`provider`, ids derived from the window and the object), so the processor records them like any
notification: it re-reads YooKassa and appends only what is true and not yet recorded.

A run is stored before anything is sent. A listing that cannot be read completely fails the
run (`ListingFailed`): part of a list would make everything on the missing pages look unknown to
YooKassa.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer

from infra.logging import get_logger
from payment_processor.adapters import reconciliation as store
from payment_processor.adapters.gateway import YooKassaGateway
from payment_processor.domain.provider import ProviderPayment, ProviderRefund
from payment_processor.domain.reconcile import DEFAULT_MARGIN, Difference, Window, compare, fact_command_ids, with_command_ids
from schemas import Actor, Metadata, account_user_id, new_envelope

log = get_logger(__name__)
RECONCILIATION = Actor(kind="provider", id="reconciliation")


@dataclass
class RunResult:
    run_id: uuid.UUID
    differences: list[Difference]
    published: int


class Reconciler:
    def __init__(
        self, *, db: asyncpg.Pool, gateway: YooKassaGateway, producer: AIOKafkaProducer, commands_topic: str,
        margin: timedelta = DEFAULT_MARGIN, page_size: int = 100,
    ) -> None:
        self.db = db
        self.gateway = gateway
        self.producer = producer
        self.commands_topic = commands_topic
        self.margin = margin
        self.page_size = page_size

    async def run(self, since: datetime, until: datetime, *, trigger: str = "operator") -> RunResult | None:
        """Reconcile [since, until); None when a scheduled run of this window was claimed already."""
        run_id = uuid.uuid4()
        async with self.db.acquire() as conn:
            if not await store.start_run(conn, run_id, trigger, since, until):
                return None
        log.info("reconciliation_started", run_id=str(run_id), since=since.isoformat(), until=until.isoformat(), trigger=trigger)
        try:
            payments: Any = await self.gateway.list_created("payments", since - self.margin, until, page_size=self.page_size)
            refunds: Any = await self.gateway.list_created("refunds", since - self.margin, until, page_size=self.page_size)
            async with self.db.acquire() as conn:
                ours = await store.load_ours(conn, since - self.margin, until + self.margin)
                differences = compare(Window(since, until), payments, refunds, ours)
                handled = await store.handled_among(conn, [cid for d in differences if d.fact for cid in fact_command_ids(d)])
            differences = with_command_ids(differences, handled.__contains__)
            facts = [d for d in differences if d.fact is not None and d.command_id is not None and d.user_id]
            await self._publish(facts, run_id)
            published = {d.command_id for d in facts if d.command_id is not None}
            async with self.db.acquire() as conn, conn.transaction():
                await store.save_differences(conn, run_id, differences, published)
                await store.finish_run(
                    conn, run_id, "done", payments=_in(payments, since, until), refunds=_in(refunds, since, until),
                    differences=len(differences), recorded=len(published),
                )
        except BaseException as exc:
            async with self.db.acquire() as conn:
                await store.finish_run(conn, run_id, "failed", error=repr(exc)[:1000])
            log.error("reconciliation_failed", run_id=str(run_id), error=repr(exc))
            raise
        log.info("reconciliation_done", run_id=str(run_id), differences=len(differences), recorded=len(published))
        return RunResult(run_id, differences, len(published))

    async def _publish(self, facts: list[Difference], run_id: uuid.UUID) -> None:
        """Send each fact's command (keyed by its user, like every account command) and wait for the acks."""
        sends = []
        for d in facts:
            assert d.fact is not None and d.command_id is not None and d.stream_id is not None
            metadata = Metadata(
                correlation_id=f"reconcile:{run_id}", causation_id=str(run_id), command_id=d.command_id, actor=RECONCILIATION
            )
            envelope = new_envelope(d.fact, stream_id=d.stream_id, metadata=metadata, id=d.command_id)
            key = account_user_id(d.stream_id) or d.stream_id
            sends.append(
                await self.producer.send(
                    self.commands_topic, value=envelope.to_json(), key=key.encode(),
                    headers=[("correlation_id", metadata.correlation_id.encode())],
                )
            )
        await asyncio.gather(*sends)

    async def summary(self, run_id: uuid.UUID) -> dict[str, Any]:
        async with self.db.acquire() as conn:
            return await store.run_summary(conn, run_id)


def _in(items: list[ProviderPayment] | list[ProviderRefund], since: datetime, until: datetime) -> int:
    return sum(1 for item in items if item.created_at is None or since <= item.created_at < until)
