"""`billing status` and `billing dlq` as an operator runs them: the real console script, real Kafka
topics, a real PostgreSQL database (issue 17).

Each test gets a fresh database and scratch topics (passed to the CLI through the same variables
the services read), a record dead-lettered by the real `ConsumerLoop`, and events waiting in the
outbox of a database no relay serves — so the numbers the CLI prints are known exactly.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

import schemas as s
from infra.db import create_engine
from infra.kafka import ConsumerLoop, make_producer
from infra.settings import Settings
from eventstore.store import EventStore
from tests.support.processes import ROOT
from tests.support.wait import wait_until

pytestmark = pytest.mark.timeout(180)

BILLING = Path(sys.executable).with_name("billing")


class Scratch:
    """A fresh database and four unique topics, and the CLI pointed at them."""

    def __init__(self, settings: Settings, tag: str) -> None:
        self.tag = tag
        self.topics = {
            "COMMANDS_TOPIC": f"{tag}.commands", "EVENTS_TOPIC": f"{tag}.events",
            "COMMANDS_DLQ_TOPIC": f"{tag}.commands.dlq", "EVENTS_DLQ_TOPIC": f"{tag}.events.dlq",
        }
        self.group = f"{tag}-processor"
        self.settings = Settings(**{**settings.model_dump(), "commands_topic": self.topics["COMMANDS_TOPIC"],
                                    "events_topic": self.topics["EVENTS_TOPIC"],
                                    "commands_dlq_topic": self.topics["COMMANDS_DLQ_TOPIC"],
                                    "events_dlq_topic": self.topics["EVENTS_DLQ_TOPIC"]})

    def env(self) -> dict[str, str]:
        keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "VIRTUAL_ENV")
        return {
            **{k: v for k, v in os.environ.items() if k in keep},
            "ENVIRONMENT": "test", "LOG_FORMAT": "json", "BILLING_CLOCK": "system",
            "DATABASE_URL": self.settings.database_url, "KAFKA_BOOTSTRAP_SERVERS": self.settings.kafka_bootstrap_servers,
            "PROCESSOR_GROUP_ID": self.group, "PROJECTOR_GROUP_ID": f"{self.tag}-projector", "NOTIFIER_GROUP_ID": f"{self.tag}-notifier",
            **self.topics,
        }

    def billing(self, *args: str, stdin: int | None = subprocess.DEVNULL) -> subprocess.CompletedProcess[str]:
        """Run the console script as an operator's script would: no terminal on stdin."""
        return subprocess.run([str(BILLING), *args], cwd=ROOT, env=self.env(), stdin=stdin, capture_output=True,
                              text=True, timeout=60)

    def json(self, *args: str) -> object:
        result = self.billing(*args, "--json")
        assert result.returncode == 0, result.stdout + result.stderr
        return orjson.loads(result.stdout)


@pytest.fixture
async def scratch(settings, fresh_database) -> Scratch:
    from infra.kafka import ensure_topics

    db = fresh_database(migrate=True)
    box = Scratch(db, f"clitest.{uuid.uuid4().hex[:10]}")
    await ensure_topics(box.settings, {box.topics["COMMANDS_TOPIC"]: 2, box.topics["EVENTS_TOPIC"]: 2,
                                       box.topics["COMMANDS_DLQ_TOPIC"]: 1, box.topics["EVENTS_DLQ_TOPIC"]: 1})
    return box


async def dead_letter_one(box: Scratch, key: bytes, value: bytes, correlation_id: str) -> None:
    """Publish a command and let the real ConsumerLoop give up on it (the handler always fails)."""
    producer = await make_producer(box.settings)
    try:
        await producer.send_and_wait(box.topics["COMMANDS_TOPIC"], value=value, key=key,
                                     headers=[("correlation_id", correlation_id.encode())])
    finally:
        await producer.stop()

    async def refuse(record: object) -> None:
        raise RuntimeError("card vault unreachable")

    loop = ConsumerLoop(box.settings, topics=[box.topics["COMMANDS_TOPIC"]], group_id=box.group, handle=refuse,
                        name="cli-test", max_attempts=2, retry_backoff_s=0.01,
                        dead_letter_topic=box.topics["COMMANDS_DLQ_TOPIC"])
    task = asyncio.create_task(loop.run())
    try:
        await wait_until(lambda: loop.dead_lettered == 1 or task.done(), timeout=60, message="the dead letter")
    finally:
        loop.stop()
        await task  # commits the dead-lettered record


async def read_topic(settings: Settings, topic: str, partitions_count: int = 2) -> list:
    """Every record of a scratch topic (the commands topic has 2 partitions)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_servers, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(partitions_count)]
        ends = await consumer.end_offsets(partitions)
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        records = []
        while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                records += batch
        return records
    finally:
        await consumer.stop()


async def test_dlq_list_show_and_replay_put_the_record_back_with_its_key(scratch: Scratch):
    key, value, correlation_id = b"user-42", b'{"type": "CancelSubscription", "broken": true}', f"corr-{uuid.uuid4().hex[:8]}"
    await dead_letter_one(scratch, key, value, correlation_id)

    listed = scratch.json("dlq", "list", "--topic", "commands")
    assert len(listed) == 1
    assert listed[0]["offset"] == 0 and listed[0]["key"] == "user-42"
    assert "card vault unreachable" in listed[0]["reason"]
    assert listed[0]["original_topic"] == scratch.topics["COMMANDS_TOPIC"] and listed[0]["consumer_group"] == scratch.group

    human = scratch.billing("dlq", "list", "--topic", "commands")
    assert human.returncode == 0 and "card vault unreachable" in human.stdout, human.stdout + human.stderr

    shown = scratch.billing("dlq", "show", "0", "--topic", "commands")
    assert shown.returncode == 0, shown.stderr
    record = orjson.loads(shown.stdout)
    headers = {h["key"]: h["value"] for h in record["headers"]}
    assert record["value"] == value.decode() and record["key"] == "user-42"
    assert "card vault unreachable" in headers["dlq_reason"] and headers["dlq_attempts"] == "2"
    assert headers["correlation_id"] == correlation_id
    assert scratch.billing("dlq", "show", "7", "--topic", "commands").returncode == 1  # no such offset

    # No terminal and no --yes: refused, nothing published.
    refused = scratch.billing("dlq", "replay", "0", "--topic", "commands")
    assert refused.returncode == 2 and "--yes" in refused.stderr
    assert len(await read_topic(scratch.settings, scratch.topics["COMMANDS_TOPIC"])) == 1

    replayed = scratch.billing("dlq", "replay", "0", "--topic", "commands", "--yes")
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    records = await read_topic(scratch.settings, scratch.topics["COMMANDS_TOPIC"])
    assert len(records) == 2
    first, again = sorted(records, key=lambda r: r.timestamp)
    assert again.key == key and again.value == value and again.partition == first.partition  # same key, same partition
    again_headers = {k: v.decode() for k, v in again.headers}
    assert again_headers["correlation_id"] == correlation_id
    assert again_headers["replayed_from_dlq"] == f"{scratch.topics['COMMANDS_DLQ_TOPIC']}/0/0"
    assert "dlq_reason" not in again_headers  # the failure is history, not part of the command

    # The replayed record waits for the group: status shows it as lag, and the dead letter stays counted.
    report = scratch.json("status")
    group = next(g for g in report["consumer_groups"] if g["group"] == scratch.group)
    assert group["lag"] == 1 and group["committed"]
    assert report["dlq"]["commands"] == {"topic": scratch.topics["COMMANDS_DLQ_TOPIC"], "exists": True, "records": 1}


async def test_replay_all_asks_and_can_be_told_yes(scratch: Scratch):
    for n in range(2):
        await dead_letter_one(scratch, f"user-{n}".encode(), b"{}", f"c{n}")
    assert scratch.billing("dlq", "replay", "--all", "--topic", "commands").returncode == 2
    assert scratch.billing("dlq", "replay", "--topic", "commands", "--yes").returncode == 2  # neither OFFSET nor --all
    done = scratch.billing("dlq", "replay", "--all", "--topic", "commands", "--yes")
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("replayed ") == 2
    keys = sorted(r.key for r in await read_topic(scratch.settings, scratch.topics["COMMANDS_TOPIC"]))
    assert keys == [b"user-0", b"user-0", b"user-1", b"user-1"]


async def test_status_reports_outbox_backlog_dlq_and_the_janitors_tick(scratch: Scratch):
    from infra.clock import SystemClock
    from payment_processor.config import ProcessorSettings
    from payment_processor.entrypoints.janitor import Janitor

    empty = scratch.json("status")
    assert empty["errors"] == {}
    assert empty["outbox"]["rows"] == 0 and empty["outbox"]["oldest_age_s"] is None
    assert empty["dlq"]["commands"]["records"] == 0 and empty["dlq"]["events"]["records"] == 0
    assert empty["open_operations"]["count"] == 0
    assert empty["ticks"]["janitor"]["at"] is None

    # Three events committed, no relay running: they wait in the outbox.
    engine = create_engine(scratch.settings, pool_size=2)
    try:
        stream = s.account_stream(f"cli-{uuid.uuid4()}")
        events = [s.new_envelope(s.AutoRenewChanged(subscription_id=uuid.uuid4(), enabled=bool(n % 2), reason="cli"),
                                 stream_id=stream, metadata=s.Metadata(correlation_id="cli", actor=s.SYSTEM)) for n in range(3)]
        await EventStore(engine).append(stream, 0, events)
        producer = await make_producer(scratch.settings)
        janitor = Janitor(engine=engine, producer=producer, commands_topic=scratch.topics["COMMANDS_TOPIC"], clock=SystemClock(),
                          config=ProcessorSettings(_env_file=None, janitor_tick_s=0.1))  # type: ignore[call-arg]
        task = asyncio.create_task(janitor.run())
        try:
            await wait_until(lambda: scratch.json("status")["ticks"]["janitor"]["at"], timeout=30, message="the janitor's tick")
        finally:
            janitor.stop()
            await task
            await producer.stop()
    finally:
        await engine.dispose()
    await dead_letter_one(scratch, b"user-1", b"{}", "c1")

    report = scratch.json("status")
    assert report["outbox"]["rows"] == 3 and report["outbox"]["oldest_age_s"] >= 0
    assert report["dlq"]["commands"]["records"] == 1
    assert 0 <= report["ticks"]["janitor"]["age_s"] < 60 and str(os.getpid()) in report["ticks"]["janitor"]["by"]

    human = scratch.billing("status")
    assert human.returncode == 0, human.stderr
    lines = {line.split("│")[1].strip(): line for line in human.stdout.splitlines() if line.count("│") >= 3}
    assert lines["outbox backlog"].split("│")[2].strip() == "3"
    assert lines["dlq commands"].split("│")[2].strip() == "1"


def test_status_says_which_part_is_unreachable(scratch: Scratch):
    """A broker that does not answer: exit 1, the database's numbers still shown, Kafka named."""
    env_port = "127.0.0.1:1"  # nothing listens on port 1
    result = subprocess.run([str(BILLING), "status", "--json"], cwd=ROOT, env={**scratch.env(), "KAFKA_BOOTSTRAP_SERVERS": env_port},
                            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=90)
    assert result.returncode == 1, result.stdout + result.stderr
    report = orjson.loads(result.stdout)
    assert "kafka" in report["errors"] and report["outbox"]["rows"] == 0
