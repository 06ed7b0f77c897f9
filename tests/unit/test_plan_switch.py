"""Plan switching in the account aggregate (docs/decisions/0119): the upgrade arithmetic, the
deciders, and refunds of a period an upgrade paid for with two payments.

Pure, like `test_processor_domain` (whose scripted `Account` driver it reuses): YooKassa's answers
are plain values fed to `resolve`.
"""

from __future__ import annotations

import dataclasses
import uuid
from datetime import timedelta

import pytest

import schemas as s
from payment_processor.domain import CreatePayment, CreateRefund, ProviderPayment, operation_changes
from payment_processor.domain.commands import upgrade_quote
from payment_processor.domain.decision import Emit
from rules.refunds import refund_amount
from tests.unit.test_processor_domain import T0, Account, _renew, declined, paid, pending, plan, refund_ok, terminal, types

MONTHLY = plan("monthly", price=s.Money(amount="299.00"), days=30)
YEARLY = plan("yearly", price=s.Money(amount="2990.00"), days=365)
WEEKLY = plan("weekly", price=s.Money(amount="99.00"), days=7)


def _other_product() -> s.Envelope:
    return s.PlanCreated(plan_id="music", name="Music", price=s.Money(amount="999.00"), period_days=30, product="music")


def account() -> Account:
    from payment_processor.domain import build_plan

    stream = s.plan_stream("music")
    meta = s.Metadata(correlation_id="c", actor=s.Actor(kind="admin", id="op"), command_id=uuid.uuid4())
    music = build_plan(stream, [s.new_envelope(_other_product(), stream_id=stream, metadata=meta)])
    archived = plan("old-yearly", archived=True, price=s.Money(amount="5000.00"), days=365)
    return Account(plans={"monthly": MONTHLY, "yearly": YEARLY, "weekly": WEEKLY, "music": music, "old-yearly": archived})


def switch(acc: Account, sub_id: uuid.UUID, plan_id: str, *answers: ProviderPayment) -> list[s.Envelope]:
    return acc.run(s.SwitchPlan(subscription_id=sub_id, plan_id=plan_id), *answers)


def _give_up_on_an_upgrade(acc: Account, sub_id: uuid.UUID, plan_id: str) -> uuid.UUID:
    """An upgrade whose create is never answered (a crash before the call) until the janitor gives up."""
    switch(acc, sub_id, plan_id)
    upgrade = acc.state.subscriptions[sub_id].payment_ids[-1]
    acc.now += timedelta(hours=24)
    acc.sync(upgrade)  # PaymentFailed(outcome_unknown)
    assert acc.state.payments[upgrade].outcome_unknown
    return upgrade


def test_old_plans_belong_to_the_default_product():
    old = s.PlanCreated.model_validate({"plan_id": "p", "name": "P", "price": {"amount": "1.00", "currency": "RUB"}, "period_days": 30})
    assert old.product == s.DEFAULT_PRODUCT == "cinema"
    assert plan("basic").product == "cinema"


def test_upgrade_charge_is_the_price_less_the_refund_for_the_unused_days():
    acc = account()
    sub_id = acc.active("monthly")
    acc.now = T0 + timedelta(days=10)  # the 11th day has started: 11 days used
    charge, credit = upgrade_quote(acc.state, acc.state.subscriptions[sub_id], YEARLY.price, acc.now)  # type: ignore[arg-type]
    assert credit.amount_minor == 29900 * (30 - 11) // 30 == 18936
    assert credit.amount_minor == refund_amount(29900, T0, 30, acc.now).amount_minor
    assert charge == 299000 - 18936
    assert (credit.days_used, credit.days_in_period) == (11, 30)


def test_upgrade_with_the_saved_card_switches_at_once_and_starts_a_new_period():
    acc = account()
    sub_id = acc.active("monthly")
    old_payment = acc.state.subscriptions[sub_id].current_payment_id
    acc.now = T0 + timedelta(days=10)
    events = switch(acc, sub_id, "yearly", paid(2, at=acc.now))
    assert types(events) == ["UpgradeStarted", "PaymentCreated", "PaymentSucceeded", "PlanSwitched", "CommandSucceeded"]
    step = acc.steps[-1]
    assert isinstance(step, CreatePayment) and step.body["payment_method_id"] == "pm-1" and "confirmation" not in step.body
    assert step.body["amount"] == {"value": "2800.64", "currency": "RUB"} and step.body["metadata"]["purpose"] == "upgrade"
    switched = events[3].data
    assert switched.amount_charged == s.Money(amount="2800.64") and switched.credit == s.Money(amount="189.36")
    assert [(p.payment_id, p.amount) for p in switched.credit_from] == [(old_payment, s.Money(amount="189.36"))]
    sub = acc.state.subscriptions[sub_id]
    assert (sub.plan_id, sub.price, sub.period_days) == ("yearly", YEARLY.price, 365)
    assert sub.period_start == acc.now and sub.period_end == acc.now + timedelta(days=365)
    assert acc.state.payments[switched.payment_id].purpose == "upgrade"
    assert "credit 189.36 RUB" in terminal(events).outcome.message  # type: ignore[union-attr]


def test_a_refund_after_an_upgrade_is_on_what_was_paid_for_the_new_period_from_both_payments():
    acc = account()
    sub_id = acc.active("monthly")
    old_payment = acc.state.subscriptions[sub_id].current_payment_id
    acc.now = T0 + timedelta(days=10)
    switch(acc, sub_id, "yearly", paid(2, at=acc.now))
    upgrade_payment = acc.state.subscriptions[sub_id].current_payment_id
    switched_at = acc.now
    acc.now += timedelta(hours=1)  # day 1 of 365 used: the refund exceeds the upgrade payment alone
    events = acc.run(s.CancelSubscription(subscription_id=sub_id, mode="refund_now"), refund_ok(1), refund_ok(2))
    expected = refund_amount(280064 + 18936, switched_at, 365, acc.now).amount_minor
    requested = [e.data for e in events if e.type == "RefundRequested"]
    assert [(r.payment_id, r.amount.minor) for r in requested] == [(upgrade_payment, 280064), (old_payment, expected - 280064)]
    assert isinstance(acc.steps[-1], CreateRefund) and isinstance(acc.steps[-2], CreateRefund)
    assert types(events).count("RefundSucceeded") == 2
    ended = terminal(events)
    assert ended.outcome.refund_amount.minor == expected  # type: ignore[union-attr]
    for payment in acc.state.payments.values():
        assert payment.refunded_minor + payment.reserved_minor <= payment.amount.minor
    # the old payment gave back only what was carried: its used days stay paid
    assert acc.state.payments[old_payment].refunded_minor <= 18936


def test_a_refund_after_an_upgrade_whose_first_refund_was_not_answered_asks_the_second_later():
    acc = account()
    sub_id = acc.active("monthly")
    acc.now = T0 + timedelta(days=10)
    switch(acc, sub_id, "yearly", paid(2, at=acc.now))
    acc.now += timedelta(hours=1)
    command = acc.command(s.CancelSubscription(subscription_id=sub_id, mode="refund_now"))
    acc.handle(command)  # crash before the first refund call
    assert terminal(acc.log) is None or terminal(acc.log).command_id != command.id  # type: ignore[union-attr]
    again = acc.handle(command, refund_ok(1), refund_ok(2))  # redelivered: both refunds are asked for, then it ends
    assert types(again).count("RefundSucceeded") == 2 and terminal(again).command_id == command.id  # type: ignore[union-attr]


def test_a_declined_upgrade_changes_nothing():
    acc = account()
    sub_id = acc.active("monthly")
    before = (acc.state.subscriptions[sub_id].plan_id, acc.state.subscriptions[sub_id].period_end)
    events = switch(acc, sub_id, "yearly", declined(2))
    assert types(events)[-2:] == ["PaymentFailed", "CommandFailed"]
    sub = acc.state.subscriptions[sub_id]
    assert (sub.plan_id, sub.period_end, sub.status) == (*before, "active")


def test_an_upgrade_without_a_saved_card_goes_through_the_payment_page():
    acc = account()
    sub_id, _ = acc.purchase(paid(1, saved=False), plan_id="monthly", auto_renew=False)
    events = switch(acc, sub_id, "yearly", pending(2, url="http://pay/2"))
    step = acc.steps[-1]
    assert step.body["confirmation"] == {"type": "redirect", "return_url": "http://shop/return"} and step.body["save_payment_method"]
    ended = terminal(events)
    assert ended.outcome.confirmation_url == "http://pay/2"  # type: ignore[union-attr]
    assert acc.state.subscriptions[sub_id].plan_id == "monthly"
    # one change at a time: another switch while the page is open is refused
    again = switch(acc, sub_id, "weekly")
    assert terminal(again).code == "switch_in_progress"  # type: ignore[union-attr]
    upgrade = acc.state.subscriptions[sub_id].payment_ids[-1]
    acc.sync(upgrade, paid(2, at=acc.now))
    assert acc.state.subscriptions[sub_id].plan_id == "yearly"


def test_a_late_upgrade_success_after_the_subscription_ended_is_refunded_in_full():
    acc = account()
    sub_id, _ = acc.purchase(paid(1, saved=False), plan_id="monthly", auto_renew=False)
    switch(acc, sub_id, "yearly", pending(2))
    upgrade = acc.state.subscriptions[sub_id].payment_ids[-1]
    acc.run(s.CancelSubscription(subscription_id=sub_id, mode="refund_now"), refund_ok(1))
    events = acc.sync(upgrade, paid(2, at=acc.now), refund_ok(3))
    assert "PlanSwitched" not in types(events)
    refund = next(e.data for e in events if e.type == "RefundRequested")
    assert refund.payment_id == upgrade and refund.amount == acc.state.payments[upgrade].amount


def test_no_renewal_starts_while_an_upgrade_payment_is_open():
    acc = account()
    sub_id, _ = acc.purchase(paid(1), plan_id="monthly")
    switch(acc, sub_id, "yearly", pending(2))
    sub = acc.state.subscriptions[sub_id]
    acc.now = sub.period_end - timedelta(hours=12)  # type: ignore[operator]
    events = acc.run(s.RenewSubscription(subscription_id=sub_id, period_end=sub.period_end), actor="system")  # type: ignore[arg-type]
    assert "RenewalStarted" not in types(events) and types(events)[0] == "RenewalFailed"
    assert "upgrade payment" in events[0].data.reason


def test_no_upgrade_starts_while_a_renewal_charge_is_in_flight():
    acc = account()
    sub_id = acc.active("monthly")
    sub = acc.state.subscriptions[sub_id]
    acc.now = sub.period_end - timedelta(hours=12)  # type: ignore[operator]
    acc.run(s.RenewSubscription(subscription_id=sub_id, period_end=sub.period_end), pending(2), actor="system")  # type: ignore[arg-type]
    assert terminal(switch(acc, sub_id, "yearly")).code == "charge_in_progress"  # type: ignore[union-attr]


def test_a_downgrade_takes_effect_with_the_renewal_at_the_period_end():
    acc = account()
    sub_id = acc.active("yearly")
    end = acc.state.subscriptions[sub_id].period_end
    events = switch(acc, sub_id, "monthly")
    assert types(events) == ["PlanSwitchScheduled", "CommandSucceeded"]
    assert events[0].data.effective_at == end and acc.state.subscriptions[sub_id].plan_id == "yearly"
    acc.now = end - timedelta(hours=12)  # type: ignore[operator]
    renewal = acc.run(s.RenewSubscription(subscription_id=sub_id, period_end=end), paid(2, at=acc.now), actor="system")  # type: ignore[arg-type]
    started = next(e.data for e in renewal if e.type == "RenewalStarted")
    assert (started.plan_id, started.amount, started.period_end - started.period_start) == ("monthly", MONTHLY.price, timedelta(days=30))
    renewed = next(e.data for e in renewal if e.type == "SubscriptionRenewed")
    assert (renewed.plan_id, renewed.previous_plan_name) == ("monthly", "Yearly")
    sub = acc.state.subscriptions[sub_id]
    assert (sub.plan_id, sub.price, sub.period_days, sub.pending_switch) == ("monthly", MONTHLY.price, 30, None)
    assert sub.period_start == end and sub.period_end == end + timedelta(days=30)  # type: ignore[operator]


def test_switching_back_withdraws_a_scheduled_downgrade():
    acc = account()
    sub_id = acc.active("yearly")
    switch(acc, sub_id, "monthly")
    events = switch(acc, sub_id, "yearly")
    assert types(events) == ["PlanSwitchWithdrawn", "CommandSucceeded"]
    assert acc.state.subscriptions[sub_id].pending_switch is None
    assert terminal(switch(acc, sub_id, "yearly")).code == "same_plan"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "target, prepare, code",
    [
        ("nope", None, "plan_not_found"),
        ("monthly", None, "same_plan"),
        ("old-yearly", None, "plan_archived"),
        ("music", None, "other_product"),
        ("yearly", "canceled", "not_active"),
        ("yearly", "past_due", "past_due"),
        ("weekly", "auto_renew_off", "auto_renew_off"),
    ],
)
def test_bad_switches_are_rejected_with_a_reason(target, prepare, code):
    acc = account()
    sub_id = acc.active("monthly")
    if prepare == "canceled":
        acc.run(s.CancelSubscription(subscription_id=sub_id, mode="refund_now"), refund_ok(1))
    elif prepare == "past_due":
        sub = acc.state.subscriptions[sub_id]
        acc.now = sub.period_end - timedelta(hours=12)  # type: ignore[operator]
        acc.run(s.RenewSubscription(subscription_id=sub_id, period_end=sub.period_end), declined(2), actor="system")  # type: ignore[arg-type]
        assert acc.state.subscriptions[sub_id].status == "past_due"
    elif prepare == "auto_renew_off":
        acc.run(s.SetAutoRenew(subscription_id=sub_id, enabled=False))
    ended = terminal(switch(acc, sub_id, target))
    assert ended is not None and ended.type_name() == "CommandRejected" and ended.code == code and ended.reason  # type: ignore[attr-defined]


def test_one_live_subscription_per_product():
    acc = account()
    sub_id = acc.active("monthly")
    ended = terminal(acc.purchase(paid(9), plan_id="yearly")[1])
    assert ended.code == "already_subscribed" and "switch" in ended.reason and str(sub_id) in ended.reason  # type: ignore[union-attr]
    # another product is bought separately
    acc.purchase(paid(10), plan_id="music")
    assert sorted(sub.product for sub in acc.state.subscriptions.values() if sub.status == "active") == ["cinema", "music"]


def test_a_switch_command_delivered_twice_charges_once():
    acc = account()
    sub_id = acc.active("monthly")
    command = acc.command(s.SwitchPlan(subscription_id=sub_id, plan_id="yearly"))
    acc.handle(command, paid(2))
    assert acc.handle(command, paid(2)) == []
    assert sum(1 for p in acc.state.payments.values() if p.purpose == "upgrade") == 1


def test_a_late_upgrade_success_while_a_renewal_charge_is_in_flight_is_refunded_not_applied():
    """Found by the model: an upgrade given up on (no answer within the key's window) lets the renewal
    start; its late success must not start a period the renewal in flight is also paying for."""
    acc = account()
    sub_id = acc.active("monthly")
    upgrade = _give_up_on_an_upgrade(acc, sub_id, "yearly")
    sub = acc.state.subscriptions[sub_id]
    acc.now = sub.period_end - timedelta(hours=12)  # type: ignore[operator]
    acc.run(s.RenewSubscription(subscription_id=sub_id, period_end=sub.period_end), pending(3), actor="system")  # type: ignore[arg-type]
    late = dataclasses.replace(paid(2, at=acc.now), metadata={"payment_id": str(upgrade)})  # YooKassa's copy names ours
    events = acc.run(s.SyncPayment(provider_payment_id=late.id), late, refund_ok(4), actor="provider")
    assert "PlanSwitched" not in types(events)
    refund = next(e.data for e in events if e.type == "RefundRequested")
    assert refund.payment_id == upgrade and refund.amount == acc.state.payments[upgrade].amount
    assert acc.state.subscriptions[sub_id].plan_id == "monthly"


def test_no_second_upgrade_while_a_given_up_upgrade_may_have_charged():
    """Found by the model: an upgrade whose create YooKassa never answered (given up after the key's
    window, `outcome_unknown`) counted as failed, so switching again charged the card a second time
    for the same period while the first charge may have gone through (decision 0104's rule, which
    renewals already followed). The second switch is refused; the late success is matched and applied."""
    acc = account()
    sub_id = acc.active("monthly")
    upgrade = _give_up_on_an_upgrade(acc, sub_id, "yearly")
    creates = sum(isinstance(st, CreatePayment) for st in acc.steps)
    again = switch(acc, sub_id, "yearly", paid(3, at=acc.now))
    assert types(again) == ["CommandRejected"] and again[0].data.code == "switch_in_progress"
    assert sum(isinstance(st, CreatePayment) for st in acc.steps) == creates  # the card was not charged again
    late = dataclasses.replace(paid(2, at=acc.now), metadata={"payment_id": str(upgrade)})  # YooKassa's copy names ours
    events = acc.run(s.SyncPayment(provider_payment_id=late.id), late, actor="provider")
    assert "PlanSwitched" in types(events)
    assert acc.state.subscriptions[sub_id].plan_id == "yearly"


def test_paying_an_overdue_period_now_under_a_scheduled_downgrade_pays_the_new_plan():
    """Pay-now charges what the renewal would (0117): under a scheduled downgrade that is the new plan's
    price for its days — not the old plan's — and the downgrade takes effect with the period it paid."""
    acc = account()
    sub_id = acc.active("yearly")
    end = acc.state.subscriptions[sub_id].period_end
    switch(acc, sub_id, "monthly")
    acc.now = end - timedelta(hours=12)  # type: ignore[operator]
    failed = _renew(acc, sub_id, 1, declined(2))
    assert next(e.data for e in failed if e.type == "RenewalStarted").plan_id == "monthly"
    assert acc.state.subscriptions[sub_id].status == "past_due"
    events = acc.run(s.PayOverdueSubscription(subscription_id=sub_id), pending(3, url="http://pay/3"))
    intent = events[0].data
    assert isinstance(intent, s.RecoveryStarted)
    assert (intent.plan_id, intent.amount, intent.period_end - intent.period_start) == ("monthly", MONTHLY.price, timedelta(days=30))
    acc.now += timedelta(days=1)
    renewed = next(e.data for e in acc.sync(intent.payment_id, paid(3, at=acc.now)) if e.type == "SubscriptionRenewed")
    assert (renewed.plan_id, renewed.previous_plan_name, renewed.purpose) == ("monthly", "Yearly", "recovery")
    sub = acc.state.subscriptions[sub_id]
    assert (sub.status, sub.plan_id, sub.price, sub.period_days, sub.pending_switch) == ("active", "monthly", MONTHLY.price, 30, None)
    assert (sub.period_start, sub.period_end) == (end, end + timedelta(days=30))  # type: ignore[operator]


def test_no_pay_now_while_an_upgrade_payment_is_open():
    """Found by the model: an open upgrade page keeps the renewal from charging, so the subscription
    goes past due; paying the overdue period then charged a second time for the same days when the
    customer also paid the upgrade. Pay-now is refused and points at the upgrade's page instead."""
    acc = account()
    sub_id = acc.active("monthly")
    switch(acc, sub_id, "yearly", pending(2, url="http://pay/2"))  # the bank wants the upgrade confirmed
    upgrade = acc.state.subscriptions[sub_id].payment_ids[-1]
    end = acc.state.subscriptions[sub_id].period_end
    acc.now = end - timedelta(hours=12)  # type: ignore[operator]
    blocked = _renew(acc, sub_id, 1)
    assert "RenewalFailed" in types(blocked) and acc.state.subscriptions[sub_id].status == "past_due"
    creates = sum(isinstance(st, CreatePayment) for st in acc.steps)
    refused = acc.run(s.PayOverdueSubscription(subscription_id=sub_id), pending(3, url="http://pay/3"))
    assert types(refused) == ["CommandRejected"] and refused[0].data.code == "switch_in_progress"
    assert "http://pay/2" in refused[0].data.reason
    assert sum(isinstance(st, CreatePayment) for st in acc.steps) == creates  # nothing charged
    acc.sync(upgrade, paid(2, at=acc.now))
    sub = acc.state.subscriptions[sub_id]
    assert (sub.plan_id, sub.status) == ("yearly", "active")


def test_an_upgrade_payment_is_followed_by_the_janitor_until_it_is_answered():
    """UpgradeStarted opens the payment in the janitor's table, as every other payment intent does.
    It did not: an upgrade whose create went unanswered was never asked about again, its command
    never ended, and its open payment refused every renewal until dunning expired the
    subscription (a chaos run; the model's `the_janitor_follows_every_unanswered_operation`)."""
    acc = account()
    sub_id = acc.active("monthly")
    acc.now = T0 + timedelta(days=10)
    events = switch(acc, sub_id, "yearly")  # the create is never answered
    upgrade = acc.state.subscriptions[sub_id].payment_ids[-1]
    changes = operation_changes([Emit(e.data, uuid.uuid4()) for e in events])
    assert [(c.action, c.kind, c.operation_id) for c in changes] == [("open", "payment", upgrade)]
