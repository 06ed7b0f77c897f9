"""How many purchases per second the command API accepts, and how long a client waits for the 202.

`python -m bench.api` creates a fresh database (migrated, one plan on sale) and a fresh commands
topic on the configured PostgreSQL and Kafka, starts the API as a real process
(`python -m command_api`), and drives sustained `POST /v1/subscriptions` from many concurrent
clients (each request a new Idempotency-Key, users drawn from a pool). It reports requests per
second and p50/p99 latency to the 202, then breaks the server's time down by step from the API's
own Prometheus histograms (claim key, plan check, Kafka ack, store response) — and with
`--profile`, runs a second, shorter pass with the API under cProfile and prints its top functions.
The last line is JSON: `{"accepted_per_s", "p50_ms", "p99_ms", ...}`. Everything it created is
dropped at the end.
"""

from __future__ import annotations

import asyncio
import os
import re
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy.engine import make_url

from command_api.config import ApiSettings
from infra.settings import Settings, plain_url

console = Console(stderr=True)
app = typer.Typer(add_completion=False)
ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------------- set-up


def _admin_url(base: Settings) -> str:
    return make_url(plain_url(base.database_url)).set(database="postgres").render_as_string(hide_password=False)


def create_database(base: Settings) -> Settings:
    """A fresh, migrated database with one plan on sale."""
    import psycopg
    from psycopg import sql

    from infra.migrate import upgrade

    name = f"bench_api_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(_admin_url(base), autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = make_url(plain_url(base.database_url)).set(database=name).render_as_string(hide_password=False)
    fresh = Settings(**{**base.model_dump(), "database_url": url})
    upgrade(fresh)
    with psycopg.connect(plain_url(url), autocommit=True, connect_timeout=5) as conn:
        conn.execute(
            "INSERT INTO read.plans (plan_id, name, price_minor, currency, period_days, description, archived, "
            "created_at, updated_at) VALUES ('bench-monthly', 'Bench', 29900, 'RUB', 30, '', false, now(), now())"
        )
    return fresh


def drop_database(base: Settings, fresh: Settings) -> None:
    import psycopg
    from psycopg import sql

    name = make_url(plain_url(fresh.database_url)).database
    with psycopg.connect(_admin_url(base), autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


async def create_topic(settings: Settings, partitions: int) -> str:
    from infra.kafka import ensure_topics

    name = f"bench.api.commands.{uuid.uuid4().hex[:10]}"
    await ensure_topics(settings, {name: partitions})
    return name


async def delete_topic(settings: Settings, name: str) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_servers, request_timeout_ms=15000)
    await admin.start()
    try:
        await admin.delete_topics([name])
    finally:
        await admin.close()


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ApiProcess:
    """`python -m command_api` (optionally under cProfile) as a child process."""

    def __init__(self, settings: Settings, topic: str, port: int, profile_to: Path | None = None) -> None:
        self.port = port
        self.profile_to = profile_to
        self.env = {
            **os.environ,
            "DATABASE_URL": settings.database_url,
            "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
            "COMMANDS_TOPIC": topic,
            "JWT_SECRET": ApiSettings().jwt_secret,
            "API_HOST": "127.0.0.1",
            "API_PORT": str(port),
            "LOG_LEVEL": "WARNING",  # one JSON line per request would be measured too; see the report
            "PYTHONUNBUFFERED": "1",
        }
        self.proc: asyncio.subprocess.Process | None = None
        self.log = Path(tempfile.gettempdir()) / f"bench-api-{port}.log"

    async def start(self) -> None:
        if self.profile_to is None:
            argv = [sys.executable, "-m", "command_api"]
        else:
            # CPU time, not wall time: on a busy machine a wall-clock profile blames whatever function
            # happened to be running when the process was preempted. SIGINT → uvicorn shuts down and
            # re-raises it → the `finally` writes the profile.
            code = (
                "import cProfile, time\nfrom command_api.__main__ import main\n"
                "profile = cProfile.Profile(time.process_time)\nprofile.enable()\n"
                f"try:\n    main()\nfinally:\n    profile.disable()\n    profile.dump_stats({str(self.profile_to)!r})\n"
            )
            argv = [sys.executable, "-c", code]
        log = open(self.log, "wb")  # noqa: SIM115 - the child owns it
        self.proc = await asyncio.create_subprocess_exec(
            *argv, cwd=ROOT, env=self.env, stdout=log, stderr=log, stdin=asyncio.subprocess.DEVNULL
        )
        deadline = time.monotonic() + 60
        async with httpx.AsyncClient(timeout=2) as client:
            while time.monotonic() < deadline:
                if self.proc.returncode is not None:
                    raise RuntimeError(f"the API exited early; see {self.log}:\n{self.log.read_text()[-2000:]}")
                try:
                    if (await client.get(f"http://127.0.0.1:{self.port}/readyz")).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.1)
        raise RuntimeError(f"the API did not become ready; see {self.log}")

    async def stop(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        import signal

        self.proc.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(self.proc.wait(), 30)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


# ---------------------------------------------------------------------------- load


@dataclass
class Result:
    latencies_s: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: int = 0
    elapsed_s: float = 0.0

    @property
    def accepted(self) -> int:
        return self.statuses.get(202, 0)

    def percentile(self, q: float) -> float:
        if not self.latencies_s:
            return float("nan")
        ordered = sorted(self.latencies_s)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.IGNORECASE)


async def drive(
    base_url: str, tokens: list[str], *, clients: int, seconds: float, warmup_s: float,
    on_window: Any = None,
) -> Result:
    """`clients` keep-alive connections POSTing purchases for `warmup_s + seconds`; measured after the warm-up.

    The load generator shares the machine with the API, so it must cost as little CPU as possible:
    each client is a raw HTTP/1.1 keep-alive connection writing pre-built requests (a fresh
    Idempotency-Key each) and reading `Content-Length` bodies — an order of magnitude cheaper per
    request than a full client library, which would otherwise be what is measured.
    `on_window(phase)` (async) is awaited with "start" and "end" at the measured window's edges.
    """
    result = Result()
    host, port = base_url.removeprefix("http://").split(":")
    body = orjson.dumps({"plan_id": "bench-monthly", "auto_renew": True})
    start = time.perf_counter()
    measure_from = start + warmup_s
    stop_at = measure_from + seconds

    def request(token: str) -> bytes:
        return (
            f"POST /v1/subscriptions HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {token}\r\n"
            f"Idempotency-Key: {uuid.uuid4()}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body

    async def one_client(index: int) -> None:
        i = index
        reader = writer = None
        while time.perf_counter() < stop_at:
            if writer is None:
                try:
                    reader, writer = await asyncio.open_connection(host, int(port))
                except OSError:
                    result.errors += 1
                    await asyncio.sleep(0.05)
                    continue
            token = tokens[i % len(tokens)]
            i += clients
            sent = time.perf_counter()
            try:
                writer.write(request(token))
                head = await reader.readuntil(b"\r\n\r\n")
                match = _CONTENT_LENGTH.search(head)
                if match:
                    await reader.readexactly(int(match.group(1)))
                status = int(head[9:12])
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
                if sent >= measure_from:
                    result.errors += 1
                writer.close()
                reader = writer = None
                continue
            done = time.perf_counter()
            if sent >= measure_from and done <= stop_at:
                result.statuses[status] = result.statuses.get(status, 0) + 1
                if status == 202:
                    result.latencies_s.append(done - sent)
        if writer is not None:
            writer.close()

    async def window() -> None:
        if on_window is None:
            return
        await asyncio.sleep(max(0.0, measure_from - time.perf_counter()))
        await on_window("start")
        await asyncio.sleep(max(0.0, stop_at - time.perf_counter()))
        await on_window("end")

    await asyncio.gather(window(), *(one_client(i) for i in range(clients)))
    result.elapsed_s = seconds
    return result


# ---------------------------------------------------------------------------- where the time goes

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used (Linux /proc), 0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


class CpuMeter:
    """CPU used during the measured window by: the API process, its PostgreSQL backends, this load generator."""

    def __init__(self, api_pid: int, database_url: str) -> None:
        self.api_pid = api_pid
        self.database_url = database_url
        self.start: dict[str, float] = {}
        self.end: dict[str, float] = {}

    def _backends(self) -> list[int]:
        import psycopg

        with psycopg.connect(plain_url(self.database_url), autocommit=True, connect_timeout=5) as conn:
            rows = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'command_api'"
            ).fetchall()
        return [r[0] for r in rows]

    def _snapshot(self) -> dict[str, float]:
        import resource

        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "api": cpu_seconds(self.api_pid),
            "postgres": sum(cpu_seconds(pid) for pid in self._backends()),
            "load_generator": usage.ru_utime + usage.ru_stime,
        }

    async def __call__(self, phase: str) -> None:
        snapshot = await asyncio.to_thread(self._snapshot)
        if phase == "start":
            self.start = snapshot
        else:
            self.end = snapshot

    def per_request_ms(self, requests: int) -> dict[str, float]:
        if not requests or not self.start or not self.end:
            return {}
        return {k: round(1000 * (self.end[k] - self.start.get(k, 0.0)) / requests, 3) for k in self.end}

_SAMPLE = re.compile(r'^(?P<name>[a-z_]+)(?:\{(?P<labels>[^}]*)\})? (?P<value>[-+0-9.eE]+|NaN)$')


def parse_metrics(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if not match:
            continue
        labels = frozenset(re.findall(r'(\w+)="([^"]*)"', match["labels"] or ""))
        samples[(match["name"], labels)] = float(match["value"])
    return samples


def stage_breakdown(before: str, after: str) -> dict[str, float]:
    """Mean milliseconds per accepted purchase in each intake step, over the measured window."""
    a, b = parse_metrics(before), parse_metrics(after)

    def delta(name: str, **labels: str) -> float:
        key = (name, frozenset(labels.items()))
        return b.get(key, 0.0) - a.get(key, 0.0)

    out: dict[str, float] = {}
    total_count = delta("api_http_request_duration_seconds_count", method="POST", route="/v1/subscriptions")
    total_sum = delta("api_http_request_duration_seconds_sum", method="POST", route="/v1/subscriptions")
    if total_count:
        out["server_total"] = 1000 * total_sum / total_count
    for stage in ("claim", "check", "publish", "complete"):
        count = delta("api_command_stage_seconds_count", stage=stage)
        if count:
            out[stage] = 1000 * delta("api_command_stage_seconds_sum", stage=stage) / count
    if "server_total" in out:
        out["auth_validation_framework"] = out["server_total"] - sum(out.get(s, 0.0) for s in ("claim", "check", "publish", "complete"))
    return out


def profile_by_component(path: Path) -> list[tuple[str, float, float]]:
    """(component, own CPU seconds, share) from a cProfile dump: own time summed per package."""
    import pstats

    stats = pstats.Stats(str(path))
    totals: dict[str, float] = {}
    for (filename, _line, func), (_cc, _nc, own, _cum, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        if "site-packages/" in filename:
            component = filename.split("site-packages/")[1].split("/")[0].split(".")[0]
        elif filename.startswith(str(ROOT)):
            component = filename[len(str(ROOT)) + 1 :].split("/")[0]
        elif filename == "~":
            component = "builtins (C: json, isinstance, struct, …)" if "method" in func or "built-in" in func else "other"
        else:
            component = "stdlib (" + Path(filename).parent.name + ")" if "/lib/python" in filename else "other"
            if "asyncio" in filename:
                component = "asyncio event loop"
        totals[component] = totals.get(component, 0.0) + own
    grand = sum(totals.values()) or 1.0
    return sorted(((name, own, own / grand) for name, own in totals.items()), key=lambda r: r[1], reverse=True)[:14]


# ---------------------------------------------------------------------------- main


async def run(clients: int, seconds: float, warmup: float, users: int, partitions: int, profile: bool) -> dict[str, Any]:
    from infra.tokens import mint_token

    base = Settings()
    console.print(f"[bold]bench.api[/]: PostgreSQL {make_url(plain_url(base.database_url)).host}, Kafka {base.kafka_bootstrap_servers}")
    fresh = await asyncio.to_thread(create_database, base)
    topic = await create_topic(base, partitions)
    tokens = [
        mint_token(ApiSettings().jwt_secret, user_id=f"bench-{i}-{uuid.uuid4().hex[:6]}", email=f"bench{i}@example.com", locale="ru", ttl_s=3600)
        for i in range(users)
    ]
    summary: dict[str, Any] = {}
    try:
        api = ApiProcess(fresh, topic, free_port())
        await api.start()
        base_url = f"http://127.0.0.1:{api.port}"
        try:
            async with httpx.AsyncClient(base_url=base_url, timeout=10) as c:
                before = (await c.get("/metrics")).text
            console.print(f"driving {clients} clients for {warmup:g}s warm-up + {seconds:g}s …")
            assert api.proc is not None
            meter = CpuMeter(api.proc.pid, fresh.database_url)
            result = await drive(base_url, tokens, clients=clients, seconds=seconds, warmup_s=warmup, on_window=meter)
            async with httpx.AsyncClient(base_url=base_url, timeout=10) as c:
                after = (await c.get("/metrics")).text
        finally:
            await api.stop()

        stages = stage_breakdown(before, after)
        summary = {
            "accepted_per_s": round(result.accepted / result.elapsed_s, 1),
            "p50_ms": round(1000 * result.percentile(0.50), 2),
            "p99_ms": round(1000 * result.percentile(0.99), 2),
            "clients": clients,
            "seconds": seconds,
            "accepted": result.accepted,
            "other_statuses": {str(k): v for k, v in result.statuses.items() if k != 202},
            "errors": result.errors,
            "server_ms": {k: round(v, 2) for k, v in stages.items()},
            "cpu_ms_per_request": meter.per_request_ms(sum(result.statuses.values())),
        }
        cpu = summary["cpu_ms_per_request"]
        if cpu.get("api"):
            summary["api_cpu_bound_per_s"] = round(1000 / cpu["api"], 1)
        table = Table(title="POST /v1/subscriptions → 202")
        for column in ("accepted/s", "p50 ms", "p99 ms", "mean ms", "clients", "non-202", "errors"):
            table.add_column(column, justify="right")
        table.add_row(
            f"{summary['accepted_per_s']:.0f}", f"{summary['p50_ms']:.1f}", f"{summary['p99_ms']:.1f}",
            f"{1000 * statistics.fmean(result.latencies_s):.1f}" if result.latencies_s else "-",
            str(clients), str(sum(summary["other_statuses"].values())), str(result.errors),
        )
        console.print(table)
        breakdown = Table(title="Server time per accepted purchase (API's own histograms)")
        breakdown.add_column("step")
        breakdown.add_column("mean ms", justify="right")
        labels = {
            "claim": "claim the Idempotency-Key (INSERT … ON CONFLICT)",
            "check": "plan on sale? (read.plans)",
            "publish": "Kafka send until acks=all",
            "complete": "store the response for replay (UPDATE)",
            "auth_validation_framework": "JWT, validation, routing, JSON, middleware",
            "server_total": "server total (request in → response out)",
        }
        for key, label in labels.items():
            if key in stages:
                breakdown.add_row(label, f"{stages[key]:.2f}")
        console.print(breakdown)
        if cpu:
            console.print(
                "CPU per request: API process {api:.2f} ms, its PostgreSQL backends {postgres:.2f} ms, "
                "load generator {load_generator:.2f} ms (one API process is CPU-bound at ~{bound:.0f}/s; "
                "load average {load})".format(**cpu, bound=summary.get("api_cpu_bound_per_s", 0),
                                              load=", ".join(f"{x:.1f}" for x in os.getloadavg()))
            )

        if profile:
            profile_path = Path(tempfile.gettempdir()) / f"bench-api-{uuid.uuid4().hex[:6]}.prof"
            profiled = ApiProcess(fresh, topic, free_port(), profile_to=profile_path)
            await profiled.start()
            try:
                console.print("profiling pass (API under cProfile, slower) …")
                await drive(f"http://127.0.0.1:{profiled.port}", tokens, clients=clients, seconds=min(seconds, 8), warmup_s=1)
            finally:
                await profiled.stop()
            if profile_path.exists():
                top = Table(title="API process CPU by component during the profiled pass (cProfile, CPU time)")
                top.add_column("component")
                top.add_column("own CPU s", justify="right")
                top.add_column("share", justify="right")
                components = profile_by_component(profile_path)
                for name, own, share in components:
                    top.add_row(name, f"{own:.2f}", f"{100 * share:.0f}%")
                console.print(top)
                summary["profile"] = str(profile_path)
                summary["cpu_share_by_component"] = {name: round(share, 3) for name, _own, share in components}
    finally:
        await delete_topic(base, topic)
        await asyncio.to_thread(drop_database, base, fresh)
    return summary


@app.command()
def main(
    clients: int = typer.Option(64, help="concurrent clients"),
    seconds: float = typer.Option(20.0, help="measured duration"),
    warmup: float = typer.Option(3.0, help="warm-up before measuring"),
    users: int = typer.Option(500, help="distinct users (tokens) the clients cycle through"),
    partitions: int = typer.Option(6, help="partitions of the fresh commands topic"),
    profile: bool = typer.Option(False, help="also run a short pass under cProfile and print the top functions"),
) -> None:
    """Sustained purchases against a real API process; last line is JSON."""
    from infra.logging import configure_logging

    configure_logging("bench.api", json=False, level="WARNING")
    summary = asyncio.run(run(clients, seconds, warmup, users, partitions, profile))
    print(orjson.dumps(summary).decode())


if __name__ == "__main__":
    app()
