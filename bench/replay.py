"""`python -m bench.replay`: how fast the read models can be rebuilt from the log.

Writes N synthetic events (default 1,000,000) of realistic shape and size — the product's event
mix over 50,000 accounts: purchases that succeed, are declined or lost and settled, renewals
that succeed or fail, cancels with refunds, auto-renew changes, extensions, rejections — into a
FRESH database with COPY, then times a full replay (`projector.adapters.rebuild.Replay`, the code behind
`billing replay`: read pages, project in memory, COPY, build indexes, catch up and swap).

Payloads are built from templates dumped from the real pydantic models (a sample of every run is
validated with `schemas.parse_envelope`), so sizes and shapes are the product's. Prints a table
and, as its last line, JSON with `events`, `seconds`, `replay_events_per_s`.
`--profile` adds a cProfile of the replay (top functions by own time).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import random
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import asyncpg
import orjson
import psycopg
from psycopg import sql

from infra.migrate import upgrade
from infra.settings import Settings, plain_url
from projector.adapters.rebuild import Replay, ReplayOptions
from schemas import parse_envelope

NS = uuid.UUID("6f1c1d2e-5b0a-4c3e-9d7f-2a1b3c4d5e6f")
START = datetime(2026, 1, 1, tzinfo=timezone.utc)
PLANS = [("basic", "Basic", "299.00", 30), ("premium", "Premium", "1490.00", 30), ("annual", "Annual", "12990.00", 365)]
CARD = {"id": "2f1e-saved-card", "title": "Bank card *4444"}


def _id(*parts: object) -> str:
    return str(uuid.uuid5(NS, ":".join(map(str, parts))))


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


class AccountLife:
    """One synthetic account: a list of appends (lists of (type, data, actor_kind, command_id, at))."""

    def __init__(self, n: int, rng: random.Random, budget: int) -> None:
        self.user = f"user-{n:06d}"
        self.stream = f"account-{self.user}"
        self.customer = {"email": f"{self.user}@example.com", "locale": "ru" if n % 3 else "en"}
        self.rng = rng
        self.t = START + timedelta(seconds=rng.randint(0, 86400 * 30))
        self.appends: list[list[tuple[str, dict[str, Any], str, str, datetime]]] = []
        self.count = 0
        k = 0
        while self.count < budget:
            k += 1
            self._life(k, budget)

    def _at(self, seconds: float = 1.0) -> datetime:
        self.t += timedelta(seconds=seconds)
        return self.t

    def _append(self, command_id: str, kind: str, events: list[tuple[str, dict[str, Any]]]) -> None:
        self.appends.append([(t, d, kind, command_id, self._at(0.01)) for t, d in events])
        self.count += len(events)

    def _life(self, k: int, budget: int) -> None:
        rng = self.rng
        plan_id, plan_name, price, days = rng.choice(PLANS)
        amount = {"amount": price, "currency": "RUB"}
        cmd = _id(self.user, k, "buy")
        sub, pay, provider = _id(cmd, "sub"), _id(cmd, "pay"), _id(cmd, "yk")
        url = f"https://yoomoney.ru/checkout/payments/v2/contract?orderId={provider}"
        outcome = "rejected" if rng.random() < 0.05 else None
        if outcome == "rejected":
            self._append(cmd, "user", [("CommandRejected", {
                "command_id": cmd, "command_type": "PurchaseSubscription", "code": "already_subscribed",
                "reason": "You already have an active or pending subscription to this plan."})])
            return
        self._append(cmd, "user", [("CheckoutStarted", {
            "subscription_id": sub, "payment_id": pay, "plan_id": plan_id, "plan_name": plan_name, "amount": amount,
            "period_days": days, "auto_renew": rng.random() < 0.8, "customer": self.customer,
            "idempotence_key": _id(pay, "create"), "return_url": "https://cinema.example/return"})])
        if rng.random() < 0.04:
            self._append(cmd, "user", [("PaymentStateUnknown", {
                "payment_id": pay, "subscription_id": sub, "provider_payment_id": None,
                "detail": "ReadTimeout: YooKassa did not answer within 10s", "purpose": "purchase"})])
        self._append(cmd, "user", [
            ("PaymentCreated", {"payment_id": pay, "subscription_id": sub, "provider_payment_id": provider, "amount": amount,
                                "status": "pending", "confirmation_url": url, "purpose": "purchase"}),
            ("CommandSucceeded", {"command_id": cmd, "command_type": "PurchaseSubscription", "outcome": {
                "subscription_id": sub, "payment_id": pay, "refund_id": None, "plan_id": None, "confirmation_url": url,
                "refund_amount": None, "message": None}}),
        ])
        self._at(rng.randint(20, 600))
        sync = _id(cmd, "sync")
        if rng.random() < 0.12:
            self._append(sync, "provider", [
                ("PaymentFailed", {"payment_id": pay, "subscription_id": sub, "provider_payment_id": provider, "amount": amount,
                                   "reason": rng.choice(["insufficient_funds", "card_expired", "expired_on_confirmation"]),
                                   "party": "payment_network", "purpose": "purchase", "customer": self.customer}),
                ("CommandSucceeded", {"command_id": sync, "command_type": "SyncPayment", "outcome": {
                    "subscription_id": sub, "payment_id": pay, "refund_id": None, "plan_id": None, "confirmation_url": None,
                    "refund_amount": None, "message": "payment canceled"}}),
            ])
            return
        paid = self._at()
        end = paid + timedelta(days=days)
        self._append(sync, "provider", [
            ("PaymentSucceeded", {"payment_id": pay, "subscription_id": sub, "provider_payment_id": provider, "amount": amount,
                                  "paid_at": _iso(paid), "payment_method": CARD, "purpose": "purchase", "customer": self.customer}),
            ("SubscriptionActivated", {"subscription_id": sub, "plan_id": plan_id, "plan_name": plan_name,
                                       "period_start": _iso(paid), "period_end": _iso(end), "amount_paid": amount,
                                       "auto_renew": True, "payment_id": pay, "payment_method_title": CARD["title"],
                                       "granted": False, "reason": None, "customer": self.customer}),
            ("CommandSucceeded", {"command_id": sync, "command_type": "SyncPayment", "outcome": {
                "subscription_id": sub, "payment_id": pay, "refund_id": None, "plan_id": None, "confirmation_url": None,
                "refund_amount": None, "message": None}}),
        ])
        for attempt in range(1, 4):
            if self.count >= budget:
                return
            roll = rng.random()
            if roll < 0.55:  # renewal
                ren = _id(sub, end.isoformat(), attempt)
                rpay = _id(ren, "pay")
                new_end = end + timedelta(days=days)
                self._append(ren, "system", [
                    ("SubscriptionExpiringSoon", {"subscription_id": sub, "period_end": _iso(end), "auto_renew": True,
                                                  "customer": self.customer}),
                    ("RenewalStarted", {"subscription_id": sub, "payment_id": rpay, "plan_id": plan_id, "plan_name": plan_name,
                                        "amount": amount, "period_start": _iso(end), "period_end": _iso(new_end),
                                        "attempt": 1, "payment_method_id": CARD["id"], "idempotence_key": _id(rpay, "create"),
                                        "customer": self.customer}),
                ])
                if rng.random() < 0.85:
                    self._append(ren, "system", [
                        ("PaymentSucceeded", {"payment_id": rpay, "subscription_id": sub, "provider_payment_id": _id(rpay, "yk"),
                                              "amount": amount, "paid_at": _iso(end), "payment_method": CARD,
                                              "purpose": "renewal", "customer": self.customer}),
                        ("SubscriptionRenewed", {"subscription_id": sub, "payment_id": rpay, "period_start": _iso(end),
                                                 "period_end": _iso(new_end), "amount": amount, "customer": self.customer}),
                        ("CommandSucceeded", {"command_id": ren, "command_type": "RenewSubscription", "outcome": {
                            "subscription_id": sub, "payment_id": rpay, "refund_id": None, "plan_id": None,
                            "confirmation_url": None, "refund_amount": None, "message": None}}),
                    ])
                    end = new_end
                else:
                    self._append(ren, "system", [
                        ("PaymentFailed", {"payment_id": rpay, "subscription_id": sub, "provider_payment_id": _id(rpay, "yk"),
                                           "amount": amount, "reason": "insufficient_funds", "party": "payment_network",
                                           "purpose": "renewal", "customer": self.customer}),
                        ("RenewalFailed", {"subscription_id": sub, "payment_id": rpay, "attempt": 1, "reason": "insufficient_funds",
                                           "next_retry_at": _iso(end + timedelta(days=1)), "access_until": _iso(end + timedelta(days=5)),
                                           "final": False, "customer": self.customer}),
                        ("CommandSucceeded", {"command_id": ren, "command_type": "RenewSubscription", "outcome": {
                            "subscription_id": sub, "payment_id": rpay, "refund_id": None, "plan_id": None,
                            "confirmation_url": None, "refund_amount": None, "message": "renewal declined"}}),
                    ])
            elif roll < 0.7:
                ar = _id(sub, "autorenew", attempt)
                self._append(ar, "user", [
                    ("AutoRenewChanged", {"subscription_id": sub, "enabled": rng.random() < 0.5, "reason": None, "customer": self.customer}),
                    ("CommandSucceeded", {"command_id": ar, "command_type": "SetAutoRenew", "outcome": {
                        "subscription_id": sub, "payment_id": None, "refund_id": None, "plan_id": None,
                        "confirmation_url": None, "refund_amount": None, "message": None}}),
                ])
            elif roll < 0.78:
                ex = _id(sub, "extend", attempt)
                end = end + timedelta(days=7)
                self._append(ex, "admin", [
                    ("SubscriptionAdjusted", {"subscription_id": sub, "days": 7, "period_end": _iso(end),
                                              "reason": "compensation for the outage of 12 March", "customer": self.customer}),
                    ("CommandSucceeded", {"command_id": ex, "command_type": "ExtendSubscription", "outcome": {
                        "subscription_id": sub, "payment_id": None, "refund_id": None, "plan_id": None,
                        "confirmation_url": None, "refund_amount": None, "message": None}}),
                ])
            else:  # cancel with a refund, which ends this subscription's life
                cc = _id(sub, "cancel")
                ref = _id(cc, "refund")
                back = {"amount": f"{int(float(price) * 0.8)}.00", "currency": "RUB"}
                self._append(cc, "user", [("RefundRequested", {
                    "refund_id": ref, "subscription_id": sub, "payment_id": pay, "provider_payment_id": provider,
                    "amount": back, "days_used": 6, "days_in_period": days, "reason": "user canceled",
                    "idempotence_key": _id(ref, "create"), "customer": self.customer})])
                self._append(cc, "user", [
                    ("RefundCreated", {"refund_id": ref, "subscription_id": sub, "provider_refund_id": _id(ref, "yk"), "status": "succeeded"}),
                    ("RefundSucceeded", {"refund_id": ref, "subscription_id": sub, "payment_id": pay,
                                         "provider_refund_id": _id(ref, "yk"), "amount": back, "days_used": 6,
                                         "customer": self.customer}),
                    ("SubscriptionCanceled", {"subscription_id": sub, "mode": "refund_now", "effective_at": _iso(self._at()),
                                              "reason": "user canceled", "refund_id": ref, "refund_amount": back,
                                              "customer": self.customer}),
                    ("CommandSucceeded", {"command_id": cc, "command_type": "CancelSubscription", "outcome": {
                        "subscription_id": sub, "payment_id": None, "refund_id": ref, "plan_id": None,
                        "confirmation_url": None, "refund_amount": back, "message": None}}),
                ])
                return


SCHEMA_VERSIONS = {"PlanCreated": 2}


def synthetic_log(events: int, accounts: int, seed: int = 7) -> Iterator[tuple[Any, ...]]:
    """Rows for `eventstore.events` (stream_id, stream_version, event_id, type, schema_version, data,
    metadata, occurred_at), streams interleaved as in a live log, per-stream order kept."""
    rng = random.Random(seed)
    for plan_id, name, price, days in PLANS:
        cmd = _id("plan", plan_id)
        meta = orjson.dumps({"correlation_id": cmd, "causation_id": None, "command_id": cmd,
                             "actor": {"kind": "admin", "id": "ops"}}).decode()
        stream = f"plan-{plan_id}"
        yield (stream, 1, _id(cmd, 0), "PlanCreated", 2, orjson.dumps({"plan_id": plan_id, "name": name,
               "price": {"amount": price, "currency": "RUB"}, "period_days": days, "description": f"{name} plan"}).decode(), meta, START)
        yield (stream, 2, _id(cmd, 1), "CommandSucceeded", 1, orjson.dumps({"command_id": cmd, "command_type": "CreatePlan",
               "outcome": {"subscription_id": None, "payment_id": None, "refund_id": None, "plan_id": plan_id,
                           "confirmation_url": None, "refund_amount": None, "message": None}}).decode(), meta, START)
    budget = max(1, (events - 6) // accounts)
    lives = [AccountLife(n, rng, budget) for n in range(accounts)]
    # interleave the accounts' appends at random, keeping each account's own order
    order = [i for i, life in enumerate(lives) for _ in life.appends]
    rng.shuffle(order)
    cursor = [0] * len(lives)
    versions = [0] * len(lives)
    emitted = 6
    meta_cache: dict[tuple[str, str, str], str] = {}
    for i in order:
        life = lives[i]
        append = life.appends[cursor[i]]
        cursor[i] += 1
        for type_name, data, kind, command_id, at in append:
            if emitted >= events:
                return
            versions[i] += 1
            key = (command_id, kind, life.user)
            meta = meta_cache.get(key)
            if meta is None:
                meta = orjson.dumps({"correlation_id": command_id, "causation_id": command_id, "command_id": command_id,
                                     "actor": {"kind": kind, "id": life.user if kind == "user" else
                                               {"system": "scheduler", "provider": "yookassa", "admin": "ops"}[kind]}}).decode()
                meta_cache[key] = meta
            yield (life.stream, versions[i], _id(life.stream, versions[i]), type_name, SCHEMA_VERSIONS.get(type_name, 1),
                   orjson.dumps(data).decode(), meta, at)
            emitted += 1


async def load_log(url: str, rows: Iterator[tuple[Any, ...]], chunk: int = 50_000) -> int:
    conn = await asyncpg.connect(url, command_timeout=3600)
    total = 0
    try:
        buffer: list[tuple[Any, ...]] = []
        for row in rows:
            buffer.append(row)
            if len(buffer) >= chunk:
                await _copy(conn, buffer)
                total += len(buffer)
                buffer = []
        if buffer:
            await _copy(conn, buffer)
            total += len(buffer)
        await conn.execute("ANALYZE eventstore.events")
    finally:
        await conn.close()
    return total


async def _copy(conn: asyncpg.Connection, rows: list[tuple[Any, ...]]) -> None:
    await conn.copy_records_to_table(
        "events", schema_name="eventstore", records=rows,
        columns=["stream_id", "stream_version", "event_id", "type", "schema_version", "data", "metadata", "occurred_at"],
    )


def validate_sample(rows: list[tuple[Any, ...]]) -> None:
    """The synthetic events must be valid product events: parse a sample with the real contracts."""
    for stream, _version, event_id, type_name, schema_version, data, meta, at in rows:
        parse_envelope({"id": event_id, "type": type_name, "schema_version": schema_version, "occurred_at": at.isoformat(),
                        "stream_id": stream, "data": orjson.loads(data), "metadata": orjson.loads(meta)})


def _admin_url(url: str) -> str:
    base, _, _ = plain_url(url).rpartition("/")
    return f"{base}/postgres"


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from infra.logging import configure_logging

    configure_logging("bench", json=False, level="WARNING")
    settings = Settings()
    name = f"bench_replay_{uuid.uuid4().hex[:10]}"
    admin = _admin_url(settings.database_url)
    with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = f"{plain_url(settings.database_url).rpartition('/')[0]}/{name}"
    fresh = Settings(**{**settings.model_dump(), "database_url": url})
    try:
        upgrade(fresh)
        started = time.perf_counter()
        rows = synthetic_log(args.events, args.accounts)
        sample: list[tuple[Any, ...]] = []

        def sampled() -> Iterator[tuple[Any, ...]]:
            for n, row in enumerate(rows):
                if n % 997 == 0:
                    sample.append(row)
                yield row

        loaded = await load_log(url, sampled())
        validate_sample(sample)
        load_seconds = time.perf_counter() - started
        size = await _scalar(url, "SELECT pg_size_pretty(pg_total_relation_size('eventstore.events'))")
        avg = await _scalar(url, "SELECT round(avg(octet_length(data::text) + octet_length(metadata::text))) FROM eventstore.events")
        mix = await _rows(url, "SELECT type, count(*) FROM eventstore.events GROUP BY 1 ORDER BY 2 DESC")
        print(f"loaded {loaded:,} events in {load_seconds:.1f}s into {name} ({size}, ~{avg} bytes of JSON per event)", file=sys.stderr)

        live: dict[str, Any] = {}
        if args.live_events:
            live = await measure_live_projector(fresh, url, args.live_events)
            print(f"live projector: {live}", file=sys.stderr)

        replay = Replay(fresh, ReplayOptions(mode="swap", page_size=args.page_size, workers=args.workers or None))
        profiler = cProfile.Profile() if args.profile else None
        rss_before = _max_rss_mb()
        started, cpu_started = time.perf_counter(), time.process_time()
        if profiler:
            profiler.enable()
        report = await replay.run()
        if profiler:
            profiler.disable()
        seconds = time.perf_counter() - started
        cpu_seconds = time.process_time() - cpu_started
        rss = _max_rss_mb()
        result = {
            "events": report.events,
            "accounts": args.accounts,
            "seconds": round(seconds, 2),
            "replay_events_per_s": round(report.events / seconds),
            "replay_cpu_s": round(cpu_seconds + (report.python_cpu_s if report.workers > 1 else 0.0), 2),
            "workers": report.workers,
            "partition_phases_s": {k: round(v, 2) for k, v in report.partition_timings.items()},
            "postgres_cpu_s": round(report.server_cpu_s, 2) if report.server_cpu_s is not None else None,
            "postgres_cpu_indexes_s": round(report.server_cpu_indexes_s, 2) if report.server_cpu_indexes_s is not None else None,
            "phases_s": {k: round(v, 2) for k, v in report.timings.items()},
            "rows": report.rows,
            "max_rss_mb": rss,
            "rss_before_replay_mb": rss_before,
            "event_mix": dict(mix),
            "live": live,
        }
        if profiler:
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(25)
            print(out.getvalue(), file=sys.stderr)
        return result
    finally:
        if not args.keep_db:
            with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


async def measure_live_projector(settings: Settings, url: str, events: int) -> dict[str, Any]:
    """The live path for comparison: the first `events` events through a real Kafka topic into the
    projector (ProjectorConsumer, default batch size), timed from partition assignment to the last event."""
    from infra.db import create_engine
    from infra.kafka import ensure_topics, make_producer
    from eventstore.store import EventStore
    from projector.bootstrap import create_pool
    from projector.config import ProjectorSettings
    from projector.entrypoints.consumer import ProjectorConsumer
    from projector.service import Projector

    topic = f"bench.replay.live.{uuid.uuid4().hex[:8]}"
    await ensure_topics(settings, {topic: 6})
    conn = await asyncpg.connect(url)
    producer = await make_producer(settings)
    try:
        rows = await conn.fetch(
            "SELECT position, stream_id, stream_version, event_id, type, schema_version, data::text, metadata::text, "
            "occurred_at FROM eventstore.events WHERE position <= $1 ORDER BY position", events)
        for r in rows:
            env = {"id": str(r[3]), "type": r[4], "schema_version": r[5], "occurred_at": r[8].isoformat(), "stream_id": r[1],
                   "data": orjson.loads(r[6]), "metadata": orjson.loads(r[7])}
            # the relay's headers (RecordedEvent.kafka_headers)
            await producer.send(topic, value=orjson.dumps(env), key=r[1].encode(), headers=[
                ("event_id", str(r[3]).encode()), ("type", r[4].encode()), ("stream_version", str(r[2]).encode()),
                ("position", str(r[0]).encode()), ("correlation_id", str(env["metadata"].get("correlation_id") or "").encode())])
        await producer.flush()
    finally:
        await producer.stop()
        await conn.close()
    projector_settings = ProjectorSettings(**{**settings.model_dump(), "events_topic": topic,
                                              "projector_group_id": f"bench-{uuid.uuid4().hex[:8]}"})
    pool = await create_pool(projector_settings)
    engine = create_engine(projector_settings, pool_size=2)
    projector = Projector(pool, EventStore(engine))
    loop = ProjectorConsumer(projector_settings, projector)
    task = asyncio.create_task(loop.run())
    try:
        await loop.wait_started()
        while not loop.assignment():  # time the work, not the consumer group's join
            await asyncio.sleep(0.01)
        started = time.perf_counter()
        while projector.applied + projector.duplicates < len(rows):
            await asyncio.sleep(0.02)
        seconds = time.perf_counter() - started
    finally:
        loop.stop()
        await task
        await pool.close()
        await engine.dispose()
    return {"events": len(rows), "seconds": round(seconds, 2), "events_per_s": round(len(rows) / seconds),
            "batches": projector.batches}


async def _scalar(url: str, query: str) -> Any:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval(query)
    finally:
        await conn.close()


async def _rows(url: str, query: str) -> list[tuple[Any, ...]]:
    conn = await asyncpg.connect(url)
    try:
        return [tuple(r) for r in await conn.fetch(query)]
    finally:
        await conn.close()


def _max_rss_mb() -> int:
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.replay", description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="synthetic events to write (default 1,000,000)")
    parser.add_argument("--accounts", type=int, default=None, help="accounts (default 50,000, scaled down for small runs)")
    parser.add_argument("--page-size", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=0, help="replay worker processes (0: the replay's default)")
    parser.add_argument("--profile", action="store_true", help="cProfile the replay and print the top functions")
    parser.add_argument("--live-events", type=int, default=0,
                        help="also time the live projector (Kafka → read models) on the first N events")
    parser.add_argument("--keep-db", action="store_true", help="keep the benchmark database")
    args = parser.parse_args(argv)
    if args.accounts is None:
        args.accounts = max(1, min(50_000, args.events // 20))
    result = asyncio.run(run(args))
    from rich.console import Console
    from rich.table import Table

    table = Table(title="replay benchmark")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("events", f"{result['events']:,}")
    table.add_row("accounts", f"{result['accounts']:,}")
    table.add_row("replay seconds (wall, incl. swap)", f"{result['seconds']:.2f}")
    table.add_row("replay events/s", f"{result['replay_events_per_s']:,}")
    table.add_row("workers", str(result["workers"]))
    table.add_row("replay Python CPU s (all processes)", f"{result['replay_cpu_s']:.2f}")
    if result["postgres_cpu_s"] is not None:
        table.add_row("PostgreSQL CPU s (replay's backends: read + COPY)", f"{result['postgres_cpu_s']:.2f}")
        table.add_row("  of which building indexes", f"{result['postgres_cpu_indexes_s']:.2f}")
    for phase, seconds in result["phases_s"].items():
        table.add_row(f"  phase {phase} s", f"{seconds:.2f}")
    for phase, seconds in result["partition_phases_s"].items():
        table.add_row(f"    partitions' {phase} s (summed)", f"{seconds:.2f}")
    for name, count in result["rows"].items():
        table.add_row(f"  rows {name}", f"{count:,}")
    table.add_row("max RSS MB (before the replay: the generator's)", f"{result['max_rss_mb']} ({result['rss_before_replay_mb']})")
    if result["live"]:
        table.add_row("live projector events/s (Kafka → read models)", f"{result['live']['events_per_s']:,}")
    Console(stderr=False).print(table)
    print(orjson.dumps({"events": result["events"], "seconds": result["seconds"],
                        "replay_events_per_s": result["replay_events_per_s"]}).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
