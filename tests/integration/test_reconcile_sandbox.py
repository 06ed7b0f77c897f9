"""The sandbox's dashboard and the gateway's lists, over real HTTP (docs/decisions/0122).

A dashboard refund is a refund with no key or metadata of ours that notifies like any other (or
not, when told its notification is lost); the gateway lists a window of payments and refunds
through every cursor page, and refuses to return part of a list.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from payment_processor.adapters.gateway import ListingFailed, YooKassaGateway
from payment_processor.domain.provider import ProviderPayment, ProviderRefund


@pytest.fixture
async def gateway(yookassa_sandbox):
    gw = YooKassaGateway(
        shop_id=yookassa_sandbox.shop_id, secret_key=yookassa_sandbox.secret_key, api_url=yookassa_sandbox.api_url,
        timeout_s=2.0, max_concurrency=2,
    )
    yield gw
    await gw.aclose()


async def test_dashboard_refund_payment_and_lists(gateway, yookassa_sandbox) -> None:
    tag = str(uuid.uuid4())
    since = datetime.now(UTC) - timedelta(seconds=1)
    paid = [await yookassa_sandbox.adashboard_payment("100.00", {"run": tag, "n": str(i)}) for i in range(3)]
    assert all(p["status"] == "succeeded" and p["metadata"]["run"] == tag for p in paid)
    assert await yookassa_sandbox.anotifications(object_id=paid[0]["id"]) == []  # lost: nobody heard

    heard = await yookassa_sandbox.adashboard_refund(paid[0]["id"], "30.00")
    lost = await yookassa_sandbox.adashboard_refund(paid[1]["id"], notify=False)  # all that is left
    assert heard["status"] == lost["status"] == "succeeded"
    assert lost["amount"]["value"] == "100.00" and "metadata" not in heard
    assert [n["event"] for n in await yookassa_sandbox.anotifications(object_id=heard["id"])] == ["refund.succeeded"]
    assert await yookassa_sandbox.anotifications(object_id=lost["id"]) == []
    stored = await yookassa_sandbox.arefunds(payment_id=paid[0]["id"])
    assert stored[0]["_sandbox"]["idempotence_key"].startswith("dashboard-")

    until = datetime.now(UTC) + timedelta(seconds=1)
    payments = await gateway.list_created("payments", since, until, page_size=1)  # one page per payment
    refunds = await gateway.list_created("refunds", since, until, page_size=1)
    mine = {p["id"] for p in paid}
    assert {p.id for p in payments if isinstance(p, ProviderPayment)} >= mine
    listed = {r.id: r for r in refunds if isinstance(r, ProviderRefund)}
    assert listed[heard["id"]].payment_id == paid[0]["id"] and listed[heard["id"]].amount.amount == 30
    assert listed[lost["id"]].created_at is not None and since <= listed[lost["id"]].created_at < until
    assert not [p for p in await gateway.list_created("payments", until, until + timedelta(hours=1)) if p.id in mine]

    altered = await yookassa_sandbox.adashboard_alter("payment", paid[2]["id"], status="canceled", amount="90.00")
    assert altered["status"] == "canceled" and altered["amount"]["value"] == "90.00"
    await yookassa_sandbox.adashboard_alter("payment", paid[2]["id"], forget=True)
    assert paid[2]["id"] not in {p.id for p in await gateway.list_created("payments", since, until)}


async def test_a_list_page_that_keeps_failing_fails_the_listing(gateway, yookassa_sandbox) -> None:
    now = datetime.now(UTC)
    with yookassa_sandbox.faults_added({"endpoint": "GET /v3/refunds", "mode": "error_500_not_applied", "count": 3}):
        with pytest.raises(ListingFailed):
            await gateway.list_created("refunds", now - timedelta(minutes=1), now, attempts=3, backoff_s=0.01)
    with yookassa_sandbox.faults_added({"endpoint": "GET /v3/refunds", "mode": "error_500_not_applied", "count": 1}):
        assert isinstance(await gateway.list_created("refunds", now - timedelta(minutes=1), now, backoff_s=0.01), list)
