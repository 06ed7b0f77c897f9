"""End-to-end load: virtual users buy, pay on the sandbox page and wait for the active subscription.

`python -m bench.e2e` measures the whole product, not a part of it. On a fresh database and
unique topics (the shared broker and PostgreSQL server, nothing of the development stack is
touched) it starts every process with `tests.support.stack.Pipeline` — the YooKassa and Mailgun
sandboxes, the relay, the processors, the projector, the notifier and the command API — then:

1. the ceiling: a bare aiokafka produce → consume → PostgreSQL insert loop on the same broker and
   server (nothing of the product runs yet), in messages per second;
2. the load: `--users` virtual users, each in a loop for `--duration` seconds: POST
   /v1/subscriptions with an Idempotency-Key and `Prefer: wait=10` (→ the confirmation URL), POST
   the sandbox's payment page form with the success card, then long-poll GET /v1/subscriptions/{id}
   (`If-None-Match` + `Prefer: wait=10`) until it is `active` in the read model (which takes the
   webhook → SyncPayment → processor → relay → projector path).

It reports completed purchases per second (purchases that became active inside the measured
window, after `--warmup`), p50/p99 of request → confirmation URL and of payment → active, and
the ratio to the ceiling. The last line is one JSON object. `--profile` samples every service
process with py-spy during the steady state and prints where each one spends its time.

Issue 21 (decision 0125) added:
- **the I/O of one purchase** (`--count N`, default 20, before the load): the product's own
  counters (every /metrics, the sandboxes' stats, Kafka offsets, `pg_stat_database` and
  `pg_stat_user_tables`) around N purchases, minus the idle pipeline's rate (bench/_counters.py);
- **`--ceiling`**: the same-work ceiling (bench/_samework.py), a bare pipeline doing exactly that
  I/O per purchase with no logic, under the same closed-loop users; `ratio_same_work` = product
  purchases/s ÷ ceiling purchases/s, `ratio_same_work_cpu` = ceiling CPU ÷ product CPU per purchase;
- **`--rate R`**: an open loop (Poisson arrivals, or `--fixed-spacing`) instead of `--users`, with
  p50/p99 of both latencies of the purchases requested after the warm-up, and the backlog;
- **`--scale-out`**: the load on 1 processor × 6 partitions, 2 processors × 3, and 2 API instances
  (users/arrivals spread round-robin over them), CPU per purchase by process side by side;
- **`--floor`** (decision 0127): the same bare pipeline with the least I/O a purchase can do in
  this architecture (`_samework.MINIMAL_IO`: two commands, two events, the two provider calls,
  the email, two event rows and one read-model row), the cost no trimming of the product's own
  work goes below; and for every run the CPU of the services alone (every process but the load
  client and the sandboxes, which stand in for the users and the providers).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import typer
import uvloop
from rich.console import Console
from rich.table import Table

from bench import infra
from tests.support.processes import ROOT
from tests.support.stack import Pipeline, PipelineOptions

app = typer.Typer(add_completion=False, help=__doc__.splitlines()[0])
console = Console(stderr=True)

SUCCESS_CARD = "5555555555554444"
PLAN_ID = "bench-monthly"
PROFILE_DIR = ROOT / "test-output" / "profiles"


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by nearest rank; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


# --------------------------------------------------------------------------- the ceiling


def ceiling_producer(bootstrap: str, topic: str, seconds: float, payload_bytes: int) -> None:
    """The ceiling's producer, in a process of its own (as the relay is): keyed records as fast as it goes."""
    from aiokafka.partitioner import DefaultPartitioner

    from infra.kafka import make_producer
    from infra.settings import Settings

    async def produce() -> None:
        settings = Settings(environment="test", kafka_bootstrap_servers=bootstrap)
        producer = await make_producer(settings, linger_ms=5, max_batch_size=512 * 1024)
        partitions = sorted(await producer.partitions_for(topic))
        partitioner = DefaultPartitioner()
        pad = "x" * max(0, payload_bytes - 120)
        end = time.monotonic() + seconds
        try:
            while time.monotonic() < end:
                batches: dict[int, Any] = {}
                for _ in range(2000):
                    key = str(uuid.uuid4()).encode()
                    body = orjson.dumps({"id": key.decode(), "type": "CeilingProbe", "data": {"pad": pad}})
                    partition = partitioner(key, partitions, partitions)
                    builder = batches.get(partition) or batches.setdefault(partition, producer.create_batch())
                    if builder.append(key=key, value=body, timestamp=None) is None:
                        await producer.send_batch(builder, topic, partition=partition)
                        batches[partition] = builder = producer.create_batch()
                        builder.append(key=key, value=body, timestamp=None)
                futures = [await producer.send_batch(b, topic, partition=p) for p, b in batches.items()]
                await asyncio.gather(*futures)
        finally:
            await producer.stop()

    asyncio.run(produce())


async def measure_ceiling(bootstrap: str, database_url: str, seconds: float, payload_bytes: int = 900) -> dict[str, Any]:
    """Bare aiokafka producer → consumer → asyncpg insert, as fast as it goes, for `seconds`.

    A producer process (idempotent, acks=all, record batches like the relay's) and, here, one
    consumer that inserts each fetched batch with COPY in one transaction and commits the offsets
    after it, on a unique topic and a scratch table. Messages inserted per second is the ceiling:
    what this machine's broker and database allow one Python consumer, with no product logic.
    """
    import asyncpg
    from aiokafka import AIOKafkaConsumer

    from infra.kafka import ensure_topics
    from infra.settings import Settings, plain_url

    topic = f"bench.ceiling.{uuid.uuid4().hex[:10]}"
    settings = Settings(environment="test", kafka_bootstrap_servers=bootstrap, database_url=database_url)
    await ensure_topics(settings, {topic: 6})
    conn = await asyncpg.connect(plain_url(database_url), timeout=10)
    table = f"ceiling_{uuid.uuid4().hex[:8]}"
    await conn.execute(f"CREATE TABLE {table} (id uuid PRIMARY KEY, k text, body jsonb)")
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=f"ceiling-{uuid.uuid4().hex[:8]}",
        enable_auto_commit=False, auto_offset_reset="earliest", max_poll_records=5000,
        fetch_max_bytes=16 * 1024 * 1024, max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await consumer.start()
    producer = await asyncio.create_subprocess_exec(
        sys.executable, "-c",
        f"from bench.e2e import ceiling_producer; ceiling_producer({bootstrap!r}, {topic!r}, {seconds + 3.0}, {payload_bytes})",
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    stop = asyncio.Event()
    consumed = 0

    async def consume() -> None:
        nonlocal consumed
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=200, max_records=5000)
            rows = [(uuid.UUID(r.key.decode()), r.key.decode(), r.value.decode())
                    for records in batch.values() for r in records]
            if not rows:
                continue
            async with conn.transaction():
                await conn.copy_records_to_table(table, records=rows, columns=["id", "k", "body"])
            await consumer.commit()
            consumed += len(rows)

    task = asyncio.create_task(consume())
    await asyncio.sleep(2.0)  # the producer process starts; the group joins
    c0, t0 = consumed, time.monotonic()
    await asyncio.sleep(seconds)
    c1, t1 = consumed, time.monotonic()
    stop.set()
    await producer.wait()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
    await consumer.stop()
    await conn.execute(f"DROP TABLE {table}")
    await conn.close()
    return {"msgs_per_s": (c1 - c0) / (t1 - t0), "consumed": consumed}


# --------------------------------------------------------------------------- the load


@dataclass
class Results:
    confirm_ms: list[float] = field(default_factory=list)
    activate_ms: list[float] = field(default_factory=list)
    completed_at: list[float] = field(default_factory=list)
    began_at: list[float] = field(default_factory=list)  # when each completed purchase was requested
    started: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    def error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1


async def create_plan(pipeline: Pipeline, client: httpx.AsyncClient) -> None:
    operator = {"Authorization": f"Bearer {pipeline.token('bench-admin', role='service', operators=['bench'])}", "X-Operator": "bench"}
    response = await client.post(
        "/v1/admin/plans",
        headers={**operator, "Idempotency-Key": PLAN_ID, "Prefer": "wait=10"},
        json={"plan_id": PLAN_ID, "name": "Monthly", "price": {"amount": "299.00", "currency": "RUB"},
              "period_days": 30, "description": "bench", "reason": "bench"},
    )
    if response.status_code not in (200, 202):
        raise RuntimeError(f"creating the plan failed: {response.status_code} {response.text}")
    deadline = time.monotonic() + 30
    token = pipeline.token("bench-probe", email="probe@example.com")
    while time.monotonic() < deadline:  # the API checks the plan in the read model
        plans = await client.get("/v1/plans", headers={"Authorization": f"Bearer {token}"})
        if plans.status_code == 200 and any(p["plan_id"] == PLAN_ID for p in plans.json()["items"]):
            return
        await asyncio.sleep(0.1)
    raise RuntimeError("the plan never reached read.plans")


async def one_purchase(client: httpx.AsyncClient, pipeline: Pipeline, run: str, n: int, results: Results,
                       poll_s: float, deadline: float) -> None:
    """Buy → pay → active, timing both halves. Failures are counted, never retried silently."""
    user = f"bench-{run}-{n}"
    auth = {"Authorization": f"Bearer {pipeline.token(user, email=f'{user}@example.com')}"}
    results.started += 1
    t0 = time.monotonic()
    response = await client.post(
        "/v1/subscriptions", headers={**auth, "Idempotency-Key": f"buy-{n}", "Prefer": "wait=10"},
        json={"plan_id": PLAN_ID, "auto_renew": True},
    )
    if response.status_code not in (200, 202):
        results.error(f"purchase http {response.status_code}")
        return
    body = response.json()
    while not (body.get("outcome") or {}).get("confirmation_url"):
        if body.get("status") in ("rejected", "failed") or time.monotonic() > deadline + 30:
            results.error(f"purchase {body.get('status')}")
            return
        # Not ended within the POST's wait (a backlog): wait on the command, do not poll it.
        status = await client.get(f"/v1/commands/{body['command_id']}", headers={**auth, "Prefer": "wait=10"})
        if status.status_code == 200:
            body = status.json()
        else:
            await asyncio.sleep(poll_s)
    t1 = time.monotonic()
    outcome = body["outcome"]
    paid = await client.post(outcome["confirmation_url"], data={"action": "pay", "card_number": SUCCESS_CARD})
    if paid.status_code != 200:
        results.error(f"checkout http {paid.status_code}")
        return
    subscription = f"/v1/subscriptions/{outcome['subscription_id']}"
    etag = None
    while True:
        # Long-poll: with the last ETag and `Prefer: wait`, the API answers when the subscription changes.
        headers = {**auth, "If-None-Match": etag, "Prefer": "wait=10"} if etag else auth
        got = await client.get(subscription, headers=headers)
        if got.status_code == 200:
            if got.json()["status"] == "active":
                break
            etag = got.headers.get("ETag")
        elif got.status_code != 304:
            await asyncio.sleep(poll_s)  # not projected yet (404) or a transient error
        if time.monotonic() > deadline + 60:
            results.error("never active")
            return
    t2 = time.monotonic()
    results.confirm_ms.append((t1 - t0) * 1000)
    results.activate_ms.append((t2 - t1) * 1000)
    results.completed_at.append(t2)
    results.began_at.append(t0)


def _client(url: str) -> httpx.AsyncClient:
    """One virtual user's small HTTP client.

    Idle connections are dropped before uvicorn's 5 s keep-alive ends: reusing one the server is
    closing at that moment fails the request (a ReadError), which a browser would retry.
    """
    limits = httpx.Limits(max_connections=4, max_keepalive_connections=4, keepalive_expiry=2.0)
    return httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(30.0), limits=limits, trust_env=False)


async def run_load(pipeline: Pipeline, users: int, duration: float, poll_s: float) -> tuple[Results, float, float]:
    """`users` loops of purchases for `duration` seconds, spread evenly over the API instances.

    Each virtual user has its own small HTTP client, as a real user's browser or app would:
    httpcore scans every pooled connection on each request, so one client shared by all users
    spends more CPU choosing a connection than sending the request.
    """
    results = Results()
    run = uuid.uuid4().hex[:6]
    counter = iter(range(10**9))

    client_for = _client

    async with client_for(pipeline.api_urls[0]) as setup:
        await create_plan(pipeline, setup)
    start = time.monotonic()
    end = start + duration

    async def user_loop(i: int) -> None:
        async with client_for(pipeline.api_urls[i % len(pipeline.api_urls)]) as client:
            await asyncio.sleep(random.random() * min(2.0, duration / 10))  # ramp up
            while time.monotonic() < end:
                try:
                    await one_purchase(client, pipeline, run, next(counter), results, poll_s, end)
                except httpx.HTTPError as exc:
                    results.error(type(exc).__name__)

    await asyncio.gather(*(user_loop(i) for i in range(users)))
    return results, start, end


def arrival_offsets(rate: float, duration: float, *, poisson: bool = True, seed: int | None = None) -> list[float]:
    """Seconds after the start at which open-loop purchases arrive: `rate` per second for `duration`.

    Poisson arrivals (exponential gaps) by default, else fixed spacing (1/rate). The schedule is
    fixed before the run: arrivals never wait for completions, so a slow product builds a backlog
    instead of slowing the load down (closed-loop users hide that).
    """
    if rate <= 0 or duration <= 0:
        return []
    if not poisson:
        return [i / rate for i in range(int(rate * duration + 1e-9))]
    rng = random.Random(seed)
    out: list[float] = []
    t = rng.expovariate(rate)
    while t < duration:
        out.append(t)
        t += rng.expovariate(rate)
    return out


@dataclass
class OpenLoop:
    """What an open-loop run saw besides the purchases' timings."""

    rate: float
    scheduled: int = 0
    max_in_flight: int = 0
    in_flight_at_end: int = 0  # the backlog when the last arrival was issued
    max_late_ms: float = 0.0  # how far behind its schedule the client issued an arrival


async def run_open_loop(pipeline: Pipeline, rate: float, duration: float, poll_s: float, *, poisson: bool = True,
                        clients: int = 64) -> tuple[Results, float, float, OpenLoop]:
    """Purchases arriving at `rate` per second for `duration` seconds, whatever the product answers.

    Each arrival is one purchase (buy → pay → active) on one of `clients` small HTTP clients taken
    round-robin (spread over the API instances), like `clients` browsers; an arrival never waits
    for an earlier one, so the backlog (purchases in flight) shows when the product falls behind.
    """
    results = Results()
    run = uuid.uuid4().hex[:6]
    stats = OpenLoop(rate=rate)
    offsets = arrival_offsets(rate, duration, poisson=poisson)
    stats.scheduled = len(offsets)
    urls = pipeline.api_urls
    pool = [_client(urls[i % len(urls)]) for i in range(clients)]
    async with _client(urls[0]) as setup:
        await create_plan(pipeline, setup)
    in_flight = 0
    tasks: set[asyncio.Task[None]] = set()

    async def purchase(n: int, end: float) -> None:
        nonlocal in_flight
        in_flight += 1
        stats.max_in_flight = max(stats.max_in_flight, in_flight)
        try:
            await one_purchase(pool[n % clients], pipeline, run, n, results, poll_s, end)
        except httpx.HTTPError as exc:
            results.error(type(exc).__name__)
        finally:
            in_flight -= 1

    start = time.monotonic()
    end = start + duration
    try:
        for n, offset in enumerate(offsets):
            delay = start + offset - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                stats.max_late_ms = max(stats.max_late_ms, -delay * 1000)
            task = asyncio.create_task(purchase(n, end))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.sleep(max(0.0, end - time.monotonic()))
        stats.in_flight_at_end = in_flight
        if tasks:
            await asyncio.gather(*tasks)
    finally:
        await asyncio.gather(*(c.aclose() for c in pool), return_exceptions=True)
    return results, start, end, stats


async def run_fixed(pipeline: Pipeline, purchases: int, concurrency: int, poll_s: float) -> Results:
    """Exactly `purchases` purchases, `concurrency` at a time (the counting phase), all waited for."""
    results = Results()
    run = uuid.uuid4().hex[:6]
    numbers = iter(range(purchases))
    deadline = time.monotonic() + 60

    async def worker(i: int) -> None:
        async with _client(pipeline.api_urls[i % len(pipeline.api_urls)]) as client:
            for n in numbers:
                try:
                    await one_purchase(client, pipeline, run, n, results, poll_s, deadline)
                except httpx.HTTPError as exc:
                    results.error(type(exc).__name__)

    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return results


# --------------------------------------------------------------------------- counting the I/O of one purchase


def counter_targets(pipeline: Pipeline) -> dict[str, Any]:
    """Where `bench.counters.snapshot` reads this pipeline's counters."""
    metrics = {("api" if i == 0 else f"api-{i + 1}"): f"{url}/metrics" for i, url in enumerate(pipeline.api_urls)}
    for i, port in enumerate(pipeline.processor_health_ports, start=1):
        metrics[f"processor-{i}"] = f"http://127.0.0.1:{port}/metrics"
    for role, port in getattr(pipeline, "bench_metrics_ports", {}).items():
        metrics[role] = f"http://127.0.0.1:{port}/metrics"
    env = pipeline.base_env()
    return {
        "metrics_urls": metrics,
        "bootstrap": pipeline.kafka_bootstrap,
        "topics": {"commands": env["COMMANDS_TOPIC"], "events": env["EVENTS_TOPIC"],
                   "commands.dlq": env["COMMANDS_DLQ_TOPIC"], "events.dlq": env["EVENTS_DLQ_TOPIC"]},
        "groups": {"processor": env["PROCESSOR_GROUP_ID"], "projector": env["PROJECTOR_GROUP_ID"],
                   "notifier": env["NOTIFIER_GROUP_ID"]},
        "database_url": pipeline.database_url,
        "yookassa_url": pipeline.yookassa_url,
        "mailgun_url": pipeline.mailgun_url,
    }


async def count_io(pipeline: Pipeline, purchases: int, concurrency: int, poll_s: float,
                   idle_s: float = 8.0) -> dict[str, Any]:
    """The I/O of one purchase: counters around `purchases` purchases, minus the idle pipeline's rate.

    PostgreSQL publishes a backend's statistics up to 10 s late, so each reading waits for them to
    settle; the idle stretch before the purchases measures what the pipeline does by itself.
    """
    from bench import _counters as counters

    targets = counter_targets(pipeline)
    await asyncio.sleep(counters.PG_STATS_SETTLE_S)
    a, ta = await counters.snapshot(**targets), time.monotonic()
    await asyncio.sleep(idle_s)
    b, tb = await counters.snapshot(**targets), time.monotonic()
    results = await run_fixed(pipeline, purchases, concurrency, poll_s)
    done = len(results.completed_at)
    if done == 0:
        raise RuntimeError(f"no purchase completed while counting: {results.errors}")
    await asyncio.sleep(counters.PG_STATS_SETTLE_S)
    c, tc = await counters.snapshot(**targets), time.monotonic()
    counts = counters.per_purchase(b, c, done, tc - tb, idle=counters.delta(a, b), idle_seconds=tb - ta)
    return {"purchases": done, "errors": dict(results.errors), "counts": counts, "summary": counters.summary(counts)}


def print_counts(counted: dict[str, Any], title: str) -> None:
    from bench import _counters as counters

    table = Table(title=title)
    table.add_column("I/O")
    table.add_column("what")
    table.add_column("per purchase", justify="right")
    for kind, items in counters.group(counted["counts"]).items():
        for i, (item, value) in enumerate(items.items()):
            table.add_row(kind if i == 0 else "", item, f"{value:,.2f}")
    console.print(table)
    console.print("summary per purchase: " + ", ".join(f"{k} {v:,.1f}" for k, v in counted["summary"].items()))


# --------------------------------------------------------------------------- CPU accounting


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds a process has used so far (Linux /proc), None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def cpu_snapshot(pipeline: Pipeline) -> dict[str, float]:
    """CPU seconds so far of every service, the benchmark's own process and this run's PostgreSQL backends.

    CPU per completed purchase does not depend on what else runs on the machine (other engineers'
    tests share these two cores), so it says where the time goes even when wall-clock rates are noisy.
    """
    import asyncpg

    from infra.settings import plain_url

    snap: dict[str, float] = {}
    for name, proc in pipeline.processes.items():
        if proc.pid is not None and (cpu := cpu_seconds(proc.pid)) is not None:
            snap[name] = cpu
    snap["bench client"] = cpu_seconds(os.getpid()) or 0.0
    broker = _local_broker_pid()
    if broker is not None and (cpu := cpu_seconds(broker)) is not None:
        snap["kafka broker (shared)"] = cpu
    conn = await asyncpg.connect(plain_url(pipeline.database_url), timeout=10)
    try:
        pids = [r[0] for r in await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")]
        work = await conn.fetchrow(
            "SELECT (SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()) AS tx,"
            " (SELECT coalesce(max(position), 0) FROM eventstore.events) AS events,"
            " (SELECT count(*) FROM read.commands) AS commands")
        snap.update({f"work:{k}": float(v) for k, v in work.items()})
    finally:
        await conn.close()
    for pid in pids:
        if (cpu := cpu_seconds(pid)) is not None:
            snap[f"pg:{pid}"] = cpu
    return snap


def _local_broker_pid() -> int | None:
    """The development stack's broker process, when this run uses it (its CPU is part of the cost)."""
    pid_file = ROOT / ".stack" / "kafka" / "kafka.pid"
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if Path(f"/proc/{pid}").exists() else None


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Per process CPU seconds between two snapshots; PostgreSQL backends summed as "postgres"."""
    out: dict[str, float] = {}
    for key, value in after.items():
        if key.startswith("work:"):
            continue
        used = value - before.get(key, 0.0 if key.startswith("pg:") else value)
        name = "postgres (this run's backends)" if key.startswith("pg:") else key
        out[name] = out.get(name, 0.0) + max(0.0, used)
    return out


# --------------------------------------------------------------------------- profiling


def py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"  # the venv's bin, when run as .venv/bin/python
    found = str(beside) if beside.exists() else shutil.which("py-spy")
    return found if found and Path(found).exists() else None


async def profile_services(pipeline: Pipeline, seconds: float) -> dict[str, Path]:
    """py-spy `record` of every running service for `seconds` (raw folded stacks, one file each)."""
    spy = py_spy()
    if spy is None:
        console.print("[yellow]py-spy is not installed (pip install -e '.[dev]'): no profile[/yellow]")
        return {}
    PROFILE_DIR.mkdir(parents=True, exist_ok=True)
    outputs: dict[str, Path] = {}
    procs = []
    for name, proc in pipeline.processes.items():
        if not proc.running:
            continue
        out = PROFILE_DIR / f"e2e-{name}.folded"
        outputs[name] = out
        procs.append(await asyncio.create_subprocess_exec(
            spy, "record", "--pid", str(proc.pid), "--duration", str(int(seconds)), "--rate", "200",
            "--format", "raw", "--output", str(out), "--nonblocking",
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        ))
    await asyncio.gather(*(p.wait() for p in procs))
    return outputs


PROJECT_PACKAGES = ("command_api", "payment_processor", "projector", "notifier", "eventstore", "schemas", "sandbox", "admin")
# a thread waiting (the event loop in select, a pool worker on its queue) is idle, not busy
IDLE_LEAVES = ("select (selectors.py", "EpollSelector.select", "_run_once (asyncio/base_events.py",
               "wait (threading.py", "Condition.wait (threading.py", "Queue.get (queue.py", "_worker (concurrent/futures/thread.py",
               # uvloop: its C loop (waiting in epoll, or doing I/O) shows as the last Python frame
               "Runner.run (asyncio/runners.py")


def _frame_file(frame: str) -> str:
    return frame[frame.rfind("(") + 1:frame.rfind(")")].rsplit(":", 1)[0] if "(" in frame else ""


def summarize_profile(path: Path, top: int = 5) -> tuple[int, list[tuple[str, float]], list[tuple[str, float]]]:
    """(busy samples, [(library of the running frame, share)], [(innermost project function, share)]).

    Samples whose running frame is the event loop waiting (`select`) are idle and not counted. The
    library is the top-level package of the frame that was running (asyncpg, aiokafka, pydantic,
    starlette, …); the project function is the nearest frame of this repository's code above it,
    i.e. which of our code paths paid for that time.
    """
    if not path.exists():
        return 0, [], []
    total = 0
    by_lib: Counter[str] = Counter()
    by_ours: Counter[str] = Counter()
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.strip().rpartition(" ")
        if not count.isdigit() or not stack:
            continue
        frames = stack.split(";")
        if any(frames[-1].startswith(idle) or idle in frames[-1] for idle in IDLE_LEAVES):
            continue
        n = int(count)
        total += n
        leaf_file = _frame_file(frames[-1])
        by_lib[leaf_file.split("/")[0].removesuffix(".py") or "?"] += n
        ours = next((f for f in reversed(frames) if _frame_file(f).split("/")[0] in PROJECT_PACKAGES), None)
        by_ours[ours.split(" (")[0] + f" ({Path(_frame_file(ours)).name})" if ours else "(outside project code)"] += n
    if not total:
        return 0, [], []
    return (total, [(k, v / total) for k, v in by_lib.most_common(top)],
            [(k, v / total) for k, v in by_ours.most_common(top)])


# --------------------------------------------------------------------------- the command


@dataclass(frozen=True)
class Variant:
    """One configuration of the pipeline's processes (`--scale-out` runs several side by side)."""

    name: str
    processors: int
    api_instances: int
    partitions: int = 6


SCALE_OUT = (
    Variant("1 processor × 6 partitions, 1 API", processors=1, api_instances=1),
    Variant("2 processors × 3 partitions, 1 API", processors=2, api_instances=1),
    Variant("1 processor × 6 partitions, 2 APIs", processors=1, api_instances=2),
)


def pipeline_options(kafka: str, database_url: str, processors: int, consumers: int, api_instances: int,
                     keep: bool, partitions: int = 6, metrics_ports: dict[str, int] | None = None) -> PipelineOptions:
    ports = metrics_ports or {}
    return PipelineOptions(
        database_url=database_url, kafka_bootstrap=kafka, name="bench-e2e", processors=processors,
        keep_database=keep, api_instances=api_instances, partitions=partitions,
        env={"LOG_LEVEL": "WARNING"},
        role_env={
            "processor": {"PROCESSOR_CONSUMERS": str(consumers)},
            "yookassa": {"SANDBOX_YOOKASSA_WEBHOOK_RETRY_S": "0.5,1,2,5"},
            # the single-instance workers serve /metrics so the I/O of a purchase can be counted
            **{role: {f"{role.upper()}_METRICS_PORT": str(port)} for role, port in ports.items()},
        },
    )


@dataclass
class Load:
    """The load of one run: closed-loop `users`, or open-loop arrivals at `rate` per second."""

    users: int
    duration: float
    warmup: float
    poll: float
    rate: float = 0.0
    poisson: bool = True


@app.command()
def main(
    users: int = typer.Option(64, help="concurrent virtual users (closed loop: each buys again when done)"),
    duration: float = typer.Option(45.0, help="seconds of load"),
    warmup: float = typer.Option(10.0, help="seconds at the start not counted in purchases/s"),
    processors: int = typer.Option(2, help="payment processor processes"),
    consumers: int = typer.Option(1, help="Kafka consumers per processor (each runs up to PROCESSOR_CONCURRENCY accounts at once)"),
    api_instances: int = typer.Option(1, help="command API processes (virtual users spread over them round-robin)"),
    partitions: int = typer.Option(6, help="partitions of the commands and events topics"),
    poll: float = typer.Option(0.25, help="seconds between a virtual user's retries when an answer is not there yet"),
    rate: float = typer.Option(0.0, help="open loop: purchases arriving per second (Poisson), independent of completions; replaces --users"),
    fixed_spacing: bool = typer.Option(False, help="open loop: arrivals exactly 1/rate apart instead of Poisson"),
    count: int = typer.Option(20, help="purchases whose I/O is counted from the product's counters before the load (0 skips)"),
    ceiling: bool = typer.Option(False, "--ceiling", help="also run the same-work ceiling (bench/samework.py) and report product ÷ ceiling"),
    floor: bool = typer.Option(False, "--floor", help="also run the bare pipeline with the least I/O a purchase can do in this architecture (samework.MINIMAL_IO): the cost no trimming of the product goes below"),
    scale_out: bool = typer.Option(False, "--scale-out", help="instead of --processors/--api-instances/--partitions: the load on 1 processor × 6 partitions, 2 × 3, and 2 APIs; CPU per purchase side by side"),
    ceiling_seconds: float = typer.Option(10.0, help="seconds of the bare Kafka → PostgreSQL message loop (0 skips)"),
    profile: bool = typer.Option(False, help="py-spy every service for 15 s of the steady state"),
    kafka: str = typer.Option(None, help="bootstrap servers (default: .stack/env)"),
    database_url: str = typer.Option(None, help="PostgreSQL server URL (default: .stack/env); a fresh database is made on it"),
    keep: bool = typer.Option(False, help="keep the benchmark's database"),
) -> None:
    """Run the end-to-end load benchmark and print tables and one JSON line."""
    kafka, database_url = infra(kafka, database_url)
    if (ceiling or floor) and count <= 0:
        raise typer.BadParameter("--ceiling and --floor count the bare pipeline's I/O: they need --count > 0")
    load = Load(users=users, duration=duration, warmup=warmup, poll=poll, rate=rate, poisson=not fixed_spacing)
    variant = Variant("as configured", processors=processors, api_instances=api_instances, partitions=partitions)
    report = uvloop.run(_main(load, variant, consumers, count, ceiling, scale_out, ceiling_seconds, profile, kafka,
                              database_url, keep, floor))
    print(orjson.dumps(report).decode())


async def _main(load: Load, variant: Variant, consumers: int, count: int, same_work: bool, scale_out: bool,
                ceiling_seconds: float, profile: bool, kafka: str, database_url: str, keep: bool,
                floor: bool = False) -> dict[str, Any]:
    ceiling = {"msgs_per_s": 0.0}
    if ceiling_seconds > 0:
        console.print(f"ceiling: bare aiokafka → asyncpg loop for {ceiling_seconds:.0f}s …")
        ceiling = await measure_ceiling(kafka, database_url, ceiling_seconds)
        console.print(f"ceiling: {ceiling['msgs_per_s']:,.0f} msgs/s")

    scaled: list[dict[str, Any]] = []
    if scale_out:
        # the variants replace the configured run; the top-level figures are the first variant's
        scaled, product = await run_scale_out(load, consumers, count, kafka, database_url)
    else:
        product = await run_product(load, variant, consumers, count, profile, kafka, database_url, keep)
    report = {
        **{k: v for k, v in product.items() if k not in ("io", "open_loop_detail")},
        "ceiling_msgs_per_s": round(ceiling["msgs_per_s"], 1),
        "ratio": round(product["purchases_per_s"] / ceiling["msgs_per_s"], 4) if ceiling["msgs_per_s"] else None,
    }
    if "io" in product:
        report["io_per_purchase"] = {k: round(v, 2) for k, v in product["io"]["summary"].items()}
    from bench import _samework as samework

    # the bare pipelines run under the same closed-loop users as the product
    closed = Load(users=load.users, duration=load.duration, warmup=load.warmup, poll=load.poll)
    if same_work:
        bare = await samework.run(product["io"]["counts"], count, closed, kafka, database_url, console)
        report["ceiling_same_work_purchases_per_s"] = bare["purchases_per_s"]
        report["ceiling_same_work_cpu_ms_per_purchase"] = bare["cpu_ms_per_purchase"]
        report["ceiling_same_work_cpu_ms_per_purchase_by_process"] = bare["cpu_ms_per_purchase_by_process"]
        report["ceiling_same_work_io_per_purchase"] = bare.get("io_per_purchase")
        # Throughput ratio (meaningful for a closed-loop product run) and the CPU ratio, which does
        # not depend on what else runs on the machine: ceiling CPU ÷ product CPU per purchase.
        report["ratio_same_work"] = (round(product["purchases_per_s"] / bare["purchases_per_s"], 3)
                                     if bare["purchases_per_s"] and not load.rate else None)
        report["ratio_same_work_cpu"] = (round(bare["cpu_ms_per_purchase"] / product["cpu_ms_per_purchase"], 3)
                                         if product["cpu_ms_per_purchase"] else None)
        print_same_work(product, bare, report)
    if floor:
        console.rule("the architecture's floor: the least I/O a purchase can do, no logic")
        least = await samework.run(samework.MINIMAL_IO, count, closed, kafka, database_url, console)
        report["floor_purchases_per_s"] = least["purchases_per_s"]
        report["floor_cpu_ms_per_purchase"] = least["cpu_ms_per_purchase"]
        report["floor_services_cpu_ms_per_purchase"] = least["services_cpu_ms_per_purchase"]
        report["floor_cpu_ms_per_purchase_by_process"] = least["cpu_ms_per_purchase_by_process"]
        report["floor_io_per_purchase"] = least.get("io_per_purchase")
        report["floor_host_drift"] = host_drift(product, least)
        print_floor(product, least)
    if scale_out:
        report["scale_out"] = scaled
    return report


async def run_scale_out(load: Load, consumers: int, count: int, kafka: str,
                        database_url: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The same load on each `SCALE_OUT` configuration, one after the other, in this one run.

    Returns the side-by-side rows and the first variant's full report (its I/O counted when `count`).
    """
    rows = []
    first: dict[str, Any] = {}
    for i, variant in enumerate(SCALE_OUT):
        console.rule(f"scale-out: {variant.name}")
        got = await run_product(load, variant, consumers, count if i == 0 else 0, False, kafka, database_url, False)
        first = first or got
        rows.append({"variant": variant.name, "processors": variant.processors, "api_instances": variant.api_instances,
                     "partitions": variant.partitions, "purchases_per_s": got["purchases_per_s"],
                     "cpu_ms_per_purchase": got["cpu_ms_per_purchase"],
                     "cpu_ms_per_purchase_by_process": got["cpu_ms_per_purchase_by_process"],
                     "confirm_p99_ms": got["confirm_p99_ms"], "activate_p99_ms": got["activate_p99_ms"],
                     "errors": got["errors"]})
    table = Table(title="scale-out: CPU per completed purchase by configuration (same load, same run)")
    table.add_column("process")
    for row in rows:
        table.add_column(row["variant"], justify="right")
    names = sorted({n for row in rows for n in row["cpu_ms_per_purchase_by_process"]}, key=_process_order)
    for name in names:
        table.add_row(name, *(f"{row['cpu_ms_per_purchase_by_process'].get(name, 0.0):,.1f}" for row in rows))
    table.add_row("total CPU ms / purchase", *(f"{row['cpu_ms_per_purchase']:,.1f}" for row in rows))
    table.add_row("purchases/s", *(f"{row['purchases_per_s']:,.1f}" for row in rows))
    table.add_row("confirm / active p99 ms", *(f"{row['confirm_p99_ms']:,.0f} / {row['activate_p99_ms']:,.0f}" for row in rows))
    table.add_row("errors", *(str(row["errors"]) for row in rows))
    base = rows[0]["cpu_ms_per_purchase"]
    if base:
        table.add_row("CPU vs the first", *(f"{row['cpu_ms_per_purchase'] / base:.2f}" for row in rows))
    console.print(table)
    return rows, first


def _process_order(name: str) -> tuple[int, str]:
    """Instances of one service next to each other ("processor-1", "processor-2", …)."""
    return (0 if not name.startswith(("postgres", "kafka", "bench")) else 1, name)


def _versus(title: str, name: str, product: dict[str, Any], other: dict[str, Any]) -> Table:
    """A product-vs-bare table, its first rows filled: purchases/s and CPU per purchase."""
    table = Table(title=title)
    table.add_column("measure")
    table.add_column("product", justify="right")
    table.add_column(name, justify="right")
    table.add_row("purchases/s (closed loop, same users)", f"{product['purchases_per_s']:,.1f}", f"{other['purchases_per_s']:,.1f}")
    table.add_row("CPU ms / purchase", f"{product['cpu_ms_per_purchase']:,.1f}", f"{other['cpu_ms_per_purchase']:,.1f}")
    return table


def _io_rows(table: Table, product: dict[str, Any], other: dict[str, Any]) -> None:
    for key, value in (product.get("io") or {}).get("summary", {}).items():
        table.add_row(f"I/O: {key}", f"{value:,.1f}", f"{(other.get('io_per_purchase') or {}).get(key, 0.0):,.1f}")


def print_floor(product: dict[str, Any], least: dict[str, Any]) -> None:
    table = _versus("product vs the architecture's floor (least I/O per purchase, no logic)", "floor", product, least)
    table.add_row("CPU ms / purchase, services (no client, no sandboxes)", f"{product['services_cpu_ms_per_purchase']:,.1f}",
                  f"{least['services_cpu_ms_per_purchase']:,.1f}")
    table.add_row("CPU-bound purchases/s on this machine", f"{product['cpu_bound_purchases_per_s']:,.1f}",
                  f"{least['cpu_bound_purchases_per_s']:,.1f}")
    drift = host_drift(product, least)
    if drift:
        table.add_row("load client CPU ratio (identical work: the host's drift)", f"{drift:.2f}", "1.00")
        table.add_row("CPU ms / purchase, every process, at the floor run's host speed",
                      f"{product['cpu_ms_per_purchase'] / drift:,.1f}", f"{least['cpu_ms_per_purchase']:,.1f}")
    _io_rows(table, product, least)
    console.print(table)


def host_drift(product: dict[str, Any], other: dict[str, Any]) -> float | None:
    """The load client's CPU per purchase in `product` ÷ in `other`: its work per purchase is the
    same requests in both runs, so this ratio is how much slower the shared host ran (decision 0127)."""
    mine = product["cpu_ms_per_purchase_by_process"].get("bench client")
    theirs = other["cpu_ms_per_purchase_by_process"].get("bench client")
    return round(mine / theirs, 3) if mine and theirs else None


def print_same_work(product: dict[str, Any], bare: dict[str, Any], report: dict[str, Any]) -> None:
    table = _versus("product vs same-work ceiling (the same I/O per purchase, no logic)", "same-work ceiling", product, bare)
    for what in sorted(set(product["cpu_ms_per_purchase_by_process"]) | set(bare["cpu_ms_per_purchase_by_process"]),
                       key=_process_order):
        table.add_row(f"  {what}", f"{product['cpu_ms_per_purchase_by_process'].get(what, 0.0):,.1f}",
                      f"{bare['cpu_ms_per_purchase_by_process'].get(what, 0.0):,.1f}")
    _io_rows(table, product, bare)
    table.add_row("ratio product ÷ ceiling (purchases/s)", str(report["ratio_same_work"]), "")
    table.add_row("ratio ceiling CPU ÷ product CPU", str(report["ratio_same_work_cpu"]), "")
    console.print(table)


async def run_product(load: Load, variant: Variant, consumers: int, count: int, profile: bool, kafka: str,
                      database_url: str, keep: bool) -> dict[str, Any]:
    """Start the product, count the I/O of `count` purchases, run the load; the report of that run."""
    from tests.support.stack import _free_ports

    roles = ("relay", "projector", "notifier")
    metrics_ports = dict(zip(roles, _free_ports(len(roles)), strict=True))
    pipeline = Pipeline(pipeline_options(kafka, database_url, variant.processors, consumers, variant.api_instances,
                                         keep, variant.partitions, metrics_ports))
    pipeline.bench_metrics_ports = metrics_ports  # type: ignore[attr-defined]
    console.print(f"starting the pipeline on a fresh database ({variant.processors} processor(s) sharing "
                  f"{variant.partitions} partitions per topic, {variant.api_instances} API instance(s)) …")
    open_loop: OpenLoop | None = None
    counted: dict[str, Any] | None = None
    async with pipeline:
        console.print(f"pipeline up in {pipeline.start_seconds:.1f}s (database {pipeline.database_name})")
        async with _client(pipeline.api_urls[0]) as setup:
            await create_plan(pipeline, setup)
        if count > 0:
            console.print(f"counting the I/O of {count} purchases (4 at a time; ~{count // 4 + 30} s) …")
            counted = await count_io(pipeline, count, 4, load.poll)
            print_counts(counted, f"I/O per purchase from the product's own counters ({counted['purchases']} purchases)")
        if load.rate:
            console.print(f"open loop: {load.rate:g} purchases/s for {load.duration:.0f}s")
            task = asyncio.create_task(run_open_loop(pipeline, load.rate, load.duration, load.poll, poisson=load.poisson))
        else:
            console.print(f"{load.users} users for {load.duration:.0f}s")
            task = asyncio.create_task(run_load(pipeline, load.users, load.duration, load.poll))
        profiles: dict[str, Path] = {}
        await asyncio.sleep(load.warmup)
        cpu_before, cpu_t0 = await cpu_snapshot(pipeline), time.monotonic()
        if profile:
            profiles = await profile_services(pipeline, min(15.0, max(1.0, load.duration - load.warmup - 2)))
        await asyncio.sleep(max(0.0, load.duration - (time.monotonic() - cpu_t0) - load.warmup - 0.5))
        cpu_after, cpu_t1 = await cpu_snapshot(pipeline), time.monotonic()
        if load.rate:
            results, start, end, open_loop = await task
        else:
            results, start, end = await task
        completed_in_cpu_window = sum(1 for t in results.completed_at if cpu_t0 <= t <= cpu_t1)

    report = report_load(results, start, end, load, variant, consumers, open_loop)
    report.update(report_cpu(cpu_before, cpu_after, cpu_t0, cpu_t1, completed_in_cpu_window))
    if counted is not None:
        report["io"] = counted
    if profiles:
        print_profiles(profiles)
    return report


def report_load(results: Results, start: float, end: float, load: Load, variant: Variant, consumers: int,
                open_loop: OpenLoop | None) -> dict[str, Any]:
    window_start = start + load.warmup
    counted = [t for t in results.completed_at if window_start <= t <= end]
    window = max(1e-9, end - window_start)
    purchases_per_s = len(counted) / window
    report: dict[str, Any] = {
        "purchases_per_s": round(purchases_per_s, 1),
        "confirm_p50_ms": round(percentile(results.confirm_ms, 50), 1),
        "confirm_p99_ms": round(percentile(results.confirm_ms, 99), 1),
        "activate_p50_ms": round(percentile(results.activate_ms, 50), 1),
        "activate_p99_ms": round(percentile(results.activate_ms, 99), 1),
        "completed": len(results.completed_at),
        "started": results.started,
        "errors": sum(results.errors.values()),
        "users": 0 if load.rate else load.users,
        "duration_s": load.duration,
        "processors": variant.processors,
        "consumers_per_processor": consumers,
        "api_instances": variant.api_instances,
        "partitions": variant.partitions,
    }
    title = ("end-to-end purchases (buy → pay on the sandbox page → active in the read model), "
             + (f"open loop at {load.rate:g}/s" if load.rate else f"{load.users} closed-loop users"))
    table = Table(title=title)
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("purchases completed (all / in window)", f"{len(results.completed_at)} / {len(counted)}")
    table.add_row("purchases/s (window)", f"{purchases_per_s:,.1f}")
    table.add_row("request → confirmation URL p50 / p99 ms",
                  f"{report['confirm_p50_ms']:,.0f} / {report['confirm_p99_ms']:,.0f}")
    table.add_row("payment → active p50 / p99 ms",
                  f"{report['activate_p50_ms']:,.0f} / {report['activate_p99_ms']:,.0f}")
    if open_loop is not None:
        # latencies of the purchases requested after the warm-up only: the steady rate, not the start
        steady = [i for i, began in enumerate(results.began_at) if began >= window_start]
        confirm = [results.confirm_ms[i] for i in steady]
        activate = [results.activate_ms[i] for i in steady]
        report.update({
            "open_loop_rate": load.rate,
            "open_loop_arrivals": "poisson" if load.poisson else "fixed",
            "open_loop_scheduled": open_loop.scheduled,
            "open_loop_started_per_s": round(results.started / max(1e-9, end - start), 1),
            "open_loop_completed_per_s": round(purchases_per_s, 1),
            "open_loop_measured": len(steady),
            "open_loop_confirm_p50_ms": round(percentile(confirm, 50), 1),
            "open_loop_confirm_p99_ms": round(percentile(confirm, 99), 1),
            "open_loop_activate_p50_ms": round(percentile(activate, 50), 1),
            "open_loop_activate_p99_ms": round(percentile(activate, 99), 1),
            "open_loop_backlog_at_end": open_loop.in_flight_at_end,
            "open_loop_max_in_flight": open_loop.max_in_flight,
            "open_loop_max_late_ms": round(open_loop.max_late_ms, 1),
        })
        table.add_row(f"open loop after the warm-up ({len(steady)}): confirm p50 / p99 ms",
                      f"{report['open_loop_confirm_p50_ms']:,.0f} / {report['open_loop_confirm_p99_ms']:,.0f}")
        table.add_row("open loop after the warm-up: active p50 / p99 ms",
                      f"{report['open_loop_activate_p50_ms']:,.0f} / {report['open_loop_activate_p99_ms']:,.0f}")
        table.add_row("open loop: arrivals scheduled / started per s",
                      f"{open_loop.scheduled} / {report['open_loop_started_per_s']:,.1f}")
        table.add_row("open loop: in flight at the last arrival / max", f"{open_loop.in_flight_at_end} / {open_loop.max_in_flight}")
        table.add_row("open loop: client behind schedule (max ms)", f"{open_loop.max_late_ms:,.0f}")
    for what, n in sorted(results.errors.items()):
        table.add_row(f"error: {what}", str(n))
    console.print(table)
    return report


# Processes that stand in for the world outside the product: the users and the two providers.
HARNESS = frozenset({"bench client", "yookassa", "mailgun"})


def report_cpu(cpu_before: dict[str, float], cpu_after: dict[str, float], cpu_t0: float, cpu_t1: float,
               completed: int) -> dict[str, Any]:
    work = {k.removeprefix("work:"): (cpu_after[k] - cpu_before.get(k, 0.0)) / max(1, completed)
            for k in cpu_after if k.startswith("work:")}
    console.print("work per completed purchase: "
                  f"{work.get('events', 0):.1f} events stored (each relayed, projected and seen by the notifier), "
                  f"{work.get('commands', 0):.1f} commands, {work.get('tx', 0):.0f} PostgreSQL transactions")
    used = cpu_delta(cpu_before, cpu_after)
    per_purchase = {k: v * 1000 / max(1, completed) for k, v in used.items()}
    total_ms = sum(per_purchase.values())
    services_ms = sum(v for k, v in per_purchase.items() if k not in HARNESS)
    print_cpu_table(per_purchase, used, cpu_t1 - cpu_t0, completed)
    console.print(f"of which the services (every process but the load client and the sandboxes): {services_ms:,.1f} ms")
    cpu_bound = (os.cpu_count() or 1) * 1000 / total_ms if total_ms else 0.0
    console.print(f"CPU-bound estimate on this machine (all cores, nothing else running): {cpu_bound:,.0f} purchases/s")
    # Under a growing backlog the window's CPU also goes to purchases that complete after it, so
    # CPU per COMPLETED purchase rises with the backlog; CPU per stored event does not.
    events = cpu_after.get("work:events", 0.0) - cpu_before.get("work:events", 0.0)
    seconds = max(1e-9, cpu_t1 - cpu_t0)
    per_event = sum(used.values()) * 1000 / events if events else 0.0
    console.print(f"events stored: {events / seconds:,.1f}/s at {per_event:.2f} ms of CPU each (comparable across "
                  "rates: a backlog makes a completed purchase carry work of purchases still in flight)")
    return {
        "events_stored_per_s": round(events / seconds, 1),
        "cpu_ms_per_event": round(per_event, 2),
        "work_per_purchase": {k: round(v, 1) for k, v in work.items()},
        "cpu_ms_per_purchase": round(total_ms, 1),
        "services_cpu_ms_per_purchase": round(services_ms, 1),
        "cpu_bound_purchases_per_s": round(cpu_bound, 1),
        "cpu_ms_per_purchase_by_process": {k: round(v, 1) for k, v in per_purchase.items()},
    }


def print_cpu_table(per_purchase: dict[str, float], used: dict[str, float], seconds: float, completed: int) -> None:
    total_ms = sum(per_purchase.values())
    ctable = Table(title=f"CPU per completed purchase ({completed} purchases in {seconds:.0f}s; "
                         f"{os.cpu_count()} cores; the broker counts whatever else uses it)")
    ctable.add_column("process")
    ctable.add_column("CPU ms / purchase", justify="right")
    ctable.add_column("share", justify="right")
    ctable.add_column("cores busy", justify="right")
    for name, ms in sorted(per_purchase.items(), key=lambda kv: -kv[1]):
        ctable.add_row(name, f"{ms:,.1f}", f"{ms / total_ms:.0%}" if total_ms else "-",
                       f"{used[name] / max(1e-9, seconds):.2f}")
    ctable.add_row("total", f"{total_ms:,.1f}", "100%", f"{sum(used.values()) / max(1e-9, seconds):.2f}")
    console.print(ctable)


def print_profiles(profiles: dict[str, Path]) -> None:
    ptable = Table(title="where each process spends its busy time (py-spy samples, idle event loop excluded)")
    ptable.add_column("process")
    ptable.add_column("busy samples", justify="right")
    ptable.add_column("running in (library)")
    ptable.add_column("on behalf of (our code)")
    for name, path in profiles.items():
        total, libs, ours = summarize_profile(path)
        ptable.add_row(name, str(total), "\n".join(f"{share:4.0%} {label}" for label, share in libs),
                       "\n".join(f"{share:4.0%} {label}" for label, share in ours))
    console.print(ptable)
    console.print(f"folded stacks: {PROFILE_DIR}")


if __name__ == "__main__":
    app()
