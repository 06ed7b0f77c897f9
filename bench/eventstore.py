"""How fast the event store appends and the relay publishes, next to what the database can do raw.

`python -m bench.eventstore` creates a fresh database on the configured server (so nothing else
writes to it or to its outbox), then measures in one run:

- appends per second (1 and 10 events per append) with 1, 4 and 16 concurrent writers, each writer
  on its own streams with the right expected version (distinct accounts, no conflicts);
- the same workload as a raw `INSERT` + `COMMIT` of rows of the same size into a plain table with
  the same columns and only a primary key, through the same engine and pool: the same envelopes,
  serialised the same way (as `EventStore.append` does), in one unnest INSERT per transaction. The
  difference is what the event store adds: the version check, the unique indexes, the outbox row;
- the relay's events per second into Kafka: the outbox is pre-filled, then the relay drains it.

It prints a table and, as its last line, one JSON object with the figures. The database and the
topic are dropped at the end.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

import schemas as s
from infra.db import create_engine
from infra.logging import configure_logging
from infra.settings import Settings, plain_url
from eventstore.store import EventStore

console = Console(stderr=True)
app = typer.Typer(add_completion=False)

STREAM_LENGTH = 200  # a writer moves to a new stream after this many events, like a new account


def template_event(stream_id: str) -> s.Envelope:
    """A realistic event (PaymentSucceeded with money, a card and a customer) as the row size."""
    payload = s.PaymentSucceeded(
        payment_id=uuid.uuid4(),
        subscription_id=uuid.uuid4(),
        provider_payment_id=str(uuid.uuid4()),
        amount=s.Money(amount=Decimal("299.00"), currency="RUB"),
        paid_at=datetime.now(UTC),
        payment_method=s.PaymentMethod(id=str(uuid.uuid4()), title="Bank card *4444"),
        customer=s.Customer(email="anna@example.com", locale="ru"),
    )
    metadata = s.Metadata(
        correlation_id=str(uuid.uuid4()),
        causation_id=str(uuid.uuid4()),
        command_id=uuid.uuid4(),
        actor=s.Actor(kind="user", id=str(uuid.uuid4())),
    )
    return s.new_envelope(payload, stream_id=stream_id, metadata=metadata)


# ---------------------------------------------------------------------------- database set-up


def create_database(base: Settings) -> Settings:
    """A new empty database on the same server, migrated, with the raw-insert table."""
    import psycopg
    from psycopg import sql

    from infra.migrate import upgrade

    name = f"bench_{uuid.uuid4().hex[:12]}"
    admin_url = make_url(plain_url(base.database_url)).set(database="postgres").render_as_string(hide_password=False)
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = make_url(plain_url(base.database_url)).set(database=name).render_as_string(hide_password=False)
    settings = Settings(**{**base.model_dump(), "database_url": url, "events_topic": f"bench.events.{uuid.uuid4().hex[:12]}"})
    upgrade(settings)
    with psycopg.connect(plain_url(url), autocommit=True, connect_timeout=5) as conn:
        # The same columns as eventstore.events, but only a primary key: a bare insert.
        conn.execute(
            """
            CREATE TABLE raw_events (
                position BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                stream_id TEXT NOT NULL, stream_version INTEGER NOT NULL, event_id UUID NOT NULL,
                type TEXT NOT NULL, schema_version INTEGER NOT NULL, data JSONB NOT NULL,
                metadata JSONB NOT NULL, occurred_at TIMESTAMPTZ NOT NULL,
                recorded_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
            )
            """
        )
    return settings


def drop_database(settings: Settings) -> None:
    import psycopg
    from psycopg import sql

    url = make_url(plain_url(settings.database_url))
    admin_url = url.set(database="postgres").render_as_string(hide_password=False)
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(url.database)))


# ---------------------------------------------------------------------------- appends vs raw inserts


@dataclass
class Cell:
    kind: str  # "append" | "raw"
    batch: int  # events (rows) per transaction
    writers: int
    transactions: int
    seconds: float

    @property
    def events_per_s(self) -> float:
        return self.transactions * self.batch / self.seconds

    @property
    def tx_per_s(self) -> float:
        return self.transactions / self.seconds


_RAW_INSERT = text(
    """
    INSERT INTO raw_events (stream_id, stream_version, event_id, type, schema_version, data, metadata, occurred_at)
    SELECT :stream_id, :first + e.ord - 1, e.event_id, e.type, e.schema_version, e.data::jsonb, e.metadata::jsonb, e.occurred_at
    FROM unnest(CAST(:event_ids AS uuid[]), CAST(:types AS text[]), CAST(:schema_versions AS int[]),
                CAST(:datas AS text[]), CAST(:metadatas AS text[]), CAST(:occurred AS timestamptz[]))
         WITH ORDINALITY AS e(event_id, type, schema_version, data, metadata, occurred_at, ord)
    """
)


async def _run_writers(writers: int, seconds: float, write_one: Any) -> tuple[int, float]:
    """Run `writers` loops calling `await write_one(writer_index, n)` until the time is up."""
    start_gate = asyncio.Event()
    deadline = 0.0
    counts = [0] * writers

    async def loop(index: int) -> None:
        await start_gate.wait()
        while time.perf_counter() < deadline:
            await write_one(index, counts[index])
            counts[index] += 1

    tasks = [asyncio.create_task(loop(i)) for i in range(writers)]
    await asyncio.sleep(0)
    started = time.perf_counter()
    deadline = started + seconds
    start_gate.set()
    await asyncio.gather(*tasks)
    return sum(counts), time.perf_counter() - started


async def bench_append(store: EventStore, batch: int, writers: int, seconds: float) -> Cell:
    template = template_event("account-template")
    per_stream = max(1, STREAM_LENGTH // batch)
    run = uuid.uuid4().hex[:8]

    async def write_one(index: int, n: int) -> None:
        stream = s.account_stream(f"bench-{run}-{index}-{n // per_stream}")
        version = (n % per_stream) * batch
        events = [template.model_copy(update={"id": uuid.uuid4(), "stream_id": stream}) for _ in range(batch)]
        await store.append(stream, version, events)

    count, elapsed = await _run_writers(writers, seconds, write_one)
    return Cell("append", batch, writers, count, elapsed)


async def bench_raw(engine: AsyncEngine, batch: int, writers: int, seconds: float) -> Cell:
    """The same envelopes, serialised the same way, as plain rows: INSERT + COMMIT, nothing else."""
    template = template_event("account-template")
    per_stream = max(1, STREAM_LENGTH // batch)
    run = uuid.uuid4().hex[:8]

    async def write_one(index: int, n: int) -> None:
        stream = f"account-raw-{run}-{index}-{n // per_stream}"
        events = [template.model_copy(update={"id": uuid.uuid4(), "stream_id": stream}) for _ in range(batch)]
        dumped = [e.model_dump(mode="json") for e in events]
        params = {
            "stream_id": stream,
            "first": (n % per_stream) * batch + 1,
            "event_ids": [e.id for e in events],
            "types": [e.type for e in events],
            "schema_versions": [e.schema_version for e in events],
            "datas": [orjson.dumps(d["data"]).decode() for d in dumped],
            "metadatas": [orjson.dumps(d["metadata"]).decode() for d in dumped],
            "occurred": [e.occurred_at for e in events],
        }
        async with engine.begin() as conn:
            await conn.execute(_RAW_INSERT, params)

    count, elapsed = await _run_writers(writers, seconds, write_one)
    return Cell("raw", batch, writers, count, elapsed)


# ---------------------------------------------------------------------------- relay


async def prefill_outbox(engine: AsyncEngine, events: int, streams: int = 2000) -> None:
    """`events` real envelopes spread over `streams` streams, queued in the outbox (plain SQL: fast)."""
    template = template_event("account-template").model_dump(mode="json")
    async with engine.begin() as conn:
        # the append cells' events are in the outbox too: measure the relay on exactly `events`
        await conn.execute(text("TRUNCATE eventstore.outbox"))
        await conn.execute(
            text(
                """
                WITH inserted AS (
                INSERT INTO eventstore.events
                    (stream_id, stream_version, event_id, type, schema_version, data, metadata, occurred_at)
                SELECT 'account-relay-' || (i % :streams), i / :streams + 1, gen_random_uuid(), :type, :schema_version,
                       CAST(:data AS jsonb), CAST(:metadata AS jsonb), now()
                FROM generate_series(0, :n - 1) AS i
                ORDER BY i
                RETURNING position
                )
                INSERT INTO eventstore.outbox (position) SELECT position FROM inserted
                """
            ),
            {
                "n": events,
                "streams": streams,
                "type": template["type"],
                "schema_version": template["schema_version"],
                "data": orjson.dumps(template["data"]).decode(),
                "metadata": orjson.dumps(template["metadata"]).decode(),
            },
        )
    async with engine.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text("VACUUM ANALYZE eventstore.events"))
        await conn.execute(text("VACUUM ANALYZE eventstore.outbox"))


async def bench_relay(settings: Settings, engine: AsyncEngine, events: int, batch_size: int) -> dict[str, float]:
    from relay.outbox import OutboxRelay

    await prefill_outbox(engine, events)
    relay = OutboxRelay(settings, batch_size=batch_size, progress_every_s=3600)
    task = asyncio.create_task(relay.run())
    try:
        while not relay.leader.is_set():
            if task.done():
                task.result()
            await asyncio.sleep(0.005)
        started, cpu_started = time.perf_counter(), time.process_time()
        while relay.published < events:
            if task.done():
                task.result()
            await asyncio.sleep(0.005)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    finally:
        relay.stop()
        await task
    async with engine.connect() as conn:
        left = (await conn.execute(text("SELECT count(*) FROM eventstore.outbox"))).scalar_one()
    if left:
        raise RuntimeError(f"{left} events left in the outbox after the relay published {relay.published}")
    return {
        "events": events,
        "seconds": elapsed,
        "events_per_s": events / elapsed,
        "batches": relay.batches,
        "cpu_us_per_event": cpu / events * 1e6,  # the relay's own Python (it runs in this process)
    }


async def delete_topic(settings: Settings) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_servers, request_timeout_ms=15000)
    await admin.start()
    try:
        await admin.delete_topics([settings.events_topic])
    finally:
        await admin.close()


# ---------------------------------------------------------------------------- driver


async def run(
    seconds: float, rounds: int, writers: list[int], relay_events: int, relay_batch: int, pool_size: int
) -> dict[str, Any]:
    load_before = os.getloadavg()[0]
    base = Settings()
    settings = await asyncio.to_thread(create_database, base)
    engine = create_engine(settings, pool_size=pool_size, application_name="bench")
    store = EventStore(engine)
    cells: list[Cell] = []
    try:
        # warm the pool and the statement caches
        await bench_append(store, 1, max(writers), 0.3)
        await bench_raw(engine, 1, max(writers), 0.3)
        for batch in (1, 10):
            for n in writers:
                # Interleaved short rounds, so a load change on the machine hits both sides alike.
                raw, append = Cell("raw", batch, n, 0, 0.0), Cell("append", batch, n, 0, 0.0)
                for _ in range(rounds):
                    for total, measure in (
                        (raw, bench_raw(engine, batch, n, seconds / rounds)),
                        (append, bench_append(store, batch, n, seconds / rounds)),
                    ):
                        cell = await measure
                        total.transactions += cell.transactions
                        total.seconds += cell.seconds
                cells += [raw, append]
                console.log(
                    f"batch={batch:2} writers={n:2}: append {append.events_per_s:8.0f} events/s,"
                    f" raw {raw.events_per_s:8.0f} rows/s"
                )
        relay = await bench_relay(settings, engine, relay_events, relay_batch) if relay_events else None
    finally:
        await engine.dispose()
        await asyncio.to_thread(drop_database, settings)
        try:
            await delete_topic(settings)
        except Exception as exc:  # noqa: BLE001 - a leftover topic is harmless
            console.log(f"could not delete topic {settings.events_topic}: {exc!r}")

    table = Table(title="event store vs raw INSERT + COMMIT (same engine, pool and row size)")
    for column in ("events/tx", "writers", "append tx/s", "append events/s", "raw tx/s", "raw rows/s", "append/raw"):
        table.add_column(column, justify="right")
    result: dict[str, Any] = {}
    for batch in (1, 10):
        for n in writers:
            a = next(c for c in cells if c.kind == "append" and c.batch == batch and c.writers == n)
            r = next(c for c in cells if c.kind == "raw" and c.batch == batch and c.writers == n)
            ratio = a.events_per_s / r.events_per_s
            table.add_row(
                str(batch), str(n), f"{a.tx_per_s:,.0f}", f"{a.events_per_s:,.0f}", f"{r.tx_per_s:,.0f}",
                f"{r.events_per_s:,.0f}", f"{ratio:.2f}",
            )
            suffix = f"{n}w" if batch == 1 else f"{n}w_batch{batch}"
            result[f"append_events_per_s_{suffix}"] = round(a.events_per_s)
            result[f"raw_insert_rows_per_s_{suffix}"] = round(r.events_per_s)
            result[f"append_vs_raw_ratio_{suffix}"] = round(ratio, 3)
    out = Console()
    out.print(table)
    if relay is not None:
        relay_table = Table(title="outbox relay → Kafka (idempotent producer, acks=all)")
        for column in ("events", "batch size", "batches", "seconds", "events/s", "relay CPU µs/event"):
            relay_table.add_column(column, justify="right")
        relay_table.add_row(
            f"{relay['events']:,}", str(relay_batch), str(relay["batches"]), f"{relay['seconds']:.2f}",
            f"{relay['events_per_s']:,.0f}", f"{relay['cpu_us_per_event']:.1f}",
        )
        out.print(relay_table)
        result["relay_events_per_s"] = round(relay["events_per_s"])
        result["relay_events"] = relay["events"]
        result["relay_cpu_us_per_event"] = round(relay["cpu_us_per_event"], 1)
    result["seconds_per_cell"] = seconds
    # This machine is shared (other test runs, the same PostgreSQL server): say how busy it was.
    result["load_avg_1m"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    return result


@app.command()
def main(
    seconds: float = typer.Option(3.0, help="measuring time per cell (each side)"),
    rounds: int = typer.Option(3, help="interleaved append/raw rounds per cell"),
    writers: str = typer.Option("1,4,16", help="concurrent writer counts"),
    relay_events: int = typer.Option(200_000, help="events pre-filled for the relay (0 skips it)"),
    relay_batch: int = typer.Option(5000, help="relay batch size (the relay's default)"),
    pool_size: int = typer.Option(16, help="connection pool size (appends and raw inserts share it)"),
) -> None:
    """Measure appends vs raw inserts and the relay; the last line printed is JSON."""
    configure_logging("bench", json=False, level="WARNING")
    counts = [int(w) for w in writers.split(",") if w.strip()]
    result = asyncio.run(run(seconds, rounds, counts, relay_events, relay_batch, pool_size))
    print(orjson.dumps(result).decode())


if __name__ == "__main__":
    app()
