"""The YooKassa gateway against the real sandbox over HTTP: outcomes, timeouts, idempotence keys.

Every request body here is what the processor's pure domain builds; faults are scoped by the
test's own `subscription_id` metadata so nothing else in the session trips over them.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import datetime

import pytest

from payment_processor.domain.provider import (
    CreatePayment,
    CreateRefund,
    FindPayment,
    FindRefund,
    ProviderPayment,
    ProviderRefund,
    ProviderRefused,
    ProviderUnknown,
    purchase_request,
    refund_request,
)
from payment_processor.adapters.gateway import YooKassaGateway
from sandbox.yookassa import cards
from schemas import CheckoutStarted, Customer, Money, RefundRequested, derived_id
from tests.support.processes import free_port


def _checkout(amount: str = "299.00") -> tuple[CheckoutStarted, CreatePayment]:
    command_id = uuid.uuid4()
    payment_id = derived_id("payment", command_id)
    intent = CheckoutStarted(
        subscription_id=derived_id("subscription", command_id),
        payment_id=payment_id,
        plan_id="basic",
        plan_name="Basic",
        amount=Money(amount=amount),
        period_days=30,
        auto_renew=True,
        customer=Customer(email="gw@example.com"),
        idempotence_key=str(derived_id("yookassa", payment_id, "create")),
        return_url="http://shop.example/return",
    )
    return intent, CreatePayment(payment_id, intent.idempotence_key, purchase_request("user-gw", command_id, intent))


@pytest.fixture
async def gateway(yookassa_sandbox):
    gw = YooKassaGateway(
        shop_id=yookassa_sandbox.shop_id,
        secret_key=yookassa_sandbox.secret_key,
        api_url=yookassa_sandbox.api_url,
        timeout_s=1.0,
        max_concurrency=4,
    )
    yield gw
    await gw.aclose()


async def test_create_pay_and_read_back_with_the_saved_card(gateway, yookassa_sandbox) -> None:
    intent, step = _checkout()
    created = await gateway.execute(step)
    assert isinstance(created, ProviderPayment), created
    assert created.status == "pending" and created.confirmation_url
    again = await gateway.execute(step)  # same key, same body -> the same payment
    assert isinstance(again, ProviderPayment) and again.id == created.id

    stored = await yookassa_sandbox.apayment(created.id)
    assert stored["metadata"]["subscription_id"] == str(intent.subscription_id)
    extra = stored["_sandbox"]
    assert extra["idempotence_key"] == step.idempotence_key
    assert extra["receipt"]["customer"]["email"] == "gw@example.com"
    assert extra["save_payment_method"] is True and extra["capture"] is True
    assert extra["return_url"] == "http://shop.example/return"

    await yookassa_sandbox.apay(created.id, cards.SUCCESS)
    found = await gateway.execute(FindPayment(intent.payment_id, created.id))
    assert isinstance(found, ProviderPayment)
    assert found.status == "succeeded" and found.payment_method_saved and found.payment_method_id
    assert isinstance(found.captured_at, datetime) and found.captured_at.tzinfo is not None
    assert found.amount == Money(amount="299.00")
    assert len(await yookassa_sandbox.apayments({"subscription_id": str(intent.subscription_id)})) == 1


async def test_a_declined_card_is_canceled_with_its_reason(gateway, yookassa_sandbox) -> None:
    intent, step = _checkout()
    created = await gateway.execute(step)
    assert isinstance(created, ProviderPayment)
    await yookassa_sandbox.apay(created.id, cards.DECLINE_INSUFFICIENT_FUNDS)
    found = await gateway.execute(FindPayment(intent.payment_id, created.id))
    assert isinstance(found, ProviderPayment)
    assert (found.status, found.cancellation_reason, found.cancellation_party) == ("canceled", "insufficient_funds", "payment_network")


@pytest.mark.parametrize("mode", ["drop_after_apply", "error_500_applied", "202_processing"])
async def test_applied_but_unanswered_is_unknown_and_a_repeat_finds_the_same_payment(gateway, yookassa_sandbox, mode) -> None:
    intent, step = _checkout()
    sub = str(intent.subscription_id)
    rule = await yookassa_sandbox.aadd_fault(endpoint="POST /v3/payments", mode=mode, count=1, metadata={"subscription_id": sub})
    try:
        first = await gateway.execute(step)
    finally:
        await yookassa_sandbox.aremove_fault(rule)
    assert isinstance(first, ProviderUnknown), first
    assert len(await yookassa_sandbox.apayments({"subscription_id": sub})) == 1  # it WAS applied
    second = await gateway.execute(step)
    assert isinstance(second, ProviderPayment)
    assert [p["id"] for p in await yookassa_sandbox.apayments({"subscription_id": sub})] == [second.id]


@pytest.mark.parametrize("mode", ["error_500_not_applied", "429", "drop_before_apply"])
async def test_refused_before_applying_is_unknown_too(gateway, yookassa_sandbox, mode) -> None:
    intent, step = _checkout()
    sub = str(intent.subscription_id)
    rule = await yookassa_sandbox.aadd_fault(endpoint="POST /v3/payments", mode=mode, count=1, metadata={"subscription_id": sub})
    try:
        first = await gateway.execute(step)
    finally:
        await yookassa_sandbox.aremove_fault(rule)
    assert isinstance(first, ProviderUnknown), first
    assert await yookassa_sandbox.apayments({"subscription_id": sub}) == []
    assert isinstance(await gateway.execute(step), ProviderPayment)


async def test_a_silent_server_times_out_instead_of_hanging(gateway, yookassa_sandbox) -> None:
    intent, step = _checkout()
    sub = str(intent.subscription_id)
    rule = await yookassa_sandbox.aadd_fault(
        endpoint="POST /v3/payments", mode="latency", latency_ms=4000, count=1, metadata={"subscription_id": sub}
    )
    started = time.monotonic()
    try:
        outcome = await gateway.execute(step)
    finally:
        await yookassa_sandbox.aremove_fault(rule)
    assert isinstance(outcome, ProviderUnknown) and "Timeout" in outcome.detail, outcome
    assert time.monotonic() - started < 3.0  # the 1 s read timeout, not the 4 s the server took


async def test_nobody_listening_is_unknown() -> None:
    gw = YooKassaGateway(shop_id="1", secret_key="s", api_url=f"http://127.0.0.1:{free_port()}/v3", timeout_s=1.0)
    _, step = _checkout()
    outcome = await gw.execute(step)
    assert isinstance(outcome, ProviderUnknown) and "ConnectionError" in outcome.detail, outcome
    await gw.aclose()


async def test_the_same_key_with_other_data_is_refused(gateway) -> None:
    intent, step = _checkout()
    assert isinstance(await gateway.execute(step), ProviderPayment)
    changed = CreatePayment(step.payment_id, step.idempotence_key, {**step.body, "description": "something else"})
    outcome = await gateway.execute(changed)
    assert isinstance(outcome, ProviderRefused) and outcome.code == "invalid_request", outcome


async def test_parameters_the_sdk_refuses_are_refused_without_a_request(gateway) -> None:
    _, step = _checkout()
    bad = CreatePayment(step.payment_id, step.idempotence_key, {**step.body, "amount": {"value": "-1", "currency": "RUB"}})
    outcome = await gateway.execute(bad)
    assert isinstance(outcome, ProviderRefused)


async def test_refund_create_is_idempotent_and_readable(gateway, yookassa_sandbox) -> None:
    intent, step = _checkout()
    created = await gateway.execute(step)
    assert isinstance(created, ProviderPayment)
    await yookassa_sandbox.apay(created.id, cards.SUCCESS)
    refund_id = uuid.uuid4()
    requested = RefundRequested(
        refund_id=refund_id,
        subscription_id=intent.subscription_id,
        payment_id=intent.payment_id,
        provider_payment_id=created.id,
        amount=Money(amount="100.50"),
        reason="changed my mind",
        idempotence_key=str(derived_id("yookassa", refund_id, "create")),
        customer=intent.customer,
    )
    refund_step = CreateRefund(refund_id, requested.idempotence_key, refund_request(requested, "Basic"))
    first = await gateway.execute(refund_step)
    second = await gateway.execute(refund_step)
    assert isinstance(first, ProviderRefund) and isinstance(second, ProviderRefund) and first.id == second.id
    assert first.status in ("pending", "succeeded") and first.amount == Money(amount="100.50")
    found = await gateway.execute(FindRefund(refund_id, first.id))
    assert isinstance(found, ProviderRefund) and found.id == first.id
    assert len(await yookassa_sandbox.arefunds(payment_id=created.id)) == 1
    too_much = CreateRefund(uuid.uuid4(), str(uuid.uuid4()), {**refund_step.body, "amount": {"value": "500.00", "currency": "RUB"}})
    refused = await gateway.execute(too_much)
    assert isinstance(refused, ProviderRefused), refused


async def test_calls_run_off_the_event_loop(yookassa_sandbox) -> None:
    """While four slow calls are in flight, the loop keeps ticking (margins for a busy machine)."""
    gateway = YooKassaGateway(
        shop_id=yookassa_sandbox.shop_id,
        secret_key=yookassa_sandbox.secret_key,
        api_url=yookassa_sandbox.api_url,
        timeout_s=10.0,
        max_concurrency=4,
    )
    steps = [_checkout() for _ in range(4)]
    rules = [
        await yookassa_sandbox.aadd_fault(
            endpoint="POST /v3/payments", mode="latency", latency_ms=1000, count=1, metadata={"subscription_id": str(i.subscription_id)}
        )
        for i, _ in steps
    ]
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    started = time.monotonic()
    try:
        outcomes = await asyncio.gather(*(gateway.execute(step) for _, step in steps))
    finally:
        task.cancel()
        for rule in rules:
            await yookassa_sandbox.aremove_fault(rule)
    elapsed = time.monotonic() - started
    assert all(isinstance(o, ProviderPayment) for o in outcomes)
    assert elapsed < 3.5  # concurrent: one call in sequence alone would take 4 × 1 s
    assert ticks > 20
    await gateway.aclose()


async def test_connections_are_kept_alive_and_reconnected_after_idling(yookassa_sandbox) -> None:
    """One pooled keep-alive connection serves consecutive calls; after idling it is reconnected
    before use (never written into a server's idle-close), and the call still succeeds."""
    gw = YooKassaGateway(
        shop_id=yookassa_sandbox.shop_id,
        secret_key=yookassa_sandbox.secret_key,
        api_url=yookassa_sandbox.api_url,
        timeout_s=5.0,
        max_concurrency=1,
    )
    pool = gw._transport._pool

    def local_port() -> int:
        conn = pool.pool.queue[-1]  # the idle connection, back in the pool after the call
        return conn.sock.getsockname()[1]

    try:
        intent, step = _checkout()
        created = await gw.execute(step)
        assert isinstance(created, ProviderPayment)
        first = local_port()
        assert isinstance(await gw.execute(FindPayment(intent.payment_id, created.id)), ProviderPayment)
        assert local_port() == first  # the same TCP connection
        pool.max_idle_s = 0.05
        await asyncio.sleep(0.2)
        assert isinstance(await gw.execute(FindPayment(intent.payment_id, created.id)), ProviderPayment)
        assert local_port() != first  # a fresh one after the idle spell
    finally:
        await gw.aclose()


async def test_a_refused_secret_is_unknown_counted_and_nothing_is_created(yookassa_sandbox) -> None:
    """401 is YooKassa refusing *us* (a rotated or mistyped key): the operation stays open, never a final failure."""
    from prometheus_client import REGISTRY

    def rejected() -> float:
        return REGISTRY.get_sample_value("billing_yookassa_credentials_rejected_total", {"status": "401"}) or 0.0

    wrong = YooKassaGateway(shop_id=yookassa_sandbox.shop_id, secret_key="rotated-away", api_url=yookassa_sandbox.api_url, timeout_s=5.0)
    intent, step = _checkout()
    before = rejected()
    try:
        outcome = await wrong.execute(step)
        refund_outcome = await wrong.execute(FindRefund(uuid.uuid4(), "2f9d7a1c-000f-5000-8000-000000000001"))
    finally:
        await wrong.aclose()
    assert isinstance(outcome, ProviderUnknown) and outcome.detail.startswith("credentials_rejected: 401"), outcome
    assert isinstance(refund_outcome, ProviderUnknown), refund_outcome
    assert rejected() == before + 2
    assert await yookassa_sandbox.apayments(metadata={"subscription_id": str(intent.subscription_id)}) == []


async def test_a_payment_read_back_names_ours_in_its_metadata(gateway, yookassa_sandbox) -> None:
    """What ties a YooKassa payment we never heard the id of to ours (a late answer, decision 0104)."""
    intent, step = _checkout()
    created = await gateway.execute(step)
    assert isinstance(created, ProviderPayment)
    found = await gateway.execute(FindPayment(None, created.id))
    assert isinstance(found, ProviderPayment) and found.our_payment_id == str(intent.payment_id)
    assert found.metadata is not None and found.metadata["subscription_id"] == str(intent.subscription_id)
