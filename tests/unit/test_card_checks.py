"""Card checks, card replacement, auto-renew on with a check, and trials (docs/decisions/0118).

Pure, like `test_processor_domain`: commands and scripted YooKassa answers in, events out.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import schemas as s
from payment_processor.adapters.schedule import row_of
from payment_processor.domain import CreatePayment, CreateRefund, ProviderRefused, build_plan
from payment_processor.domain.refunds import refund_quote
from tests.unit.test_processor_domain import (
    PRICE,
    Account,
    declined,
    paid,
    pending,
    plan,
    refund_ok,
    terminal,
    types,
)


def trial_plan(plan_id: str = "trial", days: int = 7) -> s.Envelope:
    stream = s.plan_stream(plan_id)
    meta = s.Metadata(correlation_id="c", actor=s.Actor(kind="admin", id="op"), command_id=uuid.uuid4())
    created = s.PlanCreated(plan_id=plan_id, name="Trial", price=PRICE, period_days=30, trial_days=days)
    return build_plan(stream, [s.new_envelope(created, stream_id=stream, metadata=meta)])


def account() -> Account:
    return Account(plans={"basic": plan("basic"), "trial": trial_plan()})


def check_of(acc: Account, sub_id: uuid.UUID) -> s.CardCheckStarted:
    payment = acc.state.payments[acc.state.subscriptions[sub_id].payment_ids[-1]]
    assert isinstance(payment.intent, s.CardCheckStarted)
    return payment.intent


# --------------------------------------------------------------------------- the check itself


def test_a_check_asks_for_the_configured_amount_saves_the_card_and_confirms_by_redirect() -> None:
    acc = account()
    sub_id = acc.active()
    events = acc.run(s.ReplacePaymentMethod(subscription_id=sub_id), pending(9, url="http://pay/check"))
    assert types(events) == ["CardCheckStarted", "PaymentCreated", "CommandSucceeded"]
    step = acc.steps[-1]
    assert isinstance(step, CreatePayment)
    assert step.body["amount"] == {"value": "1.00", "currency": "RUB"}
    assert step.body["save_payment_method"] is True and step.body["capture"] is True
    assert step.body["confirmation"]["type"] == "redirect"
    assert step.body["metadata"]["purpose"] == "card_check"
    end = terminal(events)
    assert isinstance(end, s.CommandSucceeded) and end.outcome.confirmation_url == "http://pay/check"


def test_a_succeeded_check_is_refunded_in_full_at_once_and_never_extends_the_period() -> None:
    acc = account()
    sub_id = acc.active()
    before = acc.state.subscriptions[sub_id].period_end
    acc.run(s.ReplacePaymentMethod(subscription_id=sub_id), pending(9))
    check = acc.state.payments[acc.state.subscriptions[sub_id].payment_ids[-1]]
    events = acc.sync(check.payment_id, paid(9), refund_ok(9))
    assert types(events)[:4] == ["PaymentSucceeded", "PaymentMethodReplaced", "RefundRequested", "RefundCreated"]
    requested = next(e.data for e in events if isinstance(e.data, s.RefundRequested))
    assert requested.amount == check.amount and requested.purpose == "card_check"
    assert isinstance(acc.steps[-1], CreateRefund)
    assert check.refunded_minor == check.amount.minor
    sub = acc.state.subscriptions[sub_id]
    assert sub.period_end == before and sub.payment_method_id == "pm-9"
    # the check is never what a cancel refunds from
    assert refund_quote(acc.state, sub, acc.now)[0].payment_id != check.payment_id  # type: ignore[union-attr]


def test_a_declined_check_changes_nothing_and_the_command_says_so() -> None:
    acc = account()
    sub_id = acc.active()
    card = acc.state.subscriptions[sub_id].payment_method_id
    events = acc.run(s.ReplacePaymentMethod(subscription_id=sub_id), declined(9))
    end = terminal(events)
    assert isinstance(end, s.CommandFailed) and "declined" in end.reason and "Nothing changed" in end.reason
    assert acc.state.subscriptions[sub_id].payment_method_id == card
    assert acc.state.subscriptions[sub_id].status == "active"


def test_a_refused_check_fails_the_command() -> None:
    acc = account()
    sub_id = acc.active()
    events = acc.run(s.ReplacePaymentMethod(subscription_id=sub_id), ProviderRefused("invalid_request", "bad receipt"))
    assert isinstance(terminal(events), s.CommandFailed)


# --------------------------------------------------------------------------- replacement


def test_replacement_only_for_live_subscriptions() -> None:
    acc = account()
    sub_id = acc.active()
    acc.run(s.CancelSubscription(subscription_id=sub_id, mode="refund_now"), refund_ok(1))
    events = acc.run(s.ReplacePaymentMethod(subscription_id=sub_id))
    end = terminal(events)
    assert isinstance(end, s.CommandRejected) and end.code == "not_active"


def test_a_repeat_replacement_points_at_the_open_check() -> None:
    acc = account()
    sub_id = acc.active()
    acc.run(s.ReplacePaymentMethod(subscription_id=sub_id), pending(9, url="http://pay/open"))
    events = acc.run(s.ReplacePaymentMethod(subscription_id=sub_id))
    assert types(events) == ["CommandSucceeded"]
    assert terminal(events).outcome.confirmation_url == "http://pay/open"  # type: ignore[union-attr]


def test_renewal_after_a_replacement_charges_the_new_card() -> None:
    acc = account()
    sub_id = acc.active()
    acc.run(s.ReplacePaymentMethod(subscription_id=sub_id), pending(9))
    acc.sync(acc.state.subscriptions[sub_id].payment_ids[-1], paid(9), refund_ok(9))
    sub = acc.state.subscriptions[sub_id]
    acc.now = sub.period_end - timedelta(hours=1)  # type: ignore[operator]
    acc.run(s.RenewSubscription(subscription_id=sub_id, period_end=sub.period_end), pending(10))  # type: ignore[arg-type]
    renewal = acc.steps[-1]
    assert isinstance(renewal, CreatePayment) and renewal.body["payment_method_id"] == "pm-9"
    assert renewal.body["amount"]["value"] == "299.00"


# --------------------------------------------------------------------------- auto-renew on


def test_auto_renew_on_without_a_card_runs_a_check_and_turns_on_when_it_succeeds() -> None:
    acc = account()
    sub_id, _ = acc.purchase(paid(1, saved=False), auto_renew=False)
    assert acc.state.subscriptions[sub_id].payment_method_id is None
    events = acc.run(s.SetAutoRenew(subscription_id=sub_id, enabled=True), pending(9, url="http://pay/ar"))
    assert types(events) == ["CardCheckStarted", "PaymentCreated", "CommandSucceeded"]
    assert terminal(events).outcome.confirmation_url == "http://pay/ar"  # type: ignore[union-attr]
    assert acc.state.subscriptions[sub_id].auto_renew is False
    events = acc.sync(acc.state.subscriptions[sub_id].payment_ids[-1], paid(9), refund_ok(9))
    assert "AutoRenewChanged" in types(events) and "RefundRequested" in types(events)
    sub = acc.state.subscriptions[sub_id]
    assert sub.auto_renew is True and sub.payment_method_id == "pm-9"


def test_auto_renew_withdrawn_before_the_check_succeeds_stays_off() -> None:
    acc = account()
    sub_id, _ = acc.purchase(paid(1, saved=False), auto_renew=False)
    acc.run(s.SetAutoRenew(subscription_id=sub_id, enabled=True), pending(9))
    events = acc.run(s.SetAutoRenew(subscription_id=sub_id, enabled=False))
    assert types(events) == ["AutoRenewChanged", "CommandSucceeded"]
    events = acc.sync(acc.state.subscriptions[sub_id].payment_ids[-1], paid(9), refund_ok(9))
    assert "AutoRenewChanged" not in types(events) and "RefundRequested" in types(events)
    assert acc.state.subscriptions[sub_id].auto_renew is False


def test_auto_renew_on_with_a_saved_card_behaves_as_before() -> None:
    acc = account()
    sub_id = acc.active()
    acc.run(s.SetAutoRenew(subscription_id=sub_id, enabled=False))
    events = acc.run(s.SetAutoRenew(subscription_id=sub_id, enabled=True))
    assert types(events) == ["AutoRenewChanged", "CommandSucceeded"]


# --------------------------------------------------------------------------- trials


def start_trial(acc: Account, **kw: object) -> uuid.UUID:
    sub_id, events = acc.purchase(pending(5, url="http://pay/trial"), plan_id="trial", **kw)
    assert types(events) == ["CardCheckStarted", "PaymentCreated", "CommandSucceeded"]
    acc.sync(acc.state.subscriptions[sub_id].payment_ids[-1], paid(5, at=acc.now), refund_ok(5))
    return sub_id


def test_a_trial_purchase_checks_the_card_then_starts_free_with_renewal_on() -> None:
    acc = account()
    sub_id, events = acc.purchase(pending(5), plan_id="trial")
    intent = check_of(acc, sub_id)
    assert intent.reason == "trial" and intent.trial is not None and intent.trial.trial_days == 7
    assert acc.state.subscriptions[sub_id].status == "pending_payment"
    events = acc.sync(intent.payment_id, paid(5, at=acc.now), refund_ok(5))
    activated = next(e.data for e in events if isinstance(e.data, s.SubscriptionActivated))
    assert activated.trial and activated.amount_paid.minor == 0 and activated.auto_renew
    assert activated.next_charge == PRICE
    assert activated.period_end - activated.period_start == timedelta(days=7)
    sub = acc.state.subscriptions[sub_id]
    assert sub.trial and sub.status == "active" and sub.payment_method_id == "pm-5"
    assert acc.state.payments[intent.payment_id].refunded_minor == intent.amount.minor


def test_a_trial_is_once_per_customer_and_plan() -> None:
    acc = account()
    first = start_trial(acc)
    acc.run(s.CancelSubscription(subscription_id=first, mode="refund_now"))
    _, events = acc.purchase(pending(6), plan_id="trial")
    assert events[0].type == "CheckoutStarted" and events[0].data.amount == PRICE  # type: ignore[union-attr]


def test_a_declined_trial_check_fails_the_purchase_and_the_trial_stays_available() -> None:
    acc = account()
    sub_id, events = acc.purchase(declined(5), plan_id="trial")
    assert isinstance(terminal(events), s.CommandFailed)
    assert acc.state.subscriptions[sub_id].status == "payment_failed"
    _, events = acc.purchase(pending(6), plan_id="trial")
    assert events[0].type == "CardCheckStarted"


def test_canceling_a_trial_refunds_nothing() -> None:
    acc = account()
    sub_id = start_trial(acc)
    acc.now += timedelta(days=2)
    events = acc.run(s.CancelSubscription(subscription_id=sub_id, mode="refund_now"))
    canceled = next(e.data for e in events if isinstance(e.data, s.SubscriptionCanceled))
    assert canceled.refund_amount is not None and canceled.refund_amount.minor == 0
    assert "RefundRequested" not in types(events)


def test_cancel_at_period_end_during_a_trial_never_charges() -> None:
    acc = account()
    sub_id = start_trial(acc)
    acc.run(s.CancelSubscription(subscription_id=sub_id, mode="at_period_end"))
    sub = acc.state.subscriptions[sub_id]
    acc.now = sub.period_end  # type: ignore[assignment]
    events = acc.run(s.RenewSubscription(subscription_id=sub_id, period_end=sub.period_end))  # type: ignore[arg-type]
    assert isinstance(terminal(events), s.CommandRejected)


def test_a_trial_is_charged_at_its_end_not_before_and_then_is_paid() -> None:
    acc = account()
    sub_id = start_trial(acc)
    sub = acc.state.subscriptions[sub_id]
    end = sub.period_end
    acc.now = end - timedelta(hours=12)  # type: ignore[operator]
    early = acc.run(s.RenewSubscription(subscription_id=sub_id, period_end=end))  # type: ignore[arg-type]
    assert isinstance(terminal(early), s.CommandRejected) and terminal(early).code == "not_due"  # type: ignore[union-attr]
    acc.now = end - timedelta(minutes=1)  # type: ignore[operator]  # a scheduler clock a little ahead of ours
    events = acc.run(s.RenewSubscription(subscription_id=sub_id, period_end=end, attempt=2), paid(11, at=acc.now))  # type: ignore[arg-type]
    step = [st for st in acc.steps if isinstance(st, CreatePayment)][-1]
    assert step.body["payment_method_id"] == "pm-5" and step.body["amount"]["value"] == "299.00"
    renewed = next(e.data for e in events if isinstance(e.data, s.SubscriptionRenewed))
    assert renewed.period_end - renewed.period_start == timedelta(days=30)
    assert not acc.state.subscriptions[sub_id].trial


def test_the_schedule_row_and_the_reminder_know_a_trial() -> None:
    acc = account()
    sub_id = start_trial(acc)
    sub = acc.state.subscriptions[sub_id]
    assert row_of(acc.state, sub).trial is True  # type: ignore[union-attr]
    events = acc.run(s.SendExpiryReminder(subscription_id=sub_id, period_end=sub.period_end))  # type: ignore[arg-type]
    soon = next(e.data for e in events if isinstance(e.data, s.SubscriptionExpiringSoon))
    assert soon.trial and soon.auto_renew and soon.next_charge == PRICE


def test_a_plan_carries_its_trial_days() -> None:
    assert trial_plan(days=14).trial_days == 14
    assert plan("basic").trial_days == 0
    assert s.CreatePlan(plan_id="p", name="P", price=PRICE, period_days=30).trial_days == 0

