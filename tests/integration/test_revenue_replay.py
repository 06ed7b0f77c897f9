"""The revenue report's tables are read models like the others: `billing replay --check` rebuilds
them identically from the event log, and the readers' one query (`rules.revenue.SUM_SQL`) gives
the report a pure projection of the same history gives.

Months of history (several accounts, renewals failing and recovering, refunds, churn, a grant)
are projected live in messy batches (duplicates, later batches first) against real PostgreSQL.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from datetime import datetime, timezone

import asyncpg
import orjson

from infra.settings import Settings, plain_url
from rules.revenue import SUM_SQL, MonthTotals, csv_text, report
from tests.integration.test_replay_check import ROOT, in_thread, project_live, run_cli
from tests.support.projector_scenarios import PLANS, AccountScenario, Clock, History, plan_events, random_account
from tests.unit.test_revenue_report import DAY, MONTHLY, YEARLY, project, totals


def months_of_history() -> History:
    history, clock = History(), Clock(datetime(2026, 1, 3, 8, 0, tzinfo=timezone.utc))
    rng = random.Random(20)
    for plan in (*PLANS, MONTHLY, YEARLY):
        plan_events(history, clock, plan)
    accounts = [AccountScenario(history, clock, f"u-rev-{n}") for n in range(6)]
    subs = [a.purchase(MONTHLY if n % 3 else YEARLY) for n, a in enumerate(accounts)]
    accounts[0].grant(MONTHLY)
    for month in range(3):
        clock.tick(30 * DAY)
        for n, (account, sub) in enumerate(zip(accounts, subs, strict=True)):
            if sub.status not in ("active", "past_due") or sub.plan_id != "monthly":
                continue
            if (n + month) % 4 == 0:
                account.renew(sub, success=False)
                clock.tick(DAY)
            account.renew(sub, success=(n + month) % 5 != 0)
        if month == 1:
            accounts[1].cancel(subs[1], "refund_now")
        for _ in range(20):
            random_account(history, clock, rng)
    return history


async def _summed(settings: Settings, schema: str = "read") -> list[MonthTotals]:
    conn = await asyncpg.connect(plain_url(settings.database_url))
    try:
        return [MonthTotals(**dict(r)) for r in await conn.fetch(SUM_SQL.format(schema=schema))]
    finally:
        await conn.close()


def test_replay_rebuilds_the_revenue_tables_identically(fresh_database: Callable[..., Settings]) -> None:
    settings = fresh_database(prefix="revenuereplay")
    history = months_of_history()
    in_thread(project_live(settings, history, random.Random(5), 60, 0.2, {}))

    expected = report(totals(project(history)))
    live = report(in_thread(_summed(settings)))
    assert live == expected
    assert {ln.month for ln in live} >= {"2026-01", "2026-02", "2026-03", "2026-04"}
    assert any(ln.renewals_recovered for ln in live) and any(ln.refunded_minor for ln in live) and any(ln.churned for ln in live)

    # `billing report --csv`, the operator's command, prints the same report.
    env = {**os.environ, "DATABASE_URL": settings.database_url, "PYTHONPATH": str(ROOT), "ENVIRONMENT": "test"}
    billing = [str(Path(sys.executable).with_name("billing")), "report", "--csv"]
    printed = subprocess.run(billing, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout == csv_text(expected)
    monthly = subprocess.run([*billing, "--plan", "monthly", "--from", "2026-02", "--to", "2026-03"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=60)
    assert monthly.stdout == csv_text(report(totals(project(history)), plan_id="monthly", month_from="2026-02", month_to="2026-03"))
    assert len(monthly.stdout.splitlines()) == 3

    checked = run_cli(settings, "--check", "--json", "--quiet")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert orjson.loads(checked.stdout)["differences"] == []

    async def tamper() -> str:
        conn = await asyncpg.connect(plain_url(settings.database_url))
        try:
            key = await conn.fetchval("SELECT row_key FROM read.revenue WHERE mrr_delta_minor <> 0 ORDER BY row_key LIMIT 1")
            await conn.execute("UPDATE read.revenue SET mrr_delta_minor = mrr_delta_minor + 1 WHERE row_key = $1", key)
            return key
        finally:
            await conn.close()

    key = in_thread(tamper())
    found = run_cli(settings, "--check", "--json", "--quiet")
    assert found.returncode == 1 and key in found.stdout and "mrr_delta_minor" in found.stdout, found.stdout + found.stderr
