"""The I/O of one purchase, read from the product's own counters (helper of `bench.e2e`, not a benchmark).

`snapshot()` reads, at one moment, every counter the product already keeps about its I/O:
- each service's `/metrics` (the API's requests by method and route, commands published and
  webhooks; the processors' YooKassa calls by operation; consumer loops' records handled; the
  relay's records published; the projector's events; the notifier's emails),
- the sandboxes' own stats (YooKassa payments created, Mailgun messages accepted),
- Kafka: the end offset of every topic of the pipeline (records produced — no producer of the
  product is transactional, so offsets are records) and each consumer group's committed offsets
  (records consumed),
- PostgreSQL: `pg_stat_database` (transactions, rows returned/fetched/inserted/updated/deleted)
  and `pg_stat_user_tables` per table (rows inserted/updated/deleted, sequential and index scans).
  `pg_stat_statements` is not loaded on this server, so statements are not counted directly:
  rows written per table, scans and transactions are (decision 0125).

A snapshot is a flat `{key: number}`; `per_purchase()` turns two snapshots around N purchases
into counts per purchase, minus what the idle pipeline does by itself in that time (relay polls,
scheduler ticks, the scrapes themselves), measured the same way just before.
The arithmetic is pure and unit-tested (tests/unit/test_bench_counters.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Mapping
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

# Samples of these metric families are I/O counts; everything else in /metrics (latencies,
# gauges, process_*, python_*) is not.
COUNTED_FAMILIES = {
    "api_http_requests": "http in",
    "api_commands_published": "kafka produce (api)",
    "api_webhook_notifications": "webhooks in",
    "billing_provider_calls": "provider calls",
    "billing_commands": "commands ended",
    "billing_consumer_records_handled": "records handled",
    "billing_consumer_offset_commits": "offset commits",
    "billing_relay_published": "kafka produce (relay)",
    "billing_projector_events": "events projected",
    "billing_projector_batches": "batches (transactions)",
    "billing_emails": "emails",
}
# PostgreSQL stats of the database and of each table that count work.
PG_DATABASE_FIELDS = ("xact_commit", "xact_rollback", "tup_returned", "tup_fetched", "tup_inserted",
                      "tup_updated", "tup_deleted")
PG_TABLE_FIELDS = ("n_tup_ins", "n_tup_upd", "n_tup_del", "seq_scan", "idx_scan")
# The pipeline's background work PostgreSQL flushes to its statistics late: an idle backend
# reports what it did at most every 10 s (PGSTAT_IDLE_INTERVAL), so reads wait this long.
PG_STATS_SETTLE_S = 11.0


def parse_metrics(service: str, text: str) -> dict[str, float]:
    """The counted samples of one /metrics answer, as `{"service|family{label=value,...}": value}`."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name not in COUNTED_FAMILIES:
            continue
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()) if k not in ("consumer", "relay"))
            key = f"{service}|{family.name}{{{labels}}}"
            out[key] = out.get(key, 0.0) + sample.value
    return out


def merge_instances(snapshot: Mapping[str, float]) -> dict[str, float]:
    """Instances of one service summed: "processor-2|x" and "api-2|x" count as "processor|x", "api|x"."""
    out: dict[str, float] = {}
    for key, value in snapshot.items():
        service, sep, rest = key.partition("|")
        if sep and service.rsplit("-", 1)[-1].isdigit():
            service = service.rsplit("-", 1)[0]
        name = f"{service}{sep}{rest}"
        out[name] = out.get(name, 0.0) + value
    return out


def delta(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
    """after − before for every key of `after` (a key new in `after` started at 0)."""
    return {k: v - before.get(k, 0.0) for k, v in after.items()}


def per_purchase(before: Mapping[str, float], after: Mapping[str, float], purchases: int, seconds: float,
                 idle: Mapping[str, float] | None = None, idle_seconds: float = 0.0) -> dict[str, float]:
    """Counts per purchase between two snapshots, minus the idle pipeline's own rate.

    `idle` is the delta over an idle stretch of `idle_seconds` (no purchases) measured the same
    way; its rate times `seconds` is what the pipeline would have done anyway (relay polls,
    scheduler ticks, the scrapes). Keys whose count is 0 after that are left out; a small negative
    remainder (the idle rate is itself a sample) is clamped to 0.
    """
    if purchases <= 0:
        raise ValueError("purchases must be positive")
    moved = delta(before, after)
    rate = {k: v / idle_seconds for k, v in (idle or {}).items()} if idle_seconds > 0 else {}
    out: dict[str, float] = {}
    for key, value in moved.items():
        net = max(0.0, value - rate.get(key, 0.0) * seconds) / purchases
        if net > 0:
            out[key] = net
    return out


def group(counts: Mapping[str, float]) -> dict[str, dict[str, float]]:
    """Per-purchase counts arranged by kind of I/O (the rows of the printed table)."""
    kinds: dict[str, dict[str, float]] = {}
    for key, value in sorted(counts.items()):
        if key.startswith("kafka:produced:"):
            kind, item = "Kafka records produced", key.removeprefix("kafka:produced:")
        elif key.startswith("kafka:consumed:"):
            kind, item = "Kafka records consumed (committed)", key.removeprefix("kafka:consumed:")
        elif key.startswith("pg:db:"):
            kind, item = "PostgreSQL database", key.removeprefix("pg:db:")
        elif key.startswith("pg:table:"):
            kind, item = "PostgreSQL rows and scans per table", key.removeprefix("pg:table:")
        elif key.startswith("sandbox:"):
            kind, item = "sandboxes (their own stats)", key.removeprefix("sandbox:")
        else:
            service, _, metric = key.partition("|")
            family = metric.split("{", 1)[0]
            kind, item = f"{service}: {COUNTED_FAMILIES.get(family, family)}", metric
        kinds.setdefault(kind, {})[item] = value
    return kinds


def summary(counts: Mapping[str, float]) -> dict[str, float]:
    """The headline I/O of one purchase (the figures the same-work ceiling reproduces)."""

    def total(prefix: str, family: str = "", where: str = "") -> float:
        return sum(v for k, v in counts.items() if k.startswith(prefix) and family in k and where in k)

    return {
        "http_in_api": total("api|", "api_http_requests"),
        "webhooks_in": total("api|", "api_webhook_notifications"),
        "provider_calls": total("processor|", "billing_provider_calls"),
        "emails": total("sandbox:mailgun_messages"),
        "kafka_produced": total("kafka:produced:"),
        "kafka_consumed": total("kafka:consumed:"),
        "pg_transactions": total("pg:db:xact_commit") + total("pg:db:xact_rollback"),
        "pg_rows_written": total("pg:db:tup_inserted") + total("pg:db:tup_updated") + total("pg:db:tup_deleted"),
        "pg_scans": total("pg:table:", ".seq_scan") + total("pg:table:", ".idx_scan"),
    }


# --------------------------------------------------------------------------- reading the counters


async def _metrics(client: httpx.AsyncClient, service: str, url: str) -> dict[str, float]:
    try:
        response = await client.get(url, timeout=5.0)
    except httpx.HTTPError:
        return {}
    return parse_metrics(service, response.text) if response.status_code == 200 else {}


async def kafka_offsets(bootstrap: str, topics: Mapping[str, str], groups: Mapping[str, str]) -> dict[str, float]:
    """`kafka:produced:<role>` = sum of end offsets of the topic; `kafka:consumed:<group>:<role>` = committed."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.structs import TopicPartition

    out: dict[str, float] = {}
    by_topic = {topic: role for role, topic in topics.items()}
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, request_timeout_ms=10000)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    await consumer.start()
    await admin.start()
    try:
        partitions = [TopicPartition(t, p) for t in topics.values() for p in (consumer.partitions_for_topic(t) or ())]
        if len(partitions) < len(topics):
            await consumer._client.force_metadata_update()  # noqa: SLF001 - no public way to load metadata of unsubscribed topics
            partitions = [TopicPartition(t, p) for t in topics.values() for p in (consumer.partitions_for_topic(t) or ())]
        for tp, end in (await consumer.end_offsets(partitions)).items():
            key = f"kafka:produced:{by_topic[tp.topic]}"
            out[key] = out.get(key, 0.0) + end
        for label, group_id in groups.items():
            with contextlib.suppress(Exception):
                for tp, meta in (await admin.list_consumer_group_offsets(group_id)).items():
                    if tp.topic in by_topic and meta.offset >= 0:
                        key = f"kafka:consumed:{label}:{by_topic[tp.topic]}"
                        out[key] = out.get(key, 0.0) + meta.offset
    finally:
        await consumer.stop()
        await admin.close()
    return out


async def pg_stats(database_url: str) -> dict[str, float]:
    """`pg:db:<field>` of this database and `pg:table:<schema.table>.<field>` of each of its tables."""
    import asyncpg

    from infra.settings import plain_url

    conn = await asyncpg.connect(plain_url(database_url), timeout=10)
    try:
        # one statement, so reading costs the counted database exactly one transaction
        row = await conn.fetchrow(
            f"SELECT (SELECT row({', '.join(PG_DATABASE_FIELDS)}) FROM pg_stat_database"
            f"        WHERE datname = current_database()) AS db,"
            f" (SELECT coalesce(jsonb_agg(jsonb_build_array(schemaname || '.' || relname,"
            f"        {', '.join(PG_TABLE_FIELDS)})), '[]') FROM pg_stat_user_tables) AS tables")
    finally:
        await conn.close()
    out = {f"pg:db:{name}": float(value or 0) for name, value in zip(PG_DATABASE_FIELDS, row["db"], strict=True)}
    import orjson

    tables = row["tables"] if isinstance(row["tables"], list) else orjson.loads(row["tables"])
    for name, *values in tables:
        for field_name, value in zip(PG_TABLE_FIELDS, values, strict=True):
            if value:
                out[f"pg:table:{name}.{field_name}"] = float(value)
    return out


async def sandbox_stats(client: httpx.AsyncClient, yookassa_url: str, mailgun_url: str) -> dict[str, float]:
    out: dict[str, float] = {}
    with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
        totals = (await client.get(f"{yookassa_url}/sandbox/stats", timeout=10.0)).json()["totals"]
        out["sandbox:yookassa_payments_created"] = float(totals["payments"])
    with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
        out["sandbox:mailgun_messages"] = float((await client.get(f"{mailgun_url}/sandbox/stats", timeout=10.0)).json()["messages"])
    return out


async def snapshot(metrics_urls: Mapping[str, str], *, bootstrap: str, topics: Mapping[str, str],
                   groups: Mapping[str, str], database_url: str, yookassa_url: str | None = None,
                   mailgun_url: str | None = None) -> dict[str, float]:
    """Every counter at (about) one moment; see the module docstring."""
    async with httpx.AsyncClient(trust_env=False) as client:
        parts: list[Any] = [_metrics(client, name, url) for name, url in metrics_urls.items()]
        parts.append(kafka_offsets(bootstrap, topics, groups))
        parts.append(pg_stats(database_url))
        if yookassa_url and mailgun_url:
            parts.append(sandbox_stats(client, yookassa_url, mailgun_url))
        results: Iterable[dict[str, float]] = await asyncio.gather(*parts)
    snap: dict[str, float] = {}
    for part in results:
        snap.update(part)
    return merge_instances(snap)
