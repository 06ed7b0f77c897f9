"""`billing replay --check` and `--until` against real PostgreSQL.

A randomized history of hundreds of accounts (hypothesis chooses the seed, the size and how the
live projector receives it: batch sizes, duplicates, order within and across batches) is
projected live; the CLI's `--check` must find no difference. One read-model row altered by hand
must then be reported exactly. `--until` must rebuild the read models as they were.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import random
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from infra.db import create_engine
from infra.settings import Settings, plain_url
from eventstore.store import EventStore
from projector.bootstrap import create_pool
from projector.domain.events import ProjectedEvent
from projector.service import Projector
from tests.support.projector_scenarios import (
    PLANS,
    Clock,
    History,
    append_history,
    plan_events,
    random_account,
    read_models,
)

ROOT = Path(__file__).resolve().parents[2]


def run_cli(settings: Settings, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """`python -m projector.entrypoints.replay ARGS` as a real process against `settings`' database."""
    env = {**os.environ, "DATABASE_URL": settings.database_url, "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
           "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "projector.entrypoints.replay", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def in_thread(coroutine: Any) -> Any:
    """Run a coroutine to completion on its own event loop (hypothesis drives synchronous tests)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


async def project_live(settings: Settings, history: History, rng: random.Random, batch: int, duplicates: float,
                       versions: dict[str, int]) -> int:
    """Append the history, then feed it to the live projector in messy batches."""
    engine = create_engine(settings, pool_size=8)
    pool = await create_pool(settings)
    try:
        store = EventStore(engine)
        events = [ProjectedEvent.from_recorded(r) for r in await append_history(store, history, versions)]
        deliveries = list(events)
        for event in rng.sample(events, int(len(events) * duplicates)):
            deliveries.insert(rng.randrange(len(deliveries) + 1), event)
        batches = [deliveries[i : i + batch] for i in range(0, len(deliveries), batch)]
        for i in range(0, len(batches) - 1, 2):  # a later batch first: its streams' gaps are filled from the store
            if rng.random() < 0.3:
                batches[i], batches[i + 1] = batches[i + 1], batches[i]
        projector = Projector(pool, store)
        for part in batches:
            rng.shuffle(part)
            await projector.apply(part)
        return len(events)
    finally:
        await pool.close()
        await engine.dispose()


@pytest.fixture(scope="module")
def check_db(fresh_database: Callable[..., Settings]) -> dict[str, Any]:
    """One fresh database for the module: examples add accounts; the check compares everything."""
    return {"settings": fresh_database(prefix="replaycheck"), "versions": {}, "events": 0, "plans": False}


@pytest.mark.slow
@hypothesis_settings(max_examples=2, deadline=None, derandomize=False,
                     suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(
    seed=st.integers(min_value=0, max_value=2**32 - 1),
    accounts=st.integers(min_value=200, max_value=240),
    batch=st.integers(min_value=25, max_value=500),
    duplicates=st.floats(min_value=0.0, max_value=0.3),
)
def test_random_accounts_projected_live_then_check_finds_no_difference(
    check_db: dict[str, Any], seed: int, accounts: int, batch: int, duplicates: float
) -> None:
    settings: Settings = check_db["settings"]
    rng = random.Random(seed)
    history, clock = History(), Clock()
    if not check_db["plans"]:
        for plan in PLANS:
            plan_events(history, clock, plan, archive=plan.plan_id == "annual")
        check_db["plans"] = True
    for _ in range(accounts):
        random_account(history, clock, rng)
    check_db["events"] += in_thread(project_live(settings, history, rng, batch, duplicates, check_db["versions"]))
    result = run_cli(settings, "--check", "--json", "--quiet")
    report = orjson.loads(result.stdout or b"{}") if result.stdout.strip().startswith("{") else {}
    assert result.returncode == 0, result.stdout + result.stderr
    assert report["differences"] == []
    assert report["events"] == check_db["events"]


def test_a_row_altered_by_hand_is_reported_exactly(check_db: dict[str, Any]) -> None:
    settings: Settings = check_db["settings"]
    if not check_db["events"]:  # run alone: give it something to check
        rng = random.Random(99)
        history, clock = History(), Clock()
        for _ in range(20):
            random_account(history, clock, rng)
        check_db["events"] += in_thread(project_live(settings, history, rng, 50, 0.1, check_db["versions"]))

    async def tamper() -> tuple[str, str]:
        conn = await asyncpg.connect(plain_url(settings.database_url))
        try:
            key, status = await conn.fetchrow(
                "SELECT subscription_id::text, status FROM read.subscriptions ORDER BY subscription_id LIMIT 1")
            await conn.execute("UPDATE read.subscriptions SET status = 'tampered' WHERE subscription_id = $1::uuid", key)
            return key, status
        finally:
            await conn.close()

    key, status = in_thread(tamper())
    result = run_cli(settings, "--check", "--json", "--quiet")
    assert result.returncode == 1, result.stdout + result.stderr
    assert orjson.loads(result.stdout)["differences"] == [
        {"table": "subscriptions", "key": key, "column": "status", "live": "tampered", "rebuilt": status}
    ]
    human = run_cli(settings, "--check", "--quiet", "--workers", "2")  # also the multi-process bulk path
    assert human.returncode == 1
    assert "1 difference(s)" in human.stdout and key in human.stdout and "'tampered'" in human.stdout


async def test_until_builds_the_read_models_as_they_were(fresh_database: Callable[..., Settings]) -> None:
    settings = fresh_database()
    rng = random.Random(7)
    versions: dict[str, int] = {}
    first, clock = History(), Clock()
    for plan in PLANS:
        plan_events(first, clock, plan)
    for _ in range(30):
        random_account(first, clock, rng)
    await project_live(settings, first, rng, 100, 0.0, versions)
    then = await read_models(settings.database_url)
    conn = await asyncpg.connect(plain_url(settings.database_url))
    try:
        position, recorded_at = await conn.fetchrow(
            "SELECT position, recorded_at FROM eventstore.events ORDER BY position DESC LIMIT 1")
    finally:
        await conn.close()

    second = History()
    for _ in range(30):
        random_account(second, clock, rng)
    await project_live(settings, second, rng, 100, 0.0, versions)
    now = await read_models(settings.database_url)
    assert now != then

    by_position = await asyncio.to_thread(run_cli, settings, "--until", str(position), "--into", "audit_by_position", "--quiet")
    assert by_position.returncode == 0, by_position.stdout + by_position.stderr
    assert await read_models(settings.database_url, schema="audit_by_position") == then
    by_time = await asyncio.to_thread(run_cli, settings, "--until", recorded_at.isoformat(), "--into", "audit_by_time", "--quiet")
    assert by_time.returncode == 0, by_time.stdout + by_time.stderr
    assert await read_models(settings.database_url, schema="audit_by_time") == then
    assert await read_models(settings.database_url) == now, "the live read models are untouched"

    refused = await asyncio.to_thread(run_cli, settings, "--until", str(position), "--into", "audit_by_position", "--quiet")
    assert refused.returncode == 2 and "already exists" in refused.stdout
    naive = await asyncio.to_thread(run_cli, settings, "--until", "2026-01-01T00:00:00", "--into", "x", "--quiet")
    assert naive.returncode == 2 and "timezone" in naive.stdout
