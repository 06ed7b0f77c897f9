"""54-FZ receipts: built from the plan's and the shop's settings, recorded in the intent, sent as recorded.

Pure: the account is driven as in test_processor_domain (scripted YooKassa answers); the sandbox
and the production refusal are covered in tests/integration/test_receipts_sandbox.py and
tests/unit/test_production_settings.py.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import timedelta

import schemas as s
from payment_processor.domain import Context, ProviderPayment, ProviderRefund, decide_plan, operation_changes
from payment_processor.domain.decision import Emit, plan_receipt_settings
from payment_processor.domain.provider import LEGACY_RECEIPT, ReceiptSettings, build_receipt, purchase_request, receipt_body
from payment_processor.domain.state import PlanState
from tests.unit.test_processor_domain import CUSTOMER, T0, Account, paid, pid, plan

SHOP = ReceiptSettings(vat_code=1, payment_subject="service", payment_mode="full_prepayment", tax_system_code=2)


@dataclass
class ReceiptAccount(Account):
    receipts: ReceiptSettings = SHOP

    def ctx(self, plan_id: str | None = None) -> Context:
        return replace(super().ctx(plan_id), receipts=self.receipts)


def vat_plan(plan_id: str = "basic", vat_code: int = 4, mode: str | None = None) -> PlanState:
    state = plan(plan_id)
    state.vat_code, state.payment_mode = vat_code, mode
    return state


def test_a_plan_sets_vat_subject_and_mode_and_the_shop_its_tax_system() -> None:
    settings = plan_receipt_settings(vat_plan(vat_code=11, mode="full_payment"), SHOP)
    assert settings == ReceiptSettings(vat_code=11, payment_subject="service", payment_mode="full_payment", tax_system_code=2)
    assert plan_receipt_settings(plan("legacy"), SHOP) == SHOP  # a plan created before receipt settings takes the defaults
    receipt = build_receipt(CUSTOMER, "x" * 200, s.Money(amount="299.00"), settings)
    assert receipt is not None and len(receipt.items[0].description) == 128 and receipt.items[0].amount == s.Money(amount="299.00")
    assert build_receipt(None, "plan", s.Money(amount="1.00"), settings) is None  # no customer, no receipt


def test_the_purchase_records_its_receipt_and_sends_exactly_that() -> None:
    acc = ReceiptAccount(plans={"basic": vat_plan(vat_code=4)})
    _, events = acc.purchase()  # crash before YooKassa: the step is what a retry would send
    checkout = events[0].data
    assert isinstance(checkout, s.CheckoutStarted) and checkout.receipt is not None
    assert (checkout.receipt.items[0].vat_code, checkout.receipt.items[0].payment_mode, checkout.receipt.tax_system_code) == (
        4, "full_prepayment", 2,
    )
    body = acc.steps[0].body["receipt"]
    assert body == {
        "customer": {"email": "anna@example.com"},
        "items": [
            {
                "description": "Basic",
                "quantity": "1.00",
                "amount": {"value": "299.00", "currency": "RUB"},
                "vat_code": 4,
                "payment_subject": "service",
                "payment_mode": "full_prepayment",
            }
        ],
        "tax_system_code": 2,
    }
    # The shop's settings change after the intent was recorded: the retry still sends the recorded receipt.
    acc.receipts = ReceiptSettings(vat_code=6, tax_system_code=1)
    cid = events[0].metadata.command_id
    again = s.PurchaseSubscription(subscription_id=checkout.subscription_id, plan_id="basic", customer=CUSTOMER)
    retried = acc.handle(acc.command(again, command_id=cid))
    assert retried == [] and acc.steps[-1].body["receipt"] == body


def test_an_intent_recorded_before_receipts_were_configurable_sends_the_receipt_of_its_time() -> None:
    """Same Idempotence-Key, same body: an old CheckoutStarted (no `receipt`) rebuilds the old receipt."""
    old = s.CheckoutStarted(
        subscription_id=uuid.uuid4(), payment_id=uuid.uuid4(), plan_id="basic", plan_name="Basic", amount=s.Money(amount="299.00"),
        period_days=30, auto_renew=True, customer=CUSTOMER, idempotence_key="k", return_url="http://shop/return",
    )
    assert purchase_request("u", uuid.uuid4(), old)["receipt"] == {
        "customer": {"email": "anna@example.com"},
        "items": [{"description": "Basic", "quantity": "1.00", "amount": {"value": "299.00", "currency": "RUB"},
                   "vat_code": 1, "payment_subject": "service", "payment_mode": "full_payment"}],
    }
    assert receipt_body(None, None, "Basic", s.Money(amount="1.00")) is None
    assert LEGACY_RECEIPT.tax_system_code is None


def test_refund_and_renewal_receipts_say_what_the_purchase_said() -> None:
    acc = ReceiptAccount(plans={"basic": vat_plan(vat_code=4)})
    sub_id = acc.active()
    acc.receipts = replace(SHOP, vat_code=1, tax_system_code=3)  # the shop moved to another tax system meanwhile
    sub = acc.state.subscriptions[sub_id]
    acc.now = sub.period_end - timedelta(hours=1)
    renewal = [e.data for e in acc.run(s.RenewSubscription(subscription_id=sub_id, period_end=sub.period_end), actor="system")]
    started = next(e for e in renewal if isinstance(e, s.RenewalStarted))
    assert started.receipt is not None and started.receipt.items[0].vat_code == 4 and started.receipt.tax_system_code == 3
    assert acc.steps[-1].body["receipt"]["tax_system_code"] == 3

    acc2 = ReceiptAccount(plans={"basic": vat_plan(vat_code=4)})
    sub2 = acc2.active()
    acc2.now = T0 + timedelta(days=10)
    events = acc2.run(s.CancelSubscription(subscription_id=sub2, mode="refund_now"))
    requested = next(e.data for e in events if isinstance(e.data, s.RefundRequested))
    assert requested.receipt is not None
    item = requested.receipt.items[0]
    assert (item.vat_code, item.payment_mode, requested.receipt.tax_system_code, item.amount) == (4, "full_prepayment", 2, requested.amount)
    assert acc2.steps[-1].body["receipt"]["items"][0]["amount"]["value"] == f"{requested.amount.amount:.2f}"


def test_a_new_plan_fixes_its_receipt_settings_with_the_defaults_for_what_is_unset() -> None:
    state = PlanState(stream_id=s.plan_stream("p"))
    meta = s.Metadata(correlation_id="c", actor=s.Actor(kind="admin", id="op"), command_id=uuid.uuid4())
    command = s.new_envelope(
        s.CreatePlan(plan_id="p", name="P", price=s.Money(amount="10.00"), period_days=30, payment_mode="advance"),
        stream_id=state.stream_id, metadata=meta,
    )
    created = decide_plan(state, command, Context(now=T0, receipts=SHOP)).events[0].payload
    assert isinstance(created, s.PlanCreated)
    assert (created.vat_code, created.payment_subject, created.payment_mode) == (1, "service", "advance")


def test_a_pending_receipt_keeps_the_operation_open_until_its_registration_is_read() -> None:
    acc = ReceiptAccount()
    registering = replace(paid(1), receipt_registration="pending")
    sub_id, events = acc.purchase(registering)
    payment_id = acc.state.subscriptions[sub_id].payment_ids[0]
    succeeded = next(e.data for e in events if isinstance(e.data, s.PaymentSucceeded))
    assert succeeded.receipt_registration == "pending"
    changes = operation_changes([Emit(e.data, uuid.uuid4()) for e in events])
    assert [c.action for c in changes] == ["open"]  # not closed: the janitor keeps asking

    synced = acc.sync(payment_id, replace(registering, receipt_registration="succeeded"))
    moved = [e.data for e in synced if isinstance(e.data, s.ReceiptRegistrationChanged)]
    assert len(moved) == 1 and moved[0].status == "succeeded" and moved[0].payment_id == payment_id
    assert acc.state.payments[payment_id].receipt_registration == "succeeded"
    assert [c.action for c in operation_changes([Emit(moved[0], uuid.uuid4())])] == ["close"]
    # Read again: nothing new, and a settled receipt is not asked about any more.
    again = acc.sync(payment_id)
    assert [e.type for e in again] == ["CommandSucceeded"] and not any(isinstance(e.data, s.ReceiptRegistrationChanged) for e in again)


def test_a_refund_receipt_registration_is_recorded_and_followed() -> None:
    acc = ReceiptAccount()
    sub_id = acc.active()
    acc.now = T0 + timedelta(days=3)
    refund = ProviderRefund(id="3a8e0000-0015-5000-9000-000000000001", status="succeeded", receipt_registration="pending")
    events = acc.run(s.CancelSubscription(subscription_id=sub_id, mode="refund_now"), refund)
    succeeded = next(e.data for e in events if isinstance(e.data, s.RefundSucceeded))
    assert succeeded.receipt_registration == "pending"
    synced = acc.run(s.SyncRefund(refund_id=succeeded.refund_id), replace(refund, receipt_registration="canceled"), actor="system")
    moved = [e.data for e in synced if isinstance(e.data, s.ReceiptRegistrationChanged)]
    assert [(m.refund_id, m.status) for m in moved] == [(succeeded.refund_id, "canceled")]
    assert acc.state.refunds[succeeded.refund_id].receipt_registration == "canceled"


def test_an_unknown_registration_value_is_not_recorded() -> None:
    acc = ReceiptAccount()
    sub_id, events = acc.purchase(ProviderPayment(id=pid(1), status="succeeded", captured_at=T0, receipt_registration="weird"))
    assert next(e.data for e in events if isinstance(e.data, s.PaymentSucceeded)).receipt_registration is None


def test_a_trials_card_check_records_the_plans_receipt_and_other_checks_the_defaults() -> None:
    trial_plan = vat_plan(vat_code=4)
    trial_plan.trial_days = 7
    acc = ReceiptAccount(plans={"basic": trial_plan})
    _, events = acc.purchase()
    check = next(e.data for e in events if isinstance(e.data, s.CardCheckStarted))
    assert check.receipt is not None and check.receipt.items[0].vat_code == 4 and check.receipt.tax_system_code == 2
    assert check.receipt.items[0].amount == check.amount
    assert acc.steps[-1].body["receipt"]["items"][0]["vat_code"] == 4
