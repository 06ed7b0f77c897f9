"""With LOG_FORMAT=json every line a service process writes is one JSON object (issue 17).

A log shipper parses each line; one plain-text line (uvicorn's "Started server process", Alembic's
"Context impl PostgresqlImpl", an aiokafka warning, a crash traceback) is a line it drops or
mangles. So these tests start the real processes — the migration job on an empty database, the
command API under uvicorn answering a request, the notifier (a Kafka consumer that runs its own
Alembic migration) reading a poison record — capture stdout and stderr together and check every
non-empty line, plus the correlation id where one exists.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import orjson
import pytest

from tests.support.processes import ROOT, ManagedProcess, free_port
from tests.support.wait import wait_until

pytestmark = pytest.mark.timeout(180)

JWT_SECRET = "logging-test-jwt-secret-0123456789abcdef"


def json_lines(text: str) -> list[dict]:
    """Every non-empty line parsed; fails naming the first line that is not a JSON log record.

    Lines starting with "===== " are ManagedProcess's own markers in the log file, not the child's.
    """
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("===== "):
            continue
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            pytest.fail(f"line {number} is not JSON: {line!r}\n--- whole output:\n{text[-4000:]}")
        assert isinstance(record, dict), line
        missing = {"event", "level", "timestamp"} - record.keys()
        assert not missing, f"line {number} lacks {missing}: {line!r}"
        records.append(record)
    return records


def service_env(settings, **extra: str) -> dict[str, str]:
    return {
        "ENVIRONMENT": "test",
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "INFO",
        "BILLING_CLOCK": "system",
        "DATABASE_URL": settings.database_url,
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


def test_migration_job_logs_json(fresh_database):
    """`python -m infra.migrate` (the deployment's migration job) on an empty database."""
    empty = fresh_database(migrate=False)
    result = subprocess.run(
        [sys.executable, "-m", "infra.migrate"], cwd=ROOT, env={**_inherited(), **service_env(empty)},
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    records = json_lines(result.stdout + "\n" + result.stderr)
    alembic = [r for r in records if str(r.get("logger", "")).startswith("alembic")]
    assert alembic, f"Alembic's own lines are missing: {records}"
    assert any("Running upgrade" in r["event"] for r in alembic)
    assert records[-1]["event"] == "migrated" and "eventstore" in records[-1]["packages"]
    assert all(r["service"] == "migrate" for r in records)


async def test_command_api_under_uvicorn_logs_json_with_the_request_id(fresh_database, tmp_path: Path):
    """uvicorn's start/stop lines and the API's request line, the latter with the caller's X-Request-ID."""
    db = fresh_database(migrate=True)
    port = free_port()
    api = ManagedProcess(
        "logging-api", "command_api",
        env=service_env(db, API_HOST="127.0.0.1", API_PORT=str(port), JWT_SECRET=JWT_SECRET,
                        COMMANDS_TOPIC=f"logtest.{uuid.uuid4().hex[:10]}.commands"),
        ready_url=f"http://127.0.0.1:{port}/healthz", ready_timeout=60, log_dir=tmp_path,
    )
    request_id = f"log-test-{uuid.uuid4().hex[:12]}"
    await api.astart()
    try:
        async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
            answer = await client.get(f"http://127.0.0.1:{port}/v1/commands/{uuid.uuid4()}", headers={"X-Request-ID": request_id})
        assert answer.headers["X-Request-ID"] == request_id
        await wait_until(lambda: request_id in api.log_path.read_text(), timeout=10, message="the request's log line")
    finally:
        api.terminate()
    records = json_lines(api.log_path.read_text())
    uvicorn_lines = [r for r in records if str(r.get("logger", "")).startswith("uvicorn")]
    assert any("Started server process" in r["event"] for r in uvicorn_lines), records
    assert any("Finished server process" in r["event"] for r in uvicorn_lines), records
    request_lines = [r for r in records if r["event"] == "request" and r.get("correlation_id") == request_id]
    assert request_lines and request_lines[0]["status"] == 401 and request_lines[0]["service"] == "command_api"


async def test_kafka_consumer_logs_json_with_the_records_correlation_id(fresh_database, unique_topic, tmp_path: Path):
    """The notifier: its Alembic run, aiokafka, and a poison record's dead-letter line with its correlation id."""
    from infra.kafka import make_producer

    db = fresh_database(migrate=True)
    events = await unique_topic(partitions=1, prefix="logtest.events")
    dlq = await unique_topic(partitions=1, prefix="logtest.events.dlq")
    notifier = ManagedProcess(
        "logging-notifier", "notifier",
        env=service_env(db, EVENTS_TOPIC=events, EVENTS_DLQ_TOPIC=dlq, NOTIFIER_GROUP_ID=f"logtest-{uuid.uuid4().hex[:10]}",
                        MAILGUN_API_URL=f"http://127.0.0.1:{free_port()}/v3"),
        ready_timeout=60, log_dir=tmp_path,
    )
    notifier.ready_check = lambda: "partitions_assigned" in notifier.log_path.read_text()
    correlation_id = f"corr-{uuid.uuid4().hex[:12]}"
    await notifier.astart()
    try:
        producer = await make_producer(db)
        try:
            await producer.send_and_wait(events, value=b"not an event", key=b"u1", headers=[("correlation_id", correlation_id.encode())])
        finally:
            await producer.stop()
        await wait_until(lambda: "dead_lettered" in notifier.log_path.read_text(), timeout=30, message="the dead-letter line")
    finally:
        notifier.terminate()
    records = json_lines(notifier.log_path.read_text())
    assert any(str(r.get("logger", "")).startswith("alembic") for r in records), records
    dead = [r for r in records if r["event"] == "dead_lettered"]
    assert dead and dead[0]["correlation_id"] == correlation_id and dead[0]["level"] == "error"
    assert any(r["event"] == "consumer_stopping" for r in records)


async def test_admin_under_uvicorn_logs_django_records_as_json(fresh_database, tmp_path: Path):
    """The admin: its Django migrations at start-up, uvicorn's lines, Django's own request warning."""
    db = fresh_database(migrate=True)
    port = free_port()
    admin = ManagedProcess(
        "logging-admin", "admin", env=service_env(db, ADMIN_HOST="127.0.0.1", ADMIN_PORT=str(port), JWT_SECRET=JWT_SECRET),
        ready_url=f"http://127.0.0.1:{port}/admin/login/", ready_timeout=90, log_dir=tmp_path,
    )
    await admin.astart()
    try:
        async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
            assert (await client.get(f"http://127.0.0.1:{port}/no-such-page")).status_code == 404
        await wait_until(lambda: "/no-such-page" in admin.log_path.read_text(), timeout=10, message="Django's 404 line")
    finally:
        admin.terminate()
    records = json_lines(admin.log_path.read_text())
    assert any(r.get("logger") == "django.request" and r["level"] == "warning" for r in records), records
    assert any(str(r.get("logger", "")).startswith("uvicorn") for r in records), records


def test_an_uncaught_exception_is_one_json_line():
    """A crash at start-up (here: a misspelt ENVIRONMENT) is a JSON record with the traceback inside."""
    result = subprocess.run(
        [sys.executable, "-m", "projector"], cwd=ROOT, env={**_inherited(), "LOG_FORMAT": "json", "ENVIRONMENT": "prodution"},
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode != 0
    records = json_lines(result.stdout + "\n" + result.stderr)
    crash = [r for r in records if r["event"] == "uncaught_exception"]
    assert crash and crash[0]["level"] == "critical" and "environment" in crash[0]["exception"].lower()


def _inherited() -> dict[str, str]:
    """PATH and friends, without the runner's service variables (they would override ours)."""
    import os

    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "VIRTUAL_ENV", "PYTHONPATH")
    return {k: v for k, v in os.environ.items() if k in keep}
