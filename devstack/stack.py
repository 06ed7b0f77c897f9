"""The whole local stack: Kafka + PostgreSQL + every available service, in the background or foreground.

`up` returns once everything is healthy and leaves pid files and logs in `.stack/`; `down`
undoes it; `run` is the foreground variant behind `make run` (honcho multiplexes the services'
output; Ctrl-C stops the services and the infrastructure this command started).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from devstack import kafka, paths, pg
from devstack.procs import pid_alive, read_pid, terminate
from devstack.services import Service, available_services


class StackError(RuntimeError):
    """A part of the stack did not come up; the message names it and shows its log."""


def write_env(database_url: str, bootstrap: str) -> Path:
    """`.stack/env`: what every process (and `set -a; . .stack/env`) needs to find the infrastructure."""
    paths.STACK_DIR.mkdir(parents=True, exist_ok=True)
    tmp = paths.ENV_FILE.with_suffix(".tmp")
    tmp.write_text(f"DATABASE_URL={database_url}\nKAFKA_BOOTSTRAP_SERVERS={bootstrap}\n")
    tmp.replace(paths.ENV_FILE)
    return paths.ENV_FILE


def read_env_file(path: Path = paths.ENV_FILE) -> dict[str, str]:
    values: dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            key, sep, value = line.strip().partition("=")
            if sep and not key.startswith("#"):
                values[key.removeprefix("export ").strip()] = value.strip()
    return values


def start_infra(echo=print) -> tuple[dict[str, str], dict[str, bool]]:
    """Start (or reuse) Kafka and PostgreSQL; return (env for services, what this call started)."""
    started = {"kafka": False, "pg": False}
    node = kafka.KafkaNode.from_env()
    k = kafka.start(node)
    started["kafka"] = k["started"]
    echo(f"kafka      {node.bootstrap}  ({'started' if k['started'] else 'already running'} in {k['seconds']:.1f}s, log {node.log_file})")
    database_url = os.environ.get("DATABASE_URL")
    if database_url:
        echo(f"postgres   {database_url}  (DATABASE_URL from the environment)")
    else:
        p = pg.start()
        started["pg"] = p["started"]
        database_url = p["url"]
        echo(f"postgres   {database_url}  ({'started' if p['started'] else 'already running'} in {p['seconds']:.1f}s)")
    write_env(database_url, node.bootstrap)
    return {"DATABASE_URL": database_url, "KAFKA_BOOTSTRAP_SERVERS": node.bootstrap}, started


def stop_infra(kafka_too: bool = True, pg_too: bool = True, echo=print) -> None:
    if kafka_too and kafka.stop():
        echo("kafka stopped")
    if pg_too and not os.environ.get("DATABASE_URL") and pg.stop():
        echo("postgres stopped")


def migrate(env: dict[str, str], echo=print) -> None:
    """Apply every package's migrations (`python -m infra.migrate`) before services start."""
    import importlib.util

    if importlib.util.find_spec("infra.migrate") is None:
        return
    python = str(paths.VENV_PYTHON) if paths.VENV_PYTHON.exists() else sys.executable
    result = subprocess.run(
        [python, "-m", "infra.migrate"], env=env, cwd=paths.ROOT, capture_output=True, text=True, timeout=300
    )
    if result.returncode != 0:
        raise StackError(f"migrations failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
    echo((result.stdout.strip().splitlines() or ["migrated"])[-1])


def service_env(infra_env: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    env.update(infra_env)
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.setdefault("ENVIRONMENT", "development")
    # The local stack: business time can be moved (`billing shift-time`, the demo), and the
    # YooKassa sandbox on this machine may call the webhook.
    env.setdefault("BILLING_CLOCK", "shiftable")
    if "YOOKASSA_TRUSTED_NETWORKS" not in env:
        from command_api.config import YOOKASSA_NETWORKS

        env["YOOKASSA_TRUSTED_NETWORKS"] = YOOKASSA_NETWORKS + ",127.0.0.0/8"
    root = str(paths.ROOT)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _pid_file(svc: Service) -> Path:
    return paths.PIDS_DIR / f"{svc.name}.pid"


def _log_file(svc: Service) -> Path:
    return paths.LOGS_DIR / f"{svc.name}.log"


def _healthy(svc: Service) -> bool:
    import httpx

    if svc.health_url is None:
        return True
    try:
        return httpx.get(svc.health_url, timeout=2.0).status_code < 400
    except httpx.HTTPError:
        return False


def _wait_healthy(svc: Service, pid: int, timeout: float) -> None:
    """Health URL answers (or, without one, the process is still alive after a short grace)."""
    deadline = time.monotonic() + timeout
    grace_until = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        if not pid_alive(pid, must_contain=svc.module):
            raise StackError(f"{svc.name} exited during start-up; {_log_file(svc)}:\n{_tail(_log_file(svc))}")
        if svc.health_url is not None and _healthy(svc):
            return
        if svc.health_url is None and time.monotonic() >= grace_until:
            return
        time.sleep(0.2)
    raise StackError(f"{svc.name} not healthy at {svc.health_url} after {timeout:.0f}s:\n{_tail(_log_file(svc))}")


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def up(timeout: float = 60.0, echo=print) -> list[Service]:
    """Start everything in the background; return once all of it is healthy."""
    infra_env, _ = start_infra(echo)
    env = service_env(infra_env)
    migrate(env, echo)
    paths.LOGS_DIR.mkdir(parents=True, exist_ok=True)
    paths.PIDS_DIR.mkdir(parents=True, exist_ok=True)
    services = available_services()
    launched: list[tuple[Service, int]] = []
    for svc in services:
        pid = read_pid(_pid_file(svc))
        if pid_alive(pid, must_contain=svc.module):
            echo(f"{svc.name:<17}already running (pid {pid})")
            continue
        with open(_log_file(svc), "ab") as log:
            proc = subprocess.Popen(
                svc.argv, env=env, cwd=paths.ROOT, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )
        _pid_file(svc).write_text(f"{proc.pid}\n")
        launched.append((svc, proc.pid))
    for svc, pid in launched:
        _wait_healthy(svc, pid, timeout)
    for svc in services:
        echo(f"{svc.name:<17}{svc.listen}  log {_log_file(svc)}")
    if not services:
        echo("no services are written yet: only Kafka and PostgreSQL run")
    return services


def down(infra: bool = True, echo=print) -> None:
    """Stop the background services (reverse start order), then Kafka and PostgreSQL."""
    from devstack.services import SERVICES

    for svc in reversed(SERVICES):
        pid = read_pid(_pid_file(svc))
        if pid_alive(pid, must_contain=svc.module):
            terminate(pid, timeout=20)
            echo(f"{svc.name} stopped")
        _pid_file(svc).unlink(missing_ok=True)
    if infra:
        stop_infra(echo=echo)


def write_procfile(services: list[Service]) -> Path:
    """`.stack/Procfile`: the same processes for anyone who prefers `honcho start -f .stack/Procfile`."""
    import shlex

    path = paths.STACK_DIR / "Procfile"
    path.write_text("".join(f"{s.name}: {shlex.join(s.argv)}\n" for s in services))
    return path


def run(echo=print) -> int:
    """Foreground stack for `make run`: Ctrl-C stops every service and the infra this call started."""
    from honcho.manager import Manager
    from honcho.printer import Printer

    infra_env, started = start_infra(echo)
    try:
        env = service_env(infra_env)
        migrate(env, echo)
        services = available_services()
        write_procfile(services)
        for svc in services:
            echo(f"{svc.name:<17}{svc.listen}")
        if not services:
            echo("no services are written yet: Kafka and PostgreSQL run; Ctrl-C stops them")
            return _wait_for_interrupt()
        echo("Ctrl-C stops everything")
        manager = Manager(Printer(sys.stdout))
        import shlex

        for svc in services:
            manager.add_process(svc.name, shlex.join(svc.argv), env=env, cwd=str(paths.ROOT))
        if any(s.name == "api" for s in services):
            # Seeds plans and the demo operator, prints URLs and a token; DEMO=0 skips the story.
            python = str(paths.VENV_PYTHON) if paths.VENV_PYTHON.exists() else sys.executable
            manager.add_process("demo", shlex.join([python, "-m", "devstack.demo"]), env=env, cwd=str(paths.ROOT))
        manager.loop()
        return manager.returncode or 0
    finally:
        # Only what this command started: a broker shared with other sessions keeps running.
        stop_infra(kafka_too=started["kafka"], pg_too=started["pg"], echo=echo)


def _wait_for_interrupt() -> int:
    import signal

    stop = {"now": False}

    def _handler(signum, frame):
        stop["now"] = True

    signal.signal(signal.SIGTERM, _handler)
    signal.signal(signal.SIGINT, _handler)
    while not stop["now"]:
        time.sleep(0.2)
    return 0


def _prune_scratch_topics(echo=print) -> None:
    """Drop the uniquely tagged topics earlier test and benchmark runs left on the local broker (idle for an hour)."""
    configured = [os.environ.get(name, "") for name in ("COMMANDS_TOPIC", "EVENTS_TOPIC", "COMMANDS_DLQ_TOPIC", "EVENTS_DLQ_TOPIC")]
    try:
        deleted = kafka.prune_scratch_topics(kafka.KafkaNode.from_env(), keep=[t for t in configured if t])
    except Exception as exc:  # noqa: BLE001 - housekeeping must never stop a test run
        echo(f"kafka      could not prune old scratch topics: {exc!r}")
        return
    if deleted:
        echo(f"kafka      deleted {deleted} scratch topics that earlier runs left behind (idle for an hour)")


def test(pytest_args: list[str], echo=print) -> int:
    """`make test`: reuse or start Kafka and PostgreSQL, run pytest against them, print the suite time.

    Stops only what it started, so a developer's running stack survives a test run and CI
    leaves nothing behind. pytest's exit code is returned as is (5, "no tests ran", fails too).
    """
    t0 = time.monotonic()
    env_from_caller = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if env_from_caller and kafka.is_ready(env_from_caller) and os.environ.get("DATABASE_URL"):
        infra_env = {"KAFKA_BOOTSTRAP_SERVERS": env_from_caller, "DATABASE_URL": os.environ["DATABASE_URL"]}
        started = {"kafka": False, "pg": False}
        echo(f"using the stack from the environment: {infra_env}")
    else:
        infra_env, started = start_infra(echo)
        _prune_scratch_topics(echo)
    infra_seconds = time.monotonic() - t0
    env = service_env(infra_env)
    env["ENVIRONMENT"] = "test"
    # Tests that move time start their processes with BILLING_CLOCK=shiftable on a fresh database;
    # everything else runs on the system clock, whatever a demo did to the dev database's offset.
    env["BILLING_CLOCK"] = os.environ.get("BILLING_CLOCK", "system")
    pytest = paths.ROOT / ".venv" / "bin" / "pytest"
    cmd = [str(pytest) if pytest.exists() else sys.executable, *([] if pytest.exists() else ["-m", "pytest"]), *pytest_args]
    t1 = time.monotonic()
    try:
        code = subprocess.call(cmd, env=env, cwd=paths.ROOT)
    finally:
        suite = time.monotonic() - t1
        stop_infra(kafka_too=started["kafka"], pg_too=started["pg"], echo=echo)
    echo(f"infrastructure ready in {infra_seconds:.1f}s; test suite took {suite:.1f}s; pytest exit code {code}")
    return code
