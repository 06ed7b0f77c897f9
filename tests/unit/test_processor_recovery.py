"""Past-due recovery (pay now) and 3-D Secure on renewal, in the pure domain (docs/decisions/0117)."""

from __future__ import annotations

import uuid
from datetime import timedelta

import schemas as s
from payment_processor.domain import CreatePayment, ProviderPayment
from payment_processor.domain.commands import next_period_terms
from payment_processor.domain.refunds import period_quote
from rules.refunds import refund_amount
from tests.unit.test_processor_domain import (
    UNKNOWN,
    Account,
    _renew,
    declined,
    paid,
    pending,
    pid,
    refund_ok,
    terminal,
    types,
)


def past_due(acc: Account) -> uuid.UUID:
    """An active subscription whose first renewal charge was declined."""
    sub_id = acc.active()
    acc.now = acc.state.subscriptions[sub_id].period_end - timedelta(days=1)
    _renew(acc, sub_id, 1, declined(50))
    assert acc.state.subscriptions[sub_id].status == "past_due"
    return sub_id


def pay_now(acc: Account, sub_id: uuid.UUID, *answers: ProviderPayment | object, command_id: uuid.UUID | None = None) -> list[s.Envelope]:
    return acc.run(s.PayOverdueSubscription(subscription_id=sub_id), *answers, command_id=command_id)  # type: ignore[arg-type]


def new_card(n: int, at: object) -> ProviderPayment:
    return ProviderPayment(
        id=pid(n), status="succeeded", captured_at=at, payment_method_id="pm-new", payment_method_saved=True,  # type: ignore[arg-type]
        payment_method_title="Bank card *1111",
    )


def test_pay_now_opens_a_payment_page_for_the_renewal_amount_and_saves_the_card() -> None:
    acc = Account()
    sub_id = past_due(acc)
    sub = acc.state.subscriptions[sub_id]
    events = pay_now(acc, sub_id, pending(60, url="http://pay/60"))
    assert types(events) == ["RecoveryStarted", "PaymentCreated", "CommandSucceeded"]
    intent = events[0].data
    assert isinstance(intent, s.RecoveryStarted)
    terms = next_period_terms(acc.state, sub, acc.ctx())  # the renewal's own computation
    assert (intent.amount, intent.promo, intent.plan_id) == (terms.amount, terms.promo, terms.plan_id)
    assert (intent.period_start, intent.period_end) == (sub.period_end, sub.period_end + timedelta(days=30))
    step = acc.steps[-1]
    assert isinstance(step, CreatePayment)
    assert step.body["save_payment_method"] is True and step.body["confirmation"]["type"] == "redirect"
    assert "payment_method_id" not in step.body and step.body["metadata"]["purpose"] == "recovery"
    ended = terminal(events)
    assert isinstance(ended, s.CommandSucceeded) and ended.outcome.confirmation_url == "http://pay/60"
    assert events[1].data.purpose == "recovery"


def test_a_paid_recovery_renews_one_period_from_the_old_end_clears_dunning_and_replaces_the_card() -> None:
    acc = Account()
    sub_id = past_due(acc)
    old_end = acc.state.subscriptions[sub_id].period_end
    pay_now(acc, sub_id, pending(60))
    payment_id = acc.state.subscriptions[sub_id].payment_ids[-1]
    acc.now += timedelta(days=2)
    events = acc.sync(payment_id, new_card(60, acc.now))
    assert types(events) == ["PaymentSucceeded", "SubscriptionRenewed", "CommandSucceeded"]
    renewed = events[1].data
    assert isinstance(renewed, s.SubscriptionRenewed) and renewed.purpose == "recovery"
    sub = acc.state.subscriptions[sub_id]
    assert (sub.status, sub.period_start, sub.period_end) == ("active", old_end, old_end + timedelta(days=30))
    assert (sub.renewal_attempt, sub.next_retry_at, sub.dunning_over) == (0, None, False)
    assert sub.payment_method_id == "pm-new"
    # the next automatic renewal charges the new card
    acc.now = sub.period_end - timedelta(days=1)
    _renew(acc, sub_id, 1, paid(61, at=acc.now))
    assert acc.steps[-1].body["payment_method_id"] == "pm-new"


def test_a_declined_recovery_leaves_the_subscription_past_due_and_can_be_tried_again() -> None:
    acc = Account()
    sub_id = past_due(acc)
    pay_now(acc, sub_id, pending(60))
    first = acc.state.subscriptions[sub_id].payment_ids[-1]
    events = acc.sync(first, declined(60, "card_expired"))
    assert types(events) == ["PaymentFailed", "CommandSucceeded"]  # no RenewalFailed: dunning is the scheduler's
    sub = acc.state.subscriptions[sub_id]
    assert sub.status == "past_due" and sub.renewal_attempt == 1 and sub.next_retry_at is not None
    again = pay_now(acc, sub_id, pending(61, url="http://pay/61"))
    assert types(again) == ["RecoveryStarted", "PaymentCreated", "CommandSucceeded"]


def test_a_repeated_pay_now_returns_the_open_page() -> None:
    acc = Account()
    sub_id = past_due(acc)
    pay_now(acc, sub_id, pending(60, url="http://pay/60"))
    again = pay_now(acc, sub_id)
    assert types(again) == ["CommandSucceeded"]
    assert again[0].data.outcome.confirmation_url == "http://pay/60"
    assert sum(isinstance(st, CreatePayment) for st in acc.steps) == 3  # purchase, renewal, one recovery


def test_a_pay_now_whose_creation_is_unknown_refuses_a_second_until_its_page_is_known() -> None:
    acc = Account()
    sub_id = past_due(acc)
    pay_now(acc, sub_id, UNKNOWN)
    refused = pay_now(acc, sub_id)
    assert terminal(refused).code == "renewal_in_progress"  # type: ignore[union-attr]
    recovery = acc.state.subscriptions[sub_id].payment_ids[-1]
    acc.sync(recovery, pending(60, url="http://pay/60"))  # the janitor repeats the create: the page
    again = pay_now(acc, sub_id)
    assert types(again) == ["CommandSucceeded"] and again[0].data.outcome.confirmation_url == "http://pay/60"


def test_pay_now_refuses_when_not_past_due_or_unknown() -> None:
    acc = Account()
    sub_id = acc.active()
    refused = pay_now(acc, sub_id)
    assert isinstance(terminal(refused), s.CommandRejected) and terminal(refused).code == "not_past_due"  # type: ignore[union-attr]
    missing = pay_now(acc, uuid.uuid4())
    assert terminal(missing).code == "subscription_not_found"  # type: ignore[union-attr]


def test_pay_now_refuses_while_an_automatic_retry_is_in_flight() -> None:
    acc = Account()
    sub_id = past_due(acc)
    acc.now = acc.state.subscriptions[sub_id].next_retry_at
    _renew(acc, sub_id, 2, UNKNOWN)
    refused = pay_now(acc, sub_id)
    assert terminal(refused).code == "renewal_in_progress"  # type: ignore[union-attr]
    assert not any(e.type == "RecoveryStarted" for e in refused)


def test_an_automatic_retry_does_not_charge_while_a_recovery_page_is_open() -> None:
    acc = Account()
    sub_id = past_due(acc)
    pay_now(acc, sub_id, pending(60))
    creates = sum(isinstance(st, CreatePayment) for st in acc.steps)
    acc.now = acc.state.subscriptions[sub_id].next_retry_at
    retry = _renew(acc, sub_id, 2)
    assert types(retry) == ["RenewalFailed", "CommandSucceeded"]
    assert "customer's own payment" in retry[0].data.reason and retry[0].data.attempt == 2
    assert sum(isinstance(st, CreatePayment) for st in acc.steps) == creates


def test_a_recovery_succeeding_after_the_subscription_expired_is_refunded_in_full() -> None:
    acc = Account()
    sub_id = past_due(acc)
    pay_now(acc, sub_id, pending(60))
    recovery = acc.state.subscriptions[sub_id].payment_ids[-1]
    end = acc.state.subscriptions[sub_id].period_end
    acc.run(s.SetAutoRenew(subscription_id=sub_id, enabled=False))
    acc.now = end + timedelta(hours=1)
    acc.run(s.ExpireSubscription(subscription_id=sub_id, period_end=end), actor="system")
    assert acc.state.subscriptions[sub_id].status == "expired"
    late = acc.sync(recovery, paid(60, at=acc.now))
    assert types(late)[:2] == ["PaymentSucceeded", "RefundRequested"]


# --------------------------------------------------------------------------- 3-D Secure on renewal


def three_ds(n: int) -> ProviderPayment:
    return ProviderPayment(id=pid(n), status="pending", confirmation_url=f"http://pay/3ds/{n}")


def test_a_renewal_that_needs_3ds_records_the_link_once_and_renews_when_confirmed() -> None:
    acc = Account()
    sub_id = acc.active()
    end = acc.state.subscriptions[sub_id].period_end
    acc.now = end - timedelta(days=1)
    events = _renew(acc, sub_id, 1, three_ds(2))
    assert types(events) == ["RenewalStarted", "PaymentCreated", "RenewalConfirmationRequired", "CommandSucceeded"]
    asked = events[2].data
    assert isinstance(asked, s.RenewalConfirmationRequired) and asked.confirmation_url == "http://pay/3ds/2"
    assert asked.customer.email == "anna@example.com"
    payment_id = asked.payment_id
    # the janitor asks again and again: still pending, nothing new, and never "lost"
    for _ in range(3):
        acc.now += timedelta(hours=10)
        assert types(acc.sync(payment_id, three_ds(2))) == ["CommandSucceeded"]
    assert acc.state.payments[payment_id].status == "pending"
    confirmed = acc.sync(payment_id, paid(2, at=acc.now))
    assert types(confirmed) == ["PaymentSucceeded", "SubscriptionRenewed", "CommandSucceeded"]
    assert acc.state.subscriptions[sub_id].period_end == end + timedelta(days=30)


def test_a_3ds_renewal_left_unconfirmed_expires_into_dunning_and_pay_now_points_at_an_open_one() -> None:
    acc = Account()
    sub_id = acc.active()
    acc.now = acc.state.subscriptions[sub_id].period_end - timedelta(days=1)
    events = _renew(acc, sub_id, 1, three_ds(2))
    payment_id = events[0].data.payment_id
    expired = acc.sync(payment_id, declined(2, "expired_on_confirmation"))
    assert types(expired) == ["PaymentFailed", "RenewalFailed", "CommandSucceeded"]
    assert acc.state.subscriptions[sub_id].status == "past_due"
    # the retry asks for 3-DS again; pay now hands back that page instead of a second charge
    acc.now = acc.state.subscriptions[sub_id].next_retry_at
    _renew(acc, sub_id, 2, three_ds(3))
    pointed = pay_now(acc, sub_id)
    assert types(pointed) == ["CommandSucceeded"] and pointed[0].data.outcome.confirmation_url == "http://pay/3ds/3"


def test_a_pay_now_paid_after_an_operator_moved_the_period_end_renews_from_the_new_end() -> None:
    acc = Account()
    sub_id = past_due(acc)
    pay_now(acc, sub_id, pending(60, url="http://pay/60"))
    recovery = acc.state.subscriptions[sub_id].payment_ids[-1]
    acc.run(s.ExtendSubscription(subscription_id=sub_id, days=3, reason="apology"), actor="admin")
    moved = acc.state.subscriptions[sub_id].period_end
    again = pay_now(acc, sub_id)  # still the same page: one charge for the next period at a time
    assert again[0].data.outcome.confirmation_url == "http://pay/60"
    paid_now = acc.sync(recovery, new_card(60, acc.now))
    renewed = next(e.data for e in paid_now if e.type == "SubscriptionRenewed")
    assert (renewed.period_start, renewed.period_end) == (moved, moved + timedelta(days=30))
    assert "RefundRequested" not in types(paid_now)


def test_days_used_of_a_pay_now_after_an_extension_count_from_the_period_it_renewed() -> None:
    """Extended while the pay-now page was open, the paid period starts at the moved end: the
    operator's extra day is not a used day of it, for a cancel's refund and an upgrade's credit alike."""
    acc = Account()
    sub_id = past_due(acc)
    acc.now = acc.state.subscriptions[sub_id].period_end - timedelta(hours=1)
    pay_now(acc, sub_id, pending(60, url="http://pay/60"))
    recovery = acc.state.subscriptions[sub_id].payment_ids[-1]
    acc.run(s.ExtendSubscription(subscription_id=sub_id, days=1, reason="apology"), actor="admin")
    acc.sync(recovery, new_card(60, acc.now))
    sub = acc.state.subscriptions[sub_id]
    assert sub.status == "active" and sub.period_start > acc.now  # the paid period has not begun
    acc.now = sub.period_start - timedelta(minutes=1)
    quote = period_quote(acc.state, sub, acc.now)
    assert (quote.amount_minor, quote.days_used, quote.days_in_period) == (29900, 0, 30)
    acc.now = sub.period_start + timedelta(hours=1)  # its first day has started
    quote = period_quote(acc.state, sub, acc.now)
    assert (quote.amount_minor, quote.days_used) == (refund_amount(29900, sub.period_start, 30, acc.now).amount_minor, 1)
    canceled = acc.run(s.CancelSubscription(subscription_id=sub_id, mode="refund_now"), refund_ok(61))
    asked = next(e.data for e in canceled if e.type == "RefundRequested")
    assert (asked.amount.minor, asked.days_used) == (quote.amount_minor, 1)


def test_a_pay_now_given_up_on_blocks_retries_and_pay_now_until_it_speaks_up() -> None:
    acc = Account()
    sub_id = past_due(acc)
    pay_now(acc, sub_id, UNKNOWN)
    recovery = acc.state.subscriptions[sub_id].payment_ids[-1]
    acc.now += timedelta(hours=24)
    acc.sync(recovery)  # past the idempotence window: given up, outcome unknown
    assert acc.state.payments[recovery].outcome_unknown
    assert terminal(pay_now(acc, sub_id)).code == "renewal_in_progress"  # type: ignore[union-attr]
    acc.now = max(acc.now, acc.state.subscriptions[sub_id].next_retry_at)
    retry = _renew(acc, sub_id, 2)
    assert types(retry) == ["RenewalFailed", "CommandSucceeded"] and "unknown" in retry[0].data.reason
