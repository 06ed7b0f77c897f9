"""Price-change notices against real PostgreSQL, Kafka and the YooKassa sandbox: the processor
records a plan's change with its append, the scheduler publishes one AnnouncePriceChange per
(subscription, change) with a derived id, and the processor announces it once (docs/decisions/0120)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import text

import schemas as s
from eventstore.store import EventStore
from infra.clock import FixedClock, SystemClock
from infra.db import create_engine
from infra.kafka import make_producer
from infra.settings import Settings
from payment_processor.adapters.gateway import YooKassaGateway
from payment_processor.adapters.schedule import rebuild
from payment_processor.config import ProcessorSettings
from payment_processor.entrypoints.scheduler import Scheduler
from payment_processor.handlers import CommandHandler
from sandbox.yookassa import cards
from tests.integration.test_scheduler import _consume

CONFIG = ProcessorSettings(_env_file=None, scheduler_tick_s=0.05)  # type: ignore[call-arg]


def _cmd(payload: s.Command, stream_id: str, actor: str = "user") -> s.Envelope:
    cid = uuid.uuid4()
    meta = s.Metadata(correlation_id=f"prices-{cid}", command_id=cid, actor=s.Actor(kind=actor, id="u"))  # type: ignore[arg-type]
    return s.new_envelope(payload, stream_id=stream_id, metadata=meta, id=cid)


async def test_the_scheduler_announces_a_change_once_per_subscriber(fresh_database: Any, unique_topic: Any, yookassa_sandbox: Any) -> None:
    db: Settings = await asyncio.to_thread(fresh_database, True, "price_notices")
    topic = await unique_topic(partitions=3, prefix="commands")
    engine = create_engine(db, pool_size=4, application_name="tests-price-notices")
    producer = await make_producer(db)
    gateway = YooKassaGateway(shop_id=yookassa_sandbox.shop_id, secret_key=yookassa_sandbox.secret_key,
                              api_url=yookassa_sandbox.api_url, timeout_s=5.0, max_concurrency=4)
    clock = SystemClock()
    handler = CommandHandler(engine=engine, gateway=gateway, clock=clock, config=CONFIG, default_return_url="http://shop.example/return")
    try:
        plan_id, gift_plan = f"p{uuid.uuid4().hex[:10]}", f"g{uuid.uuid4().hex[:10]}"
        for pid in (plan_id, gift_plan):
            await handler.handle(_cmd(s.CreatePlan(plan_id=pid, name="Monthly", price=s.Money(amount="299.00"), period_days=30),
                                      s.plan_stream(pid), actor="admin"))
        user = f"u-{uuid.uuid4().hex[:8]}"
        stream = s.account_stream(user)
        sub_id = uuid.uuid4()
        await handler.handle(_cmd(s.PurchaseSubscription(subscription_id=sub_id, plan_id=plan_id, customer=s.Customer(email="a@example.com")), stream))
        [payment] = await yookassa_sandbox.apayments({"subscription_id": str(sub_id)})
        await yookassa_sandbox.apay(payment["id"], cards.SUCCESS)
        await handler.handle(_cmd(s.SyncPayment(provider_payment_id=payment["id"]), stream, actor="provider"))
        gift_sub = uuid.uuid4()  # a live subscription on a plan whose change is grandfathered: never told
        await handler.handle(_cmd(s.GrantSubscription(subscription_id=gift_sub, plan_id=gift_plan, reason="gift"), stream, actor="admin"))

        effective = clock.now() + timedelta(days=1)
        change = _cmd(s.SchedulePriceChange(plan_id=plan_id, price=s.Money(amount="349.00"), effective_at=effective, reason="costs"),
                      s.plan_stream(plan_id), actor="admin")
        await handler.handle(change)
        await handler.handle(_cmd(s.SchedulePriceChange(plan_id=gift_plan, price=s.Money(amount="349.00"), effective_at=effective,
                                                        grandfather=True, reason="costs"), s.plan_stream(gift_plan), actor="admin"))
        async with engine.connect() as conn:  # recorded with the plan's append
            recorded = {r.plan_id: r for r in await conn.execute(text("SELECT * FROM processor.price_changes"))}
        assert (recorded[plan_id].change_id, recorded[plan_id].price_minor, recorded[plan_id].grandfather) == (change.id, 34900, False)
        assert recorded[gift_plan].grandfather is True

        scheduler = Scheduler(engine=engine, producer=producer, commands_topic=topic, clock=FixedClock(clock.now()), config=CONFIG)
        assert await scheduler.tick() == 1
        assert await scheduler.tick() == 0  # marked: not published every tick
        [record] = await _consume(db, topic, 1)
        notice = s.parse_envelope(record.value)
        assert isinstance(notice.data, s.AnnouncePriceChange)
        assert (notice.data.subscription_id, notice.data.change_id, notice.stream_id) == (sub_id, change.id, stream)
        assert notice.id == notice.metadata.command_id == s.derived_id("price-notice", sub_id, change.id)
        assert record.key == user.encode()

        # A scheduler that died before its mark committed publishes the very same command again.
        async with engine.begin() as conn:
            await conn.execute(text("DELETE FROM processor.price_notices"))
        assert await scheduler.tick() == 1
        again = await _consume(db, topic, 2)
        assert {s.parse_envelope(r.value).id for r in again} == {notice.id}

        for record in again:  # the processor handles both copies: one announcement
            await handler.handle(s.parse_envelope(record.value))
        events = [r.envelope() for r in await EventStore(engine).read_stream(stream)]
        [announced] = [e.data for e in events if isinstance(e.data, s.PriceChangeAnnounced)]
        assert (announced.old_price, announced.new_price) == (s.Money(amount="299.00"), s.Money(amount="349.00"))
        period_end = next(e.data.period_end for e in events if isinstance(e.data, s.SubscriptionActivated) and e.data.subscription_id == sub_id)
        # told today, effective tomorrow, 30 days' notice: the renewal after the one in 30 days
        assert announced.first_renewal_at == period_end + timedelta(days=30)
        assert sum(1 for e in events if isinstance(e.data, s.CommandSucceeded) and e.data.command_id == notice.id) == 1

        async with engine.begin() as conn:  # a table that lost its rows is refilled from the plan streams
            await conn.execute(text("DELETE FROM processor.price_changes"))
        await rebuild(engine)
        async with engine.connect() as conn:
            assert {r.change_id for r in await conn.execute(text("SELECT change_id FROM processor.price_changes"))} == {
                change.id, recorded[gift_plan].change_id}
    finally:
        await gateway.aclose()
        await producer.stop()
        await engine.dispose()
