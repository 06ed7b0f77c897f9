"""The whole product on a fresh database: every process, started for one run and thrown away after.

The chaos test, the end-to-end load benchmark and end-to-end tests all need the same thing — a
private copy of the product (its own database, Kafka topics, sandboxes and, when the broker itself
is to be restarted, its own Kafka broker) whose processes can be SIGKILLed and restarted one by
one — and none of them may disturb the shared development stack or another run. `Pipeline` is that
copy: `await Pipeline(options).start()` creates a database next to the given one and migrates it,
picks unique topic names (`COMMANDS_TOPIC`, `EVENTS_TOPIC`, the DLQs, consumer groups), starts the
YooKassa and Mailgun sandboxes (the YooKassa webhook pointing at this pipeline's API), the relay,
N processors, the projector, the notifier and the command API as `ManagedProcess`es, and waits
until the ones with a health endpoint answer. `stop()` undoes all of it (the database is dropped
unless `keep_database`).

Every process gets the whole configuration through environment variables (Settings fields map to
upper-case names), so what runs here is exactly what `make run` runs, only pointed elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from tests.support.processes import LOG_DIR, ROOT, ManagedProcess

JWT_SECRET = "pipeline-jwt-secret-0123456789abcdef"
LOCAL_NETWORKS = "127.0.0.1/32,::1/128"
ROLES = ("yookassa", "mailgun", "relay", "processor", "projector", "notifier", "api")


def _free_ports(n: int) -> list[int]:
    """`n` distinct free ports (held open together so the OS cannot hand out one twice)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class PipelineOptions:
    """What to run and where. `database_url` names the SERVER: a new database is created on it."""

    database_url: str
    kafka_bootstrap: str | None = None  # the broker to use (ignored with private_kafka)
    private_kafka: bool = False  # start a throw-away broker (free ports, data under work_dir)
    name: str = "pipeline"
    processors: int = 2
    api_instances: int = 1  # more than one: "api", "api-2", … on their own ports (api_urls)
    notifier: bool = True
    partitions: int = 6
    services: tuple[str, ...] = ROLES  # which roles to start (e.g. only the sandboxes); all by default
    work_dir: Path | None = None  # sandboxes' SQLite files, the private broker (default: a temp dir)
    log_dir: Path = LOG_DIR
    env: dict[str, str] = field(default_factory=dict)  # to every service process
    role_env: dict[str, dict[str, str]] = field(default_factory=dict)  # per role (ROLES)
    keep_database: bool = False
    python: str = sys.executable


class Pipeline:
    """One private copy of the product (see the module docstring)."""

    def __init__(self, options: PipelineOptions) -> None:
        self.options = options
        self.tag = f"{options.name}-{uuid.uuid4().hex[:8]}"
        self._own_work_dir = options.work_dir is None
        self.work_dir = Path(options.work_dir or tempfile.mkdtemp(prefix=f"{options.name}-"))
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.database_url = ""
        self.database_name = ""
        self.kafka_node: Any = None
        self.kafka_bootstrap = options.kafka_bootstrap or ""
        self.processes: dict[str, ManagedProcess] = {}
        ports = _free_ports(2 + options.api_instances)
        self.yookassa_port, self.mailgun_port, self.api_ports = ports[0], ports[1], ports[2:]
        self.api_port = self.api_ports[0]
        self.processor_health_ports = _free_ports(options.processors)
        self.yookassa: Any = None  # tests.fixtures.sandboxes.YooKassaSandbox
        self.mailgun: Any = None  # tests.fixtures.sandboxes.MailgunSandbox
        self.kafka_restarts = 0
        safe = self.tag.replace("-", ".")
        self.topics = {
            "COMMANDS_TOPIC": f"{safe}.commands",
            "EVENTS_TOPIC": f"{safe}.events",
            "COMMANDS_DLQ_TOPIC": f"{safe}.commands.dlq",
            "EVENTS_DLQ_TOPIC": f"{safe}.events.dlq",
        }

    # ------------------------------------------------------------------ addresses

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def api_urls(self) -> list[str]:
        return [f"http://127.0.0.1:{port}" for port in self.api_ports]

    @property
    def yookassa_url(self) -> str:
        return f"http://127.0.0.1:{self.yookassa_port}"

    @property
    def mailgun_url(self) -> str:
        return f"http://127.0.0.1:{self.mailgun_port}"

    @property
    def webhook_url(self) -> str:
        return f"{self.api_url}/v1/webhooks/yookassa"

    def settings(self, **overrides: Any) -> Any:
        """`infra.settings.Settings` of this pipeline (database, broker, topics, secrets)."""
        from infra.settings import Settings

        values = {k.lower(): v for k, v in self.base_env().items() if k.lower() in Settings.model_fields}
        return Settings(**{**values, **overrides})

    def token(self, user_id: str, *, email: str | None = None, locale: str | None = "ru",
              role: str | None = None, ttl_s: int = 6 * 3600, operators: list[str] | None = None) -> str:
        """A bearer token this pipeline's API accepts (a service token names its `operators`)."""
        from infra.tokens import mint_token

        return mint_token(JWT_SECRET, user_id=user_id, email=email, locale=locale, role=role, operators=operators,
                          ttl_s=ttl_s)

    # ------------------------------------------------------------------ environment

    def base_env(self) -> dict[str, str]:
        """What every service of this pipeline shares."""
        return {
            "ENVIRONMENT": "test",
            "LOG_FORMAT": "json",
            "DATABASE_URL": self.database_url,
            "KAFKA_BOOTSTRAP_SERVERS": self.kafka_bootstrap,
            **self.topics,
            "YOOKASSA_SHOP_ID": "123456",
            "YOOKASSA_SECRET_KEY": "test_sandbox_secret",
            "YOOKASSA_API_URL": f"{self.yookassa_url}/v3",
            "YOOKASSA_RETURN_URL": f"{self.api_url}/v1/return",
            "YOOKASSA_TRUSTED_NETWORKS": LOCAL_NETWORKS,
            "MAILGUN_API_KEY": "key-sandbox",
            "MAILGUN_DOMAIN": "mg.billing.local",
            "MAILGUN_API_URL": f"{self.mailgun_url}/v3",
            "JWT_SECRET": JWT_SECRET,
            "COMMAND_API_URL": self.api_url,
            "BILLING_CLOCK": "system",
            "PROCESSOR_GROUP_ID": f"processor-{self.tag}",
            "PROJECTOR_GROUP_ID": f"projector-{self.tag}",
            "NOTIFIER_GROUP_ID": f"notifier-{self.tag}",
            **self.options.env,
        }

    def role_env(self, role: str) -> dict[str, str]:
        return {**self.base_env(), **self.options.role_env.get(role, {})}

    # ------------------------------------------------------------------ database and broker

    def _admin_url(self) -> str:
        from sqlalchemy.engine import make_url

        from infra.settings import plain_url

        return make_url(plain_url(self.options.database_url)).set(database="postgres").render_as_string(hide_password=False)

    def _create_database(self) -> None:
        import psycopg
        from psycopg import sql
        from sqlalchemy.engine import make_url

        from infra.settings import plain_url

        self.database_name = f"{self.options.name.replace('-', '_')}_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self._admin_url(), autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.database_name)))
        self.database_url = (
            make_url(plain_url(self.options.database_url)).set(database=self.database_name).render_as_string(hide_password=False)
        )
        from infra.migrate import upgrade

        upgrade(self.settings())

    def _drop_database(self) -> None:
        import psycopg
        from psycopg import sql

        if not self.database_name:
            return
        with psycopg.connect(self._admin_url(), autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.database_name)))

    def _start_private_kafka(self) -> None:
        from devstack import kafka as devkafka

        port, controller = _free_ports(2)
        # C1-only JIT: this broker lives for one run, and starts (and restarts) about twice as fast
        self.kafka_node = devkafka.KafkaNode(port=port, controller_port=controller, home=self.work_dir / "kafka",
                                             jvm_options=("-XX:TieredStopAtLevel=1",))
        devkafka.start(self.kafka_node, timeout=180)
        self.kafka_bootstrap = self.kafka_node.bootstrap

    async def restart_kafka(self, down_s: float = 0.0) -> float:
        """Stop the PRIVATE broker (SIGTERM, controlled shutdown), wait `down_s`, start it again.

        Returns the seconds the broker was unavailable. Refuses to touch a shared broker.
        """
        from devstack import kafka as devkafka

        if self.kafka_node is None:
            raise RuntimeError("restart_kafka needs private_kafka=True: the shared broker is never restarted")
        t0 = time.monotonic()
        await asyncio.to_thread(devkafka.stop, self.kafka_node, 60)
        if down_s:
            await asyncio.sleep(down_s)
        await asyncio.to_thread(devkafka.start, self.kafka_node, timeout=180, fetch=False)
        self.kafka_restarts += 1
        return time.monotonic() - t0

    async def _ensure_topics(self) -> None:
        from infra.kafka import ensure_topics

        p = self.options.partitions
        await ensure_topics(
            self.settings(),
            {
                self.topics["COMMANDS_TOPIC"]: p,
                self.topics["EVENTS_TOPIC"]: p,
                self.topics["COMMANDS_DLQ_TOPIC"]: 1,
                self.topics["EVENTS_DLQ_TOPIC"]: 1,
            },
        )

    # ------------------------------------------------------------------ processes

    def _process(self, name: str, role: str, module: str, *, ready_url: str | None = None,
                 extra: Mapping[str, str] | None = None) -> ManagedProcess:
        env = {**self.role_env(role), **(extra or {})}
        proc = ManagedProcess(
            f"{self.tag}-{name}", [self.options.python, "-m", module], env=env, ready_url=ready_url,
            ready_timeout=90, log_dir=self.options.log_dir,
        )
        self.processes[name] = proc
        return proc

    def _build_processes(self) -> None:
        self._build_all_processes()
        for name in [n for n in self.processes if n.rsplit("-", 1)[0] not in self.options.services]:
            del self.processes[name]

    def _build_all_processes(self) -> None:
        from tests.fixtures.sandboxes import MailgunSandbox, YooKassaSandbox

        yk = self._process(
            "yookassa", "yookassa", "sandbox.yookassa", ready_url=f"{self.yookassa_url}/healthz",
            extra={
                "SANDBOX_YOOKASSA_HOST": "127.0.0.1",
                "SANDBOX_YOOKASSA_PORT": str(self.yookassa_port),
                "SANDBOX_YOOKASSA_DB": str(self.work_dir / "yookassa.sqlite3"),
                "SANDBOX_YOOKASSA_PUBLIC_URL": "",
                "SANDBOX_YOOKASSA_WEBHOOK_URL": self.webhook_url,
                "SANDBOX_YOOKASSA_WEBHOOK_RETRY_S": "0.5,1,2,3",
                "SANDBOX_YOOKASSA_FAULTS": "",
                **self.options.role_env.get("yookassa", {}),
            },
        )
        mg = self._process(
            "mailgun", "mailgun", "sandbox.mailgun", ready_url=f"{self.mailgun_url}/healthz",
            extra={
                "SANDBOX_MAILGUN_HOST": "127.0.0.1",
                "SANDBOX_MAILGUN_PORT": str(self.mailgun_port),
                "SANDBOX_MAILGUN_DB": str(self.work_dir / "mailgun.sqlite3"),
                "SANDBOX_MAILGUN_FAULTS": "",
                **self.options.role_env.get("mailgun", {}),
            },
        )
        self.yookassa = YooKassaSandbox(url=self.yookassa_url, process=yk, db_path=self.work_dir / "yookassa.sqlite3")
        self.mailgun = MailgunSandbox(url=self.mailgun_url, process=mg, db_path=self.work_dir / "mailgun.sqlite3")
        self._process("relay", "relay", "relay")
        for i, port in enumerate(self.processor_health_ports, start=1):
            self._process(
                f"processor-{i}", "processor", "payment_processor",
                ready_url=f"http://127.0.0.1:{port}/healthz", extra={"PROCESSOR_HEALTH_PORT": str(port)},
            )
        self._process("projector", "projector", "projector")
        if self.options.notifier:
            self._process("notifier", "notifier", "notifier")
        for i, (port, url) in enumerate(zip(self.api_ports, self.api_urls, strict=True), start=1):
            self._process("api" if i == 1 else f"api-{i}", "api", "command_api", ready_url=f"{url}/healthz",
                          extra={"API_HOST": "127.0.0.1", "API_PORT": str(port)})

    @property
    def processor_names(self) -> list[str]:
        return [n for n in self.processes if n.startswith("processor-")]

    async def start(self) -> Pipeline:
        """Database, broker, topics, then every process; returns once the health endpoints answer."""
        t0 = time.monotonic()
        try:
            if self.options.private_kafka:
                kafka_task = asyncio.create_task(asyncio.to_thread(self._start_private_kafka))
            else:
                if not self.kafka_bootstrap:
                    raise ValueError("kafka_bootstrap is required without private_kafka")
                kafka_task = None
            await asyncio.to_thread(self._create_database)
            if kafka_task is not None:
                await kafka_task
            await self._ensure_topics()
            self._build_processes()
            for proc in self.processes.values():
                proc.start()
            await asyncio.gather(*(proc.wait_ready() for proc in self.processes.values()))
        except BaseException:
            await self.stop()
            raise
        self.start_seconds = time.monotonic() - t0
        return self

    async def kill(self, name: str) -> None:
        """SIGKILL one process (by its name in `processes`)."""
        await asyncio.to_thread(self.processes[name].kill)

    async def revive(self, name: str, timeout: float | None = None) -> None:
        """Start a stopped process again and wait until it is ready."""
        await self.processes[name].astart(timeout)

    async def stop(self) -> None:
        """Terminate every process (all at once), stop a private broker, drop the database."""
        procs = list(self.processes.values())
        if procs:
            await asyncio.gather(*(asyncio.to_thread(p.terminate, 20) for p in procs), return_exceptions=True)
        for sandbox in (self.yookassa, self.mailgun):
            if sandbox is not None:
                sandbox.close()
        if self.kafka_node is not None:
            from devstack import kafka as devkafka

            with contextlib.suppress(Exception):
                await asyncio.to_thread(devkafka.stop, self.kafka_node, 60)
        if not self.options.keep_database:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self._drop_database)
        if self._own_work_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    async def __aenter__(self) -> Pipeline:
        return await self.start()

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    # ------------------------------------------------------------------ tools over the pipeline

    async def replay_check(self, timeout: float = 300) -> tuple[int, dict[str, Any]]:
        """`python -m projector.entrypoints.replay --check --json` against this pipeline's database.

        Returns (exit code, the JSON report: `differences` is the list of rows that differ).
        """
        env = {**os.environ, **self.base_env(), "PYTHONPATH": str(ROOT)}
        proc = await asyncio.create_subprocess_exec(
            self.options.python, "-m", "projector.entrypoints.replay", "--check", "--json", "--quiet",
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError:
            proc.kill()
            raise
        try:
            report = orjson.loads(out)
        except orjson.JSONDecodeError:
            report = {"error": (out + err).decode(errors="replace")[-3000:]}
        return proc.returncode or 0, report

    def logs(self) -> dict[str, Path]:
        return {name: p.log_path for name, p in self.processes.items()}
