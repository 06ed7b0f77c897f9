"""The payment processor alone: commands per second and CPU per command, and where that CPU goes.

`python -m bench.processor` isolates the processor from the rest of the pipeline (no API,
relay, projector or notifier), so its cost per command can be measured and changed on its own.
On a fresh database and unique topics (on the shared broker and PostgreSQL server) it starts
the YooKassa sandbox and `--processors` real `python -m payment_processor` processes, then:

1. creates the plan with a CreatePlan command and warms up with a few purchases (group join,
   connection pools, first-call imports are not measured);
2. **purchase**: publishes `--commands` PurchaseSubscription commands (one new account each)
   straight to the commands topic as fast as the producer goes, and waits until every one has
   its terminal event in the event store (a handled-command row is written in the same
   transaction); CPU of the processor processes (psutil `cpu_times`, user + system, all threads)
   is read before the first publish and after the last terminal event;
   The CPU of the PostgreSQL backends serving the processors (`application_name`) is read the
   same way (the server runs on this machine), so moving work into the database shows;
3. **sync** (unless `--no-sync`): pays every checkout on the sandbox's payment page (not
   measured), then publishes one SyncPayment per payment, as the webhook would, and measures the
   same way. A purchase in production costs one of each (plus janitor syncs while it waits);
4. checks the promises it can see: every command ended exactly once, one sandbox payment per
   purchase, every synced subscription active;
5. with `--profile` (default), a second, shorter pass runs the processors under cProfile in CPU
   time (`PROCESSOR_PROFILE_TO`, every thread) and prints where the CPU goes, by area and by
   function. Profiling slows the process down several times: read it as shares, not as ms.

`--provider-latency-ms` makes the sandbox answer every payment call that much later, as a real
provider does: then commands/s shows how much of the provider's latency the processor overlaps.
The janitor's first check is pushed out of the measured window (`PROCESSOR_JANITOR_SCHEDULE_S`),
so the numbers are the commands above and nothing else. The machine is shared: wall-clock
commands/s move with the other load on it, CPU ms per command much less so.
The last line is one JSON object.
"""

from __future__ import annotations

import asyncio
import os
import pstats
import shutil
import tempfile
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil
import typer
from rich.console import Console
from rich.table import Table

from bench import infra
from tests.support.processes import ROOT, ManagedProcess, free_port

app = typer.Typer(add_completion=False, help=__doc__.splitlines()[0])
console = Console(stderr=True)

SUCCESS_CARD = "5555555555554444"
PLAN_PRICE = "299.00"
TERMINAL_TYPES = ("CommandSucceeded", "CommandRejected", "CommandFailed")


# --------------------------------------------------------------------------- the set-up


class Bench:
    """A fresh database, unique topics, the YooKassa sandbox and N processor processes."""

    def __init__(self, kafka: str, server_url: str, processors: int, consumers: int, partitions: int,
                 env: dict[str, str], keep: bool, concurrency: int | None = None) -> None:
        self.kafka, self.server_url = kafka, server_url
        self.n_processors, self.consumers, self.partitions = processors, consumers, partitions
        self.extra_env, self.keep = env, keep
        self.concurrency = concurrency
        self.provider_latency_ms = 0
        self.tag = f"benchproc-{uuid.uuid4().hex[:8]}"
        self.work_dir = Path(tempfile.mkdtemp(prefix="bench-processor-"))
        self.database_name = ""
        self.database_url = ""
        self.yookassa_port = free_port()
        safe = self.tag.replace("-", ".")
        self.topics = {
            "COMMANDS_TOPIC": f"{safe}.commands",
            "EVENTS_TOPIC": f"{safe}.events",
            "COMMANDS_DLQ_TOPIC": f"{safe}.commands.dlq",
            "EVENTS_DLQ_TOPIC": f"{safe}.events.dlq",
        }
        self.yookassa: ManagedProcess | None = None
        self.processors: list[ManagedProcess] = []

    @property
    def yookassa_url(self) -> str:
        return f"http://127.0.0.1:{self.yookassa_port}"

    def settings(self) -> Any:
        from infra.settings import Settings

        return Settings(
            environment="test", database_url=self.database_url, kafka_bootstrap_servers=self.kafka,
            commands_topic=self.topics["COMMANDS_TOPIC"], events_topic=self.topics["EVENTS_TOPIC"],
            commands_dlq_topic=self.topics["COMMANDS_DLQ_TOPIC"], events_dlq_topic=self.topics["EVENTS_DLQ_TOPIC"],
        )

    def env(self) -> dict[str, str]:
        return {
            "ENVIRONMENT": "test",
            "LOG_FORMAT": "json",
            "LOG_LEVEL": "WARNING",  # a log line per command would be measured too
            "DATABASE_URL": self.database_url,
            "KAFKA_BOOTSTRAP_SERVERS": self.kafka,
            **self.topics,
            "YOOKASSA_SHOP_ID": "123456",
            "YOOKASSA_SECRET_KEY": "test_sandbox_secret",
            "YOOKASSA_API_URL": f"{self.yookassa_url}/v3",
            "YOOKASSA_RETURN_URL": "http://127.0.0.1:8000/v1/return",
            "BILLING_CLOCK": "system",
            "PROCESSOR_GROUP_ID": f"processor-{self.tag}",
            "PROCESSOR_CONSUMERS": str(self.consumers),
            **({"PROCESSOR_CONCURRENCY": str(self.concurrency)} if self.concurrency else {}),
            "PROCESSOR_JANITOR_SCHEDULE_S": "3600",  # no janitor syncs inside the measured window
            "PROCESSOR_SCHEDULER_ENABLED": "false",
            **self.extra_env,
        }

    def _create_database(self) -> None:
        import psycopg
        from psycopg import sql
        from sqlalchemy.engine import make_url

        from infra.migrate import upgrade
        from infra.settings import plain_url

        base = make_url(plain_url(self.server_url))
        admin = base.set(database="postgres").render_as_string(hide_password=False)
        self.database_name = f"bench_processor_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.database_name)))
        self.database_url = base.set(database=self.database_name).render_as_string(hide_password=False)
        upgrade(self.settings(), ["eventstore", "payment_processor"])

    def _drop_database(self) -> None:
        import psycopg
        from psycopg import sql
        from sqlalchemy.engine import make_url

        from infra.settings import plain_url

        admin = make_url(plain_url(self.server_url)).set(database="postgres").render_as_string(hide_password=False)
        with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.database_name)))

    async def start(self) -> None:
        from infra.kafka import ensure_topics

        await asyncio.to_thread(self._create_database)
        await ensure_topics(self.settings(), {
            self.topics["COMMANDS_TOPIC"]: self.partitions, self.topics["COMMANDS_DLQ_TOPIC"]: 1,
        })
        self.yookassa = ManagedProcess(
            f"{self.tag}-yookassa", "sandbox.yookassa", ready_url=f"{self.yookassa_url}/healthz", ready_timeout=60,
            env={
                "LOG_LEVEL": "WARNING",
                "SANDBOX_YOOKASSA_HOST": "127.0.0.1",
                "SANDBOX_YOOKASSA_PORT": str(self.yookassa_port),
                "SANDBOX_YOOKASSA_DB": str(self.work_dir / "yookassa.sqlite3"),
                "SANDBOX_YOOKASSA_PUBLIC_URL": "",
                "SANDBOX_YOOKASSA_WEBHOOK_URL": "",  # no API here: the bench sends the syncs itself
                "SANDBOX_YOOKASSA_FAULTS": "",
            },
        )
        await self.yookassa.astart()
        if self.provider_latency_ms:
            rules = [{"endpoint": endpoint, "mode": "latency", "latency_ms": self.provider_latency_ms}
                     for endpoint in ("POST /v3/payments", "GET /v3/payments/*")]
            async with httpx.AsyncClient(base_url=self.yookassa_url, timeout=10, trust_env=False) as client:
                (await client.put("/sandbox/faults", json=rules)).raise_for_status()
        await self.start_processors()

    async def start_processors(self, profile_dir: Path | None = None) -> None:
        self.processors = []
        for i in range(1, self.n_processors + 1):
            port = free_port()
            env = {**self.env(), "PROCESSOR_HEALTH_PORT": str(port)}
            if profile_dir is not None:
                env["PROCESSOR_PROFILE_TO"] = str(profile_dir / f"processor-{i}.pstats")
            proc = ManagedProcess(f"{self.tag}-processor-{i}", "payment_processor", env=env,
                                  ready_url=f"http://127.0.0.1:{port}/healthz", ready_timeout=90)
            self.processors.append(proc)
        await asyncio.gather(*(p.astart() for p in self.processors))

    async def stop_processors(self) -> None:
        await asyncio.gather(*(asyncio.to_thread(p.terminate, 60) for p in self.processors))

    async def stop(self) -> None:
        await self.stop_processors()
        if self.yookassa is not None:
            await asyncio.to_thread(self.yookassa.terminate, 20)
        if self.database_name and not self.keep:
            await asyncio.to_thread(self._drop_database)
        shutil.rmtree(self.work_dir, ignore_errors=True)

    def processor_cpu(self) -> float:
        """User + system CPU seconds of every processor process so far (all threads)."""
        total = 0.0
        for proc in self.processors:
            if proc.pid is None:
                continue
            times = psutil.Process(proc.pid).cpu_times()
            total += times.user + times.system
        return total


# --------------------------------------------------------------------------- commands


def purchase(user_id: str, plan_id: str) -> tuple[uuid.UUID, bytes, bytes]:
    """(command id, key, value) of one PurchaseSubscription, shaped as the API publishes it."""
    import schemas as s

    command_id = s.derived_id("command", user_id, "bench-buy")
    payload = s.PurchaseSubscription(
        subscription_id=s.derived_id("subscription", command_id), plan_id=plan_id, auto_renew=True,
        customer=s.Customer(email=f"{user_id}@example.com", locale="ru"),
    )
    meta = s.Metadata(correlation_id=str(command_id), command_id=command_id, actor=s.Actor(kind="user", id=user_id))
    envelope = s.new_envelope(payload, stream_id=s.account_stream(user_id), metadata=meta, id=command_id)
    return command_id, user_id.encode(), envelope.to_json()


def sync_payment(user_id: str, payment_id: uuid.UUID, provider_payment_id: str) -> tuple[uuid.UUID, bytes, bytes]:
    """(command id, key, value) of the SyncPayment a `payment.succeeded` notification becomes."""
    import schemas as s

    command_id = s.derived_id("command", "yookassa", provider_payment_id, "payment.succeeded", "succeeded")
    payload = s.SyncPayment(payment_id=payment_id, provider_payment_id=provider_payment_id, hint_status="succeeded")
    meta = s.Metadata(correlation_id=str(command_id), command_id=command_id, actor=s.Actor(kind="provider", id="yookassa"))
    envelope = s.new_envelope(payload, stream_id=s.account_stream(user_id), metadata=meta, id=command_id)
    return command_id, user_id.encode(), envelope.to_json()


def create_plan(plan_id: str) -> tuple[uuid.UUID, bytes, bytes]:
    import schemas as s

    command_id = uuid.uuid4()
    payload = s.CreatePlan(plan_id=plan_id, name="Bench monthly", price=s.Money(amount=PLAN_PRICE), period_days=30)
    meta = s.Metadata(correlation_id=str(command_id), command_id=command_id, actor=s.Actor(kind="admin", id="bench"))
    envelope = s.new_envelope(payload, stream_id=s.plan_stream(plan_id), metadata=meta, id=command_id)
    return command_id, plan_id.encode(), envelope.to_json()


async def publish(producer: Any, topic: str, commands: list[tuple[uuid.UUID, bytes, bytes]]) -> None:
    futures = [await producer.send(topic, value, key=key) for _, key, value in commands]
    await asyncio.gather(*futures)


async def ended(conn: Any, command_ids: list[uuid.UUID]) -> int:
    """How many of these commands have ended (their handled-command row commits with the terminal event)."""
    return await conn.fetchval("SELECT count(*) FROM eventstore.handled_commands WHERE command_id = ANY($1::uuid[])", command_ids)


async def wait_ended(conn: Any, command_ids: list[uuid.UUID], timeout: float, what: str) -> float:
    """Poll until every command ended; returns the monotonic time it was first seen complete."""
    deadline = time.monotonic() + timeout
    last = -1
    while True:
        done = await ended(conn, command_ids)
        now = time.monotonic()
        if done >= len(command_ids):
            return now
        if now > deadline:
            raise RuntimeError(f"{what}: only {done} of {len(command_ids)} commands ended within {timeout:.0f}s")
        if done != last:
            last = done
        await asyncio.sleep(0.05)


@dataclass
class Phase:
    name: str
    commands: int
    seconds: float
    cpu_s: float
    pg_cpu_s: float = 0.0

    @property
    def pg_cpu_ms(self) -> float:
        return self.pg_cpu_s * 1000 / self.commands if self.commands else 0.0

    @property
    def per_s(self) -> float:
        return self.commands / self.seconds if self.seconds else 0.0

    @property
    def cpu_ms(self) -> float:
        return self.cpu_s * 1000 / self.commands if self.commands else 0.0


async def measure(bench: Bench, conn: Any, producer: Any, commands: list[tuple[uuid.UUID, bytes, bytes]],
                  name: str, timeout: float) -> Phase:
    ids = [c[0] for c in commands]
    pg0 = await postgres_cpu(conn)
    cpu0, t0 = bench.processor_cpu(), time.monotonic()
    await publish(producer, bench.topics["COMMANDS_TOPIC"], commands)
    t1 = await wait_ended(conn, ids, timeout, name)
    cpu1 = bench.processor_cpu()
    pg1 = await postgres_cpu(conn)
    pg_used = sum(max(0.0, used - pg0.get(pid, 0.0)) for pid, used in pg1.items())
    return Phase(name, len(commands), t1 - t0, cpu1 - cpu0, pg_used)


async def postgres_cpu(conn: Any) -> dict[int, float]:
    """CPU seconds so far of the PostgreSQL backends serving the processors (same machine: /proc)."""
    pids = await conn.fetch(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'payment-processor'"
    )
    out: dict[int, float] = {}
    for row in pids:
        try:
            times = psutil.Process(row["pid"]).cpu_times()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        out[row["pid"]] = times.user + times.system
    return out


async def outcomes(conn: Any, command_ids: list[uuid.UUID]) -> dict[uuid.UUID, dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT command_id, outcome FROM eventstore.handled_commands WHERE command_id = ANY($1::uuid[])", command_ids
    )
    return {r["command_id"]: orjson.loads(r["outcome"]) if isinstance(r["outcome"], (str, bytes)) else r["outcome"] for r in rows}


async def pay_all(yookassa_url: str, provider_ids: list[str], concurrency: int = 16) -> None:
    """Submit the sandbox's payment page for every checkout (the customer's part; not measured).

    A dropped keep-alive connection is retried after looking at the payment: paid is paid."""
    slots = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=yookassa_url, timeout=30, trust_env=False) as client:

        async def paid(pid: str) -> bool:
            items = (await client.get("/sandbox/payments", params={"id": pid})).json()["items"]
            return bool(items) and items[0]["status"] == "succeeded"

        async def pay(pid: str) -> None:
            async with slots:
                for attempt in range(3):
                    try:
                        response = await client.post(f"/checkout/{pid}", data={"action": "pay", "card_number": SUCCESS_CARD})
                    except httpx.TransportError:
                        if attempt == 2:
                            raise
                        continue
                    if response.status_code == 200 or await paid(pid):
                        return
                    raise RuntimeError(f"paying {pid}: {response.status_code} {response.text[:300]}")

        await asyncio.gather(*(pay(p) for p in provider_ids))


async def check_promises(conn: Any, yookassa_url: str, purchases: list[uuid.UUID], synced_users: list[str]) -> dict[str, int]:
    """What the run can see of the two promises: every command ended once, one payment per purchase."""
    terminal = await conn.fetch(
        "SELECT metadata->>'command_id' AS cid, count(*) AS n FROM eventstore.events"
        " WHERE type = ANY($1::text[]) GROUP BY 1", list(TERMINAL_TYPES),
    )
    counts = {r["cid"]: r["n"] for r in terminal}
    not_ended = sum(1 for cid in purchases if counts.get(str(cid), 0) == 0)
    ended_twice = sum(1 for n in counts.values() if n > 1)
    failed = await conn.fetchval(
        "SELECT count(*) FROM eventstore.events WHERE type IN ('CommandFailed', 'CommandRejected')"
    )
    async with httpx.AsyncClient(base_url=yookassa_url, timeout=60, trust_env=False) as client:
        stats = (await client.get("/sandbox/stats", params={"by": "metadata.subscription_id"})).json()
    payments = await conn.fetchval("SELECT count(*) FROM eventstore.events WHERE type = 'PaymentCreated'")
    active = 0
    if synced_users:
        active = await conn.fetchval(
            "SELECT count(DISTINCT stream_id) FROM eventstore.events WHERE type = 'SubscriptionActivated'"
            " AND stream_id = ANY($1::text[])", [f"account-{u}" for u in synced_users],
        )
    return {
        "not_ended": not_ended,
        "ended_twice": ended_twice,
        "failed_or_rejected": int(failed),
        "payment_created_events": int(payments),
        "sandbox_payments": int(stats["totals"]["payments"]),
        "sandbox_successful_charges": int(stats["totals"]["successful_charges"]),
        "subscriptions_charged_twice": len(stats["duplicates"]),
        "synced_not_active": len(synced_users) - int(active),
    }


# --------------------------------------------------------------------------- profile


AREAS: list[tuple[str, tuple[str, ...]]] = [
    ("YooKassa SDK + requests/urllib3 (HTTP client)", ("yookassa/", "requests/", "urllib3/", "charset_normalizer/", "chardet/",
                                                       "idna/", "distro/", "http/client", "http/cookiejar", "urllib/parse",
                                                       "email/", "socket.py", "ssl.py", "platform.py")),
    ("SQLAlchemy + asyncpg (DB client)", ("sqlalchemy/", "asyncpg/", "greenlet")),
    ("aiokafka (consumer)", ("aiokafka/", "kafka/", "async_timeout/")),
    ("pydantic (models, validation)", ("pydantic/", "pydantic_core/")),
    ("logging (structlog)", ("structlog/", "logging/")),
    ("processor domain (decide/apply)", ("payment_processor/domain/",)),
    ("processor I/O code (handler, gateway, schedule)", ("payment_processor/",)),
    ("event store / shared library", ("eventstore/",)),
    ("schemas", ("schemas/",)),
    ("json (orjson/json)", ("json/", "orjson")),
    ("asyncio event loop + selectors", ("asyncio/", "selectors.py")),
    ("threads, queues, futures", ("threading.py", "concurrent/", "queue.py")),
    ("uuid/datetime/decimal/copy/etc", ("uuid.py", "copy.py", "_strptime", "datetime", "decimal")),
]


def _area(filename: str, func: str) -> str | None:
    """The area of a profiled function by its file; None for a built-in (attributed to its callers)."""
    if filename == "~":
        return None
    for label, marks in AREAS:
        if any(m in filename for m in marks):
            return label
    return "other (stdlib: typing, contextlib, enum, …)"


def profile_report(paths: list[Path], top: int = 25) -> tuple[dict[str, float], list[tuple[str, float, float, int]], float]:
    """(own CPU share by area, heaviest functions (name, own s, cumulative s, calls), total s) of merged pstats.

    A built-in (`isinstance`, `socket.send`, …) has no file: its own time is split over its callers
    by the time each call edge took, and goes to the caller's area.
    """
    stats = pstats.Stats(*(str(p) for p in paths))
    areas: dict[str, float] = defaultdict(float)
    rows = []
    total = 0.0
    for (filename, line, func), (_cc, nc, tt, ct, callers) in stats.stats.items():  # type: ignore[attr-defined]
        total += tt
        area = _area(filename, func)
        if area is not None:
            areas[area] += tt
        else:
            edges = {caller: edge[2] for caller, edge in callers.items()}
            weight = sum(edges.values())
            for (cfile, _cline, cfunc), edge_tt in edges.items():
                areas[_area(cfile, cfunc) or "built-ins called by built-ins"] += tt * (edge_tt / weight) if weight else 0.0
            if not weight:
                areas["built-ins called by built-ins"] += tt
        short = filename.split("site-packages/")[-1].replace(str(ROOT) + "/", "")
        short = short.split("/lib/python3.11/")[-1]
        rows.append((f"{short}:{line}({func})", tt, ct, nc))
    rows.sort(key=lambda r: r[1], reverse=True)
    shares = {k: v / total for k, v in sorted(areas.items(), key=lambda kv: -kv[1])} if total else {}
    return shares, rows[:top], total


def cumulative_of(paths: list[Path], names: list[str]) -> dict[str, tuple[float, int]]:
    """Cumulative seconds and calls of named functions (`file_suffix:func`)."""
    stats = pstats.Stats(*(str(p) for p in paths))
    out: dict[str, tuple[float, int]] = {}
    for (filename, _line, func), (_cc, nc, _tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        for name in names:
            suffix, _, want = name.rpartition(":")
            if func == want and filename.endswith(suffix):
                prev = out.get(name, (0.0, 0))
                out[name] = (prev[0] + ct, prev[1] + nc)
    return out


# Synchronous functions only: cProfile counts every resumption of a coroutine as a call, so the
# cumulative time of an `async def` is not meaningful.
HOT_FUNCTIONS = [
    "payment_processor/adapters/gateway.py:_call",
    "yookassa/client.py:request",
    "yookassa/client.py:__init__",
    "payment_processor/domain/decide.py:decide",
    "payment_processor/domain/decide.py:resolve",
    "payment_processor/domain/state.py:build_account",
    "payment_processor/domain/state.py:apply",
    "payment_processor/domain/envelopes.py:to_envelopes",
    "payment_processor/adapters/schedule.py:schedule_rows",
    "schemas/envelope.py:parse_envelope",
    "pydantic/main.py:model_dump",
    "sqlalchemy/engine/base.py:_execute_context",
    "sqlalchemy/util/_concurrency_py3k.py:await_only",
]


# --------------------------------------------------------------------------- the command


async def run_pass(bench: Bench, conn: Any, producer: Any, plan_id: str, n: int, run: str, sync: bool,
                   timeout: float) -> tuple[list[Phase], list[uuid.UUID], list[str]]:
    users = [f"bp-{run}-{i}" for i in range(n)]
    buys = [purchase(u, plan_id) for u in users]
    phases = [await measure(bench, conn, producer, buys, "purchase", timeout)]
    synced: list[str] = []
    if sync:
        results = await outcomes(conn, [b[0] for b in buys])
        todo = []
        for user, (cid, _, _) in zip(users, buys, strict=True):
            outcome = results.get(cid) or {}
            url, payment_id = outcome.get("confirmation_url"), outcome.get("payment_id")
            if url and payment_id:
                todo.append((user, uuid.UUID(str(payment_id)), url.rstrip("/").rsplit("/", 1)[-1]))
        await pay_all(bench.yookassa_url, [t[2] for t in todo])
        syncs = [sync_payment(user, pid, provider) for user, pid, provider in todo]
        phases.append(await measure(bench, conn, producer, syncs, "sync", timeout))
        synced = [t[0] for t in todo]
    return phases, [b[0] for b in buys], synced


async def _main(commands: int, warmup: int, processors: int, consumers: int, partitions: int, sync: bool,
                profile: bool, profile_commands: int, kafka: str, database_url: str, keep: bool,
                timeout: float, concurrency: int | None = None, provider_latency_ms: int = 0) -> dict[str, Any]:
    import asyncpg

    from infra.kafka import make_producer
    from infra.settings import plain_url

    bench = Bench(kafka, database_url, processors, consumers, partitions, {}, keep, concurrency)
    bench.provider_latency_ms = provider_latency_ms
    console.print(f"[bold]bench.processor[/]: {processors} processor(s) × {consumers} consumer(s)"
                  f"{f' × {concurrency} commands at once' if concurrency else ''}, "
                  f"{partitions} partitions, {commands} purchases{' + syncs' if sync else ''}")
    report: dict[str, Any] = {}
    try:
        await bench.start()
        console.print(f"database {bench.database_name}; processors up")
        settings = bench.settings()
        producer = await make_producer(settings, client_id="bench-processor", linger_ms=5)
        conn = await asyncpg.connect(plain_url(bench.database_url), timeout=10)
        try:
            plan_id = f"bench-{uuid.uuid4().hex[:8]}"
            plan = create_plan(plan_id)
            await publish(producer, bench.topics["COMMANDS_TOPIC"], [plan])
            await wait_ended(conn, [plan[0]], 60, "create plan")
            run = uuid.uuid4().hex[:6]
            if warmup:
                await run_pass(bench, conn, producer, plan_id, warmup, f"{run}w", sync, timeout)
            phases, purchases, synced = await run_pass(bench, conn, producer, plan_id, commands, run, sync, timeout)
            checks = await check_promises(conn, bench.yookassa_url, purchases, synced)

            table = Table(title=f"payment processor alone ({processors} process(es), {os.cpu_count()} cores, shared machine)")
            for column in ("phase", "commands", "seconds", "commands/s", "processor CPU ms / command", "processor cores busy",
                           "its PostgreSQL backends' CPU ms / command"):
                table.add_column(column, justify="right" if column != "phase" else "left")
            for p in phases:
                table.add_row(p.name, str(p.commands), f"{p.seconds:.1f}", f"{p.per_s:,.1f}", f"{p.cpu_ms:.2f}",
                              f"{p.cpu_s / p.seconds:.2f}" if p.seconds else "-", f"{p.pg_cpu_ms:.2f}")
            console.print(table)
            console.print("checks: " + ", ".join(f"{k}={v}" for k, v in checks.items()))
            purchase_phase = phases[0]
            report = {
                "commands_per_s": round(purchase_phase.per_s, 1),
                "processor_cpu_ms_per_command": round(purchase_phase.cpu_ms, 2),
                "postgres_cpu_ms_per_command": round(purchase_phase.pg_cpu_ms, 2),
                "phases": {p.name: {"commands": p.commands, "seconds": round(p.seconds, 2), "commands_per_s": round(p.per_s, 1),
                                    "processor_cpu_ms_per_command": round(p.cpu_ms, 2),
                                    "postgres_cpu_ms_per_command": round(p.pg_cpu_ms, 2)} for p in phases},
                "processor_cpu_ms_per_purchase_incl_sync": round(sum(p.cpu_ms for p in phases), 2),
                "checks": checks,
                "processors": processors,
                "consumers_per_processor": consumers,
                "concurrency_per_consumer": concurrency,
                "provider_latency_ms": provider_latency_ms,
                "partitions": partitions,
                "load_average_1m": round(os.getloadavg()[0], 1),
            }

            if profile:
                profile_dir = Path(tempfile.mkdtemp(prefix="bench-processor-prof-"))
                console.print(f"profiling pass: {profile_commands} purchases under cProfile (slower) …")
                await bench.stop_processors()
                await bench.start_processors(profile_dir)
                await run_pass(bench, conn, producer, plan_id, profile_commands, f"{run}p", sync, timeout * 3)
                await bench.stop_processors()
                paths = sorted(profile_dir.glob("*.pstats"))
                if not paths:
                    console.print("[yellow]no profile written (did the processors stop cleanly?)[/yellow]")
                else:
                    shares, heaviest, total = profile_report(paths)
                    hot = cumulative_of(paths, HOT_FUNCTIONS)
                    n_cmds = profile_commands * (2 if sync else 1)
                    atable = Table(title=f"where the processor's CPU goes (cProfile, own time; {total:.1f} CPU s profiled "
                                         f"for {n_cmds} commands — profiling inflates it)")
                    atable.add_column("area")
                    atable.add_column("share", justify="right")
                    for label, share in shares.items():
                        atable.add_row(label, f"{share:.1%}")
                    console.print(atable)
                    htable = Table(title="hot paths (cumulative, incl. callees)")
                    htable.add_column("function")
                    htable.add_column("share of profiled CPU", justify="right")
                    htable.add_column("calls", justify="right")
                    for name in HOT_FUNCTIONS:
                        if name in hot:
                            htable.add_row(name, f"{hot[name][0] / total:.1%}", str(hot[name][1]))
                    console.print(htable)
                    ftable = Table(title="heaviest functions by own time")
                    ftable.add_column("function")
                    ftable.add_column("own", justify="right")
                    ftable.add_column("cumulative", justify="right")
                    ftable.add_column("calls", justify="right")
                    for name, own, cum, calls in heaviest:
                        ftable.add_row(name[-110:], f"{own / total:.1%}", f"{cum / total:.1%}", str(calls))
                    console.print(ftable)
                    console.print(f"pstats files: {profile_dir}")
                    report["profile_area_shares"] = {k: round(v, 3) for k, v in shares.items()}
                    report["profile_hot_paths"] = {k: round(v[0] / total, 3) for k, v in hot.items()}
                    report["profile_dir"] = str(profile_dir)
        finally:
            await conn.close()
            await producer.stop()
    finally:
        await bench.stop()
    return report


@app.command()
def main(
    commands: int = typer.Option(2000, help="PurchaseSubscription commands in the measured pass (one account each)"),
    warmup: int = typer.Option(100, help="purchases before measuring (not counted)"),
    processors: int = typer.Option(1, help="payment processor processes"),
    consumers: int = typer.Option(1, help="Kafka consumers per processor (PROCESSOR_CONSUMERS)"),
    concurrency: int = typer.Option(None, help="commands at once per consumer (PROCESSOR_CONCURRENCY; default: the processor's)"),
    partitions: int = typer.Option(6, help="partitions of the commands topic"),
    sync: bool = typer.Option(True, help="also pay every checkout and measure one SyncPayment per purchase"),
    profile: bool = typer.Option(True, help="a second pass under cProfile: where the CPU goes"),
    profile_commands: int = typer.Option(500, help="purchases in the profiling pass"),
    timeout: float = typer.Option(600.0, help="seconds a phase may take before the run fails"),
    provider_latency_ms: int = typer.Option(0, help="the sandbox answers every payment call this much later (real YooKassa: ~100-500 ms)"),
    kafka: str = typer.Option(None, help="bootstrap servers (default: .stack/env)"),
    database_url: str = typer.Option(None, help="PostgreSQL server URL (default: .stack/env); a fresh database is made on it"),
    keep: bool = typer.Option(False, help="keep the benchmark's database"),
) -> None:
    """Measure the payment processor on its own; print tables and one JSON line."""
    kafka, database_url = infra(kafka, database_url)
    report = asyncio.run(_main(commands, warmup, processors, consumers, partitions, sync, profile, profile_commands,
                               kafka, database_url, keep, timeout, concurrency, provider_latency_ms))
    print(orjson.dumps(report).decode())


if __name__ == "__main__":
    app()
