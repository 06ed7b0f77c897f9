"""54-FZ receipt registration in the YooKassa sandbox, read through the official SDK and the
processor's gateway mapping: `pending` until the registration is due, then `succeeded` — or
`canceled` with a `receipt_canceled` fault (sandbox/README.md).
"""

from __future__ import annotations

import asyncio
import time
import uuid

from yookassa import Payment, Refund

from payment_processor.adapters.gateway import payment_from_sdk, refund_from_sdk
from tests.support.yookassa_params import autopayment_params, payment_params, receipt, refund_params


def key() -> str:
    return str(uuid.uuid4())


async def test_registration_is_pending_until_due_then_succeeded(yookassa_sandbox) -> None:
    yookassa_sandbox.configure_sdk()
    with yookassa_sandbox.config_override(receipt_delay_ms=700):
        created = Payment.create(payment_params("299.00", save_payment_method=True), key())
        assert payment_from_sdk(created).receipt_registration == "pending"
        paid = await yookassa_sandbox.apay(created.id)
        assert (paid["status"], paid["receipt_registration"]) == ("succeeded", "pending")
        seen = payment_from_sdk(Payment.find_one(created.id))
        assert (seen.status, seen.receipt_registration) == ("succeeded", "pending")
        await asyncio.sleep(0.8)
        assert payment_from_sdk(Payment.find_one(created.id)).receipt_registration == "succeeded"
        # A renewal charge of the saved card: the same way to the tax service.
        renewal = Payment.create(autopayment_params(paid["payment_method"]["id"], "299.00"), key())
        assert payment_from_sdk(renewal).receipt_registration == "pending"
    # Without a delay (the default) the receipt is registered with the payment, as before.
    quick = Payment.create(payment_params("10.00"), key())
    paid = await yookassa_sandbox.apay(quick.id)
    assert paid["receipt_registration"] == "succeeded"


async def test_a_receipt_canceled_fault_ends_a_refund_receipt_canceled(yookassa_sandbox) -> None:
    yookassa_sandbox.configure_sdk()
    params = payment_params("500.00")
    run = params["metadata"]["test_run"]
    created = Payment.create(params, key())
    await yookassa_sandbox.apay(created.id)
    rule = {"endpoint": "POST /v3/refunds", "mode": "receipt_canceled", "pending_ms": 300, "metadata": {"test_run": run}}
    with yookassa_sandbox.faults_added(rule):
        refund = Refund.create(refund_params(created.id, "100.00", receipt=receipt("100.00")), key())
    first = refund_from_sdk(refund)
    assert (first.status, first.receipt_registration) == ("succeeded", "pending")
    deadline = time.monotonic() + 5
    while (seen := refund_from_sdk(Refund.find_one(refund.id))).receipt_registration == "pending" and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert (seen.status, seen.receipt_registration) == ("succeeded", "canceled")
    # A refund without a receipt has no registration at all.
    plain = refund_from_sdk(Refund.create(refund_params(created.id, "50.00"), key()))
    assert plain.receipt_registration is None
