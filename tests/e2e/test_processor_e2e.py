"""The payment processor as a real process (`python -m payment_processor`) against real Kafka,
PostgreSQL and the YooKassa sandbox: never charge twice, every command ends.

Commands are produced onto a unique commands topic exactly as the command API does (key = user
id, value = the envelope JSON, a `correlation_id` header); outcomes are read from the event store
and payments are counted through the sandbox's inspection API. The janitor runs on a ~1 s
schedule. Crashes are real: the test-only `BILLING_CRASH_AT` hook makes the process SIGKILL
itself at a precise line (see payment_processor/handlers.py), or the test SIGKILLs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer

import schemas as s
from infra.db import create_engine
from infra.kafka import ensure_topics, make_producer
from infra.settings import Settings
from eventstore.store import EventStore
from sandbox.yookassa import cards
from tests.support.processes import ManagedProcess, free_port
from tests.support.wait import wait_until

pytestmark = pytest.mark.slow
CUSTOMER = s.Customer(email="e2e-buyer@example.com", locale="ru")
FAST = {
    "PROCESSOR_JANITOR_SCHEDULE_S": "1,1,1",
    "PROCESSOR_JANITOR_REPEAT_S": "1",
    "PROCESSOR_JANITOR_TICK_S": "0.2",
    "PROCESSOR_MAX_ATTEMPTS": "2",
    "PROCESSOR_CONSUMERS": "1",
    "YOOKASSA_TIMEOUT_S": "2",
    "PROCESSOR_SESSION_TIMEOUT_MS": "6000",  # a SIGKILLed member's partitions move on sooner
}


@dataclass
class Stack:
    settings: Settings
    store: EventStore
    sandbox: Any
    producer: Any
    tmp: Path
    group: str = field(default_factory=lambda: f"processor-{uuid.uuid4().hex[:8]}")
    processes: list[ManagedProcess] = field(default_factory=list)

    def process(self, name: str = "payment-processor", **env: str) -> ManagedProcess:
        port = free_port()
        proc = ManagedProcess(
            name,
            "payment_processor",
            env={
                "ENVIRONMENT": "test",
                "DATABASE_URL": self.settings.database_url,
                "KAFKA_BOOTSTRAP_SERVERS": self.settings.kafka_bootstrap_servers,
                "COMMANDS_TOPIC": self.settings.commands_topic,
                "COMMANDS_DLQ_TOPIC": self.settings.commands_dlq_topic,
                "PROCESSOR_GROUP_ID": self.group,
                "PROCESSOR_HEALTH_PORT": str(port),
                "LOG_FORMAT": "json",
                **self.sandbox.env(),
                **FAST,
                **env,
            },
            ready_url=f"http://127.0.0.1:{port}/healthz",
            ready_timeout=60,
        )
        self.processes.append(proc)
        return proc

    async def send(self, envelope: s.Envelope) -> None:
        user = s.account_user_id(envelope.stream_id) or envelope.stream_id.removeprefix("plan-")
        await self.producer.send_and_wait(
            self.settings.commands_topic,
            value=envelope.to_json(),
            key=user.encode(),
            headers=[("correlation_id", envelope.metadata.correlation_id.encode())],
        )

    async def events(self, stream_id: str, type_name: str | None = None) -> list[s.Envelope]:
        return [r.envelope() for r in await self.store.read_stream(stream_id) if type_name is None or r.type == type_name]

    async def terminal(self, stream_id: str, command_id: uuid.UUID) -> Any:
        for e in await self.events(stream_id):
            if e.type in ("CommandSucceeded", "CommandRejected", "CommandFailed") and e.data.command_id == command_id:  # type: ignore[attr-defined]
                return e.data
        return None

    async def wait_terminal(self, stream_id: str, command_id: uuid.UUID, timeout: float = 30) -> Any:
        return await wait_until(lambda: self.terminal(stream_id, command_id), timeout=timeout, interval=0.1, message=f"command {command_id} ends")

    async def create_plan(self, price: str = "299.00") -> str:
        plan_id = f"p{uuid.uuid4().hex[:12]}"
        cmd = envelope(s.CreatePlan(plan_id=plan_id, name=f"Plan {plan_id}", price=s.Money(amount=price), period_days=30), s.plan_stream(plan_id), actor=s.Actor(kind="admin", id="op"))
        await self.send(cmd)
        await self.wait_terminal(cmd.stream_id, cmd.id)
        return plan_id

    def payments_of(self, subscription_id: uuid.UUID) -> Any:
        return self.sandbox.apayments({"subscription_id": str(subscription_id)})


def envelope(payload: s.Command, stream_id: str, *, command_id: uuid.UUID | None = None, actor: s.Actor | None = None) -> s.Envelope:
    cid = command_id or uuid.uuid4()
    user = s.account_user_id(stream_id) or "op"
    meta = s.Metadata(correlation_id=f"e2e-{cid}", command_id=cid, actor=actor or s.Actor(kind="user", id=user))
    return s.new_envelope(payload, stream_id=stream_id, metadata=meta, id=cid)


def purchase(user: str, plan_id: str) -> s.Envelope:
    cid = s.derived_id("command", user, uuid.uuid4())
    payload = s.PurchaseSubscription(subscription_id=s.derived_id("subscription", cid), plan_id=plan_id, customer=CUSTOMER)
    return envelope(payload, s.account_stream(user), command_id=cid)


def new_user() -> str:
    return f"user-{uuid.uuid4().hex[:10]}"


@contextlib.asynccontextmanager
async def make_stack(fresh_database: Any, sandbox: Any, tmp: Path) -> AsyncIterator[Stack]:
    """A fresh database (so the janitor sees only these tests' operations) and unique topics."""
    suffix = uuid.uuid4().hex[:10]
    db_settings = await asyncio.to_thread(fresh_database, True, "pp_e2e")
    test_settings = db_settings.model_copy(
        update={"commands_topic": f"test.commands.{suffix}", "commands_dlq_topic": f"test.commands.dlq.{suffix}"}
    )
    await ensure_topics(test_settings, {test_settings.commands_topic: 4, test_settings.commands_dlq_topic: 1})
    producer = await make_producer(test_settings)
    engine = create_engine(test_settings, pool_size=4, application_name="processor-e2e")
    st = Stack(test_settings, EventStore(engine), sandbox, producer, tmp)
    try:
        yield st
    finally:
        for proc in st.processes:
            await asyncio.to_thread(proc.kill)
        await producer.stop()
        await engine.dispose()


@pytest.fixture(scope="module")
async def shared(fresh_database, yookassa_sandbox, tmp_path_factory) -> AsyncIterator[Stack]:
    """One running processor for the tests that do not kill it (saves a process start each)."""
    async with make_stack(fresh_database, yookassa_sandbox, tmp_path_factory.mktemp("processor-e2e")) as st:
        await st.process().astart()
        yield st


@pytest.fixture
async def stack(fresh_database, yookassa_sandbox, tmp_path: Path) -> AsyncIterator[Stack]:
    """A stack of the test's own; the test starts (and kills) its processors itself."""
    async with make_stack(fresh_database, yookassa_sandbox, tmp_path) as st:
        yield st


# --------------------------------------------------------------------------- the happy path, declines


async def test_purchase_pay_on_the_page_and_the_janitor_activates(shared: Stack) -> None:
    plan_id = await shared.create_plan()
    user = new_user()
    cmd = purchase(user, plan_id)
    await shared.send(cmd)
    done = await shared.wait_terminal(cmd.stream_id, cmd.id)
    assert isinstance(done, s.CommandSucceeded) and done.outcome.confirmation_url
    payment_id = shared.sandbox.payment_id_from_url(done.outcome.confirmation_url)
    await shared.sandbox.apay(payment_id, cards.SUCCESS)
    # no notification is sent: the janitor's scheduled SyncPayment finds the success
    activated = await wait_until(lambda: shared.events(cmd.stream_id, "SubscriptionActivated"), timeout=20, interval=0.1)
    assert activated[0].data.subscription_id == cmd.data.subscription_id
    assert len(await shared.payments_of(cmd.data.subscription_id)) == 1


async def test_decline_fails_the_payment_with_the_reason(shared: Stack) -> None:
    plan_id = await shared.create_plan()
    cmd = purchase(new_user(), plan_id)
    await shared.send(cmd)
    done = await shared.wait_terminal(cmd.stream_id, cmd.id)
    await shared.sandbox.apay(shared.sandbox.payment_id_from_url(done.outcome.confirmation_url), cards.DECLINE_CARD_EXPIRED)
    # what the API publishes for YooKassa's payment.canceled notification
    notice = envelope(
        s.SyncPayment(provider_payment_id=shared.sandbox.payment_id_from_url(done.outcome.confirmation_url), hint_status="canceled"),
        cmd.stream_id,
        actor=s.Actor(kind="provider", id="yookassa"),
    )
    await shared.send(notice)
    await shared.wait_terminal(cmd.stream_id, notice.id)
    failed = await shared.events(cmd.stream_id, "PaymentFailed")
    assert [(f.data.reason, f.data.party) for f in failed] == [("card_expired", "payment_network")]
    assert await shared.events(cmd.stream_id, "SubscriptionActivated") == []


# --------------------------------------------------------------------------- never charge twice


async def test_the_same_command_delivered_twice_makes_one_payment(shared: Stack) -> None:
    plan_id = await shared.create_plan()
    cmd = purchase(new_user(), plan_id)
    await shared.send(cmd)
    await shared.send(cmd)
    await shared.wait_terminal(cmd.stream_id, cmd.id)
    later = purchase(s.account_user_id(cmd.stream_id) or "", plan_id)  # a marker behind both in the partition
    await shared.send(later)
    await shared.wait_terminal(later.stream_id, later.id)
    assert len(await shared.payments_of(cmd.data.subscription_id)) == 1
    types = [e.type for e in await shared.events(cmd.stream_id)]
    assert types.count("CheckoutStarted") == 1 and types.count("PaymentCreated") == 1


@pytest.mark.parametrize("point, payments_at_crash", [("after_checkout_started", 0), ("after_payment_created", 1)])
async def test_sigkill_between_two_lines_still_one_payment_and_the_purchase_completes(stack: Stack, point: str, payments_at_crash: int) -> None:
    once = stack.tmp / f"crash-{uuid.uuid4().hex[:6]}"
    proc = stack.process(BILLING_CRASH_AT=point, BILLING_CRASH_ONCE_FILE=str(once))
    await proc.astart()
    plan_id = await stack.create_plan()
    cmd = purchase(new_user(), plan_id)
    await stack.send(cmd)
    await wait_until(lambda: not proc.running, timeout=30, message="the processor kills itself at the crash point")
    assert proc.returncode == -9 and once.exists()
    assert [e.type for e in await stack.events(cmd.stream_id)] == ["CheckoutStarted"]
    assert len(await stack.payments_of(cmd.data.subscription_id)) == payments_at_crash

    await proc.astart()  # same environment; the once-file keeps it from crashing again
    done = await stack.wait_terminal(cmd.stream_id, cmd.id)
    assert isinstance(done, s.CommandSucceeded) and done.outcome.confirmation_url
    remote = await stack.payments_of(cmd.data.subscription_id)
    assert len(remote) == 1
    await stack.sandbox.apay(remote[0]["id"])
    await wait_until(lambda: stack.events(cmd.stream_id, "SubscriptionActivated"), timeout=20, interval=0.1)
    assert len(await stack.payments_of(cmd.data.subscription_id)) == 1


@pytest.mark.parametrize("mode", ["drop_after_apply", "error_500_applied"])
async def test_a_lost_answer_is_settled_by_the_janitor_without_a_second_payment(shared: Stack, mode: str) -> None:
    plan_id = await shared.create_plan()
    cmd = purchase(new_user(), plan_id)
    sub = str(cmd.data.subscription_id)
    rule = await shared.sandbox.aadd_fault(endpoint="POST /v3/payments", mode=mode, count=1, metadata={"subscription_id": sub})
    try:
        await shared.send(cmd)
        await wait_until(lambda: shared.events(cmd.stream_id, "PaymentStateUnknown"), timeout=20, interval=0.1)
    finally:
        await shared.sandbox.aremove_fault(rule)
    done = await shared.wait_terminal(cmd.stream_id, cmd.id)  # settled by the janitor's SyncPayment
    assert isinstance(done, s.CommandSucceeded) and done.outcome.confirmation_url
    assert len(await shared.payments_of(cmd.data.subscription_id)) == 1


async def test_duplicated_and_lying_notifications_change_nothing_until_yookassa_agrees(shared: Stack) -> None:
    plan_id = await shared.create_plan()
    cmd = purchase(new_user(), plan_id)
    await shared.send(cmd)
    done = await shared.wait_terminal(cmd.stream_id, cmd.id)
    provider_id = shared.sandbox.payment_id_from_url(done.outcome.confirmation_url)
    provider = s.Actor(kind="provider", id="yookassa")
    lie = envelope(s.SyncPayment(provider_payment_id=provider_id, hint_status="succeeded"), cmd.stream_id, actor=provider)
    await shared.send(lie)
    await shared.send(lie)  # duplicated
    await shared.wait_terminal(cmd.stream_id, lie.id)
    assert await shared.events(cmd.stream_id, "PaymentSucceeded") == []

    await shared.sandbox.apay(provider_id)
    truth = envelope(s.SyncPayment(provider_payment_id=provider_id, hint_status="succeeded"), cmd.stream_id, actor=provider)
    for _ in range(3):
        await shared.send(truth)
    await shared.wait_terminal(cmd.stream_id, truth.id)
    assert len(await shared.events(cmd.stream_id, "PaymentSucceeded")) == 1
    assert len(await shared.events(cmd.stream_id, "SubscriptionActivated")) == 1


async def test_two_cancels_with_refund_make_exactly_one_refund(shared: Stack) -> None:
    plan_id = await shared.create_plan()
    cmd = purchase(new_user(), plan_id)
    await shared.send(cmd)
    done = await shared.wait_terminal(cmd.stream_id, cmd.id)
    provider_id = shared.sandbox.payment_id_from_url(done.outcome.confirmation_url)
    await shared.sandbox.apay(provider_id)
    await wait_until(lambda: shared.events(cmd.stream_id, "SubscriptionActivated"), timeout=20, interval=0.1)
    cancels = [envelope(s.CancelSubscription(subscription_id=cmd.data.subscription_id, mode="refund_now"), cmd.stream_id) for _ in range(2)]
    await asyncio.gather(*(shared.send(c) for c in cancels))
    ends = [await shared.wait_terminal(cmd.stream_id, c.id) for c in cancels]
    assert sorted(type(e).__name__ for e in ends) == ["CommandRejected", "CommandSucceeded"]
    refunds = await shared.sandbox.arefunds(payment_id=provider_id)
    assert len(refunds) == 1 and refunds[0]["amount"]["value"] == "289.03"


# --------------------------------------------------------------------------- several instances, dead letters


async def test_two_instances_on_one_group_while_commands_flow(stack: Stack) -> None:
    first, second = stack.process("processor-a", PROCESSOR_CONSUMERS="2"), stack.process("processor-b", PROCESSOR_CONSUMERS="2")
    await first.astart()
    plan_id = await stack.create_plan()
    commands = [purchase(new_user(), plan_id) for _ in range(24)]
    for i, cmd in enumerate(commands):
        await stack.send(cmd)
        if i % 3 == 0:
            await stack.send(cmd)  # duplicates as well
        if i == 8:
            await second.astart()  # a rebalance while commands flow
        if i == 16:
            await asyncio.to_thread(first.kill)  # and a crash
            await first.astart()
    for cmd in commands:
        assert isinstance(await stack.wait_terminal(cmd.stream_id, cmd.id, timeout=60), s.CommandSucceeded)
    for cmd in commands:
        got = await stack.events(cmd.stream_id)
        assert [e.type for e in got].count("CheckoutStarted") == 1
        own_ends = [e for e in got if e.type.startswith("Command") and e.data.command_id == cmd.id]  # type: ignore[attr-defined]
        assert len(own_ends) == 1, [e.type for e in got]
        assert len(await stack.payments_of(cmd.data.subscription_id)) == 1


async def test_a_poison_command_is_dead_lettered_and_marked_failed(shared: Stack) -> None:
    user = new_user()
    cid = uuid.uuid4()
    poison = envelope(s.CancelSubscription(subscription_id=uuid.uuid4(), mode="refund_now"), s.account_stream(user), command_id=cid).to_dict()
    poison["data"]["mode"] = "whenever"  # fails validation every time
    await shared.producer.send_and_wait(shared.settings.commands_topic, value=orjson.dumps(poison), key=user.encode())
    behind = envelope(s.SetAutoRenew(subscription_id=uuid.uuid4(), enabled=False), s.account_stream(user))
    await shared.send(behind)  # the partition moves on
    failed = await shared.wait_terminal(s.account_stream(user), cid)
    assert isinstance(failed, s.CommandFailed) and "not valid" in failed.reason
    assert isinstance(await shared.wait_terminal(behind.stream_id, behind.id), s.CommandRejected)

    consumer = AIOKafkaConsumer(
        shared.settings.commands_dlq_topic,
        bootstrap_servers=shared.settings.kafka_servers,
        auto_offset_reset="earliest",
        group_id=f"dlq-reader-{uuid.uuid4().hex[:6]}",
    )
    await consumer.start()
    try:
        batch = await consumer.getmany(timeout_ms=5000)
        records = [r for rs in batch.values() for r in rs]
    finally:
        await consumer.stop()
    assert any(str(cid).encode() in (r.value or b"") for r in records)
