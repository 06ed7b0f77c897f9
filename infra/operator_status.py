"""What `billing status` and `billing dlq` read: the few numbers an operator checks first.

Everything here only reads (except `replay_dead_letters`, which only appends to a topic), from
the same PostgreSQL and Kafka the services use, by SQL and Kafka's own offsets — no service has
to be up for it to answer. Each section of the status fails on its own: a broker that does not
answer leaves the database's numbers visible, and the other way round.

- outbox backlog: rows of `eventstore.outbox` (committed events the relay has not published yet)
  and the age of the oldest one;
- consumer lag: for every consumer group with offsets on the commands or events topic (plus the
  groups named in `PROCESSOR_GROUP_ID` / `PROJECTOR_GROUP_ID` / `NOTIFIER_GROUP_ID`, or their
  defaults, even before they commit), end offset − committed offset per partition;
- open operations: payments and refunds whose final YooKassa answer we do not have
  (`processor.open_operations`), how many and since when;
- dead-letter topics: records in each (end − beginning offsets);
- ticks: when the janitor and the scheduler last finished a tick (`processor.ticks`).
"""

from __future__ import annotations

import asyncio
import base64
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import ConsumerRecord

from infra.settings import Settings, plain_url

KAFKA_TIMEOUT_MS = 10_000
# Dead-letter headers that describe the failure (infra.kafka.ConsumerLoop, notifier's DeadLetters);
# a replayed record drops them and gets `replayed_from_dlq` / `replayed_at` instead.
FAILURE_HEADERS = frozenset({
    "dlq_reason", "dlq_kind", "dlq_original_topic", "dlq_original_partition", "dlq_original_offset",
    "dlq_consumer_group", "dlq_attempts", "dlq_failed_at",
})


def expected_groups() -> list[str]:
    """Our services' consumer groups as configured in this environment (their defaults otherwise)."""
    return [
        os.environ.get("PROCESSOR_GROUP_ID", "payment-processor"),
        os.environ.get("PROJECTOR_GROUP_ID", "billing-projector"),
        os.environ.get("NOTIFIER_GROUP_ID", "notifier"),
    ]


def dlq_topics(settings: Settings) -> dict[str, str]:
    """`{"commands": dead-letter topic, "events": ...}`."""
    return {"commands": settings.commands_dlq_topic, "events": settings.events_dlq_topic}


def source_topic_of(settings: Settings, dlq_topic: str) -> str:
    """Where a dead letter without a `dlq_original_topic` header came from."""
    return settings.commands_topic if dlq_topic == settings.commands_dlq_topic else settings.events_topic


# ---------------------------------------------------------------------------------------- database


async def database_status(settings: Settings) -> dict[str, Any]:
    """Outbox backlog, open operations and ticks, from one connection."""
    conn = await asyncpg.connect(plain_url(settings.database_url), timeout=10)
    try:
        now: datetime = await conn.fetchval("SELECT now()")
        row = await conn.fetchrow(
            "SELECT count(*) AS rows, min(e.recorded_at) AS oldest"
            " FROM eventstore.outbox o JOIN eventstore.events e ON e.position = o.position"
        )
        outbox = {"rows": row["rows"], "oldest_recorded_at": _iso(row["oldest"]), "oldest_age_s": _age(now, row["oldest"])}
        operations: dict[str, Any] = {"available": False}
        ticks: dict[str, Any] = {}
        if await conn.fetchval("SELECT to_regclass('processor.open_operations') IS NOT NULL"):
            # opened_at is business time: with a shifted development clock, ages count from the shifted now.
            offset = 0.0
            if await conn.fetchval("SELECT to_regclass('eventstore.clock_offset') IS NOT NULL"):
                offset = await conn.fetchval("SELECT offset_seconds FROM eventstore.clock_offset WHERE id = 1") or 0.0
            business_now = await conn.fetchval("SELECT now() + make_interval(secs => $1)", float(offset))
            row = await conn.fetchrow(
                "SELECT count(*) AS count, min(opened_at) AS oldest, max(checks) AS max_checks,"
                " max(last_checked_at) AS last_checked FROM processor.open_operations"
            )
            by_kind = {r["kind"]: r["count"] for r in await conn.fetch(
                "SELECT kind, count(*) AS count FROM processor.open_operations GROUP BY kind")}
            operations = {
                "available": True, "count": row["count"], "by_kind": by_kind,
                "oldest_opened_at": _iso(row["oldest"]), "oldest_age_s": _age(business_now, row["oldest"]),
                "max_checks": row["max_checks"], "last_checked_at": _iso(row["last_checked"]),
            }
        if await conn.fetchval("SELECT to_regclass('processor.ticks') IS NOT NULL"):
            for r in await conn.fetch("SELECT name, ticked_at, ticked_by FROM processor.ticks ORDER BY name"):
                ticks[r["name"]] = {"at": _iso(r["ticked_at"]), "age_s": _age(now, r["ticked_at"]), "by": r["ticked_by"]}
        for name in ("janitor", "scheduler"):
            ticks.setdefault(name, {"at": None, "age_s": None, "by": None})
        return {"outbox": outbox, "open_operations": operations, "ticks": ticks}
    finally:
        await conn.close()


# ------------------------------------------------------------------------------------------- kafka


@dataclass
class KafkaClients:
    """A group-less consumer (offsets, reads) and an admin client (groups), started together."""

    settings: Settings
    consumer: AIOKafkaConsumer = field(init=False)
    admin: AIOKafkaAdminClient = field(init=False)

    async def __aenter__(self) -> KafkaClients:
        servers = self.settings.kafka_servers
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=servers, enable_auto_commit=False, client_id="billing-cli",
            request_timeout_ms=KAFKA_TIMEOUT_MS, isolation_level="read_committed",
        )
        self.admin = AIOKafkaAdminClient(bootstrap_servers=servers, request_timeout_ms=KAFKA_TIMEOUT_MS, client_id="billing-cli")
        try:
            await asyncio.wait_for(self.consumer.start(), KAFKA_TIMEOUT_MS / 1000)
            await asyncio.wait_for(self.admin.start(), KAFKA_TIMEOUT_MS / 1000)
        except BaseException:
            await self.__aexit__()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()
        await self.admin.close()

    async def partitions(self, topic: str) -> list[TopicPartition]:
        """The topic's partitions ([] when it does not exist)."""
        [described] = await self.admin.describe_topics([topic])
        if described["error_code"] != 0:  # 3: no such topic (yet)
            return []
        return [TopicPartition(topic, p["partition"]) for p in sorted(described["partitions"], key=lambda p: p["partition"])]

    async def bounds(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, tuple[int, int]]:
        """(beginning, end) offsets of each partition."""
        if not partitions:
            return {}
        begin = await self.consumer.beginning_offsets(list(partitions))
        end = await self.consumer.end_offsets(list(partitions))
        return {tp: (begin[tp], end[tp]) for tp in partitions}


async def kafka_status(settings: Settings, groups: Iterable[str] = ()) -> dict[str, Any]:
    """Consumer lag of our groups and the size of both dead-letter topics."""
    async with KafkaClients(settings) as kafka:
        ours = [settings.commands_topic, settings.events_topic]
        ends: dict[TopicPartition, int] = {}
        for topic in ours:
            ends.update({tp: end for tp, (_, end) in (await kafka.bounds(await kafka.partitions(topic))).items()})
        wanted = list(dict.fromkeys([*expected_groups(), *groups]))
        listed = [g[0] for g in await kafka.admin.list_consumer_groups()]
        report = []
        for group in dict.fromkeys([*wanted, *listed]):
            committed = await kafka.admin.list_consumer_group_offsets(group)
            on_ours = {tp: meta.offset for tp, meta in committed.items() if tp.topic in ours}
            if not on_ours and group not in wanted:
                continue  # somebody else's group (tests, benchmarks, other products)
            topics = sorted({tp.topic for tp in on_ours}) or ours
            partitions = []
            for tp in sorted((tp for tp in ends if tp.topic in topics), key=lambda t: (t.topic, t.partition)):
                offset = on_ours.get(tp)
                position = offset if offset is not None and offset >= 0 else 0
                partitions.append({"topic": tp.topic, "partition": tp.partition, "committed": offset,
                                   "end": ends[tp], "lag": max(0, ends[tp] - position)})
            report.append({
                "group": group, "committed": bool(on_ours), "lag": sum(p["lag"] for p in partitions), "partitions": partitions,
            })
        dlq = {}
        for kind, topic in dlq_topics(settings).items():
            bounds = await kafka.bounds(await kafka.partitions(topic))
            dlq[kind] = {"topic": topic, "exists": bool(bounds), "records": sum(end - begin for begin, end in bounds.values())}
        return {"consumer_groups": report, "dlq": dlq}


async def status(settings: Settings, groups: Iterable[str] = ()) -> dict[str, Any]:
    """The whole report; a section that could not be read says why under `errors`."""
    report: dict[str, Any] = {"checked_at": datetime.now(UTC).isoformat(), "errors": {}}
    db, kafka = await asyncio.gather(database_status(settings), kafka_status(settings, groups), return_exceptions=True)
    if isinstance(db, BaseException):
        report["errors"]["postgresql"] = repr(db)
    else:
        report.update(db)
    if isinstance(kafka, BaseException):
        report["errors"]["kafka"] = repr(kafka)
    else:
        report.update(kafka)
    return report


# --------------------------------------------------------------------------------------- dead letters


@dataclass(frozen=True)
class DeadLetter:
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]

    @classmethod
    def of(cls, record: ConsumerRecord) -> DeadLetter:
        return cls(record.topic, record.partition, record.offset, record.timestamp, record.key, record.value,
                   tuple(record.headers or ()))

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value.decode("utf-8", "replace") if value is not None else None
        return None

    def as_dict(self, *, full: bool = False) -> dict[str, Any]:
        """JSON-friendly; `full` adds the value and every header."""
        data: dict[str, Any] = {
            "topic": self.topic, "partition": self.partition, "offset": self.offset,
            "key": _text(self.key), "failed_at": self.header("dlq_failed_at"), "reason": self.header("dlq_reason"),
            "original_topic": self.header("dlq_original_topic"), "consumer_group": self.header("dlq_consumer_group"),
            "kind": self.header("dlq_kind"), "replayed_from_dlq": self.header("replayed_from_dlq"),
        }
        if full:
            data["timestamp"] = datetime.fromtimestamp(self.timestamp_ms / 1000, UTC).isoformat()
            data["headers"] = [{"key": k, "value": _text(v)} for k, v in self.headers]
            data["value"] = _text(self.value)
        return data


async def read_dead_letters(
    settings: Settings, topic: str, *, partition: int | None = None, offset: int | None = None, last: int | None = None
) -> list[DeadLetter]:
    """Records of a dead-letter topic in offset order: the one at `offset`, else the `last` newest
    of each partition (all of them without `last`)."""
    async with KafkaClients(settings) as kafka:
        partitions = [tp for tp in await kafka.partitions(topic) if partition is None or tp.partition == partition]
        wanted: dict[TopicPartition, tuple[int, int]] = {}
        for tp, (begin, end) in (await kafka.bounds(partitions)).items():
            if offset is not None:
                if begin <= offset < end:
                    wanted[tp] = (offset, offset + 1)
            elif end > begin:
                wanted[tp] = (max(begin, end - last) if last is not None else begin, end)
        if not wanted:
            return []
        consumer = kafka.consumer
        consumer.assign(list(wanted))
        for tp, (start, _) in wanted.items():
            consumer.seek(tp, start)
        found: list[DeadLetter] = []
        remaining = dict(wanted)
        deadline = asyncio.get_running_loop().time() + KAFKA_TIMEOUT_MS / 1000
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=500)
            for tp, records in batch.items():
                found += [DeadLetter.of(r) for r in records if tp in remaining and r.offset < remaining[tp][1]]
            for tp in list(remaining):
                if await consumer.position(tp) >= remaining[tp][1]:
                    del remaining[tp]
            if remaining and asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"could not read {sorted(map(str, remaining))} of {topic} within {KAFKA_TIMEOUT_MS} ms")
        return sorted(found, key=lambda d: (d.partition, d.offset))


def replay_headers(letter: DeadLetter) -> list[tuple[str, bytes]]:
    """The original record's headers (failure headers dropped), marked as replayed from where and when."""
    kept = [(k, v) for k, v in letter.headers if k not in FAILURE_HEADERS]
    return kept + [
        ("replayed_from_dlq", f"{letter.topic}/{letter.partition}/{letter.offset}".encode()),
        ("replayed_at", datetime.now(UTC).isoformat().encode()),
    ]


async def replay_dead_letters(settings: Settings, letters: Sequence[DeadLetter]) -> list[dict[str, Any]]:
    """Publish each dead letter to its original topic with its key and headers; returns where each went."""
    from infra.kafka import make_producer

    producer: AIOKafkaProducer = await make_producer(settings, client_id="billing-cli-dlq-replay", startup_wait_s=10)
    done = []
    try:
        for letter in letters:
            target = letter.header("dlq_original_topic") or source_topic_of(settings, letter.topic)
            meta = await producer.send_and_wait(target, value=letter.value, key=letter.key, headers=replay_headers(letter))
            done.append({"from": f"{letter.topic}/{letter.partition}/{letter.offset}", "to": f"{meta.topic}/{meta.partition}/{meta.offset}",
                         "key": _text(letter.key)})
    finally:
        await producer.stop()
    return done


# ---------------------------------------------------------------------------------------------- util


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _age(now: datetime, then: datetime | None) -> float | None:
    return round((now - then).total_seconds(), 3) if then is not None else None


def _text(value: bytes | None) -> str | None:
    if value is None:
        return None
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(value).decode()


if __name__ == "__main__":  # pragma: no cover - a quick look without the CLI
    import orjson

    sys.stdout.write(orjson.dumps(asyncio.run(status(Settings())), option=orjson.OPT_INDENT_2).decode() + "\n")
