"""Reconciliation with YooKassa end to end: real API, processor, relay, projector, notifier and sandboxes.

Money moves outside the product through the sandbox's dashboard: an operator's refund that
notifies (recorded live, shown in the read model, emailed), one whose notification is lost and a
payment nobody heard of (both recovered by `billing reconcile`, run as the operator runs it), and
YooKassa's books disagreeing with ours (listed for an operator). A rerun records nothing twice.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import orjson
import pytest

from schemas import derived_id
from tests.support.processes import ROOT
from tests.support.stack import Pipeline, PipelineOptions
from tests.support.wait import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
async def pipeline(settings) -> AsyncIterator[Pipeline]:  # type: ignore[no-untyped-def]
    options = PipelineOptions(
        database_url=settings.database_url,
        kafka_bootstrap=settings.kafka_bootstrap_servers,
        name="recon-e2e",
        processors=1,
        notifier=True,
        partitions=3,
        role_env={
            "processor": {
                "PROCESSOR_JANITOR_SCHEDULE_S": "1,1,1", "PROCESSOR_JANITOR_TICK_S": "0.2",
                "PROCESSOR_RECONCILE_ENABLED": "false",  # these tests run it themselves
            },
            "notifier": {"NOTIFIER_RETRY_POLL_S": "0.2"},
        },
    )
    async with Pipeline(options) as started:
        yield started


@pytest.fixture(scope="module")
async def plan_id(pipeline: Pipeline) -> str:
    plan = f"recon-{uuid.uuid4().hex[:8]}"
    operator = {"Authorization": f"Bearer {pipeline.token('op-anna', role='operator')}"}
    async with httpx.AsyncClient(base_url=pipeline.api_url, timeout=30) as client:
        response = await client.post(
            "/v1/admin/plans",
            json={"plan_id": plan, "name": "Standard", "price": {"amount": "300.00", "currency": "RUB"},
                  "period_days": 30, "description": "e2e", "reason": "e2e test"},
            headers={**operator, "Idempotency-Key": str(uuid.uuid4()), "Prefer": "wait=10"},
        )
        assert response.status_code == 200, response.text
    return plan


def _user(pipeline: Pipeline, locale: str = "ru") -> tuple[str, str, dict[str, str]]:
    user = f"recon-{uuid.uuid4().hex[:8]}"
    email = f"{user}@example.com"
    return user, email, {"Authorization": f"Bearer {pipeline.token(user, email=email, locale=locale)}"}


async def _buy(client: httpx.AsyncClient, plan_id: str, headers: dict[str, str], wait: int = 10) -> dict[str, Any]:
    bought = await client.post(
        "/v1/subscriptions", json={"plan_id": plan_id}, headers={**headers, "Idempotency-Key": str(uuid.uuid4()), "Prefer": f"wait={wait}"}
    )
    assert bought.status_code in (200, 202), bought.text
    return bought.json()


async def _buy_and_pay(pipeline: Pipeline, client: httpx.AsyncClient, plan_id: str, headers: dict[str, str]) -> tuple[str, str]:
    """(subscription id, YooKassa's payment id) of an active subscription."""
    outcome = (await _buy(client, plan_id, headers))["outcome"]
    provider_id = pipeline.yookassa.payment_id_from_url(outcome["confirmation_url"])
    await pipeline.yookassa.apay(provider_id)
    sid = outcome["subscription_id"]

    async def active() -> bool:
        return (await client.get(f"/v1/subscriptions/{sid}", headers=headers)).json().get("status") == "active"

    await wait_until(active, timeout=30, message="the subscription is active")
    return sid, provider_id


def _reconcile(pipeline: Pipeline, since: datetime, until: datetime) -> dict[str, Any]:
    """`billing reconcile --from … --to … --json`, as an operator runs it."""
    env = {**os.environ, **pipeline.role_env("processor"), "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, str(ROOT / "billing_cli.py"), "reconcile", "--from", since.isoformat(), "--to", until.isoformat(), "--json"],
        cwd=ROOT, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return orjson.loads(result.stdout)


async def _events(pipeline: Pipeline, user: str) -> list[tuple[str, dict[str, Any]]]:
    conn = await asyncpg.connect(pipeline.database_url)
    try:
        rows = await conn.fetch(
            "SELECT type, data::text FROM eventstore.events WHERE stream_id = $1 ORDER BY stream_version", f"account-{user}"
        )
    finally:
        await conn.close()
    return [(row[0], orjson.loads(row[1])) for row in rows]


async def test_a_dashboard_refund_is_recorded_live_shown_and_emailed(pipeline, plan_id) -> None:
    user, email, headers = _user(pipeline, locale="en")
    async with httpx.AsyncClient(base_url=pipeline.api_url, timeout=30) as client:
        sid, provider_payment = await _buy_and_pay(pipeline, client, plan_id, headers)
        refund = await pipeline.yookassa.adashboard_refund(provider_payment, "100.00")  # notified like any refund

        async def shown() -> dict | None:
            sub = (await client.get(f"/v1/subscriptions/{sid}", headers=headers)).json()
            return sub if sub["amount_refunded"]["amount"] == "100.00" else None

        sub = await wait_until(shown, timeout=30, message="the dashboard refund in the read model")
        [shown_refund] = sub["refunds"]
        assert shown_refund["status"] == "succeeded" and shown_refund["reason"] == "made in YooKassa's dashboard"
        assert sub["status"] == "active"
        quote = (await client.get(f"/v1/subscriptions/{sid}/refund-quote", headers=headers)).json()
        assert quote["already_refunded"]["amount"] == "100.00"

    async def emailed() -> list | None:
        found = [m for m in await pipeline.mailgun.amessages(to=email) if "refund_succeeded" in m["tags"]]
        return found or None

    [message] = await wait_until(emailed, timeout=30, message="the refund email")
    assert "Our support team made this refund for you." in message["text"]
    recorded = [d for t, d in await _events(pipeline, user) if t == "RefundSucceeded"]
    assert [(d["provider_refund_id"], d["dashboard"]) for d in recorded] == [(refund["id"], True)]


async def test_lost_notifications_are_recovered_by_reconciliation_and_a_rerun_records_nothing_twice(pipeline, plan_id) -> None:
    since = datetime.now(UTC) - timedelta(seconds=2)
    user, _, headers = _user(pipeline)
    user2, _, headers2 = _user(pipeline)
    async with httpx.AsyncClient(base_url=pipeline.api_url, timeout=30) as client:
        sid, provider_payment = await _buy_and_pay(pipeline, client, plan_id, headers)
        lost_refund = await pipeline.yookassa.adashboard_refund(provider_payment, "50.00", notify=False)

        # a checkout whose create never answers us, then a payment naming it succeeds at YooKassa unheard
        with pipeline.yookassa.faults_added({"endpoint": "POST /v3/payments", "mode": "drop_before_apply", "metadata": {"user_id": user2}}):
            accepted = await _buy(client, plan_id, headers2, wait=1)
            our_payment = derived_id("payment", uuid.UUID(accepted["command_id"]))
            silent = await pipeline.yookassa.adashboard_payment("300.00", {"user_id": user2, "payment_id": str(our_payment)})
            until = datetime.now(UTC) + timedelta(seconds=2)
            first = _reconcile(pipeline, since, until)

    run = first["run"]
    assert run["status"] == "done" and run["recorded"] >= 2, first
    mine = {d["provider_id"]: d for d in first["differences"]}
    assert mine[lost_refund["id"]]["kind"] == "unknown_to_us" and mine[lost_refund["id"]]["status"] == "recorded"
    assert mine[silent["id"]]["kind"] == "unknown_to_us" and mine[silent["id"]]["status"] == "recorded"

    async def recorded() -> list | None:
        refunds = [d for t, d in await _events(pipeline, user) if t == "RefundSucceeded"]
        paid = [d for t, d in await _events(pipeline, user2) if t == "PaymentSucceeded"]
        return [refunds, paid] if refunds and paid else None

    refunds, paid = await wait_until(recorded, timeout=30, message="the reconciled facts recorded")
    assert [r["provider_refund_id"] for r in refunds] == [lost_refund["id"]]
    assert [p["provider_payment_id"] for p in paid] == [silent["id"]] and paid[0]["payment_id"] == str(our_payment)

    async with httpx.AsyncClient(base_url=pipeline.api_url, timeout=30) as client:
        async def active_again() -> bool:
            subs = (await client.get("/v1/subscriptions", headers=headers2)).json()["items"]
            return any(s["status"] == "active" for s in subs)

        await wait_until(active_again, timeout=30, message="the late payment activated the subscription")

    before = await _events(pipeline, user) + await _events(pipeline, user2)
    again = _reconcile(pipeline, since, until)  # a rerun of the same window
    assert again["run"]["status"] == "done" and again["run"]["recorded"] == 0, again
    assert {lost_refund["id"], silent["id"]}.isdisjoint(d["provider_id"] for d in again["differences"])
    after = await _events(pipeline, user) + await _events(pipeline, user2)
    assert after == before


async def test_books_that_disagree_are_listed_for_an_operator(pipeline, plan_id) -> None:
    since = datetime.now(UTC) - timedelta(seconds=2)
    _, _, headers = _user(pipeline)
    _, _, headers2 = _user(pipeline)
    async with httpx.AsyncClient(base_url=pipeline.api_url, timeout=30) as client:
        _, altered = await _buy_and_pay(pipeline, client, plan_id, headers)
        _, forgotten = await _buy_and_pay(pipeline, client, plan_id, headers2)
    await pipeline.yookassa.adashboard_alter("payment", altered, status="canceled", amount="290.00")
    await pipeline.yookassa.adashboard_alter("payment", forgotten, forget=True)
    summary = _reconcile(pipeline, since, datetime.now(UTC) + timedelta(seconds=2))
    found = {(d["provider_id"], d["kind"]): d for d in summary["differences"]}
    status = found[(altered, "status_differs")]
    assert (status["our_status"], status["provider_status"], status["status"]) == ("succeeded", "canceled", "open")
    amount = found[(altered, "amount_differs")]
    assert (amount["our_amount_minor"], amount["provider_amount_minor"], amount["status"]) == (30000, 29000, "open")
    missing = found[(forgotten, "unknown_to_provider")]
    assert missing["status"] == "open" and missing["our_status"] == "succeeded"
    assert summary["run"]["recorded"] == 0
