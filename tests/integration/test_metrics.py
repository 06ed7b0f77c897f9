"""Every worker's /metrics, scraped over HTTP the way Prometheus does, against real Kafka,
PostgreSQL and the YooKassa sandbox: what an operator's dashboard and alerts would show.

* the processor (a real `python -m payment_processor` on PROCESSOR_METRICS_PORT): a plan and a
  purchase count as succeeded commands, the purchase's YooKassa call as a pending create_payment
  with its latency, the unpaid payment as an open operation, a poison record as a dead letter;
* the relay: events nobody publishes show as outbox rows with an age; a real relay process on
  RELAY_METRICS_PORT empties the outbox, then shows 0 rows, the events it published and its lead;
* a consumer loop (in-process, its own MetricsServer): a record stuck in the handler shows as
  lag, and goes away once the handler finishes.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

import schemas as s
from infra.db import create_engine
from infra.kafka import ConsumerLoop, ensure_topics, make_producer
from infra.metrics import MetricsServer, outbox_refresher
from infra.settings import Settings, plain_url
from eventstore.store import EventStore
from tests.support.processes import ManagedProcess, free_port
from tests.support.wait import wait_until

pytestmark = pytest.mark.slow

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(port: int) -> Samples:
    """GET /metrics and index every sample by (name, labels)."""
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(f"http://127.0.0.1:{port}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def envelope(payload: s.Command, stream_id: str, actor: s.Actor | None = None) -> s.Envelope:
    cid = uuid.uuid4()
    meta = s.Metadata(correlation_id=f"metrics-{cid}", command_id=cid, actor=actor or s.Actor(kind="user", id="u"))
    return s.new_envelope(payload, stream_id=stream_id, metadata=meta, id=cid)


# --------------------------------------------------------------------------- the processor


async def test_processor_metrics_show_commands_yookassa_calls_open_payments_and_dead_letters(
    fresh_database: Any, yookassa_sandbox: Any
) -> None:
    suffix = uuid.uuid4().hex[:10]
    base = await asyncio.to_thread(fresh_database, True, "metrics_pp")
    settings = base.model_copy(update={"commands_topic": f"test.commands.{suffix}", "commands_dlq_topic": f"test.commands.dlq.{suffix}"})
    await ensure_topics(settings, {settings.commands_topic: 2, settings.commands_dlq_topic: 1})
    group, metrics_port, health_port = f"metrics-{suffix}", free_port(), free_port()
    proc = ManagedProcess(
        "processor-metrics",
        "payment_processor",
        env={
            "ENVIRONMENT": "test",
            "DATABASE_URL": settings.database_url,
            "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
            "COMMANDS_TOPIC": settings.commands_topic,
            "COMMANDS_DLQ_TOPIC": settings.commands_dlq_topic,
            "PROCESSOR_GROUP_ID": group,
            "PROCESSOR_HEALTH_PORT": str(health_port),
            "PROCESSOR_METRICS_PORT": str(metrics_port),
            "PROCESSOR_MAX_ATTEMPTS": "2",
            "PROCESSOR_SCHEDULER_ENABLED": "false",
            "LOG_FORMAT": "json",
            **yookassa_sandbox.env(),
        },
        ready_url=f"http://127.0.0.1:{health_port}/healthz",
        ready_timeout=60,
    )
    producer = await make_producer(settings)
    engine = create_engine(settings, pool_size=2, application_name="metrics-test")
    store = EventStore(engine)

    async def send(command: s.Envelope, key: str) -> None:
        await producer.send_and_wait(settings.commands_topic, value=command.to_json(), key=key.encode())

    async def ended(command: s.Envelope) -> bool:
        return any(r.type in ("CommandSucceeded", "CommandRejected", "CommandFailed") and r.envelope().data.command_id == command.id
                   for r in await store.read_stream(command.stream_id))

    try:
        await proc.astart()
        before = await scrape(metrics_port)
        assert value(before, "billing_open_operations", kind="payment") == 0

        plan_id = f"p{suffix}"
        plan = envelope(s.CreatePlan(plan_id=plan_id, name="Monthly", price=s.Money(amount="299.00"), period_days=30),
                        s.plan_stream(plan_id), actor=s.Actor(kind="admin", id="op"))
        await send(plan, plan_id)
        await wait_until(lambda: ended(plan), timeout=30, message="the plan is created")
        user = f"user-{suffix}"
        buy = envelope(
            s.PurchaseSubscription(subscription_id=uuid.uuid4(), plan_id=plan_id, customer=s.Customer(email="m@example.com", locale="en")),
            s.account_stream(user),
        )
        await send(buy, user)
        await wait_until(lambda: ended(buy), timeout=30, message="the purchase ends")

        async def counted() -> Samples | None:
            samples = await scrape(metrics_port)
            return samples if value(samples, "billing_commands_total", type="PurchaseSubscription", outcome="succeeded") == 1 else None

        after = await wait_until(counted, timeout=10, message="the purchase is counted")
        assert value(after, "billing_commands_total", type="CreatePlan", outcome="succeeded") == 1
        assert value(after, "billing_provider_calls_total", operation="create_payment", outcome="pending") == 1
        assert value(after, "billing_provider_call_duration_seconds_count", operation="create_payment") == 1
        # the customer has not paid yet: one payment waits for YooKassa's final answer (the
        # table is read again at most every 2 s, however often Prometheus scrapes)
        async def open_payment() -> Samples | None:
            samples = await scrape(metrics_port)
            return samples if value(samples, "billing_open_operations", kind="payment") == 1 else None

        opened = await wait_until(open_payment, timeout=10, interval=0.3, message="the open payment is reported")
        assert (value(opened, "billing_open_operation_oldest_age_seconds", kind="payment") or -1) >= 0
        # the health port serves the same metrics
        assert value(await scrape(health_port), "billing_commands_total", type="CreatePlan", outcome="succeeded") == 1

        # a record no attempt can read is dead-lettered (PROCESSOR_MAX_ATTEMPTS=2) and counted
        await producer.send_and_wait(settings.commands_topic, value=b"not a command", key=user.encode())

        async def dead_lettered() -> Samples | None:
            samples = await scrape(metrics_port)
            found = value(samples, "billing_dead_letters_total", group=group, topic=settings.commands_topic, kind="gave_up")
            return samples if found == 1 else None

        samples = await wait_until(dead_lettered, timeout=30, interval=0.3, message="the poison record is dead-lettered")
        # and once everything is handled and committed, the group is not behind
        async def caught_up() -> bool:
            lags = [v for (name, labels), v in (await scrape(metrics_port)).items()
                    if name == "billing_consumer_lag" and ("group", group) in labels]
            return bool(lags) and all(v == 0 for v in lags)

        await wait_until(caught_up, timeout=15, interval=0.3, message="the processor's lag returns to 0")
        assert value(samples, "billing_consumer_records_handled_total", group=group, consumer="payment-processor-0") >= 2
    finally:
        await asyncio.to_thread(proc.terminate)
        await producer.stop()
        await engine.dispose()


# --------------------------------------------------------------------------- the relay


async def test_relay_metrics_show_a_stuck_outbox_and_its_draining(fresh_database: Any) -> None:
    settings: Settings = await asyncio.to_thread(fresh_database, True, "metrics_relay")
    topic = f"test.events.metrics.{uuid.uuid4().hex[:10]}"
    engine = create_engine(settings, pool_size=2, application_name="metrics-test")
    store = EventStore(engine)
    stream = s.account_stream(f"relay-metrics-{uuid.uuid4().hex[:8]}")
    for n in range(3):
        payload = s.AutoRenewChanged(subscription_id=uuid.uuid4(), enabled=True, reason=f"r{n}")
        await store.append(stream, n, [s.new_envelope(payload, stream_id=stream, metadata=s.Metadata(correlation_id=f"c{n}", actor=s.SYSTEM))])

    # No relay runs: the outbox holds the three events, and they grow older.
    watcher = await MetricsServer(free_port(), host="127.0.0.1", refreshers={"outbox": outbox_refresher(plain_url(settings.database_url))},
                                  refresh_min_s=0).start()
    try:
        async def aged() -> Samples | None:
            samples = await scrape(watcher.port)
            return samples if (value(samples, "billing_outbox_oldest_age_seconds") or 0) > 0.1 else None

        stuck = await wait_until(aged, timeout=10, interval=0.1, message="the outbox's oldest row ages")
        assert value(stuck, "billing_outbox_rows") == 3
    finally:
        await watcher.close()

    port = free_port()
    relay = ManagedProcess(
        "relay-metrics",
        [__import__("sys").executable, "-m", "relay", "--name", "relay-metrics"],
        env={"ENVIRONMENT": "test", "DATABASE_URL": settings.database_url, "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
             "EVENTS_TOPIC": topic, "RELAY_METRICS_PORT": str(port), "LOG_FORMAT": "json"},
        ready_url=f"http://127.0.0.1:{port}/metrics",
        ready_timeout=60,
    )
    try:
        await relay.astart()

        async def drained() -> Samples | None:
            samples = await scrape(port)
            return samples if value(samples, "billing_relay_published_total", relay="relay-metrics") == 3 else None

        await wait_until(drained, timeout=30, interval=0.3, message="the relay publishes the outbox")
        async def emptied() -> Samples | None:  # the gauges refresh at most every 2 s
            samples = await scrape(port)
            return samples if value(samples, "billing_outbox_rows") == 0 else None

        after = await wait_until(emptied, timeout=15, interval=0.5, message="the outbox gauges show it empty")
        assert value(after, "billing_outbox_oldest_age_seconds") == 0
        assert value(after, "billing_relay_leader", relay="relay-metrics") == 1
    finally:
        await asyncio.to_thread(relay.terminate)
        await engine.dispose()


# --------------------------------------------------------------------------- a consumer loop


async def test_consumer_loop_lag_shows_records_stuck_in_the_handler(settings: Settings, unique_topic: Any, unique_group: Any) -> None:
    topic = await unique_topic(partitions=1)
    group = unique_group("metrics-lag")
    release = asyncio.Event()
    handled: list[bytes] = []

    async def handle(record: Any) -> None:
        if record.value == b"slow":
            await release.wait()
        handled.append(record.value)

    producer = await make_producer(settings)
    for body in (b"first", b"slow", b"third", b"fourth"):
        await producer.send_and_wait(topic, value=body)
    loop = ConsumerLoop(settings, topics=[topic], group_id=group, handle=handle, name="metrics-lag")
    server = await MetricsServer(free_port(), host="127.0.0.1").start()
    task = asyncio.create_task(loop.run())
    try:
        async def lag() -> float | None:
            return value(await scrape(server.port), "billing_consumer_lag", group=group, topic=topic, partition="0")

        async def lag_is_zero() -> bool:
            return await lag() == 0

        # "first" is handled but not committed yet (its batch is not finished), "slow" is in the
        # handler: the group is behind by the records from "first" (or "slow") on.
        await wait_until(lambda: handled == [b"first"], timeout=30, message="the first record is handled")
        assert await wait_until(lag, timeout=10, interval=0.2, message="lag is reported") >= 3
        release.set()
        await wait_until(lambda: len(handled) == 4, timeout=10, message="every record handled")
        await wait_until(lag_is_zero, timeout=10, interval=0.2, message="lag returns to 0")
    finally:
        release.set()
        loop.stop()
        await task
        await producer.stop()
        await server.close()
    # a stopped loop is no longer reported
    assert value(await _scrape_once(), "billing_consumer_lag", group=group, topic=topic, partition="0") is None


async def _scrape_once() -> Samples:
    server = await MetricsServer(free_port(), host="127.0.0.1").start()
    try:
        return await scrape(server.port)
    finally:
        await server.close()
