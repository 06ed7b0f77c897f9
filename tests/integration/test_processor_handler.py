"""The command handler against the real PostgreSQL event store and the real YooKassa sandbox.

No Kafka here: commands are handed to the handler directly, the way a consumer loop would, so
each test can replay exactly the interleavings that matter (a redelivery, two deliveries at once,
a crash between two lines). The processor as a real process over Kafka is in tests/e2e/.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from sqlalchemy import text

import schemas as s
from infra.clock import SystemClock
from eventstore.store import EventStore
from payment_processor.config import ProcessorSettings
from payment_processor.adapters.gateway import YooKassaGateway
from payment_processor.handlers import CommandHandler, CrashPoints
from payment_processor.adapters.operations import open_operations
from sandbox.yookassa import cards

CUSTOMER = s.Customer(email="buyer@example.com", locale="en")


class Crashed(Exception):
    """Stands in for the process dying at a crash point (the e2e tests use a real SIGKILL)."""


def _crash(point: str) -> None:
    raise Crashed(point)


@pytest.fixture(scope="module")
async def engine(fresh_database):
    """A database of this module's own: the operations these tests leave open stay here."""
    from infra.db import create_engine

    eng = create_engine(fresh_database(migrate=True, prefix="processor"), pool_size=10, application_name="processor-tests")
    yield eng
    await eng.dispose()


@pytest.fixture(scope="module")
def event_store(engine) -> EventStore:
    return EventStore(engine)


@pytest.fixture
async def gateway(yookassa_sandbox):
    gw = YooKassaGateway(
        shop_id=yookassa_sandbox.shop_id,
        secret_key=yookassa_sandbox.secret_key,
        api_url=yookassa_sandbox.api_url,
        timeout_s=2.0,
        max_concurrency=8,
    )
    yield gw
    await gw.aclose()


@pytest.fixture
def make_handler(engine, gateway):
    def make(crash_at: str | None = None) -> CommandHandler:
        return CommandHandler(
            engine=engine,
            gateway=gateway,
            clock=SystemClock(),
            config=ProcessorSettings(janitor_schedule_s=[1, 1, 1]),
            default_return_url="http://shop.example/return",
            crash_points=CrashPoints([crash_at] if crash_at else [], action=_crash),
        )

    return make


@pytest.fixture
def handler(make_handler) -> CommandHandler:
    return make_handler()


def command(payload: s.Command, stream_id: str, *, command_id: uuid.UUID | None = None, actor: s.Actor | None = None) -> s.Envelope:
    cid = command_id or uuid.uuid4()
    user = s.account_user_id(stream_id) or "operator"
    meta = s.Metadata(correlation_id=f"test-{cid}", command_id=cid, actor=actor or s.Actor(kind="user", id=user))
    return s.new_envelope(payload, stream_id=stream_id, metadata=meta, id=cid)


async def create_plan(handler: CommandHandler, price: str = "299.00", days: int = 30) -> str:
    plan_id = f"p{uuid.uuid4().hex[:12]}"
    cmd = command(
        s.CreatePlan(plan_id=plan_id, name=f"Plan {plan_id}", price=s.Money(amount=price), period_days=days),
        s.plan_stream(plan_id),
        actor=s.Actor(kind="admin", id="op"),
    )
    await handler.handle(cmd)
    return plan_id


async def types(store: EventStore, stream_id: str) -> list[str]:
    return [e.type for e in await store.read_stream(stream_id)]


async def events(store: EventStore, stream_id: str, type_name: str) -> list[Any]:
    return [e.envelope().data for e in await store.read_stream(stream_id) if e.type == type_name]


class Shop:
    """One user's account, driven through the handler."""

    def __init__(self, handler: CommandHandler, store: EventStore, plan_id: str) -> None:
        self.handler, self.store, self.plan_id = handler, store, plan_id
        self.user = f"user-{uuid.uuid4().hex[:10]}"
        self.stream = s.account_stream(self.user)

    def purchase_command(self) -> s.Envelope:
        cid = uuid.uuid4()
        payload = s.PurchaseSubscription(subscription_id=s.derived_id("subscription", cid), plan_id=self.plan_id, customer=CUSTOMER)
        return command(payload, self.stream, command_id=cid)

    async def terminal(self, command_id: uuid.UUID) -> Any:
        for t in ("CommandSucceeded", "CommandRejected", "CommandFailed"):
            for e in await events(self.store, self.stream, t):
                if e.command_id == command_id:
                    return e
        return None

    async def sync(self, payment_id: uuid.UUID | None = None, provider_payment_id: str | None = None, hint: str | None = None) -> None:
        payload = s.SyncPayment(payment_id=payment_id, provider_payment_id=provider_payment_id, hint_status=hint)
        await self.handler.handle(command(payload, self.stream, actor=s.Actor(kind="system", id="janitor")))


async def _bought(shop: Shop, yookassa_sandbox, card: str = cards.SUCCESS) -> tuple[s.Envelope, Any]:
    cmd = shop.purchase_command()
    await shop.handler.handle(cmd)
    created = (await events(shop.store, shop.stream, "PaymentCreated"))[-1]
    await yookassa_sandbox.apay(created.provider_payment_id, card)
    await shop.sync(created.payment_id)
    return cmd, created


# --------------------------------------------------------------------------- purchase


async def test_purchase_payment_page_success_activates(handler, event_store, yookassa_sandbox, engine) -> None:
    shop = Shop(handler, event_store, await create_plan(handler))
    cmd = shop.purchase_command()
    await handler.handle(cmd)
    assert await types(event_store, shop.stream) == ["CheckoutStarted", "PaymentCreated", "CommandSucceeded"]
    done = await shop.terminal(cmd.id)
    assert done.outcome.confirmation_url and done.outcome.subscription_id == cmd.data.subscription_id
    outcome = await event_store.handled_outcome(cmd.id)
    assert outcome and outcome["status"] == "succeeded" and outcome["confirmation_url"] == done.outcome.confirmation_url

    created = (await events(event_store, shop.stream, "PaymentCreated"))[0]
    remote = await yookassa_sandbox.apayment(created.provider_payment_id)
    assert remote["metadata"]["user_id"] == shop.user and remote["_sandbox"]["idempotence_key"] == str(
        s.derived_id("yookassa", created.payment_id, "create")
    )
    async with engine.connect() as conn:
        assert [o.operation_id for o in await open_operations(conn, shop.stream)] == [created.payment_id]

    await yookassa_sandbox.apay(created.provider_payment_id, cards.SUCCESS)
    await shop.sync(created.payment_id)
    activated = (await events(event_store, shop.stream, "SubscriptionActivated"))[0]
    assert activated.subscription_id == cmd.data.subscription_id and activated.customer == CUSTOMER
    succeeded = (await events(event_store, shop.stream, "PaymentSucceeded"))[0]
    assert succeeded.payment_method is not None  # saved for renewals
    async with engine.connect() as conn:
        assert await open_operations(conn, shop.stream) == []


async def test_a_declined_card_fails_the_payment_with_its_reason(handler, event_store, yookassa_sandbox) -> None:
    shop = Shop(handler, event_store, await create_plan(handler))
    await _bought(shop, yookassa_sandbox, cards.DECLINE_INSUFFICIENT_FUNDS)
    failed = await events(event_store, shop.stream, "PaymentFailed")
    assert [(f.reason, f.party) for f in failed] == [("insufficient_funds", "payment_network")]
    assert await events(event_store, shop.stream, "SubscriptionActivated") == []


async def test_the_same_command_twice_makes_one_payment(handler, event_store, yookassa_sandbox) -> None:
    shop = Shop(handler, event_store, await create_plan(handler))
    cmd = shop.purchase_command()
    await handler.handle(cmd)
    before = await types(event_store, shop.stream)
    await handler.handle(cmd)
    assert await types(event_store, shop.stream) == before
    sub = str(cmd.data.subscription_id)
    assert len(await yookassa_sandbox.apayments({"subscription_id": sub})) == 1


async def test_the_same_command_twice_at_once_makes_one_payment(make_handler, event_store, yookassa_sandbox) -> None:
    first, second = make_handler(), make_handler()  # two "instances"
    shop = Shop(first, event_store, await create_plan(first))
    cmd = shop.purchase_command()
    await asyncio.gather(first.handle(cmd), second.handle(cmd))
    got = await types(event_store, shop.stream)
    assert got.count("CheckoutStarted") == 1 and got.count("PaymentCreated") == 1
    assert got.count("CommandSucceeded") == 1
    assert len(await yookassa_sandbox.apayments({"subscription_id": str(cmd.data.subscription_id)})) == 1


@pytest.mark.parametrize("point, payments_after_crash", [("after_checkout_started", 0), ("after_payment_created", 1)])
async def test_a_crash_between_two_lines_still_makes_exactly_one_payment(
    make_handler, event_store, yookassa_sandbox, point, payments_after_crash
) -> None:
    crashing = make_handler(crash_at=point)
    shop = Shop(crashing, event_store, await create_plan(crashing))
    cmd = shop.purchase_command()
    with pytest.raises(Crashed):
        await crashing.handle(cmd)
    sub = str(cmd.data.subscription_id)
    assert await types(event_store, shop.stream) == ["CheckoutStarted"]
    assert len(await yookassa_sandbox.apayments({"subscription_id": sub})) == payments_after_crash

    await make_handler().handle(cmd)  # the redelivery after a restart
    assert await types(event_store, shop.stream) == ["CheckoutStarted", "PaymentCreated", "CommandSucceeded"]
    assert len(await yookassa_sandbox.apayments({"subscription_id": sub})) == 1


@pytest.mark.parametrize("mode", ["drop_after_apply", "error_500_applied", "error_500_not_applied"])
async def test_an_unknown_create_is_settled_by_a_sync_without_a_second_payment(handler, event_store, yookassa_sandbox, mode) -> None:
    shop = Shop(handler, event_store, await create_plan(handler))
    cmd = shop.purchase_command()
    sub = str(cmd.data.subscription_id)
    rule = await yookassa_sandbox.aadd_fault(endpoint="POST /v3/payments", mode=mode, count=1, metadata={"subscription_id": sub})
    try:
        await handler.handle(cmd)
    finally:
        await yookassa_sandbox.aremove_fault(rule)
    assert await types(event_store, shop.stream) == ["CheckoutStarted", "PaymentStateUnknown"]
    assert await shop.terminal(cmd.id) is None  # still processing
    payment_id = (await events(event_store, shop.stream, "CheckoutStarted"))[0].payment_id

    await shop.sync(payment_id)  # what the janitor publishes
    done = await shop.terminal(cmd.id)
    assert isinstance(done, s.CommandSucceeded) and done.outcome.confirmation_url
    remote = await yookassa_sandbox.apayments({"subscription_id": sub})
    assert len(remote) == 1
    await yookassa_sandbox.apay(remote[0]["id"])
    await shop.sync(payment_id)
    assert len(await events(event_store, shop.stream, "SubscriptionActivated")) == 1
    assert len(await yookassa_sandbox.apayments({"subscription_id": sub})) == 1


async def test_a_notification_that_lies_changes_nothing_until_yookassa_agrees(handler, event_store, yookassa_sandbox) -> None:
    shop = Shop(handler, event_store, await create_plan(handler))
    cmd = shop.purchase_command()
    await handler.handle(cmd)
    created = (await events(event_store, shop.stream, "PaymentCreated"))[0]
    for _ in range(2):  # delivered twice, claiming success
        await shop.sync(payment_id=created.payment_id, provider_payment_id=created.provider_payment_id, hint="succeeded")
    assert await events(event_store, shop.stream, "PaymentSucceeded") == []
    assert await events(event_store, shop.stream, "SubscriptionActivated") == []

    await yookassa_sandbox.apay(created.provider_payment_id)
    notice = command(
        s.SyncPayment(provider_payment_id=created.provider_payment_id, hint_status="succeeded"),
        shop.stream,
        actor=s.Actor(kind="provider", id="yookassa"),
    )
    await handler.handle(notice)
    await handler.handle(notice)  # a duplicated notification: the same command id
    assert len(await events(event_store, shop.stream, "PaymentSucceeded")) == 1
    assert len(await events(event_store, shop.stream, "SubscriptionActivated")) == 1


async def test_a_repeat_purchase_returns_the_open_checkout(handler, event_store, yookassa_sandbox) -> None:
    shop = Shop(handler, event_store, await create_plan(handler))
    first = shop.purchase_command()
    await handler.handle(first)
    second = shop.purchase_command()
    await handler.handle(second)
    one, two = await shop.terminal(first.id), await shop.terminal(second.id)
    assert two.outcome.confirmation_url == one.outcome.confirmation_url
    assert two.outcome.subscription_id == first.data.subscription_id
    assert len(await yookassa_sandbox.apayments({"user_id": shop.user})) == 1


async def test_purchase_rejections(handler, event_store, yookassa_sandbox) -> None:
    plan_id = await create_plan(handler)
    shop = Shop(handler, event_store, plan_id)
    await _bought(shop, yookassa_sandbox)
    again = shop.purchase_command()
    await handler.handle(again)
    rejected = await shop.terminal(again.id)
    assert isinstance(rejected, s.CommandRejected) and rejected.code == "already_subscribed"

    archive = command(s.ArchivePlan(plan_id=plan_id, reason="retired"), s.plan_stream(plan_id), actor=s.Actor(kind="admin", id="op"))
    await handler.handle(archive)
    other = Shop(handler, event_store, plan_id)
    cmd = other.purchase_command()
    await handler.handle(cmd)
    assert (await other.terminal(cmd.id)).code == "plan_archived"
    missing = Shop(handler, event_store, "no-such-plan")
    cmd = missing.purchase_command()
    await handler.handle(cmd)
    assert (await missing.terminal(cmd.id)).code == "plan_not_found"


# --------------------------------------------------------------------------- cancel and refunds


async def test_two_cancels_with_refund_at_once_make_exactly_one_refund(make_handler, event_store, yookassa_sandbox) -> None:
    first, second = make_handler(), make_handler()
    shop = Shop(first, event_store, await create_plan(first))
    cmd, created = await _bought(shop, yookassa_sandbox)
    sub_id = cmd.data.subscription_id
    cancels = [command(s.CancelSubscription(subscription_id=sub_id, mode="refund_now"), shop.stream) for _ in range(2)]
    await asyncio.gather(first.handle(cancels[0]), second.handle(cancels[1]))
    ends = [await shop.terminal(c.id) for c in cancels]
    assert sorted(type(e).__name__ for e in ends) == ["CommandRejected", "CommandSucceeded"]
    assert next(e for e in ends if isinstance(e, s.CommandRejected)).code == "already_canceled"
    refunds = await yookassa_sandbox.arefunds(payment_id=created.provider_payment_id)
    assert len(refunds) == 1 and refunds[0]["amount"]["value"] == "289.03"  # 299 × 29/30 at minute one
    assert len(await events(event_store, shop.stream, "RefundRequested")) == 1


async def test_cancel_at_period_end_keeps_the_subscription_and_charges_nothing(handler, event_store, yookassa_sandbox) -> None:
    shop = Shop(handler, event_store, await create_plan(handler))
    cmd, created = await _bought(shop, yookassa_sandbox)
    cancel = command(s.CancelSubscription(subscription_id=cmd.data.subscription_id, mode="at_period_end"), shop.stream)
    await handler.handle(cancel)
    canceled = (await events(event_store, shop.stream, "SubscriptionCanceled"))[0]
    assert canceled.mode == "at_period_end"
    assert await yookassa_sandbox.arefunds(payment_id=created.provider_payment_id) == []


async def test_admin_refund_and_its_limit(handler, event_store, yookassa_sandbox) -> None:
    shop = Shop(handler, event_store, await create_plan(handler))
    cmd, created = await _bought(shop, yookassa_sandbox)
    admin = s.Actor(kind="admin", id="operator-1")
    ok = command(s.AdminRefund(subscription_id=cmd.data.subscription_id, amount=s.Money(amount="100.00"), reason="goodwill"), shop.stream, actor=admin)
    too_much = command(s.AdminRefund(subscription_id=cmd.data.subscription_id, amount=s.Money(amount="199.01"), reason="more"), shop.stream, actor=admin)
    await handler.handle(ok)
    await handler.handle(too_much)
    assert isinstance(await shop.terminal(ok.id), s.CommandSucceeded)
    assert (await shop.terminal(too_much.id)).code == "amount_exceeds_refundable"
    refunds = await yookassa_sandbox.arefunds(payment_id=created.provider_payment_id)
    assert [r["amount"]["value"] for r in refunds] == ["100.00"]


async def test_an_unknown_refund_is_settled_by_sync_refund(handler, event_store, yookassa_sandbox, engine) -> None:
    shop = Shop(handler, event_store, await create_plan(handler))
    cmd, created = await _bought(shop, yookassa_sandbox)
    cancel = command(s.CancelSubscription(subscription_id=cmd.data.subscription_id, mode="refund_now"), shop.stream)
    rule = await yookassa_sandbox.aadd_fault(endpoint="POST /v3/refunds", mode="drop_after_apply", count=1)
    try:
        await handler.handle(cancel)
    finally:
        await yookassa_sandbox.aremove_fault(rule)
    assert "RefundStateUnknown" in await types(event_store, shop.stream)
    assert await shop.terminal(cancel.id) is None
    refund_id = (await events(event_store, shop.stream, "RefundRequested"))[0].refund_id
    await handler.handle(command(s.SyncRefund(refund_id=refund_id), shop.stream, actor=s.Actor(kind="system", id="janitor")))
    assert isinstance(await shop.terminal(cancel.id), s.CommandSucceeded)
    assert len(await yookassa_sandbox.arefunds(payment_id=created.provider_payment_id)) == 1


# --------------------------------------------------------------------------- operator, plans, failures


async def test_grant_extend_and_auto_renew(handler, event_store) -> None:
    shop = Shop(handler, event_store, await create_plan(handler))
    admin = s.Actor(kind="admin", id="op")
    sub_id = uuid.uuid4()
    await handler.handle(command(s.GrantSubscription(subscription_id=sub_id, plan_id=shop.plan_id, days=7, reason="promo", customer=CUSTOMER), shop.stream, actor=admin))
    await handler.handle(command(s.ExtendSubscription(subscription_id=sub_id, days=3, reason="sorry"), shop.stream, actor=admin))
    off = command(s.SetAutoRenew(subscription_id=sub_id, enabled=True), shop.stream)
    await handler.handle(off)
    activated = (await events(event_store, shop.stream, "SubscriptionActivated"))[0]
    adjusted = (await events(event_store, shop.stream, "SubscriptionAdjusted"))[0]
    assert activated.granted and (adjusted.period_end - activated.period_end).days == 3
    assert (await shop.terminal(off.id)).code == "no_payment_method"


async def test_a_dead_lettered_command_ends_failed_once(handler, event_store) -> None:
    shop = Shop(handler, event_store, await create_plan(handler))
    cmd = shop.purchase_command()
    assert await handler.fail(cmd.id, cmd.type, cmd.stream_id, "broker on fire", correlation_id="c")
    assert not await handler.fail(cmd.id, cmd.type, cmd.stream_id, "again")
    failed = await shop.terminal(cmd.id)
    assert isinstance(failed, s.CommandFailed) and failed.reason == "broker on fire"
    assert (await event_store.handled_outcome(cmd.id))["status"] == "failed"
    await handler.handle(cmd)  # a late redelivery changes nothing
    assert await types(event_store, shop.stream) == ["CommandFailed"]


async def test_plan_commands_on_the_plan_stream(handler, event_store, engine) -> None:
    plan_id = await create_plan(handler)
    dup = command(
        s.CreatePlan(plan_id=plan_id, name="again", price=s.Money(amount="1.00"), period_days=1),
        s.plan_stream(plan_id),
        actor=s.Actor(kind="admin", id="op"),
    )
    await handler.handle(dup)
    assert await types(event_store, s.plan_stream(plan_id)) == ["PlanCreated", "CommandSucceeded", "CommandRejected"]
    async with engine.connect() as conn:
        count = (await conn.execute(text("SELECT count(*) FROM eventstore.handled_commands WHERE stream_id = :s"), {"s": s.plan_stream(plan_id)})).scalar()
    assert count == 2


# --------------------------------------------------------------------------- answers that come after we gave up (decision 0104)


async def test_a_late_success_after_the_idempotence_window_is_matched_through_yookassa(
    engine, event_store, gateway, yookassa_sandbox
) -> None:
    """The create went through but its answer was lost; a day later we gave up; then the notification
    arrives naming a YooKassa id we never heard. The processor reads it back from YooKassa, its
    metadata names our payment, and it is settled — here, activated — without a second payment."""
    from datetime import timedelta

    from infra.clock import FixedClock
    from payment_processor.handlers import ProviderUnreachable

    clock = FixedClock(SystemClock().now())
    handler = CommandHandler(
        engine=engine, gateway=gateway, clock=clock, config=ProcessorSettings(janitor_schedule_s=[1, 1, 1]),
        default_return_url="http://shop.example/return",
    )
    shop = Shop(handler, event_store, await create_plan(handler))
    cmd = shop.purchase_command()
    sub = str(cmd.data.subscription_id)
    rule = await yookassa_sandbox.aadd_fault(endpoint="POST /v3/payments", mode="drop_after_apply", count=1, metadata={"subscription_id": sub})
    try:
        await handler.handle(cmd)
    finally:
        await yookassa_sandbox.aremove_fault(rule)
    payment_id = (await events(event_store, shop.stream, "CheckoutStarted"))[0].payment_id
    remote = await yookassa_sandbox.apayments({"subscription_id": sub})
    assert len(remote) == 1  # YooKassa made it; we never heard its id

    clock.advance(timedelta(hours=23, minutes=5))
    await shop.sync(payment_id)  # the janitor, past the window: never repeats the create
    given_up = (await events(event_store, shop.stream, "PaymentFailed"))[0]
    assert given_up.outcome_unknown
    assert isinstance(await shop.terminal(cmd.id), s.CommandFailed)

    await yookassa_sandbox.apay(remote[0]["id"])  # the customer paid after all
    notice = command(s.SyncPayment(provider_payment_id=remote[0]["id"], hint_status="succeeded"), shop.stream,
                     actor=s.Actor(kind="provider", id="yookassa"))
    rule = await yookassa_sandbox.aadd_fault(endpoint="GET /v3/payments/*", mode="error_500_not_applied", count=1)
    try:
        with pytest.raises(ProviderUnreachable):  # YooKassa cannot be read right now: retried, not dropped
            await handler.handle(notice)
    finally:
        await yookassa_sandbox.aremove_fault(rule)
    await handler.handle(notice)  # the consumer's retry
    assert len(await events(event_store, shop.stream, "SubscriptionActivated")) == 1
    paid = (await events(event_store, shop.stream, "PaymentSucceeded"))[0]
    assert paid.payment_id == payment_id and paid.provider_payment_id == remote[0]["id"]
    assert len(await yookassa_sandbox.apayments({"subscription_id": sub})) == 1


# --------------------------------------------------------------------------- 54-FZ receipts


async def test_the_receipt_sent_is_the_plans_and_its_registration_is_followed_until_it_settles(
    engine, gateway, event_store, yookassa_sandbox
) -> None:
    from payment_processor.domain.provider import ReceiptSettings

    shop_settings = ReceiptSettings(vat_code=1, payment_subject="service", payment_mode="full_payment", tax_system_code=2)
    handler = CommandHandler(engine=engine, gateway=gateway, clock=SystemClock(), config=ProcessorSettings(),
                             default_return_url="http://shop.example/return", receipts=shop_settings)
    plan_id = f"p{uuid.uuid4().hex[:12]}"
    await handler.handle(command(
        s.CreatePlan(plan_id=plan_id, name="VAT plan", price=s.Money(amount="299.00"), period_days=30, vat_code=11,
                     payment_mode="full_prepayment"), s.plan_stream(plan_id), actor=s.Actor(kind="admin", id="op")))
    created_plan = (await events(event_store, s.plan_stream(plan_id), "PlanCreated"))[0]
    assert (created_plan.vat_code, created_plan.payment_subject, created_plan.payment_mode) == (11, "service", "full_prepayment")

    shop = Shop(handler, event_store, plan_id)
    with yookassa_sandbox.config_override(receipt_delay_ms=600):
        cmd, created = await _bought(shop, yookassa_sandbox)
        sent = (await yookassa_sandbox.apayment(created.provider_payment_id))["_sandbox"]["receipt"]
        intent = (await events(event_store, shop.stream, "CheckoutStarted"))[0]
        assert sent["tax_system_code"] == 2 and sent["items"][0]["vat_code"] == 11 and sent["items"][0]["payment_mode"] == "full_prepayment"
        assert intent.receipt is not None and intent.receipt.items[0].vat_code == 11  # recorded before it was sent
        succeeded = (await events(event_store, shop.stream, "PaymentSucceeded"))[0]
        assert succeeded.receipt_registration == "pending"
        async with engine.connect() as conn:  # paid, but its receipt is not registered yet: the janitor keeps asking
            assert [o.operation_id for o in await open_operations(conn, shop.stream)] == [created.payment_id]
        await asyncio.sleep(0.7)
        await shop.sync(created.payment_id)
    moved = await events(event_store, shop.stream, "ReceiptRegistrationChanged")
    assert [(m.payment_id, m.status) for m in moved] == [(created.payment_id, "succeeded")]
    async with engine.connect() as conn:
        assert await open_operations(conn, shop.stream) == []

    # The refund's receipt mirrors the payment's.
    await handler.handle(command(s.CancelSubscription(subscription_id=cmd.data.subscription_id, mode="refund_now"), shop.stream))
    requested = (await events(event_store, shop.stream, "RefundRequested"))[0]
    refund_receipt = (await yookassa_sandbox.arefunds(payment_id=created.provider_payment_id))[0]["_sandbox"]["receipt"]
    assert refund_receipt["items"][0]["vat_code"] == 11 and refund_receipt["tax_system_code"] == 2
    assert refund_receipt["items"][0]["amount"]["value"] == f"{requested.amount.amount:.2f}"
