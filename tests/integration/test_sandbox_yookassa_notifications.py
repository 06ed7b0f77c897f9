"""Webhook notifications from the YooKassa sandbox, parsed by the SDK's own factory.

A real HTTP receiver stands in for the command API's webhook; the sandbox retries until it
answers 200, and notification faults duplicate, delay and reorder what it sends.
"""

from __future__ import annotations

import uuid

import pytest
from yookassa import Payment, Refund
from yookassa.domain.notification import (
    RefundWebhookNotification,
    WebhookNotification,
    WebhookNotificationFactory,
)
from yookassa.domain.response import PaymentResponse, RefundResponse

from sandbox.yookassa import cards
from tests.support.wait import wait_until
from tests.support.webhook_receiver import WebhookReceiver
from tests.support.yookassa_params import payment_params, refund_params


@pytest.fixture
def receiver(yookassa_sandbox):
    """A receiver the session's sandbox notifies for the duration of one test."""
    with WebhookReceiver() as rec, yookassa_sandbox.config_override(webhook_url=rec.url):
        yookassa_sandbox.configure_sdk()
        yield rec


def key() -> str:
    return str(uuid.uuid4())


def note_rule(params: dict, mode: str, endpoint: str = "NOTIFY *", **extra) -> dict:
    return {"endpoint": endpoint, "mode": mode, "metadata": {"test_run": params["metadata"]["test_run"]}, **extra}


async def test_the_sdk_parses_payment_and_refund_notifications(yookassa_sandbox, receiver) -> None:
    payment = Payment.create(payment_params("700.00", save_payment_method=True), key())
    await yookassa_sandbox.apay(payment.id)
    refund = Refund.create(refund_params(payment.id, "200.00"), key())

    succeeded = await wait_until(lambda: receiver.deliveries(payment.id, "payment.succeeded"), 10)
    body = succeeded[0].body
    assert body["type"] == "notification"
    parsed = WebhookNotificationFactory().create(body)
    assert type(parsed) is WebhookNotification  # the SDK's class for payment events
    assert isinstance(parsed.object, PaymentResponse)
    assert parsed.event == "payment.succeeded"
    assert parsed.object.id == payment.id
    assert parsed.object.status == "succeeded"
    assert parsed.object.paid is True
    assert parsed.object.payment_method.saved is True
    assert parsed.object.payment_method.card.last4 == "4444"

    refunded = await wait_until(lambda: receiver.deliveries(refund.id, "refund.succeeded"), 10)
    parsed_refund = WebhookNotificationFactory().create(refunded[0].body)
    assert isinstance(parsed_refund, RefundWebhookNotification)
    assert isinstance(parsed_refund.object, RefundResponse)
    assert parsed_refund.object.payment_id == payment.id
    assert parsed_refund.object.status == "succeeded"
    assert str(parsed_refund.object.amount.value) == "200.00"


async def test_declined_and_two_stage_payments_notify_each_state(yookassa_sandbox, receiver) -> None:
    declined = Payment.create(payment_params(), key())
    await yookassa_sandbox.apay(declined.id, cards.DECLINE_FRAUD_SUSPECTED)
    canceled = await wait_until(lambda: receiver.deliveries(declined.id, "payment.canceled"), 10)
    parsed = WebhookNotificationFactory().create(canceled[0].body)
    assert parsed.object.status == "canceled"
    assert parsed.object.cancellation_details.reason == "fraud_suspected"
    assert parsed.object.cancellation_details.party == "yoo_money"

    two_stage = Payment.create(payment_params(capture=False), key())
    await yookassa_sandbox.apay(two_stage.id)
    await wait_until(lambda: receiver.deliveries(two_stage.id, "payment.waiting_for_capture"), 10)
    Payment.capture(two_stage.id, None, key())
    await wait_until(lambda: receiver.deliveries(two_stage.id, "payment.succeeded"), 10)
    assert [d.event for d in receiver.deliveries(two_stage.id)] == [
        "payment.waiting_for_capture",
        "payment.succeeded",
    ]


async def test_delivery_is_retried_until_the_receiver_answers_200(yookassa_sandbox, receiver) -> None:
    payment = Payment.create(payment_params(), key())
    receiver.fail_next(payment.id, times=2, status=503)
    await yookassa_sandbox.apay(payment.id)

    await wait_until(lambda: receiver.deliveries(payment.id, "payment.succeeded"), 15)
    attempts = receiver.deliveries(payment.id, answered=None)
    assert [d.answered for d in attempts] == [503, 503, 200]
    # The same notification each time, with the back-off of the schedule between attempts.
    assert attempts[0].body == attempts[2].body
    assert attempts[1].at - attempts[0].at >= 0.15
    records = await yookassa_sandbox.anotifications(object_id=payment.id)
    assert [(r["status"], r["attempts"], r["last_status"]) for r in records] == [("delivered", 3, 200)]


async def test_duplicated_notifications(yookassa_sandbox, receiver) -> None:
    params = payment_params()
    payment = Payment.create(params, key())
    with yookassa_sandbox.faults_added(note_rule(params, "duplicate", "NOTIFY payment.succeeded", times=3)):
        await yookassa_sandbox.apay(payment.id)
        copies = await wait_until(lambda: len(receiver.deliveries(payment.id)) >= 3 and receiver.deliveries(payment.id))
    assert [d.event for d in copies] == ["payment.succeeded"] * 3
    assert copies[0].body == copies[1].body == copies[2].body


async def test_delayed_notifications(yookassa_sandbox, receiver) -> None:
    params = payment_params()
    payment = Payment.create(params, key())
    with yookassa_sandbox.faults_added(note_rule(params, "delay", delay_ms=800)):
        paid = await yookassa_sandbox.apay(payment.id)
        assert paid["status"] == "succeeded"
        delivered = await wait_until(lambda: receiver.deliveries(payment.id), 10)
    record = (await yookassa_sandbox.anotifications(object_id=payment.id))[0]
    assert delivered[0].at - record["created_ts"] >= 0.75


async def test_reordered_notifications(yookassa_sandbox, receiver) -> None:
    params = payment_params(capture=False)
    payment = Payment.create(params, key())
    with yookassa_sandbox.faults_added(note_rule(params, "reorder", window_ms=700)):
        await yookassa_sandbox.apay(payment.id)  # -> waiting_for_capture
        Payment.capture(payment.id, None, key())  # -> succeeded, inside the same window
        got = await wait_until(lambda: len(receiver.deliveries(payment.id)) >= 2 and receiver.deliveries(payment.id))
    # Newest first: the final state arrives before the intermediate one.
    assert [d.event for d in got] == ["payment.succeeded", "payment.waiting_for_capture"]


async def test_no_webhook_url_means_nothing_is_sent(yookassa_sandbox) -> None:
    yookassa_sandbox.configure_sdk()
    with WebhookReceiver() as rec, yookassa_sandbox.config_override(webhook_url=""):
        payment = Payment.create(payment_params(), key())
        await yookassa_sandbox.apay(payment.id)
        records = await yookassa_sandbox.anotifications(object_id=payment.id)
    assert [r["status"] for r in records] == ["no_target"]
    assert rec.deliveries(answered=None) == []


async def test_a_notification_replayed_on_demand_comes_late_twice_with_its_old_body(yookassa_sandbox, receiver) -> None:
    """The chaos run's late and duplicate notifications: the body is the state YooKassa saw back then."""
    payment = Payment.create(payment_params("300.00"), key())
    await yookassa_sandbox.apay(payment.id)
    first = (await wait_until(lambda: receiver.deliveries(payment.id, "payment.succeeded"), 10))[0]
    Refund.create(refund_params(payment.id, "300.00"), key())  # the payment has changed since
    await wait_until(lambda: receiver.deliveries(event="refund.succeeded") and True, 10)

    async with yookassa_sandbox._async_client() as client:
        answer = await client.post("/sandbox/notifications/replay",
                                   json={"object_id": payment.id, "event": "payment.succeeded", "times": 2, "delay_ms": 700})
        assert answer.status_code == 200 and answer.json() == {"queued": 2}
        nothing = await client.post("/sandbox/notifications/replay", json={"object_id": "no-such-payment"})
        assert nothing.json() == {"queued": 0}
        assert (await client.post("/sandbox/notifications/replay", json={"times": 2})).status_code == 400

    copies = await wait_until(lambda: len(receiver.deliveries(payment.id, "payment.succeeded")) >= 3
                              and receiver.deliveries(payment.id, "payment.succeeded"), 10)
    assert len(copies) == 3
    assert copies[1].body == copies[2].body == first.body  # still "succeeded, nothing refunded"
    assert copies[1].at - first.at >= 0.7
