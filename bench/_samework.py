"""The same-work ceiling of `bench.e2e --ceiling`: a purchase's I/O with no product in between.

A bare pipeline of separate processes shaped like the product's, doing per purchase exactly the
I/O `bench.e2e` counted from the product's own counters, and nothing else (decision 0125):

- `api`: uvicorn (the product's server) with a raw ASGI callable, no framework. `POST
  /v1/subscriptions` claims an idempotency row, produces the purchase's command record, marks it
  published, waits for the projected confirmation URL with ONE poller per process (one `ANY($1)`
  query every 50 ms, as `command_api/adapters/watch.py`), completes the row and answers.
  `GET /v1/subscriptions/{id}` answers the projected status, and with `If-None-Match` + `Prefer:
  wait` waits on the same poller for the stream's version to move. `POST
  /v1/webhooks/yookassa` (the YooKassa sandbox's notification) produces the sync command.
- `processor`: a bare aiokafka consumer of the commands topic; per command the provider call the
  product makes (create the payment on the YooKassa sandbox, or read it back for the sync), then one
  transaction: its share of the counted rows, and the outbox rows of the events it "emits".
- `relay`: polls the outbox (20 → 200 ms back-off, like relay/outbox.py), produces a record per
  row, deletes the published rows.
- `projector`: a bare consumer of the events topic; one transaction per fetched batch: one
  stream-position upsert per purchase in the batch (what the API's poller reads) and its share of
  the counted rows.
- `notifier`: a bare consumer of the events topic; its share of the counted rows, and for the
  purchase's last event the email: a row, the Mailgun sandbox POST, the row marked sent.

The counted rows are replayed on scratch tables `bare.<schema>_<table>` (id, ~300-byte jsonb):
inserts, updates and deletes per purchase as counted per table, index reads topped up to the
counted index scans. Fractions (1.33 updates per purchase) are spread evenly over purchases
(`spread`). The sandboxes are the product's own (started by `tests.support.stack.Pipeline`).
Nothing is validated, decided or logged.
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import sys
import time
import uuid
from collections import deque
from collections.abc import Mapping
from typing import Any

import orjson

# Tables whose rows the bare pipeline writes by its own structure (the idempotency row, the
# outbox, the stream position the API waits on): left out of the replayed counts.
STRUCTURAL_TABLES = {"api.idempotency_keys", "eventstore.outbox", "projector.stream_positions"}
ROLES = ("api", "processor", "relay", "projector", "notifier")
BODY = {"pad": "x" * 260, "kind": "bare"}


# The least I/O a purchase can do in this architecture (docs/decisions/0127): what `--floor` runs
# instead of the product's counted I/O. Every hop of the design stays (API → commands topic →
# processor → event store + outbox → relay → events topic → projector and notifier), with the
# fewest records and rows each hop can carry:
# - two commands (the purchase, the payment's sync after the webhook) and one event per command:
#   an append that fuses intent, provider answer and outcome into one record;
# - the two provider calls (create the payment; read it back, the webhook is not trusted) and the email;
# - PostgreSQL: the two event rows (each append reads its stream first), one read-model row
#   inserted and updated once, read by the API twice (the status the user polls) — plus the rows
#   each bare process writes by its structure: the idempotency row, the outbox, the stream
#   position, the email row.
# The client and the sandboxes are the product's own; the client's requests are the same.
MINIMAL_IO: dict[str, float] = {
    "kafka:produced:commands": 2.0,
    "kafka:produced:events": 2.0,
    "sandbox:mailgun_messages": 1.0,
    "billing_provider_calls{operation=create_payment}": 1.0,
    "billing_provider_calls{operation=find_payment}": 1.0,
    "pg:table:eventstore.events.n_tup_ins": 2.0,
    "pg:table:eventstore.events.idx_scan": 2.0,
    "pg:table:read.subscriptions.n_tup_ins": 1.0,
    "pg:table:read.subscriptions.n_tup_upd": 1.0,
    "pg:table:read.subscriptions.idx_scan": 3.0,
}


def spread(rate: float, k: int) -> int:
    """How many of an operation done `rate` times per unit the k-th unit (0-based) does.

    floor((k+1)·rate) − floor(k·rate): over n units the total is floor(n·rate), evenly spaced
    (1.33 per purchase → 1, 1, 2, 1, 1, 2, …).
    """
    if rate <= 0 or k < 0:
        return 0
    return math.floor((k + 1) * rate + 1e-9) - math.floor(k * rate + 1e-9)


def role_of(table: str, field: str) -> str | None:
    """Which bare process does a counted table operation (the product's owner of that table)."""
    schema = table.split(".", 1)[0]
    if schema in ("eventstore", "processor"):
        return "processor"
    if schema == "notifier":
        return "notifier"
    if schema in ("read", "projector"):
        # the projector writes the read models; the API reads them
        return "api" if field == "reads" else "projector"
    if schema == "api":
        return "api"
    return None


def plan(counts: Mapping[str, float]) -> dict[str, Any]:
    """Per purchase: {role: {table: {ins, upd, del, reads}}} plus the message shape, from the counts.

    Index reads replayed = counted index scans − updates − deletes (an UPDATE or DELETE by key is
    itself an index scan). Sequential scans are not replayed: reading a whole table per purchase is
    not I/O a purchase needs, so the ratio shows it as the product's cost (decision 0125).
    """
    tables: dict[str, dict[str, float]] = {}
    for key, value in counts.items():
        if not key.startswith("pg:table:"):
            continue
        name, _, field = key.removeprefix("pg:table:").rpartition(".")
        tables.setdefault(name, {})[field] = value
    roles: dict[str, dict[str, dict[str, float]]] = {role: {} for role in ROLES}
    for name, fields in sorted(tables.items()):
        if name in STRUCTURAL_TABLES:
            continue
        ops = {"ins": fields.get("n_tup_ins", 0.0), "upd": fields.get("n_tup_upd", 0.0), "del": fields.get("n_tup_del", 0.0)}
        ops["reads"] = max(0.0, fields.get("idx_scan", 0.0) - ops["upd"] - ops["del"])
        for op, value in ops.items():
            role = role_of(name, "reads" if op == "reads" else "write")
            if role and value > 0:
                roles[role].setdefault(name, {"ins": 0.0, "upd": 0.0, "del": 0.0, "reads": 0.0})[op] = value

    def total(prefix: str) -> float:
        return sum(v for k, v in counts.items() if k.startswith(prefix))

    return {
        "tables": roles,
        "commands": max(1.0, total("kafka:produced:commands")),
        "events": max(1.0, total("kafka:produced:events")),
        "emails": total("sandbox:mailgun_messages"),
        "provider_calls": sum(v for k, v in counts.items() if "billing_provider_calls" in k),
    }


def scratch_name(table: str) -> str:
    return "bare." + table.replace(".", "_")


# --------------------------------------------------------------------------- the replayed rows


class Rows:
    """One process's replay of its counted rows on the scratch tables (see `plan`)."""

    def __init__(self, work: Mapping[str, Mapping[str, float]], units_per_purchase: float) -> None:
        self.work = {t: {op: v / units_per_purchase for op, v in ops.items()} for t, ops in work.items()}
        self.k = 0
        self.recent: dict[str, deque[int]] = {t: deque(maxlen=2000) for t in work}
        self.body = orjson.dumps(BODY).decode()

    def next_unit(self) -> list[tuple[str, str, list[tuple[Any, ...]]]]:
        """[(op, sql, args)] of the next unit (a command, an event, a request)."""
        k, self.k = self.k, self.k + 1
        out: list[tuple[str, str, list[tuple[Any, ...]]]] = []
        for table, ops in self.work.items():
            t = scratch_name(table)
            recent = self.recent[table]
            if n := spread(ops["ins"], k):
                ids = [random.getrandbits(62) for _ in range(n)]
                recent.extend(ids)
                out.append(("ins", f"INSERT INTO {t} (id, body) VALUES ($1, $2::jsonb)", [(i, self.body) for i in ids]))
            if n := spread(ops["upd"], k):
                out.append(("upd", f"UPDATE {t} SET body = $2::jsonb WHERE id = $1", [(self._pick(recent), self.body) for _ in range(n)]))
            if n := spread(ops["reads"], k):
                out.append(("reads", f"SELECT body FROM {t} WHERE id = $1", [(self._pick(recent),) for _ in range(n)]))
            if (n := spread(ops["del"], k)) and recent:
                out.append(("del", f"DELETE FROM {t} WHERE id = $1", [(recent.popleft(),) for _ in range(min(n, len(recent)))]))
        return out

    @staticmethod
    def _pick(recent: deque[int]) -> int:
        return recent[-1] if recent else random.randrange(1, SEED_ROWS + 1)


SEED_ROWS = 1000


async def run_statements(conn: Any, unit: list[tuple[str, str, list[tuple[Any, ...]]]]) -> None:
    """Each statement as the product would send it: a read fetches its row, several writes go as one executemany."""
    for op, sql, args in unit:
        if op == "reads":
            for one in args:
                await conn.fetchrow(sql, *one)
        elif len(args) == 1:
            await conn.execute(sql, *args[0])
        else:
            await conn.executemany(sql, args)


async def create_scratch(database_url: str, the_plan: Mapping[str, Any]) -> None:
    """`bare.*` scratch tables (seeded, so updates and reads find rows) and the structural ones."""
    import asyncpg

    from infra.settings import plain_url

    conn = await asyncpg.connect(plain_url(database_url), timeout=10)
    try:
        await conn.execute("CREATE SCHEMA IF NOT EXISTS bare")
        names = {t for work in the_plan["tables"].values() for t in work}
        for table in sorted(names):
            t = scratch_name(table)
            await conn.execute(f"CREATE TABLE {t} (id bigint PRIMARY KEY, body jsonb NOT NULL)")
            await conn.execute(f"INSERT INTO {t} SELECT g, $1::jsonb FROM generate_series(1, {SEED_ROWS}) g",
                               orjson.dumps(BODY).decode())
        await conn.execute("""
            CREATE TABLE bare.idempotency (key text PRIMARY KEY, state text NOT NULL, body jsonb);
            CREATE TABLE bare.outbox (position bigserial PRIMARY KEY, key text NOT NULL, body bytea NOT NULL);
            CREATE TABLE bare.stream_positions (purchase text PRIMARY KEY, version int NOT NULL,
                                                status text NOT NULL, confirmation_url text);
        """)
    finally:
        await conn.close()


# --------------------------------------------------------------------------- the processes


def config() -> dict[str, Any]:
    return orjson.loads(os.environ["BARE_CONFIG"])


async def connect(cfg: Mapping[str, Any]) -> Any:
    import asyncpg

    from infra.settings import plain_url

    return await asyncpg.connect(plain_url(cfg["database_url"]), timeout=10, command_timeout=30)


async def producer(cfg: Mapping[str, Any]) -> Any:
    from aiokafka import AIOKafkaProducer

    p = AIOKafkaProducer(bootstrap_servers=cfg["bootstrap"], acks="all", enable_idempotence=True, linger_ms=2,
                         request_timeout_ms=10000)
    await p.start()
    return p


def consumer(cfg: Mapping[str, Any], topic: str, group: str) -> Any:
    from aiokafka import AIOKafkaConsumer

    return AIOKafkaConsumer(topic, bootstrap_servers=cfg["bootstrap"], group_id=group, enable_auto_commit=False,
                            auto_offset_reset="earliest", isolation_level="read_committed", max_poll_records=500)


async def processor_main(cfg: Mapping[str, Any]) -> None:
    """Commands → the provider call → one transaction (counted rows + outbox rows).

    Like the product's processor: the commands of different purchases in a fetched batch run at
    once (one purchase's in order), at most 16 provider calls in flight; offsets after the batch.
    """
    import asyncpg
    import httpx

    from infra.settings import plain_url

    pool = await asyncpg.create_pool(plain_url(cfg["database_url"]), min_size=2, max_size=10, command_timeout=30)
    counts = Counts()
    await serve_counts(counts, int(os.environ["BARE_METRICS_PORT"]))
    rows = Rows(cfg["plan"]["tables"]["processor"], cfg["plan"]["commands"])
    events_per_command = cfg["plan"]["events"] / cfg["plan"]["commands"]
    n_events = 0
    provider = asyncio.Semaphore(16)
    yk = httpx.AsyncClient(base_url=cfg["yookassa_api"], auth=(cfg["shop_id"], cfg["secret_key"]),
                           timeout=httpx.Timeout(10.0), trust_env=False,
                           limits=httpx.Limits(max_connections=16, max_keepalive_connections=16))

    async def handle(command: dict[str, Any]) -> None:
        nonlocal n_events
        purchase = command["purchase"]
        async with provider:
            if command["kind"] == "buy":
                paid = await yk.post("/payments", headers={"Idempotence-Key": command["id"]}, json={
                    "amount": {"value": "299.00", "currency": "RUB"}, "capture": True,
                    "confirmation": {"type": "redirect", "return_url": cfg["return_url"]},
                    "save_payment_method": True, "description": "Subscription: Monthly",
                    "metadata": {"purchase": purchase, "command_id": command["id"]},
                    "receipt": {"customer": {"email": f"{purchase}@example.com"}, "items": [{
                        "description": "Monthly", "quantity": "1.00",
                        "amount": {"value": "299.00", "currency": "RUB"}, "vat_code": 1,
                        "payment_subject": "service", "payment_mode": "full_payment"}]},
                })
                payment = paid.json()
                url = (payment.get("confirmation") or {}).get("confirmation_url")
                counts.inc("billing_provider_calls", operation="create_payment")
            else:
                payment = (await yk.get(f"/payments/{command['payment_id']}")).json()
                url = None
                counts.inc("billing_provider_calls", operation="find_payment")
        n = spread(events_per_command, n_events)
        n_events += 1
        last = command["kind"] != "buy"
        outbox = [(purchase, orjson.dumps({"purchase": purchase, "seq": i, "last": last and i == n - 1,
                                           "status": payment.get("status"), "confirmation_url": url,
                                           "payment": payment.get("id"), "pad": BODY["pad"]}))
                  for i in range(n)]
        unit = rows.next_unit()
        async with pool.acquire() as conn, conn.transaction():
            await run_statements(conn, unit)
            await conn.executemany("INSERT INTO bare.outbox (key, body) VALUES ($1, $2)", outbox)

    async def in_order(commands: list[dict[str, Any]]) -> None:
        for command in commands:
            await handle(command)

    c = consumer(cfg, cfg["topics"]["commands"], cfg["groups"]["processor"])
    await c.start()
    try:
        while True:
            batch = await c.getmany(timeout_ms=1000, max_records=100)
            by_purchase: dict[str, list[dict[str, Any]]] = {}
            for records in batch.values():
                for record in records:
                    command = orjson.loads(record.value)
                    by_purchase.setdefault(command["purchase"], []).append(command)
            if by_purchase:
                await asyncio.gather(*(in_order(commands) for commands in by_purchase.values()))
                await c.commit()
    finally:
        await c.stop()


async def relay_main(cfg: Mapping[str, Any]) -> None:
    """The outbox → the events topic, deleting what Kafka acknowledged."""
    conn = await connect(cfg)
    deleter = await connect(cfg)
    p = await producer(cfg)
    topic = cfg["topics"]["events"]
    idle = 0.02
    while True:
        rows = await conn.fetch("SELECT position, key, body FROM bare.outbox ORDER BY position LIMIT 500")
        if not rows:
            await asyncio.sleep(idle)
            idle = min(idle * 2, 0.2)
            continue
        idle = 0.02
        futures = [await p.send(topic, key=r["key"].encode(), value=bytes(r["body"])) for r in rows]
        await asyncio.gather(*futures)
        await deleter.execute("DELETE FROM bare.outbox WHERE position = ANY($1::bigint[])", [r["position"] for r in rows])


async def projector_main(cfg: Mapping[str, Any]) -> None:
    """Events → one transaction per batch: a stream position per purchase + the counted rows."""
    conn = await connect(cfg)
    rows = Rows(cfg["plan"]["tables"]["projector"], cfg["plan"]["events"])
    c = consumer(cfg, cfg["topics"]["events"], cfg["groups"]["projector"])
    await c.start()
    try:
        while True:
            batch = await c.getmany(timeout_ms=1000, max_records=500)
            events = [orjson.loads(r.value) for records in batch.values() for r in records]
            if not events:
                continue
            latest: dict[str, dict[str, Any]] = {}
            counts: dict[str, int] = {}
            for event in events:
                latest[event["purchase"]] = {**latest.get(event["purchase"], {}), **{k: v for k, v in event.items() if v is not None}}
                counts[event["purchase"]] = counts.get(event["purchase"], 0) + 1
            async with conn.transaction():
                for _ in events:
                    await run_statements(conn, rows.next_unit())
                await conn.executemany(
                    "INSERT INTO bare.stream_positions AS s (purchase, version, status, confirmation_url)"
                    " VALUES ($1, $2, $3, $4) ON CONFLICT (purchase) DO UPDATE SET version = s.version + $2,"
                    " status = EXCLUDED.status, confirmation_url = coalesce(EXCLUDED.confirmation_url, s.confirmation_url)",
                    [(p, counts[p], "active" if e.get("last") else "pending", e.get("confirmation_url"))
                     for p, e in latest.items()])
            await c.commit()
    finally:
        await c.stop()


async def notifier_main(cfg: Mapping[str, Any]) -> None:
    """Events → the counted rows; the purchase's last event → an email row, Mailgun, marked sent."""
    import httpx

    conn = await connect(cfg)
    rows = Rows(cfg["plan"]["tables"]["notifier"], cfg["plan"]["events"])
    emails_per_last = cfg["plan"]["emails"]
    lasts = 0
    mg = httpx.AsyncClient(base_url=cfg["mailgun_api"], auth=("api", "key-sandbox"), timeout=httpx.Timeout(10.0),
                           trust_env=False)
    c = consumer(cfg, cfg["topics"]["events"], cfg["groups"]["notifier"])
    await c.start()
    try:
        while True:
            batch = await c.getmany(timeout_ms=1000, max_records=500)
            for records in batch.values():
                for record in records:
                    event = orjson.loads(record.value)
                    unit = rows.next_unit()
                    if unit:
                        async with conn.transaction():
                            await run_statements(conn, unit)
                    if event.get("last"):
                        for _ in range(spread(emails_per_last, lasts)):
                            await mg.post("/mg.billing.local/messages", data={
                                "from": "billing@mg.billing.local", "to": f"{event['purchase']}@example.com",
                                "subject": "Subscription active", "text": "Your subscription is active.",
                                "h:Message-Id": f"<{event['purchase']}.{lasts}@billing>"})
                        lasts += 1
            if batch:
                await c.commit()
    finally:
        await c.stop()


class Counts:
    """The few counters `bench._counters.summary` reads, named like the product's metrics."""

    def __init__(self) -> None:
        self.values: dict[str, int] = {}

    def inc(self, family: str, **labels: str) -> None:
        key = family + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"
        self.values[key] = self.values.get(key, 0) + 1

    def render(self) -> bytes:
        lines = []
        for family in sorted({k.split("{", 1)[0] for k in self.values}):
            lines.append(f"# TYPE {family}_total counter")  # prometheus_client's own exposition
            lines += [f"{k.replace('{', '_total{', 1)} {v}" for k, v in sorted(self.values.items())
                      if k.split("{", 1)[0] == family]
        return ("\n".join(lines) + "\n").encode()


async def serve_counts(counts: Counts, port: int) -> None:
    """`GET /metrics` on a bare asyncio server (the workers have no HTTP server of their own)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        body = counts.render()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n"
                     + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        await writer.drain()
        writer.close()

    await asyncio.start_server(handle, "127.0.0.1", port)


class Watcher:
    """One poller for every waiting request (as command_api/adapters/watch.py): ANY($1) every 50 ms."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool
        self.waiters: dict[str, list[tuple[asyncio.Future[Any], Any]]] = {}
        self.task: asyncio.Task[None] | None = None

    async def wait(self, key: str, ready: Any, timeout_s: float) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.waiters.setdefault(key, []).append((future, ready))
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self.poll())
        try:
            return await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            return None
        finally:
            waiting = [w for w in self.waiters.get(key, []) if w[0] is not future]
            if waiting:
                self.waiters[key] = waiting
            else:
                self.waiters.pop(key, None)

    async def poll(self) -> None:
        while self.waiters:
            await asyncio.sleep(0.05)
            keys = list(self.waiters)
            async with self.pool.acquire() as conn:
                found = {r[0]: r for r in await conn.fetch(
                    "SELECT purchase, version, status, confirmation_url FROM bare.stream_positions WHERE purchase = ANY($1)", keys)}
            for key in keys:
                row = found.get(key)
                for future, ready in self.waiters.get(key, []):
                    if row is not None and not future.done() and ready(row):
                        future.set_result(row)


def api_app(cfg: Mapping[str, Any]) -> Any:
    """The bare command API: a raw ASGI callable (no framework), state made on the first request."""
    import asyncpg

    from infra.settings import plain_url

    state: dict[str, Any] = {}
    rows = Rows(cfg["plan"]["tables"]["api"], 1.0)
    counts = Counts()

    async def setup() -> None:
        state["pool"] = await asyncpg.create_pool(plain_url(cfg["database_url"]), min_size=2, max_size=10,
                                                  command_timeout=30)
        state["producer"] = await producer(cfg)
        state["watcher"] = Watcher(state["pool"])

    async def body_of(receive: Any) -> bytes:
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                return b"".join(chunks)

    async def send_json(send: Any, status: int, payload: Any, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        body = orjson.dumps(payload) if payload is not None else b""
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                *(headers or [])]})
        await send({"type": "http.response.body", "body": body})

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await setup()
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        path, method = scope["path"], scope["method"]
        if path == "/metrics":
            body = counts.render()
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": body})
            return
        route = "/v1/subscriptions/{subscription_id}" if path.startswith("/v1/subscriptions/") else path
        counts.inc("api_http_requests", method=method, route=route)
        headers = dict(scope["headers"])
        raw = await body_of(receive)
        pool, kafka, watcher = state["pool"], state["producer"], state["watcher"]
        if method == "POST" and path == "/v1/subscriptions":
            purchase = uuid.uuid4().hex
            key = headers.get(b"idempotency-key", b"").decode() + purchase
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute("INSERT INTO bare.idempotency (key, state) VALUES ($1, 'claimed')", key)
                await run_statements(conn, rows.next_unit())
            command = {"kind": "buy", "id": str(uuid.uuid4()), "purchase": purchase, "request": orjson.loads(raw or b"{}")}
            await kafka.send_and_wait(cfg["topics"]["commands"], orjson.dumps(command), key=purchase.encode())
            async with pool.acquire() as conn:
                await conn.execute("UPDATE bare.idempotency SET state = 'published' WHERE key = $1", key)
            row = await watcher.wait(purchase, lambda r: r["confirmation_url"] is not None, 10.0)
            answer = {"command_id": command["id"], "status": "succeeded" if row else "accepted",
                      "outcome": {"confirmation_url": row["confirmation_url"], "subscription_id": purchase} if row else None}
            async with pool.acquire() as conn:
                await conn.execute("UPDATE bare.idempotency SET state = 'done', body = $2::jsonb WHERE key = $1", key,
                                   orjson.dumps(answer).decode())
            await send_json(send, 200 if row else 202, answer)
        elif method == "GET" and path.startswith("/v1/subscriptions/"):
            purchase = path.rsplit("/", 1)[1]
            etag = headers.get(b"if-none-match", b"").decode()
            async with pool.acquire() as conn:
                row = await conn.fetchrow("SELECT version, status FROM bare.stream_positions WHERE purchase = $1", purchase)
            if row is not None and etag and etag == f'"{row["version"]}"' and b"prefer" in headers:
                seen = row["version"]
                row = await watcher.wait(purchase, lambda r: r["version"] != seen, 10.0)
                if row is None:
                    await send_json(send, 304, None, [(b"etag", etag.encode())])
                    return
            if row is None:
                await send_json(send, 404, {"detail": "not found"})
                return
            await send_json(send, 200, {"subscription_id": purchase, "status": row["status"]},
                            [(b"etag", f'"{row["version"]}"'.encode())])
        elif method == "POST" and path == "/v1/webhooks/yookassa":
            obj = orjson.loads(raw)["object"]
            purchase = (obj.get("metadata") or {}).get("purchase")
            counts.inc("api_webhook_notifications", result="accepted")
            if purchase and obj.get("status") == "succeeded":
                command = {"kind": "sync", "id": str(uuid.uuid4()), "purchase": purchase, "payment_id": obj["id"]}
                await kafka.send_and_wait(cfg["topics"]["commands"], orjson.dumps(command), key=purchase.encode())
            await send_json(send, 200, {"status": "ok"})
        elif path == "/healthz":
            await send_json(send, 200, {"status": "ok"})
        else:
            await send_json(send, 404, {"detail": "not found"})

    return app


def main(role: str) -> None:
    import uvloop

    cfg = config()
    if role == "api":
        import uvicorn

        uvicorn.run(api_app(cfg), host="127.0.0.1", port=int(os.environ["BARE_PORT"]), log_config=None,
                    access_log=False, server_header=False, lifespan="on")
        return
    uvloop.run({"processor": processor_main, "relay": relay_main, "projector": projector_main,
                "notifier": notifier_main}[role](cfg))


# --------------------------------------------------------------------------- the run (in bench.e2e's process)


async def run(counts: Mapping[str, float], count: int, load: Any, kafka: str, database_url: str,
              console: Any) -> dict[str, Any]:
    """Start the sandboxes and the bare processes, count their I/O of `count` purchases like the
    product's, run the same closed-loop load, report like the product."""
    from bench import e2e
    from tests.support.processes import ManagedProcess
    from tests.support.stack import Pipeline, PipelineOptions, _free_ports

    the_plan = plan(counts)
    pipeline = Pipeline(PipelineOptions(
        database_url=database_url, kafka_bootstrap=kafka, name="bench-bare", processors=0, notifier=False,
        services=("yookassa", "mailgun"), env={"LOG_LEVEL": "WARNING"},
        role_env={"yookassa": {"SANDBOX_YOOKASSA_WEBHOOK_RETRY_S": "0.5,1,2,5"}},
    ))
    console.print("same-work ceiling: the sandboxes and the bare processes on a fresh database …")
    async with pipeline:
        await create_scratch(pipeline.database_url, the_plan)
        env = pipeline.base_env()
        cfg = {
            "database_url": pipeline.database_url, "bootstrap": pipeline.kafka_bootstrap, "plan": the_plan,
            "topics": {"commands": env["COMMANDS_TOPIC"], "events": env["EVENTS_TOPIC"]},
            "groups": {"processor": env["PROCESSOR_GROUP_ID"], "projector": env["PROJECTOR_GROUP_ID"],
                       "notifier": env["NOTIFIER_GROUP_ID"]},
            "yookassa_api": env["YOOKASSA_API_URL"], "shop_id": env["YOOKASSA_SHOP_ID"],
            "secret_key": env["YOOKASSA_SECRET_KEY"], "return_url": env["YOOKASSA_RETURN_URL"],
            "mailgun_api": env["MAILGUN_API_URL"],
        }
        bare_env = {"BARE_CONFIG": orjson.dumps(cfg).decode(), "PYTHONPATH": str(e2e.ROOT)}
        processor_metrics = _free_ports(1)[0]
        for role in ROLES:
            extra = ({"BARE_PORT": str(pipeline.api_port)} if role == "api"
                     else {"BARE_METRICS_PORT": str(processor_metrics)} if role == "processor" else {})
            proc = ManagedProcess(f"{pipeline.tag}-bare-{role}", [sys.executable, "-m", "bench._samework", role],
                                  env={**bare_env, **extra}, ready_timeout=60,
                                  ready_url=f"{pipeline.api_url}/healthz" if role == "api" else None)
            pipeline.processes[f"bare {role}"] = proc
            proc.start()
        await asyncio.gather(*(p.wait_ready() for p in pipeline.processes.values()))
        await asyncio.sleep(3.0)  # the consumer groups join
        # the ceiling's I/O per purchase, counted exactly as the product's (same counters, same method)
        pipeline.bench_metrics_ports = {"processor": processor_metrics}  # type: ignore[attr-defined]
        io = await e2e.count_io(pipeline, count, 4, load.poll)
        e2e.print_counts(io, f"same-work ceiling: I/O per purchase ({io['purchases']} purchases)")
        task = asyncio.create_task(run_bare_load(pipeline, load))
        await asyncio.sleep(load.warmup)
        cpu_before, t0 = await e2e.cpu_snapshot(pipeline), time.monotonic()
        await asyncio.sleep(max(0.0, load.duration - load.warmup - 0.5))
        cpu_after, t1 = await e2e.cpu_snapshot(pipeline), time.monotonic()
        results, start, end = await task
        done_in_cpu = sum(1 for t in results.completed_at if t0 <= t <= t1)
    window_start = start + load.warmup
    counted = [t for t in results.completed_at if window_start <= t <= end]
    purchases_per_s = len(counted) / max(1e-9, end - window_start)
    console.print(f"same-work ceiling: {purchases_per_s:,.1f} purchases/s, {len(results.completed_at)} completed, "
                  f"errors {dict(results.errors)}")
    cpu = e2e.report_cpu(cpu_before, cpu_after, t0, t1, done_in_cpu)
    return {"purchases_per_s": round(purchases_per_s, 1), "completed": len(results.completed_at),
            "errors": sum(results.errors.values()), "plan": the_plan,
            "io_per_purchase": {k: round(v, 2) for k, v in io["summary"].items()}, "io": io, **cpu}


async def run_bare_load(pipeline: Any, load: Any) -> tuple[Any, float, float]:
    """The product's closed-loop users against the bare API (same requests: buy, pay on the page, long-poll)."""
    from bench import e2e

    results = e2e.Results()
    start = time.monotonic()
    end = start + load.duration
    counter = iter(range(10**9))

    async def user_loop(i: int) -> None:
        async with e2e._client(pipeline.api_url) as client:  # noqa: SLF001 - the same client shape as the product's users
            await asyncio.sleep(random.random() * min(2.0, load.duration / 10))
            while time.monotonic() < end:
                try:
                    await e2e.one_purchase(client, pipeline, "bare", next(counter), results, load.poll, end)
                except Exception as exc:  # noqa: BLE001 - counted, like the product run's errors
                    results.error(type(exc).__name__)

    await asyncio.gather(*(user_loop(i) for i in range(load.users)))
    return results, start, end


if __name__ == "__main__":
    main(sys.argv[1])
