"""Renewal, dunning and expiry end to end: real processes, real Kafka, PostgreSQL and sandboxes.

Each test gets a fresh database (business time is a per-database offset that the tests move with
`infra.clock.shift_time`, so moving it never disturbs anyone else's tests), unique topics, and
its own processes: the payment processor with its scheduler (`BILLING_CLOCK=shiftable`, a 0.2 s
tick), the outbox relay and the notifier. A subscription is bought the real way (a command, the
sandbox's payment page with a card it saves), then time moves forward instead of anyone waiting.
Charges are counted by the YooKassa sandbox's inspection API, emails by the Mailgun sandbox's.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

import schemas as s
from infra.clock import shift_time
from infra.db import create_engine
from infra.kafka import ensure_topics, make_producer
from infra.settings import Settings
from eventstore.store import EventStore
from payment_processor.adapters.schedule import read_rows
from sandbox.yookassa import cards
from tests.support.processes import ManagedProcess, free_port
from tests.support.wait import wait_until

pytestmark = pytest.mark.slow
DAY = timedelta(days=1)
PROCESSOR_ENV = {
    "BILLING_CLOCK": "shiftable",
    "PROCESSOR_SCHEDULER_TICK_S": "0.2",
    "PROCESSOR_RENEWAL_LEAD_S": str(DAY.total_seconds()),
    "PROCESSOR_EXPIRY_REMINDER_LEAD_S": str(3 * DAY.total_seconds()),
    "PROCESSOR_DUNNING_RETRY_DAYS": "1,3",  # three charges in all: the first and two retries
    "PROCESSOR_JANITOR_SCHEDULE_S": "0.5,1,1",
    "PROCESSOR_JANITOR_REPEAT_S": "1",
    "PROCESSOR_JANITOR_TICK_S": "0.2",
    "PROCESSOR_MAX_ATTEMPTS": "3",
    "PROCESSOR_CONSUMERS": "2",
    "YOOKASSA_TIMEOUT_S": "5",
}
NOTIFIER_ENV = {
    "NOTIFIER_HTTP_TIMEOUT_S": "2",
    "NOTIFIER_RETRY_POLL_S": "0.1",
}


@dataclass
class Sub:
    """A paid subscription: who, what, until when, and the card YooKassa saved."""

    user: str
    email: str
    subscription_id: uuid.UUID
    period_end: datetime
    method_id: str

    @property
    def stream(self) -> str:
        return s.account_stream(self.user)


@dataclass
class Stack:
    settings: Settings
    engine: Any
    store: EventStore
    yookassa: Any
    mailgun: Any
    producer: Any
    tmp: Path
    group: str = field(default_factory=lambda: f"processor-{uuid.uuid4().hex[:8]}")
    offset: timedelta = timedelta(0)
    processes: list[ManagedProcess] = field(default_factory=list)

    # ------------------------------------------------------------------ processes

    def _base_env(self) -> dict[str, str]:
        return {
            "ENVIRONMENT": "test",
            "DATABASE_URL": self.settings.database_url,
            "KAFKA_BOOTSTRAP_SERVERS": self.settings.kafka_bootstrap_servers,
            "COMMANDS_TOPIC": self.settings.commands_topic,
            "COMMANDS_DLQ_TOPIC": self.settings.commands_dlq_topic,
            "EVENTS_TOPIC": self.settings.events_topic,
            "EVENTS_DLQ_TOPIC": self.settings.events_dlq_topic,
            "LOG_FORMAT": "json",
        }

    def processor(self, name: str = "processor", **env: str) -> ManagedProcess:
        port = free_port()
        proc = ManagedProcess(
            name,
            "payment_processor",
            env={**self._base_env(), "PROCESSOR_GROUP_ID": self.group, "PROCESSOR_HEALTH_PORT": str(port),
                 **self.yookassa.env(), **PROCESSOR_ENV, **env},
            ready_url=f"http://127.0.0.1:{port}/healthz",
            ready_timeout=60,
        )
        self.processes.append(proc)
        return proc

    def relay(self) -> ManagedProcess:
        name = f"relay-{uuid.uuid4().hex[:6]}"
        proc: ManagedProcess = ManagedProcess(
            name, [sys.executable, "-m", "relay", "--name", name], env=self._base_env(),
            ready_check=lambda: "relay_leader" in proc.tail(400), ready_timeout=60,
        )
        self.processes.append(proc)
        return proc

    def notifier(self) -> ManagedProcess:
        proc: ManagedProcess = ManagedProcess(
            "notifier",
            "notifier",
            env={**self._base_env(), "NOTIFIER_GROUP_ID": f"notifier-{uuid.uuid4().hex[:8]}", **self.mailgun.env(), **NOTIFIER_ENV},
            ready_check=lambda: "partitions_assigned" in proc.tail(400),
            ready_timeout=60,
        )
        self.processes.append(proc)
        return proc

    async def start_all(self, *procs: ManagedProcess) -> None:
        await asyncio.gather(*(p.astart() for p in procs))

    # ------------------------------------------------------------------ commands and events

    async def send(self, envelope: s.Envelope) -> None:
        key = s.account_user_id(envelope.stream_id) or envelope.stream_id.removeprefix("plan-")
        await self.producer.send_and_wait(
            self.settings.commands_topic, value=envelope.to_json(), key=key.encode(),
            headers=[("correlation_id", envelope.metadata.correlation_id.encode())],
        )

    async def events(self, stream_id: str, type_name: str | None = None) -> list[s.Envelope]:
        return [r.envelope() for r in await self.store.read_stream(stream_id) if type_name is None or r.type == type_name]

    async def wait_events(self, stream_id: str, type_name: str, count: int = 1, timeout: float = 30) -> list[s.Envelope]:
        async def enough() -> list[s.Envelope] | None:
            found = await self.events(stream_id, type_name)
            return found if len(found) >= count else None

        return await wait_until(enough, timeout=timeout, interval=0.1, message=f"{count} {type_name} on {stream_id}")

    async def wait_terminal(self, stream_id: str, command_id: uuid.UUID, timeout: float = 30) -> Any:
        async def ended() -> Any:
            for e in await self.events(stream_id):
                if e.type in ("CommandSucceeded", "CommandRejected", "CommandFailed") and e.data.command_id == command_id:  # type: ignore[attr-defined]
                    return e.data
            return None

        return await wait_until(ended, timeout=timeout, interval=0.1, message=f"command {command_id} ends")

    async def schedule_row(self, sub: Sub) -> dict[str, Any]:
        async with self.engine.connect() as conn:
            [found] = [r for r in await read_rows(conn, sub.stream) if r["subscription_id"] == sub.subscription_id]
        return found

    # ------------------------------------------------------------------ time

    def now(self) -> datetime:
        """Business time as the processes see it (they refresh the offset every 0.5 s)."""
        return datetime.now(timezone.utc) + self.offset

    async def move_to(self, moment: datetime) -> None:
        """Move business time forward to `moment` for every process of this stack."""
        delta = moment - self.now()
        assert delta > timedelta(0), f"time only moves forward here ({moment} is before {self.now()})"
        self.offset = await shift_time(self.engine, delta)

    # ------------------------------------------------------------------ the way in

    async def create_plan(self) -> str:
        plan_id = f"p{uuid.uuid4().hex[:12]}"
        cmd = command(s.CreatePlan(plan_id=plan_id, name=f"Plan {plan_id}", price=s.Money(amount="299.00"), period_days=30),
                      s.plan_stream(plan_id), actor=s.Actor(kind="admin", id="op"))
        await self.send(cmd)
        assert isinstance(await self.wait_terminal(cmd.stream_id, cmd.id), s.CommandSucceeded)
        return plan_id

    async def subscribe(self, plan_id: str) -> Sub:
        """Buy, pay on the sandbox's page with a card it saves, and wait until active."""
        user = f"user-{uuid.uuid4().hex[:10]}"
        email = f"{user}@example.com"
        cid = s.derived_id("command", user, uuid.uuid4())
        payload = s.PurchaseSubscription(subscription_id=s.derived_id("subscription", cid), plan_id=plan_id, auto_renew=True,
                                         customer=s.Customer(email=email, locale="en"))
        buy = command(payload, s.account_stream(user), command_id=cid)
        await self.send(buy)
        done = await self.wait_terminal(buy.stream_id, cid)
        assert isinstance(done, s.CommandSucceeded) and done.outcome.confirmation_url, done
        paid = await self.yookassa.apay(self.yookassa.payment_id_from_url(done.outcome.confirmation_url), cards.SUCCESS)
        assert paid["status"] == "succeeded" and paid["payment_method"]["saved"] is True
        [activated] = await self.wait_events(buy.stream_id, "SubscriptionActivated")
        return Sub(user, email, payload.subscription_id, activated.data.period_end, paid["payment_method"]["id"])  # type: ignore[attr-defined]

    # ------------------------------------------------------------------ the sandboxes

    async def renewal_charges(self, sub: Sub) -> dict[str, int]:
        """Renewal payments at YooKassa for `sub`, by status."""
        found = await self.yookassa.apayments({"subscription_id": str(sub.subscription_id), "purpose": "renewal"})
        counts: dict[str, int] = {}
        for p in found:
            counts[p["status"]] = counts.get(p["status"], 0) + 1
        return counts

    async def charges(self, sub: Sub) -> int:
        """Successful charges of any kind for `sub` (the purchase included)."""
        stats = await self.yookassa.astats(by="metadata.subscription_id", metadata={"subscription_id": str(sub.subscription_id)})
        return int(stats["counts"].get(str(sub.subscription_id), 0))

    async def emails(self, sub: Sub, *expected: str, timeout: float = 30) -> list[str]:
        """Wait until the inbox holds every tag in `expected` (with multiplicity); return all tags."""
        async def arrived() -> list[str] | None:
            tags = [t for m in await self.mailgun.amessages(to=sub.email) for t in m["tags"]]
            return tags if all(tags.count(t) >= expected.count(t) for t in expected) else None

        return await wait_until(arrived, timeout=timeout, interval=0.1, message=f"emails {expected} to {sub.email}")


def command(payload: s.Command, stream_id: str, *, command_id: uuid.UUID | None = None, actor: s.Actor | None = None) -> s.Envelope:
    cid = command_id or uuid.uuid4()
    user = s.account_user_id(stream_id) or "op"
    meta = s.Metadata(correlation_id=f"renewal-e2e-{cid}", command_id=cid, actor=actor or s.Actor(kind="user", id=user))
    return s.new_envelope(payload, stream_id=stream_id, metadata=meta, id=cid)


@pytest.fixture
async def stack(fresh_database: Any, yookassa_sandbox: Any, mailgun_sandbox: Any, tmp_path: Path) -> AsyncIterator[Stack]:
    suffix = uuid.uuid4().hex[:10]
    db = await asyncio.to_thread(fresh_database, True, "renewal_e2e")
    settings = db.model_copy(update={
        "commands_topic": f"test.commands.{suffix}", "commands_dlq_topic": f"test.commands.dlq.{suffix}",
        "events_topic": f"test.events.{suffix}", "events_dlq_topic": f"test.events.dlq.{suffix}",
    })
    await ensure_topics(settings, {settings.commands_topic: 4, settings.commands_dlq_topic: 1,
                                   settings.events_topic: 4, settings.events_dlq_topic: 1})
    producer = await make_producer(settings)
    engine = create_engine(settings, pool_size=4, application_name="renewal-e2e")
    st = Stack(settings, engine, EventStore(engine), yookassa_sandbox, mailgun_sandbox, producer, tmp_path)
    try:
        yield st
    finally:
        for proc in st.processes:
            await asyncio.to_thread(proc.kill)
        await producer.stop()
        await engine.dispose()


@pytest.fixture
async def full(stack: Stack) -> Stack:
    """The stack with a processor (and scheduler), the relay and the notifier running."""
    await stack.start_all(stack.processor(), stack.relay(), stack.notifier())
    return stack


# --------------------------------------------------------------------------- renewal and dunning


async def test_renewal_succeeds_from_the_old_end_with_one_charge_and_one_email(full: Stack) -> None:
    sub = await full.subscribe(await full.create_plan())
    await full.emails(sub, "purchase_succeeded")
    await full.move_to(sub.period_end - timedelta(hours=12))  # inside the 1-day renewal lead

    [renewed] = await full.wait_events(sub.stream, "SubscriptionRenewed")
    assert (renewed.data.period_start, renewed.data.period_end) == (sub.period_end, sub.period_end + 30 * DAY)  # type: ignore[attr-defined]
    [started] = await full.events(sub.stream, "RenewalStarted")
    assert started.metadata.actor == s.Actor(kind="system", id="scheduler")
    assert started.metadata.command_id == s.derived_id("renewal", sub.subscription_id, sub.period_end.isoformat(), 1)
    assert started.data.payment_method_id == sub.method_id  # type: ignore[attr-defined]

    assert await full.renewal_charges(sub) == {"succeeded": 1}
    assert await full.charges(sub) == 2  # the purchase and one renewal
    tags = await full.emails(sub, "purchase_succeeded", "renewal_succeeded")
    assert sorted(tags) == ["purchase_succeeded", "renewal_succeeded"]
    row = await full.schedule_row(sub)
    assert (row["status"], row["period_end"], row["renewal_attempts"]) == ("active", sub.period_end + 30 * DAY, 0)


async def test_a_declined_renewal_goes_past_due_and_the_second_try_succeeds(full: Stack) -> None:
    sub = await full.subscribe(await full.create_plan())
    await full.yookassa.aset_method_behaviour(sub.method_id, "insufficient_funds")
    await full.move_to(sub.period_end - timedelta(hours=12))

    [failed] = await full.wait_events(sub.stream, "RenewalFailed")
    data = failed.data
    assert isinstance(data, s.RenewalFailed)
    assert (data.attempt, data.reason, data.final) == (1, "insufficient_funds", False)
    assert data.next_retry_at is not None and data.access_until == data.next_retry_at
    row = await full.schedule_row(sub)
    assert (row["status"], row["renewal_attempts"], row["next_retry_at"]) == ("past_due", 1, data.next_retry_at)
    assert await full.renewal_charges(sub) == {"canceled": 1}
    await full.emails(sub, "renewal_failed")
    [mail] = [m for m in await full.mailgun.amessages(to=sub.email) if m["tags"] == ["renewal_failed"]]
    assert "Next attempt:" in mail["text"] and "not enough funds" in mail["text"]  # what happens next, and why

    await full.yookassa.aset_method_behaviour(sub.method_id, None)  # the customer topped up the card
    await full.move_to(data.next_retry_at + timedelta(minutes=1))
    [renewed] = await full.wait_events(sub.stream, "SubscriptionRenewed")
    assert renewed.data.period_start == sub.period_end  # type: ignore[attr-defined]  # from the old end, not from the retry
    started = await full.events(sub.stream, "RenewalStarted")
    assert [e.data.attempt for e in started] == [1, 2]  # type: ignore[attr-defined]
    assert (await full.schedule_row(sub))["status"] == "active"

    assert await full.renewal_charges(sub) == {"canceled": 1, "succeeded": 1}
    assert await full.charges(sub) == 2
    tags = await full.emails(sub, "renewal_failed", "renewal_succeeded")
    assert sorted(t for t in tags if t.startswith("renewal")) == ["renewal_failed", "renewal_succeeded"]


async def test_every_retry_declines_then_the_subscription_expires(full: Stack) -> None:
    sub = await full.subscribe(await full.create_plan())
    await full.yookassa.aset_method_behaviour(sub.method_id, "card_expired")
    await full.move_to(sub.period_end - timedelta(hours=12))
    for attempt in (1, 2, 3):  # PROCESSOR_DUNNING_RETRY_DAYS=1,3: the first charge and two retries
        failures = await full.wait_events(sub.stream, "RenewalFailed", attempt)
        last = failures[-1].data
        assert isinstance(last, s.RenewalFailed) and last.attempt == attempt
        await full.emails(sub, *["renewal_failed"] * attempt)
        if attempt < 3:
            assert not last.final and last.next_retry_at is not None
            assert (await full.schedule_row(sub))["status"] == "past_due"  # access kept meanwhile
            await full.move_to(last.next_retry_at + timedelta(minutes=1))
    assert last.final and last.next_retry_at is None

    [expired] = await full.wait_events(sub.stream, "SubscriptionExpired")
    assert expired.data.reason == "dunning_exhausted"  # type: ignore[attr-defined]
    assert expired.metadata.command_id == s.derived_id("expiry", sub.subscription_id, sub.period_end.isoformat())
    assert (await full.schedule_row(sub))["status"] == "expired"
    assert await full.renewal_charges(sub) == {"canceled": 3}
    assert await full.charges(sub) == 1  # only the purchase
    tags = await full.emails(sub, "renewal_failed", "renewal_failed", "renewal_failed", "subscription_expired")
    assert sorted(tags) == ["purchase_succeeded", "renewal_failed", "renewal_failed", "renewal_failed", "subscription_expired"]
    texts = [m["text"] for m in await full.mailgun.amessages(to=sub.email) if m["tags"] == ["renewal_failed"]]
    assert sum("Next attempt:" in x for x in texts) == 2 and sum("That was the last attempt" in x for x in texts) == 1


async def test_auto_renew_off_reminds_then_expires_at_the_period_end_without_a_charge(full: Stack) -> None:
    sub = await full.subscribe(await full.create_plan())
    off = command(s.SetAutoRenew(subscription_id=sub.subscription_id, enabled=False), sub.stream)
    await full.send(off)
    assert isinstance(await full.wait_terminal(sub.stream, off.id), s.CommandSucceeded)

    await full.move_to(sub.period_end - 2 * DAY)  # inside the 3-day reminder lead
    [soon] = await full.wait_events(sub.stream, "SubscriptionExpiringSoon")
    assert (soon.data.period_end, soon.data.auto_renew) == (sub.period_end, False)  # type: ignore[attr-defined]
    await full.emails(sub, "expiring_soon")
    assert await full.events(sub.stream, "SubscriptionExpired") == []  # not before the end

    await full.move_to(sub.period_end + timedelta(minutes=1))
    [expired] = await full.wait_events(sub.stream, "SubscriptionExpired")
    assert expired.data.reason == "auto_renew_off"  # type: ignore[attr-defined]
    assert await full.events(sub.stream, "RenewalStarted") == []
    assert await full.renewal_charges(sub) == {}
    assert await full.charges(sub) == 1
    tags = await full.emails(sub, "auto_renew_off", "expiring_soon", "subscription_expired")
    assert sorted(tags) == ["auto_renew_off", "expiring_soon", "purchase_succeeded", "subscription_expired"]


# --------------------------------------------------------------------------- never charge one period twice


async def test_two_schedulers_at_once_charge_each_period_once(stack: Stack) -> None:
    first, second = stack.processor("processor-a"), stack.processor("processor-b")
    await stack.start_all(first, second)
    plan_id = await stack.create_plan()
    subs = await asyncio.gather(*(stack.subscribe(plan_id) for _ in range(6)))
    await stack.move_to(max(sub.period_end for sub in subs) - timedelta(hours=12))
    for sub in subs:
        [renewed] = await stack.wait_events(sub.stream, "SubscriptionRenewed")
        assert renewed.data.period_start == sub.period_end  # type: ignore[attr-defined]
    published = [line for proc in (first, second) for line in proc.tail(100_000).splitlines() if '"scheduled_command"' in line]
    assert len(published) >= len(subs) and all('"scheduler_started"' in proc.tail(100_000) for proc in (first, second))

    # Whatever else publishes the same renewal (a third scheduler, one restarted before its
    # marks committed, a retry) produces the same command id: handled once, charged once.
    markers = []
    for sub in subs:
        cid = s.derived_id("renewal", sub.subscription_id, sub.period_end.isoformat(), 1)
        again = command(s.RenewSubscription(subscription_id=sub.subscription_id, period_end=sub.period_end), sub.stream,
                        command_id=cid, actor=s.Actor(kind="system", id="scheduler"))
        await asyncio.gather(stack.send(again), stack.send(again))
        marker = command(s.SetAutoRenew(subscription_id=sub.subscription_id, enabled=True), sub.stream)
        await stack.send(marker)  # behind the duplicates in the account's partition
        markers.append((sub, marker))
    for sub, marker in markers:
        assert isinstance(await stack.wait_terminal(sub.stream, marker.id), s.CommandSucceeded)
        assert await stack.renewal_charges(sub) == {"succeeded": 1}
        assert await stack.charges(sub) == 2
        assert len(await stack.events(sub.stream, "RenewalStarted")) == 1
        ends = [e for e in await stack.events(sub.stream) if e.type.startswith("Command") and e.data.command_id == renewed_id(sub)]  # type: ignore[attr-defined]
        assert len(ends) == 1


def renewed_id(sub: Sub) -> uuid.UUID:
    return s.derived_id("renewal", sub.subscription_id, sub.period_end.isoformat(), 1)


@pytest.mark.parametrize("point, charged_at_crash", [("before_create_payment", 0), ("after_create_payment", 1)])
async def test_a_processor_killed_mid_renewal_charges_the_period_once_after_restart(stack: Stack, point: str, charged_at_crash: int) -> None:
    # The crash point fires only while the once-file is absent: present during the purchase
    # (whose payment create is the same step), removed to arm it for the renewal.
    once = stack.tmp / f"crash-{uuid.uuid4().hex[:6]}"
    once.write_text("disarmed")
    crashing = stack.processor(
        "processor-crashing", BILLING_CRASH_AT=point, BILLING_CRASH_ONCE_FILE=str(once), PROCESSOR_SESSION_TIMEOUT_MS="6000"
    )
    await crashing.astart()
    sub = await stack.subscribe(await stack.create_plan())
    once.unlink()
    await stack.move_to(sub.period_end - timedelta(hours=12))
    await wait_until(lambda: not crashing.running, timeout=30, message="the processor kills itself mid-renewal")
    assert crashing.returncode == -9 and once.exists()
    assert [e.type for e in await stack.events(sub.stream, "RenewalStarted")] == ["RenewalStarted"]
    assert await stack.events(sub.stream, "SubscriptionRenewed") == []
    assert sum((await stack.renewal_charges(sub)).values()) == charged_at_crash

    await crashing.astart()  # the same environment; the once-file keeps it from crashing again
    [renewed] = await stack.wait_events(sub.stream, "SubscriptionRenewed", timeout=60)
    assert renewed.data.period_start == sub.period_end  # type: ignore[attr-defined]
    assert await stack.renewal_charges(sub) == {"succeeded": 1}
    assert await stack.charges(sub) == 2
    async with stack.engine.connect() as conn:
        ended = (await conn.execute(
            text("SELECT count(*) FROM eventstore.handled_commands WHERE command_id = :c"),
            {"c": s.derived_id("renewal", sub.subscription_id, sub.period_end.isoformat(), 1)},
        )).scalar_one()
    assert ended == 1
