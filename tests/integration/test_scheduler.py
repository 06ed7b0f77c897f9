"""The scheduler against real PostgreSQL and Kafka: which rows are due, and what goes out.

The policy lives in one SQL expression (payment_processor/adapters/schedule.py), so it is tested here on
the real server, table-driven; the ticks publish to a unique real topic and are read back.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from sqlalchemy import text

import schemas as s
from infra.clock import FixedClock
from infra.db import create_engine
from infra.kafka import make_producer
from infra.settings import Settings
from payment_processor.adapters.schedule import ScheduleRow, lock_due, mark_sent, read_rows, record_rows
from payment_processor.config import ProcessorSettings
from payment_processor.entrypoints.scheduler import Scheduler
from tests.support.wait import wait_until

NOW = datetime(2026, 7, 1, 12, 0, tzinfo=timezone.utc)
DAY = timedelta(days=1)
CONFIG = ProcessorSettings(
    _env_file=None,  # type: ignore[call-arg]
    renewal_lead_s=DAY.total_seconds(),
    expiry_reminder_lead_s=3 * DAY.total_seconds(),
    scheduler_resend_s=3600,
    scheduler_tick_s=0.05,
)


def row(**kw: Any) -> ScheduleRow:
    user = f"u-{uuid.uuid4().hex[:8]}"
    fields: dict[str, Any] = {
        "subscription_id": uuid.uuid4(),
        "stream_id": s.account_stream(user),
        "user_id": user,
        "status": "active",
        "period_end": NOW + 10 * DAY,
        "auto_renew": True,
        "has_saved_method": True,
        "cancel_at_period_end": False,
        "renewal_attempts": 0,
        "next_retry_at": None,
        "dunning_over": False,
        "reminded_for": None,
        "stream_version": 5,
    }
    fields.update(kw)
    return ScheduleRow(**fields)


@pytest.fixture(scope="module")
async def engine(fresh_database: Any) -> AsyncIterator[Any]:
    db: Settings = await asyncio.to_thread(fresh_database, True, "scheduler")
    eng = create_engine(db, pool_size=4, application_name="tests-scheduler")
    yield eng
    await eng.dispose()


async def due_now(engine: Any, now: datetime = NOW) -> dict[uuid.UUID, tuple[str, int, int]]:
    """{subscription: (action, attempt, round)} for every due row, without marking anything."""
    async with engine.connect() as conn:
        found = await lock_due(
            conn, now, renew_by=now + CONFIG.renewal_lead, remind_by=now + CONFIG.expiry_reminder_lead,
            resend_before=now - timedelta(seconds=CONFIG.scheduler_resend_s), limit=100_000,
        )
        await conn.rollback()
    return {d.subscription_id: (d.action, d.attempt, d.round) for d in found}


async def insert(engine: Any, *rows: ScheduleRow) -> None:
    async with engine.begin() as conn:
        await record_rows(conn, rows, NOW)


# --------------------------------------------------------------------------- the policy, table-driven

CASES: list[tuple[str, dict[str, Any], tuple[str, int] | None]] = [
    ("renews, far from the end", {"period_end": NOW + 2 * DAY}, None),
    ("renews, within the renewal lead", {"period_end": NOW + 12 * 3600 * timedelta(seconds=1)}, ("renew", 1)),
    ("renews, end already passed (charge pending)", {"period_end": NOW - DAY}, ("renew", 1)),
    ("renews, never reminded (it is not ending)", {"period_end": NOW + 2 * DAY + timedelta(hours=1)}, None),
    ("past due, retry not yet", {"status": "past_due", "renewal_attempts": 1, "period_end": NOW - DAY, "next_retry_at": NOW + timedelta(hours=1)}, None),
    ("past due, retry due", {"status": "past_due", "renewal_attempts": 2, "period_end": NOW - DAY, "next_retry_at": NOW}, ("retry", 3)),
    ("dunning over, end passed", {"status": "past_due", "renewal_attempts": 4, "period_end": NOW - 9 * DAY, "dunning_over": True}, ("expire", 0)),
    ("dunning over before the paid end", {"status": "past_due", "renewal_attempts": 4, "period_end": NOW + DAY, "dunning_over": True}, None),
    ("past due, auto-renew turned off", {"status": "past_due", "renewal_attempts": 1, "period_end": NOW - DAY, "next_retry_at": NOW + DAY, "auto_renew": False}, ("expire", 0)),
    ("auto-renew off, far", {"auto_renew": False, "period_end": NOW + 4 * DAY}, None),
    ("auto-renew off, within the reminder lead", {"auto_renew": False, "period_end": NOW + 2 * DAY}, ("remind", 0)),
    ("auto-renew off, already reminded", {"auto_renew": False, "period_end": NOW + 2 * DAY, "reminded_for": NOW + 2 * DAY}, None),
    ("auto-renew off, reminded for an older period", {"auto_renew": False, "period_end": NOW + 2 * DAY, "reminded_for": NOW - 28 * DAY}, ("remind", 0)),
    ("auto-renew off, at the end", {"auto_renew": False, "period_end": NOW}, ("expire", 0)),
    ("canceled at period end, past the end", {"auto_renew": False, "cancel_at_period_end": True, "period_end": NOW - timedelta(seconds=1)}, ("expire", 0)),
    ("no saved card, at the end", {"has_saved_method": False, "period_end": NOW - timedelta(seconds=1)}, ("expire", 0)),
    ("no saved card, within the reminder lead", {"has_saved_method": False, "period_end": NOW + DAY}, ("remind", 0)),
    ("expired", {"status": "expired", "auto_renew": False, "period_end": NOW - DAY}, None),
    ("canceled", {"status": "canceled", "auto_renew": False, "period_end": NOW + DAY}, None),
    # a free trial (decision 0118): reminded within the reminder lead, charged only at its end
    ("trial, far", {"trial": True, "period_end": NOW + 4 * DAY}, None),
    ("trial, within the reminder lead", {"trial": True, "period_end": NOW + 2 * DAY}, ("remind", 0)),
    ("trial, within the renewal lead: reminded, not charged", {"trial": True, "period_end": NOW + 12 * 3600 * timedelta(seconds=1)}, ("remind", 0)),
    ("trial, reminded, within the renewal lead", {"trial": True, "period_end": NOW + DAY / 2, "reminded_for": NOW + DAY / 2}, None),
    ("trial, at its end", {"trial": True, "period_end": NOW, "reminded_for": NOW}, ("renew", 1)),
    ("trial, renewal off, at its end", {"trial": True, "auto_renew": False, "period_end": NOW}, ("expire", 0)),
]


@pytest.mark.parametrize("facts, expected", [pytest.param(f, e, id=name) for name, f, e in CASES])
async def test_what_is_due(engine: Any, facts: dict[str, Any], expected: tuple[str, int] | None) -> None:
    r = row(**facts)
    await insert(engine, r)
    found = (await due_now(engine)).get(r.subscription_id)
    assert (found[:2] if found else None) == expected


async def test_a_published_action_is_not_due_again_until_the_row_moves_on(engine: Any) -> None:
    r = row(period_end=NOW + timedelta(hours=2))
    await insert(engine, r)
    async with engine.begin() as conn:
        [d] = [d for d in await lock_due(conn, NOW, renew_by=NOW + DAY, remind_by=NOW + 3 * DAY, resend_before=NOW - DAY, limit=100_000)
               if d.subscription_id == r.subscription_id]
        await mark_sent(conn, [d], NOW)
    assert r.subscription_id not in await due_now(engine)
    assert r.subscription_id not in await due_now(engine, NOW + 30 * DAY)  # a renewal is never resent
    # the charge was declined: the processor writes the dunning facts; the retry is a new action
    await insert(engine, replace(r, status="past_due", renewal_attempts=1, next_retry_at=NOW + DAY, stream_version=9))
    assert r.subscription_id not in await due_now(engine)
    assert (await due_now(engine, NOW + DAY))[r.subscription_id] == ("retry", 2, 1)


async def test_an_expiry_still_due_long_after_it_was_published_goes_out_in_a_new_round(engine: Any) -> None:
    r = row(auto_renew=False, period_end=NOW - DAY)
    await insert(engine, r)
    async with engine.begin() as conn:
        found = await lock_due(conn, NOW, renew_by=NOW, remind_by=NOW, resend_before=NOW - DAY, limit=100_000)
        await mark_sent(conn, [d for d in found if d.subscription_id == r.subscription_id], NOW)
    assert r.subscription_id not in await due_now(engine, NOW + timedelta(minutes=59))
    assert (await due_now(engine, NOW + timedelta(hours=1)))[r.subscription_id] == ("expire", 0, 2)


async def test_an_older_write_never_overwrites_a_newer_row(engine: Any) -> None:
    r = row(stream_version=10)
    await insert(engine, r)
    await insert(engine, replace(r, status="expired", stream_version=12))
    await insert(engine, replace(r, status="active", period_end=NOW + 40 * DAY, stream_version=11))  # e.g. a rebuild's older fold
    async with engine.connect() as conn:
        [stored] = [x for x in await read_rows(conn, r.stream_id) if x["subscription_id"] == r.subscription_id]
    assert (stored["status"], stored["stream_version"], stored["period_end"]) == ("expired", 12, r.period_end)


# --------------------------------------------------------------------------- ticks on a real topic


async def _consume(settings: Settings, topic: str, expected: int, timeout: float = 20) -> list[Any]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=settings.kafka_servers, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None)
    await consumer.start()
    records: list[Any] = []
    try:
        async def enough() -> bool:
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                records.extend(batch)
            return len(records) >= expected
        await wait_until(enough, timeout=timeout, message=f"{expected} commands on {topic}")
        for batch in (await consumer.getmany(timeout_ms=300)).values():  # anything beyond: a duplicate
            records.extend(batch)
    finally:
        await consumer.stop()
    return records


async def test_two_schedulers_publish_each_due_command_once_and_a_lost_mark_republishes_the_same_id(
    fresh_database: Any, unique_topic: Any
) -> None:
    db: Settings = await asyncio.to_thread(fresh_database, True, "scheduler_tick")
    topic = await unique_topic(partitions=3, prefix="commands")
    eng = create_engine(db, pool_size=6, application_name="tests-scheduler-tick")
    producer = await make_producer(db)
    try:
        renewing = [row(period_end=NOW + timedelta(hours=i)) for i in range(1, 21)]
        ending = [row(auto_renew=False, period_end=NOW - timedelta(minutes=i)) for i in range(1, 11)]
        quiet = [row(period_end=NOW + 5 * DAY) for _ in range(5)]
        await insert(eng, *renewing, *ending, *quiet)
        clock = FixedClock(NOW)
        schedulers = [Scheduler(engine=eng, producer=producer, commands_topic=topic, clock=clock,
                                config=CONFIG.model_copy(update={"scheduler_batch": 7})) for _ in range(2)]
        for _ in range(6):  # both tick at the same moments, small batches, until nothing is due
            await asyncio.gather(*(sch.tick() for sch in schedulers))
        assert sum(sch.published for sch in schedulers) == 30
        assert all(sch.published > 0 for sch in schedulers)  # they shared the work

        records = await _consume(db, topic, 30)
        assert len(records) == 30
        commands = [s.parse_envelope(r.value) for r in records]
        by_sub = {c.data.subscription_id: (c, r) for c, r in zip(commands, records, strict=True)}  # type: ignore[attr-defined]
        assert set(by_sub) == {x.subscription_id for x in renewing + ending}
        for x in renewing:
            cmd, rec = by_sub[x.subscription_id]
            assert cmd.id == cmd.metadata.command_id == s.derived_id("renewal", x.subscription_id, x.period_end.isoformat(), 1)
            assert isinstance(cmd.data, s.RenewSubscription) and cmd.stream_id == x.stream_id
            assert rec.key == x.user_id.encode() and cmd.metadata.actor == s.Actor(kind="system", id="scheduler")
        for x in ending:
            cmd, _ = by_sub[x.subscription_id]
            assert isinstance(cmd.data, s.ExpireSubscription) and cmd.data.reason == "auto_renew_off"
            assert cmd.id == s.derived_id("expiry", x.subscription_id, x.period_end.isoformat())

        # A scheduler that published but died before its marks committed: the next one
        # publishes again — the very same command ids, which the processor handles once.
        async with eng.begin() as conn:
            await conn.execute(text("UPDATE processor.schedule SET sent_action = NULL"))
        for _ in range(6):
            await asyncio.gather(*(sch.tick() for sch in schedulers))
        again = await _consume(db, topic, 60)
        ids = [s.parse_envelope(r.value).id for r in again]
        assert len(ids) == 60 and len(set(ids)) == 30
    finally:
        await producer.stop()
        await eng.dispose()


# --------------------------------------------------------------------------- the handler keeps the rows


def _cmd(payload: s.Command, stream_id: str, actor: str = "user") -> s.Envelope:
    cid = uuid.uuid4()
    meta = s.Metadata(correlation_id=f"sched-{cid}", command_id=cid, actor=s.Actor(kind=actor, id="u"))  # type: ignore[arg-type]
    return s.new_envelope(payload, stream_id=stream_id, metadata=meta, id=cid)


async def test_the_handler_writes_the_row_with_its_append_and_rebuild_agrees(engine: Any, yookassa_sandbox: Any) -> None:
    from infra.clock import SystemClock
    from payment_processor.config import ProcessorSettings
    from payment_processor.adapters.gateway import YooKassaGateway
    from payment_processor.handlers import CommandHandler
    from payment_processor.adapters.schedule import rebuild
    from sandbox.yookassa import cards

    gateway = YooKassaGateway(shop_id=yookassa_sandbox.shop_id, secret_key=yookassa_sandbox.secret_key,
                              api_url=yookassa_sandbox.api_url, timeout_s=5.0, max_concurrency=4)
    handler = CommandHandler(engine=engine, gateway=gateway, clock=SystemClock(),
                             config=ProcessorSettings(_env_file=None), default_return_url="http://shop.example/return")  # type: ignore[call-arg]
    user = f"u-{uuid.uuid4().hex[:8]}"
    stream = s.account_stream(user)

    async def rows() -> dict[uuid.UUID, dict[str, Any]]:
        async with engine.connect() as conn:
            return {r["subscription_id"]: r for r in await read_rows(conn, stream)}

    try:
        plan_id = f"p{uuid.uuid4().hex[:10]}"
        await handler.handle(_cmd(s.CreatePlan(plan_id=plan_id, name="Monthly", price=s.Money(amount="299.00"), period_days=30),
                                  s.plan_stream(plan_id), actor="admin"))
        sub_id = uuid.uuid4()
        await handler.handle(_cmd(s.PurchaseSubscription(subscription_id=sub_id, plan_id=plan_id, customer=s.Customer(email="a@example.com")), stream))
        assert await rows() == {}  # pending payment: nothing to schedule yet
        [payment] = await yookassa_sandbox.apayments({"subscription_id": str(sub_id)})
        await yookassa_sandbox.apay(payment["id"], cards.SUCCESS)
        await handler.handle(_cmd(s.SyncPayment(provider_payment_id=payment["id"]), stream, actor="provider"))
        row1 = (await rows())[sub_id]
        assert (row1["status"], row1["auto_renew"], row1["has_saved_method"], row1["cancel_at_period_end"]) == ("active", True, True, False)

        await handler.handle(_cmd(s.CancelSubscription(subscription_id=sub_id, mode="at_period_end"), stream))
        row2 = (await rows())[sub_id]
        assert (row2["auto_renew"], row2["cancel_at_period_end"], row2["period_end"]) == (False, True, row1["period_end"])
        assert row2["stream_version"] > row1["stream_version"]

        granted = uuid.uuid4()
        other_plan = f"p{uuid.uuid4().hex[:10]}"
        await handler.handle(_cmd(s.CreatePlan(plan_id=other_plan, name="Gift", price=s.Money(amount="99.00"), period_days=7),
                                  s.plan_stream(other_plan), actor="admin"))
        await handler.handle(_cmd(s.GrantSubscription(subscription_id=granted, plan_id=other_plan, days=3, reason="sorry"), stream, actor="admin"))
        before = await rows()
        assert (before[granted]["status"], before[granted]["has_saved_method"]) == ("active", False)

        async with engine.begin() as conn:  # a table that lost its rows (or predates them) is refilled from the events
            await conn.execute(text("DELETE FROM processor.schedule WHERE stream_id = :s"), {"s": stream})
        assert await rebuild(engine) >= 2
        after = await rows()
        assert all(after[k]["stream_version"] >= before[k]["stream_version"] for k in before)  # computed at a later version
        strip = ("stream_version", "updated_at", "sent_action", "sent_period_end", "sent_attempt", "sent_round", "sent_at")
        assert {k: {c: v for c, v in r.items() if c not in strip} for k, r in after.items()} == \
               {k: {c: v for c, v in r.items() if c not in strip} for k, r in before.items()}
    finally:
        await gateway.aclose()
