"""State of the YooKassa sandbox: it survives a kill -9, and the inspection API counts charges.

The restart tests run a dedicated sandbox (they kill it); the rest use the session's one.
"""

from __future__ import annotations

import json
import signal
import uuid

import httpx
import pytest
from yookassa import Payment, Refund
from yookassa.domain.exceptions import InternalServerError

from sandbox.yookassa import cards
from tests.support.processes import ManagedProcess, ProcessNotReady, free_port
from tests.support.wait import wait_until
from tests.support.webhook_receiver import WebhookReceiver
from tests.support.yookassa_params import autopayment_params, payment_params, refund_params


def key() -> str:
    return str(uuid.uuid4())


@pytest.mark.slow
async def test_state_survives_kill_9_and_restart(yookassa_sandbox_factory) -> None:
    env_fault = [{"endpoint": "POST /v3/payments", "mode": "error_500_not_applied", "count": 1}]
    with WebhookReceiver() as receiver:
        sandbox = yookassa_sandbox_factory(
            env={
                "SANDBOX_YOOKASSA_FAULTS": json.dumps(env_fault),
                "SANDBOX_YOOKASSA_WEBHOOK_URL": receiver.url,
                "SANDBOX_YOOKASSA_WEBHOOK_RETRY_S": "0.2",
                # No background sweep: expiry below can only come from reading the payment.
                "SANDBOX_YOOKASSA_SWEEP_INTERVAL_S": "3600",
            },
            name="yookassa-restart",
        )
        sandbox.configure_sdk()

        # Faults given by env at start apply at once.
        assert [r["mode"] for r in sandbox.faults()] == ["error_500_not_applied"]
        params_a, key_a = payment_params("100.00"), key()
        with pytest.raises(InternalServerError):
            Payment.create(params_a, key_a)
        pending = Payment.create(params_a, key_a)

        params_b = payment_params("300.00", save_payment_method=True)
        paid = Payment.create(params_b, key())
        receiver.fail_next(paid.id, times=10_000)  # the receiver is "down" for this payment
        method_id = (await sandbox.apay(paid.id))["payment_method"]["id"]
        refund = Refund.create(refund_params(paid.id, "50.00"), key())
        await wait_until(lambda: receiver.deliveries(paid.id, answered=None), 10)

        abandoned = Payment.create(payment_params("10.00"), key())
        await sandbox.aleave(abandoned.id, expire_after_s=60)

        stats_before = await sandbox.astats(by="metadata.test_run")
        sandbox.process.kill()
        assert not sandbox.process.running
        receiver.fail_next(paid.id, times=0)  # the receiver recovers while the sandbox is down
        await sandbox.process.arestart()

        assert Payment.find_one(pending.id).status == "pending"
        # Fault rules live in memory: the env rule is seeded again by the restart.
        with pytest.raises(InternalServerError):
            Payment.create(params_a, key_a)
        assert Payment.create(params_a, key_a).id == pending.id  # idempotence keys survive
        after = Payment.find_one(paid.id)
        assert after.status == "succeeded"
        assert after.payment_method.id == method_id and after.payment_method.saved is True
        assert str(after.refunded_amount.value) == "50.00"
        assert Refund.find_one(refund.id).status == "succeeded"
        assert Payment.create(autopayment_params(method_id), key()).status == "succeeded"
        stats_after = await sandbox.astats(by="metadata.test_run")
        assert {k: stats_after["counts"][k] for k in stats_before["counts"]} == stats_before["counts"]
        assert stats_after["totals"]["successful_charges"] == stats_before["totals"]["successful_charges"] + 1
        # The notification queued before the crash is delivered after the restart.
        await wait_until(lambda: receiver.deliveries(paid.id, "payment.succeeded"), 15)
        # The pending payment left on the page still expires by its (shortened) deadline.
        assert (await sandbox.apayment(abandoned.id))["_sandbox"]["left_at"] is not None

        # SIGTERM stops it cleanly (uvicorn re-raises the signal after a graceful shutdown);
        # -9 would mean ManagedProcess had to kill it.
        assert sandbox.process.terminate() in (0, -signal.SIGTERM)


async def test_a_payment_expires_when_read_after_its_deadline(yookassa_sandbox_factory) -> None:
    sandbox = yookassa_sandbox_factory(
        env={"SANDBOX_YOOKASSA_SWEEP_INTERVAL_S": "3600", "SANDBOX_YOOKASSA_CONFIRMATION_TTL_S": "0.3"},
        name="yookassa-lazy-expiry",
    )
    sandbox.configure_sdk()
    payment = Payment.create(payment_params(), key())
    expired = await wait_until(
        lambda: Payment.find_one(payment.id).status == "canceled", timeout=10, message="expired on read"
    )
    assert expired
    found = Payment.find_one(payment.id)
    assert found.cancellation_details.reason == "expired_on_confirmation"
    assert found.cancellation_details.party == "yoo_money"
    # The page now shows the outcome, and paying changes nothing.
    assert (await sandbox.apay(payment.id))["status"] == "canceled"


def test_a_sandbox_that_cannot_start_fails_fast_with_its_log(tmp_path) -> None:
    port = free_port()
    process = ManagedProcess(
        "yookassa-bad-config",
        "sandbox.yookassa",
        env={
            "SANDBOX_YOOKASSA_PORT": str(port),
            "SANDBOX_YOOKASSA_DB": str(tmp_path / "db.sqlite3"),
            "SANDBOX_YOOKASSA_FAULTS": "this is not json",
        },
        ready_url=f"http://127.0.0.1:{port}/healthz",
    )
    with pytest.raises(ProcessNotReady) as err:
        process.start_and_wait(timeout=30)
    assert "fault rules are not valid JSON" in str(err.value)
    assert process.returncode not in (None, 0)


def test_stats_count_successful_charges_per_metadata_value_and_key(yookassa_sandbox) -> None:
    sb = yookassa_sandbox
    sb.configure_sdk()
    run = uuid.uuid4().hex
    sub_a, sub_b, sub_c = (f"{run}-{x}" for x in "abc")
    keys = []
    for sub, card in ((sub_a, cards.SUCCESS), (sub_a, cards.SUCCESS), (sub_b, cards.SUCCESS), (sub_c, cards.DECLINE_GENERAL)):
        k = key()
        keys.append(k)
        p = Payment.create(payment_params("99.00", metadata={"run": run, "subscription_id": sub}), k)
        sb.pay(p.id, card)
    Payment.create(payment_params("99.00", metadata={"run": run, "subscription_id": sub_c}), key())  # left pending

    stats = sb.stats(by="metadata.subscription_id", metadata={"run": run})
    assert stats["counts"] == {sub_a: 2, sub_b: 1}
    assert stats["duplicates"] == {sub_a: 2}
    totals = stats["totals"]
    assert totals["payments"] == 5
    assert totals["by_status"] == {"succeeded": 3, "canceled": 1, "pending": 1}
    assert totals["successful_charges"] == 3
    assert totals["charged_amount"] == "297.00"

    by_key = sb.stats(metadata={"run": run})
    assert by_key["counts"] == {keys[0]: 1, keys[1]: 1, keys[2]: 1}

    paid = sb.payments({"run": run, "subscription_id": sub_b})
    assert len(paid) == 1 and paid[0]["_sandbox"]["idempotence_key"] == keys[2]
    Refund.create(refund_params(paid[0]["id"], "9.00"), key())
    assert [r["amount"]["value"] for r in sb.refunds({"run": run})] == ["9.00"]
    after = sb.stats(by="metadata.subscription_id", metadata={"run": run})["totals"]
    assert after["refunds"] == 1 and after["refunded_amount"] == "9.00"
    assert sb.payments({"run": run}, status="pending")[0]["status"] == "pending"


def test_admin_api_guards(yookassa_sandbox) -> None:
    client = yookassa_sandbox.client
    assert client.post("/sandbox/reset").status_code == 403  # tests share this sandbox
    assert client.put("/sandbox/config", json={"webhook_url": "ftp://x"}).status_code == 400
    assert client.put("/sandbox/config", json={"confirmation_ttl_s": -1}).status_code == 400
    assert client.put("/sandbox/config", json={"nonsense": 1}).status_code == 400
    assert client.put("/sandbox/config", json={"webhook_retry_s": "a,b"}).status_code == 400
    assert client.get("/sandbox/stats", params={"by": "amount"}).status_code == 400
    missing = client.post(f"/sandbox/payment-methods/{uuid.uuid4()}/behaviour", json={"decline_reason": None})
    assert missing.status_code == 404
    assert client.get("/healthz").json()["status"] == "ok"
    # Unknown API paths answer in YooKassa's error shape.
    response = httpx.get(f"{yookassa_sandbox.api_url}/nothing", auth=yookassa_sandbox.auth, timeout=10)
    assert response.status_code == 404 and response.json()["type"] == "error"
