"""The notifier as a real process (`python -m notifier`) against real Kafka, PostgreSQL and the
Mailgun sandbox: every email type arrives once in the right language; Mailgun outages, a SIGKILL
mid-send and poison events lose nothing and duplicate nothing beyond docs/decisions/0070.

Events are produced straight onto a unique topic as the relay would (key = stream id, value =
the envelope JSON, relay headers), so these tests need neither the processor nor the relay.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from sqlalchemy import text

from infra.db import create_engine
from infra.kafka import make_producer
from infra.settings import Settings
from schemas import Envelope, Money
from tests.support.notifier_events import Account
from tests.support.processes import ManagedProcess
from tests.support.wait import wait_until

pytestmark = pytest.mark.slow
NBSP = "\u00a0"
FAST = {  # small budgets so outages and crashes play out in seconds
    "NOTIFIER_HTTP_TIMEOUT_S": "0.5",
    "NOTIFIER_INLINE_BUDGET_S": "1.0",
    "NOTIFIER_RETRY_BUDGET_S": "0.5",
    "NOTIFIER_BACKOFF_INITIAL_S": "0.05",
    "NOTIFIER_BACKOFF_MAX_S": "0.5",
    "NOTIFIER_RETRY_POLL_S": "0.1",
    "NOTIFIER_LEASE_MARGIN_S": "0.5",
}


@dataclass
class NotifierStack:
    settings: Settings
    mailgun: Any
    engine: Any
    producer: Any
    processes: list[ManagedProcess] = field(default_factory=list)

    def process(self, **env: str) -> ManagedProcess:
        proc = ManagedProcess(
            "notifier",
            "notifier",
            env={
                "ENVIRONMENT": "test",
                "DATABASE_URL": self.settings.database_url,
                "KAFKA_BOOTSTRAP_SERVERS": self.settings.kafka_bootstrap_servers,
                "EVENTS_TOPIC": self.settings.events_topic,
                "EVENTS_DLQ_TOPIC": self.settings.events_dlq_topic,
                "NOTIFIER_GROUP_ID": f"notifier-{uuid.uuid4().hex[:8]}",
                "LOG_FORMAT": "json",
                **self.mailgun.env(),
                **FAST,
                **env,
            },
            ready_check=lambda: "partitions_assigned" in proc.tail(400),
            ready_timeout=60,
        )
        self.processes.append(proc)
        return proc

    async def publish(self, *events: Envelope | tuple[bytes, bytes]) -> None:
        """Send as the relay does: key = stream id, value = envelope JSON, relay headers."""
        for event in events:
            if isinstance(event, tuple):
                key, value = event
                headers: list[tuple[str, bytes]] = []
            else:
                key, value = event.stream_id.encode(), event.to_json()
                headers = [("event_id", str(event.id).encode()), ("type", event.type.encode()),
                           ("correlation_id", event.metadata.correlation_id.encode())]
            await self.producer.send_and_wait(self.settings.events_topic, value=value, key=key, headers=headers)

    async def rows(self) -> dict[str, dict[str, Any]]:
        async with self.engine.connect() as conn:
            result = await conn.execute(text("SELECT event_id, status, claims, attempts, recipient FROM notifier.emails"))
            return {str(r.event_id): dict(r._mapping) for r in result}

    async def dead_letters(self, expected: int) -> list[Any]:
        consumer = AIOKafkaConsumer(
            self.settings.events_dlq_topic, bootstrap_servers=self.settings.kafka_servers,
            auto_offset_reset="earliest", enable_auto_commit=False, group_id=None,
        )
        await consumer.start()
        found: list[Any] = []
        try:
            async def enough() -> bool:
                batch = await consumer.getmany(timeout_ms=200)
                for records in batch.values():
                    found.extend(records)
                return len(found) >= expected
            await wait_until(enough, timeout=20, message=f"{expected} dead letters")
        finally:
            await consumer.stop()
        return found


@pytest.fixture
async def stack(settings, fresh_database, unique_topic, mailgun_sandbox) -> AsyncIterator[NotifierStack]:  # type: ignore[no-untyped-def]
    db = fresh_database(migrate=False, prefix="notifier")  # the notifier migrates its own schema
    topic = await unique_topic(partitions=3, prefix="events")
    dlq = await unique_topic(partitions=1, prefix="events-dlq")
    test_settings = Settings(**{**db.model_dump(), "events_topic": topic, "events_dlq_topic": dlq})
    engine = create_engine(test_settings, pool_size=2, application_name="tests-notifier")
    producer = await make_producer(test_settings)
    stack = NotifierStack(test_settings, mailgun_sandbox, engine, producer)
    yield stack
    for proc in stack.processes:
        proc.terminate()
    await producer.stop()
    await engine.dispose()


async def _inbox(mailgun: Any, to: str, count: int, timeout: float = 30) -> list[dict[str, Any]]:
    async def arrived() -> list[dict[str, Any]] | None:
        items = await mailgun.amessages(to=to)
        return items if len(items) >= count else None
    return await wait_until(arrived, timeout=timeout, interval=0.1, message=f"{count} emails to {to}")


def _by_tag(messages: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    tagged: dict[str, dict[str, Any]] = {}
    for message in messages:
        [tag] = message["tags"]
        assert tag not in tagged, f"two {tag} emails"
        tagged[tag] = message
    return tagged


def _account_story(account: Account) -> list[Envelope]:
    """A purchase, a refund, renewals, the end — in stream order, with the not-emailed events too."""
    return [
        account.checkout_started(),
        account.payment_succeeded(),  # not emailed: the activation right after it is
        account.activated(),
        account.refund_requested(),
        account.refund_succeeded(),
        account.refund_failed(),
        account.canceled("refund_now"),
        account.auto_renew_changed(False),
        account.payment_succeeded(purpose="renewal"),  # not emailed: SubscriptionRenewed is
        account.renewed(),
        account.payment_failed(purpose="renewal"),  # not emailed: RenewalFailed is
        account.renewal_failed(),
        account.expiring_soon(),
        account.expired(),
        account.payment_failed("expired_on_confirmation"),
    ]


async def test_every_email_type_arrives_once_in_the_users_language(stack: NotifierStack) -> None:
    ru, en = Account(locale="ru", plan_name="Месяц"), Account(locale="en", plan_name="Monthly")
    ru_story, en_story = _account_story(ru), _account_story(en)
    nobody = ru.refund_succeeded(customer=None)  # cannot be emailed: skipped, the rest flows
    await stack.publish(*ru_story[:3], nobody, *ru_story[3:], *en_story)
    await stack.publish(ru_story[2], en_story[4])  # redeliveries: no second email
    notifier = stack.process(NOTIFIER_HTTP_TIMEOUT_S="10")  # no fault here: a busy machine must not look like a lost response
    await notifier.astart()

    ru_mail = _by_tag(await _inbox(stack.mailgun, ru.customer.email, 10))
    en_mail = _by_tag(await _inbox(stack.mailgun, en.customer.email, 10))
    kinds = {"purchase_succeeded", "payment_failed", "refund_succeeded", "refund_failed", "subscription_canceled",
             "auto_renew_off", "renewal_succeeded", "renewal_failed", "expiring_soon", "subscription_expired"}
    assert set(ru_mail) == set(en_mail) == kinds

    assert ru_mail["purchase_succeeded"]["subject"] == "Оплата прошла: подписка «Месяц» активна"
    assert f"Мы получили оплату 1{NBSP}490,00{NBSP}₽." in ru_mail["purchase_succeeded"]["text"]
    assert f"<strong>1{NBSP}490,00{NBSP}₽</strong>" in ru_mail["purchase_succeeded"]["html"]
    assert ru_mail["refund_succeeded"]["subject"] == f"Возврат 1{NBSP}192,00{NBSP}₽ выполнен"
    assert "Использовано дней: 6 из 30" in ru_mail["refund_succeeded"]["text"]
    assert ru_mail["refund_failed"]["subject"] == f"Не удалось вернуть 1{NBSP}192,00{NBSP}₽"
    assert "страница оплаты была закрыта" in ru_mail["payment_failed"]["text"]
    assert ru_mail["renewal_failed"]["subject"] == "Не удалось списать оплату за продление, повторим 5 апреля 2026"
    assert ru_mail["subscription_expired"]["subject"] == "Подписка «Месяц» закончилась"

    assert en_mail["purchase_succeeded"]["subject"] == "Payment received: your Monthly subscription is active"
    assert f"We received your payment of RUB{NBSP}1,490.00." in en_mail["purchase_succeeded"]["text"]
    assert en_mail["refund_succeeded"]["subject"] == f"Your refund of RUB{NBSP}1,192.00 is done"
    assert "Days used: 6 of 30" in en_mail["refund_succeeded"]["text"]
    assert en_mail["renewal_succeeded"]["subject"] == "Your Monthly subscription is renewed until May 4, 2026"
    assert "Next attempt: April 5, 2026, 15:15 (Moscow time)." in en_mail["renewal_failed"]["text"]

    for account, story, mail in ((ru, ru_story, ru_mail), (en, en_story, en_mail)):
        purchase = mail["purchase_succeeded"]
        activation = story[2]
        assert purchase["to"] == [account.customer.email]
        assert purchase["message_id"] == f"<{activation.id}@{stack.mailgun.domain}>"
        assert purchase["variables"] == {"event_id": str(activation.id), "user_id": account.user_id, "kind": "purchase_succeeded"}
        assert purchase["from"] == "Billing <billing@mg.billing.local>"
    # everything handled: exactly 20 emails, each once, nothing left in flight
    rows = await wait_until(lambda: _settled(stack, 20), timeout=10, message="20 settled rows")
    assert all(r["status"] == "sent" and r["claims"] == 1 for r in rows.values())
    for to in (ru.customer.email, en.customer.email):
        stats = await asyncio.to_thread(stack.mailgun.stats, to)
        assert stats == {"messages": 10, "distinct_message_ids": 10, "duplicates": {}}


async def _settled(stack: NotifierStack, count: int) -> dict[str, dict[str, Any]] | None:
    rows = await stack.rows()
    done = {k: v for k, v in rows.items() if v["status"] in ("sent", "dead")}
    return rows if len(done) >= count and len(rows) == len(done) else None


async def test_mailgun_down_then_back_every_email_arrives_once(stack: NotifierStack) -> None:
    accounts = [Account(locale=("ru", "en")[i % 2]) for i in range(4)]
    rules = [
        await stack.mailgun.aadd_fault(endpoint="POST /v3/*/messages", mode="error_500", metadata={"to": a.customer.email})
        for a in accounts
    ]
    notifier = stack.process()
    await notifier.astart()
    first = [a.activated() for a in accounts]
    await stack.publish(*first)
    # The consumer does not wait for Mailgun: every email is parked and the partition moves on.
    await wait_until(lambda: _unsent(stack, 4), timeout=30, message="4 parked emails")

    # Now Mailgun hangs instead of failing fast (added first: the older 500 rules win until removed).
    hanging = [
        await stack.mailgun.aadd_fault(endpoint="POST /v3/*/messages", mode="timeout", hold_ms=2000, metadata={"to": a.customer.email})
        for a in accounts
    ]
    hits = {r["id"]: r["hits"] for r in await _faults(stack)}
    assert sum(hits.get(rule, 0) for rule in rules) >= 1  # the notifier really met the 500s
    for rule in rules:
        await stack.mailgun.aremove_fault(rule)
    rules = hanging
    second = [a.renewed() for a in accounts]
    await stack.publish(*second)
    await wait_until(lambda: _unsent(stack, 8), timeout=30, message="8 parked emails")
    for account in accounts:
        assert await stack.mailgun.amessages(to=account.customer.email) == []

    # The notifier really meets the timeouts: the breaker is open, so only the retrier's next probe
    # (after its back-off pause) reaches Mailgun — wait for it rather than race it.
    async def met_timeouts() -> bool:
        hits = {r["id"]: r["hits"] for r in await _faults(stack)}
        return sum(hits.get(rule, 0) for rule in rules) >= 1

    await wait_until(met_timeouts, timeout=30, message="a probe that met the hanging Mailgun")
    for rule in rules:  # Mailgun recovers
        await stack.mailgun.aremove_fault(rule)
    for account in accounts:
        inbox = await _inbox(stack.mailgun, account.customer.email, 2, timeout=30)
        assert sorted(m["tags"][0] for m in inbox) == ["purchase_succeeded", "renewal_succeeded"]
    rows = await wait_until(lambda: _settled(stack, 8), timeout=10, message="8 settled rows")
    assert {r["status"] for r in rows.values()} == {"sent"}
    for account in accounts:  # none twice, even after some more time for stray retries
        assert len(await stack.mailgun.amessages(to=account.customer.email)) == 2
    assert notifier.running


async def _faults(stack: NotifierStack) -> list[dict[str, Any]]:
    return await asyncio.to_thread(stack.mailgun.faults)


async def _unsent(stack: NotifierStack, n: int) -> bool:
    """n emails recorded, none sent: parked, or claimed by the retrier for another try."""
    rows = await stack.rows()
    statuses = [r["status"] for r in rows.values()]
    assert "sent" not in statuses and "dead" not in statuses, statuses
    return len(statuses) == n and statuses.count("parked") >= n - 1


async def test_sigkill_while_sending_loses_nothing_and_repeats_at_most_that_one(stack: NotifierStack) -> None:
    slow, others = Account(locale="ru"), [Account(locale="en") for _ in range(3)]
    # Mailgun takes 1.5 s for this recipient: the notifier is killed while the request is in flight.
    await stack.mailgun.aadd_fault(endpoint="POST /v3/*/messages", mode="latency", latency_ms=1500, count=1,
                                   metadata={"to": slow.customer.email})
    env = {"NOTIFIER_HTTP_TIMEOUT_S": "2.5", "NOTIFIER_INLINE_BUDGET_S": "0.5"}
    notifier = stack.process(**env)
    await notifier.astart()
    in_flight = slow.activated()
    await stack.publish(in_flight)
    await wait_until(lambda: _status(stack, in_flight.id, "sending"), timeout=20, message="send in flight")
    notifier.kill()

    later = [a.activated() for a in others]
    await stack.publish(*later)  # produced while the notifier is dead
    restarted = stack.process(**{**env, "NOTIFIER_GROUP_ID": notifier.env["NOTIFIER_GROUP_ID"]})
    await restarted.astart()

    for account in others:
        assert len(await _inbox(stack.mailgun, account.customer.email, 1)) == 1
    copies = await _inbox(stack.mailgun, slow.customer.email, 1)
    rows = await wait_until(lambda: _settled(stack, 4), timeout=20, message="all rows settled")
    assert rows[str(in_flight.id)]["claims"] == 2  # taken over after the crashed sender's lease
    copies = await stack.mailgun.amessages(to=slow.customer.email)
    # The bound of 0070: at most one extra copy of that one message, with the same Message-Id.
    assert 1 <= len(copies) <= 2
    assert {m["message_id"] for m in copies} == {f"<{in_flight.id}@{stack.mailgun.domain}>"}
    for account in others:
        assert len(await stack.mailgun.amessages(to=account.customer.email)) == 1


async def _status(stack: NotifierStack, event_id: uuid.UUID, status: str) -> bool:
    row = (await stack.rows()).get(str(event_id))
    return bool(row and row["status"] == status)


async def test_poison_events_go_to_the_dead_letter_topic_and_the_rest_flows(stack: NotifierStack) -> None:
    account = Account(locale="en")
    key = f"account-{account.user_id}".encode()
    unrenderable = account.renewed(amount=Money(amount="10.00", currency="ZZZ"))
    unknown_type = json.loads(account.expired().to_json())
    unknown_type["type"] = "SomethingNew"
    rejected = Account(locale="en", email="a,b@example.com")  # Mailgun answers 400 for this address
    await stack.publish(
        (key, b"\x00not json"),
        (key, json.dumps(unknown_type).encode()),
        unrenderable,
        rejected.activated(),
        account.activated(),  # the same partition as the poison: must still arrive
    )
    notifier = stack.process()
    await notifier.astart()
    [email] = await _inbox(stack.mailgun, account.customer.email, 1)
    assert email["tags"] == ["purchase_succeeded"]
    dead = await stack.dead_letters(4)
    reasons = sorted(dict(r.headers)["dlq_kind"].decode() for r in dead)
    assert reasons == ["mailgun_rejected", "render_failed", "unreadable", "unreadable"]
    by_kind = {dict(r.headers)["dlq_kind"].decode(): r for r in dead}
    assert b"unknown currency" in dict(by_kind["render_failed"].headers)["dlq_reason"]
    assert by_kind["render_failed"].value == unrenderable.to_json()
    assert b"400" in dict(by_kind["mailgun_rejected"].headers)["dlq_reason"]
    rows = await stack.rows()
    assert {r["status"] for r in rows.values()} == {"sent", "dead"}
    assert notifier.running


async def test_an_email_failing_past_the_time_limit_is_dead_lettered(stack: NotifierStack) -> None:
    doomed, fine = Account(locale="ru"), Account(locale="en")
    rule = await stack.mailgun.aadd_fault(endpoint="POST /v3/*/messages", mode="error_500", metadata={"to": doomed.customer.email})
    notifier = stack.process(NOTIFIER_GIVE_UP_AFTER_S="2")
    await notifier.astart()
    try:
        failing = doomed.activated()
        await stack.publish(failing, fine.activated())
        [dead] = await stack.dead_letters(1)
    finally:
        await stack.mailgun.aremove_fault(rule)
    headers = dict(dead.headers)
    assert headers["dlq_kind"] == b"mailgun_unavailable"
    assert b"Mailgun unavailable for" in headers["dlq_reason"] and b"500" in headers["dlq_reason"]
    assert headers["event_id"] == str(failing.id).encode() and dead.value == failing.to_json()
    assert len(await _inbox(stack.mailgun, fine.customer.email, 1)) == 1  # the other email went out
    assert await stack.mailgun.amessages(to=doomed.customer.email) == []
    assert (await stack.rows())[str(failing.id)]["status"] == "dead"
