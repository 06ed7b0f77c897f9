"""The daily reconciliation run inside the processor: due once a day, claimed by one instance, retried after a failure.

Against a fresh migrated database, the session's YooKassa sandbox (real HTTP) and real Kafka.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from infra.kafka import make_producer
from payment_processor.adapters.gateway import ListingFailed, YooKassaGateway
from payment_processor.adapters.journal import create_pool
from payment_processor.entrypoints.reconcile import DailyReconciliation
from payment_processor.reconciler import Reconciler

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def reconcilers(fresh_database, unique_topic, yookassa_sandbox):  # type: ignore[no-untyped-def]
    settings = fresh_database(migrate=True, prefix="recon")
    topic = await unique_topic(partitions=1, prefix="commands")
    db = await create_pool(settings.database_url, size=2)
    gateway = YooKassaGateway(
        shop_id=yookassa_sandbox.shop_id, secret_key=yookassa_sandbox.secret_key, api_url=yookassa_sandbox.api_url,
        timeout_s=2.0, max_concurrency=2,
    )
    producer = await make_producer(settings)
    made = [
        DailyReconciliation(Reconciler(db=db, gateway=gateway, producer=producer, commands_topic=topic), after=timedelta(hours=1), tick_s=60)
        for _ in range(2)  # two processor instances
    ]
    yield made, db
    await producer.stop()
    await gateway.aclose()
    await db.close()


async def test_yesterday_is_reconciled_once_after_its_hour(reconcilers, yookassa_sandbox) -> None:
    (first, second), db = reconcilers
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    assert not await first.tick(now=today + timedelta(minutes=30))  # not due yet: late notifications first

    with yookassa_sandbox.faults_added({"endpoint": "GET /v3/payments", "mode": "error_500_not_applied", "count": 3}):
        with pytest.raises(ListingFailed):
            await first.tick(now=today + timedelta(hours=2))
    assert await first.tick(now=today + timedelta(hours=2))  # the failed run freed the window
    assert not await first.tick(now=today + timedelta(hours=3))
    assert not await second.tick(now=today + timedelta(hours=3))  # another instance finds it done

    async with db.acquire() as conn:
        rows = await conn.fetch("SELECT trigger, window_start, window_end, status FROM processor.reconciliation_runs ORDER BY started_at")
    assert [(r["trigger"], r["status"]) for r in rows] == [("schedule", "failed"), ("schedule", "done")]
    assert {(r["window_start"], r["window_end"]) for r in rows} == {(today - timedelta(days=1), today)}
