"""The command API end to end: real API, processor, projector, relay and YooKassa sandbox processes.

A purchase goes in over HTTP, is paid on the sandbox's payment page, YooKassa's notification comes
back through the API's webhook, and the subscription shows up active through the API's own read
endpoints; a cancel refunds exactly what the quote said. Retries and double clicks never create a
second payment, and a forged notification changes nothing.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.support.stack import Pipeline, PipelineOptions
from tests.support.wait import wait_until

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
async def pipeline(settings) -> AsyncIterator[Pipeline]:  # type: ignore[no-untyped-def]
    options = PipelineOptions(
        database_url=settings.database_url,
        kafka_bootstrap=settings.kafka_bootstrap_servers,
        name="api-e2e",
        processors=1,
        notifier=False,
        partitions=3,
        role_env={"processor": {"PROCESSOR_JANITOR_SCHEDULE_S": "1,1,1", "PROCESSOR_JANITOR_TICK_S": "0.2"}},
    )
    async with Pipeline(options) as started:
        yield started


@pytest.fixture(scope="module")
async def plan_id(pipeline: Pipeline) -> str:
    """A plan created the real way: an operator command through the API, projected into read.plans."""
    plan = f"e2e-{uuid.uuid4().hex[:8]}"
    operator = {"Authorization": f"Bearer {pipeline.token('op-anna', role='operator')}"}
    async with httpx.AsyncClient(base_url=pipeline.api_url, timeout=30) as client:
        response = await client.post(
            "/v1/admin/plans",
            json={"plan_id": plan, "name": "Standard", "price": {"amount": "300.00", "currency": "RUB"},
                  "period_days": 30, "description": "e2e", "reason": "e2e test"},
            headers={**operator, "Idempotency-Key": str(uuid.uuid4()), "Prefer": "wait=10"},
        )
        assert response.status_code == 200, response.text
        user = {"Authorization": f"Bearer {pipeline.token('someone')}"}

        async def on_sale() -> bool:
            plans = (await client.get("/v1/plans", headers=user)).json()["items"]
            return any(p["plan_id"] == plan for p in plans)

        await wait_until(on_sale, timeout=20, message="the plan is on sale")
    return plan


def _user(pipeline: Pipeline) -> tuple[str, dict[str, str]]:
    user = f"e2e-user-{uuid.uuid4().hex[:8]}"
    return user, {"Authorization": f"Bearer {pipeline.token(user, email=f'{user}@example.com')}"}


async def _buy_and_pay(pipeline: Pipeline, client: httpx.AsyncClient, plan_id: str, headers: dict[str, str]) -> dict:
    key = str(uuid.uuid4())
    bought = await client.post(
        "/v1/subscriptions", json={"plan_id": plan_id},
        headers={**headers, "Idempotency-Key": key, "Prefer": "wait=10"},
    )
    assert bought.status_code == 200, bought.text
    outcome = bought.json()["outcome"]
    assert outcome["confirmation_url"] and outcome["subscription_id"]
    provider_id = pipeline.yookassa.payment_id_from_url(outcome["confirmation_url"])
    await pipeline.yookassa.apay(provider_id)
    sid = outcome["subscription_id"]

    async def active() -> dict | None:
        sub = (await client.get(f"/v1/subscriptions/{sid}", headers=headers)).json()
        return sub if sub.get("status") == "active" else None

    sub = await wait_until(active, timeout=30, message="the subscription is active")
    return {"key": key, "first": bought, "subscription": sub, "provider_id": provider_id}


async def test_purchase_pay_webhook_active_and_no_second_charge(pipeline, plan_id):
    user, headers = _user(pipeline)
    async with httpx.AsyncClient(base_url=pipeline.api_url, timeout=30) as client:
        bought = await _buy_and_pay(pipeline, client, plan_id, headers)
        sub = bought["subscription"]
        assert sub["price"] == {"amount": "300.00", "currency": "RUB"}
        assert [p["status"] for p in sub["payments"]] == ["succeeded"]

        # the client lost the response and retries: the same answer, no second command
        retry = await client.post(
            "/v1/subscriptions", json={"plan_id": plan_id},
            headers={**headers, "Idempotency-Key": bought["key"], "Prefer": "wait=10"},
        )
        assert retry.status_code == 200 and retry.headers["Idempotent-Replayed"] == "true"
        assert retry.json() == bought["first"].json()

        # buying the same plan again is refused by the processor, and the client is told why
        again = await client.post(
            "/v1/subscriptions", json={"plan_id": plan_id},
            headers={**headers, "Idempotency-Key": str(uuid.uuid4()), "Prefer": "wait=10"},
        )
        assert again.status_code == 409, again.text
        assert again.json()["command_status"] == "rejected" and again.json()["code"] == "already_subscribed"

        command = await client.get(f"/v1/commands/{bought['first'].json()['command_id']}", headers=headers)
        assert command.json()["status"] == "succeeded"

    payments = await pipeline.yookassa.apayments(metadata={"user_id": user})
    assert len(payments) == 1 and payments[0]["status"] == "succeeded"


async def test_double_click_is_one_payment(pipeline, plan_id):
    user, headers = _user(pipeline)
    key = str(uuid.uuid4())
    async with httpx.AsyncClient(base_url=pipeline.api_url, timeout=30) as client:
        responses = await asyncio.gather(*[
            client.post("/v1/subscriptions", json={"plan_id": plan_id},
                        headers={**headers, "Idempotency-Key": key, "Prefer": "wait=10"})
            for _ in range(5)
        ])
        assert {r.status_code for r in responses} <= {200, 409}
        command_ids = {r.json()["command_id"] for r in responses if r.status_code == 200}
        assert len(command_ids) == 1
        # the ones that got 409 retry and get the first response
        final = await client.post("/v1/subscriptions", json={"plan_id": plan_id},
                                  headers={**headers, "Idempotency-Key": key})
        assert final.status_code == 200 and final.json()["command_id"] in command_ids
    payments = await pipeline.yookassa.apayments(metadata={"user_id": user})
    assert len(payments) == 1


async def test_cancel_refunds_exactly_the_quote(pipeline, plan_id):
    user, headers = _user(pipeline)
    async with httpx.AsyncClient(base_url=pipeline.api_url, timeout=30) as client:
        bought = await _buy_and_pay(pipeline, client, plan_id, headers)
        sid = bought["subscription"]["subscription_id"]
        quote = (await client.get(f"/v1/subscriptions/{sid}/refund-quote", headers=headers)).json()
        assert quote["refundable"] and quote["days_used"] == 1 and quote["amount"]["amount"] == "290.00"

        canceled = await client.post(
            f"/v1/subscriptions/{sid}/cancel", json={"mode": "refund_now"},
            headers={**headers, "Idempotency-Key": str(uuid.uuid4()), "Prefer": "wait=10"},
        )
        assert canceled.status_code == 200, canceled.text
        assert canceled.json()["outcome"]["refund_amount"] == quote["amount"]

        async def refunded() -> list | None:
            items = (await client.get("/v1/refunds", headers=headers)).json()["items"]
            return items if items and items[0]["status"] == "succeeded" else None

        [refund] = await wait_until(refunded, timeout=30, message="the refund succeeded")
        assert refund["amount"] == quote["amount"]
        sub = (await client.get(f"/v1/subscriptions/{sid}", headers=headers)).json()
        assert sub["status"] == "canceled"


async def test_a_forged_notification_changes_nothing(pipeline, plan_id):
    """A notification claiming success for an unpaid payment: the processor asks YooKassa, which says pending."""
    user, headers = _user(pipeline)
    async with httpx.AsyncClient(base_url=pipeline.api_url, timeout=30) as client:
        bought = await client.post(
            "/v1/subscriptions", json={"plan_id": plan_id},
            headers={**headers, "Idempotency-Key": str(uuid.uuid4()), "Prefer": "wait=10"},
        )
        assert bought.status_code == 200, bought.text
        outcome = bought.json()["outcome"]
        provider_id = pipeline.yookassa.payment_id_from_url(outcome["confirmation_url"])
        forged = {"type": "notification", "event": "payment.succeeded",
                  "object": {"id": provider_id, "status": "succeeded", "paid": True,
                             "amount": {"value": "300.00", "currency": "RUB"}, "metadata": {"user_id": user}}}
        ack = await client.post("/v1/webhooks/yookassa", json=forged)  # from 127.0.0.1, trusted here
        assert ack.status_code == 200 and ack.json()["status"] == "accepted"

        operator = {"Authorization": f"Bearer {pipeline.token('op-anna', role='operator')}"}

        async def sync_done() -> dict | None:
            status = (await client.get(f"/v1/admin/commands/{ack.json()['command_id']}", headers=operator)).json()
            return status if status.get("status") in ("succeeded", "rejected", "failed") else None

        await wait_until(sync_done, timeout=30, message="the forged notification's sync ended")
        sub = (await client.get(f"/v1/subscriptions/{outcome['subscription_id']}", headers=headers)).json()
        assert sub["status"] == "pending_payment"
        assert [p["status"] for p in sub["payments"]] != ["succeeded"]
    [payment] = await pipeline.yookassa.apayments(metadata={"user_id": user})
    assert payment["status"] == "pending" and payment["paid"] is False
