"""The chaos run's new counts on synthetic events and YooKassa payments: each one can count.

A counter that only ever says 0 proves nothing; these build the violation it looks for (and the
look-alikes it must not count) from plain event data and sandbox payment records.
"""

from __future__ import annotations

from typing import Any

from bench.chaos import (
    PLAN_ID,
    PLAN_PRICE,
    Promo,
    count_charges_after_decline,
    count_charges_without_a_period,
    count_double_purchases,
    count_period_double_charges,
    count_promo_uses_beyond_limit,
    count_purchase_amount_mismatches,
    expected_charge_minor,
)

S = "account-u1"
SUB = "11111111-1111-1111-1111-111111111111"
P1, P2, P3 = "aaaaaaaa-0000-0000-0000-000000000001", "aaaaaaaa-0000-0000-0000-000000000002", "aaaaaaaa-0000-0000-0000-000000000003"
RUB = {"amount": "299.00", "currency": "RUB"}


def checkout(pay: str) -> tuple[str, str, dict[str, Any]]:
    return S, "CheckoutStarted", {"subscription_id": SUB, "payment_id": pay, "amount": RUB}


def renewal(pay: str, period_start: str = "2026-02-01T00:00:00Z") -> tuple[str, str, dict[str, Any]]:
    return S, "RenewalStarted", {"subscription_id": SUB, "payment_id": pay, "amount": RUB, "period_start": period_start}


def succeeded(pay: str) -> tuple[str, str, dict[str, Any]]:
    return S, "PaymentSucceeded", {"subscription_id": SUB, "payment_id": pay, "amount": RUB}


def failed(pay: str, unknown: bool = False) -> tuple[str, str, dict[str, Any]]:
    return S, "PaymentFailed", {"subscription_id": SUB, "payment_id": pay, "amount": RUB, "outcome_unknown": unknown}


def renewed(pay: str) -> tuple[str, str, dict[str, Any]]:
    return S, "SubscriptionRenewed", {"subscription_id": SUB, "payment_id": pay}


def auto_renew(enabled: bool) -> tuple[str, str, dict[str, Any]]:
    return S, "AutoRenewChanged", {"subscription_id": SUB, "enabled": enabled}


def refund_requested(pay: str, amount: str, refund_id: str = "r1") -> tuple[str, str, dict[str, Any]]:
    return S, "RefundRequested", {"subscription_id": SUB, "payment_id": pay, "refund_id": refund_id,
                                  "amount": {"amount": amount, "currency": "RUB"}}


def yk(pay: str, status: str = "succeeded", purpose: str | None = "renewal") -> dict[str, Any]:
    """A payment as the sandbox stores it: YooKassa's id, our ids in the metadata."""
    meta = {"subscription_id": SUB, "payment_id": pay, **({"purpose": purpose} if purpose else {})}
    return {"id": f"yk-{pay[-1]}", "status": status, "amount": {"value": "299.00", "currency": "RUB"}, "metadata": meta}


def yk_refund(pay: str, value: str = "299.00") -> dict[str, Any]:
    return {"id": f"rf-{pay[-1]}", "payment_id": f"yk-{pay[-1]}", "status": "succeeded", "amount": {"value": value}}


# ----------------------------------------------------------------------------- period double charges


def test_two_kept_charges_for_one_renewal_period_are_counted() -> None:
    events = [renewal(P1), failed(P1), renewal(P2), succeeded(P2), renewal(P3), succeeded(P3)]  # P3: same period again
    count, details = count_period_double_charges(events, [yk(P1, "canceled"), yk(P2), yk(P3)], [])
    assert count == 1 and "yk-2" in details[0] and "yk-3" in details[0]


def test_a_renewal_started_while_another_charge_is_unsettled_is_the_same_period() -> None:
    """Different period_start, but P2 began before anyone knew how P1 ended (an unknown outcome stays open)."""
    events = [renewal(P1, "2026-02-01T00:00:00Z"), failed(P1, unknown=True),
              renewal(P2, "2026-02-01T00:00:00.000001+00:00"), succeeded(P1), succeeded(P2)]
    count, _ = count_period_double_charges(events, [yk(P1), yk(P2)], [])
    assert count == 1


def test_one_charge_per_period_or_a_full_refund_is_not_a_double_charge() -> None:
    events = [checkout(P1), succeeded(P1), renewal(P2, "2026-02-01T00:00:00Z"), succeeded(P2),
              renewal(P3, "2026-03-03T00:00:00Z"), succeeded(P3)]
    assert count_period_double_charges(events, [yk(P1, purpose=None), yk(P2), yk(P3)], []) == (0, [])
    same_period = [renewal(P1), succeeded(P1), renewal(P2), succeeded(P2)]
    assert count_period_double_charges(same_period, [yk(P1), yk(P2)], [yk_refund(P2)])[0] == 0
    assert count_period_double_charges(same_period, [yk(P1), yk(P2)], [yk_refund(P2, "100.00")])[0] == 1
    # the same instant spelled differently is the same period
    spelled = [renewal(P1, "2026-02-01T00:00:00Z"), succeeded(P1), renewal(P2, "2026-02-01T03:00:00+03:00"), succeeded(P2)]
    assert count_period_double_charges(spelled, [yk(P1), yk(P2)], [])[0] == 1


# ----------------------------------------------------------------------------- charges after decline


def test_a_renewal_that_succeeds_after_auto_renew_was_turned_off_is_counted() -> None:
    events = [renewal(P1), auto_renew(False), succeeded(P1), renewed(P1)]
    count, details = count_charges_after_decline(events)
    assert count == 1 and P1 in details[0] and "AutoRenewChanged" in details[0]


def test_cancel_at_period_end_in_flight_counts_and_a_full_refund_or_a_re_enable_does_not() -> None:
    cancel = (S, "SubscriptionCanceled", {"subscription_id": SUB, "mode": "at_period_end"})
    assert count_charges_after_decline([renewal(P1), cancel, succeeded(P1)])[0] == 1
    assert count_charges_after_decline([renewal(P1), cancel, succeeded(P1), refund_requested(P1, "299.00")])[0] == 0
    assert count_charges_after_decline([renewal(P1), cancel, succeeded(P1), refund_requested(P1, "100.00")])[0] == 1
    assert count_charges_after_decline([renewal(P1), auto_renew(False), auto_renew(True), succeeded(P1)])[0] == 0
    # a refund that failed for sure gave nothing back
    refund_failed = (S, "RefundFailed", {"subscription_id": SUB, "refund_id": "r1", "amount": RUB, "outcome_unknown": False})
    assert count_charges_after_decline([renewal(P1), cancel, succeeded(P1), refund_requested(P1, "299.00"),
                                        refund_failed])[0] == 1


def test_a_decline_after_the_charge_succeeded_or_a_purchase_is_not_counted() -> None:
    assert count_charges_after_decline([renewal(P1), succeeded(P1), auto_renew(False)])[0] == 0
    assert count_charges_after_decline([checkout(P1), auto_renew(False), succeeded(P1)])[0] == 0


# ----------------------------------------------------------------------------- charges that bought nothing


def test_a_kept_charge_that_bought_no_period_is_counted() -> None:
    events = [renewal(P1), succeeded(P1), renewed(P1), renewal(P2), succeeded(P2)]
    count, details = count_charges_without_a_period(events, [yk(P1), yk(P2)], [])
    assert count == 1 and "yk-2" in details[0]
    assert count_charges_without_a_period(events, [yk(P1), yk(P2)], [yk_refund(P2, "1.00")])[0] == 0


# ----------------------------------------------------------------------------- pay-now and upgrades (0117, 0119)


def recovery(pay: str, period_start: str = "2026-02-01T00:00:00Z") -> tuple[str, str, dict[str, Any]]:
    return S, "RecoveryStarted", {"subscription_id": SUB, "payment_id": pay, "amount": RUB, "period_start": period_start}


def upgrade(pay: str, replaces: str = "2026-01-01T00:00:00Z") -> tuple[str, str, dict[str, Any]]:
    return S, "UpgradeStarted", {"subscription_id": SUB, "payment_id": pay, "amount": RUB, "replaces_period_start": replaces}


def switched(pay: str | None) -> tuple[str, str, dict[str, Any]]:
    return S, "PlanSwitched", {"subscription_id": SUB, "payment_id": pay}


def test_a_kept_recovery_and_a_kept_renewal_of_one_period_are_a_double_charge() -> None:
    """Pay-now pays the period the failed renewal was for: after a decline it is the one charge of it."""
    declined_then_paid = [checkout(P1), succeeded(P1), renewal(P2), failed(P2), recovery(P3), succeeded(P3)]
    payments = [yk(P1, purpose=None), yk(P2, "canceled"), yk(P3, purpose="recovery")]
    assert count_period_double_charges(declined_then_paid, payments, []) == (0, [])
    both = [checkout(P1), succeeded(P1), renewal(P2), succeeded(P2), recovery(P3), succeeded(P3)]  # the same period_start
    count, details = count_period_double_charges(both, [yk(P1, purpose=None), yk(P2), yk(P3, purpose="recovery")], [])
    assert count == 1 and "recovery" in details[0]
    # a recovery refunded in full (it came too late) is no double charge
    assert count_period_double_charges(both, [yk(P1, purpose=None), yk(P2), yk(P3, purpose="recovery")], [yk_refund(P3)])[0] == 0


def test_an_upgrade_charge_is_a_legitimate_second_charge_in_its_period_but_two_are_not() -> None:
    events = [checkout(P1), succeeded(P1), upgrade(P2), succeeded(P2), switched(P2)]
    assert count_period_double_charges(events, [yk(P1, purpose=None), yk(P2, purpose="upgrade")], []) == (0, [])
    after_renewal = [checkout(P1), succeeded(P1), renewal(P2), succeeded(P2), upgrade(P3, "2026-02-01T00:00:00Z"), succeeded(P3)]
    assert count_period_double_charges(after_renewal, [yk(P1, purpose=None), yk(P2), yk(P3, purpose="upgrade")], [])[0] == 0
    twice = [checkout(P1), succeeded(P1), upgrade(P2), failed(P2), upgrade(P3), succeeded(P3)]
    assert count_period_double_charges(twice, [yk(P1, purpose=None), yk(P2, "canceled", "upgrade"), yk(P3, purpose="upgrade")], [])[0] == 0
    kept_twice = [checkout(P1), succeeded(P1), upgrade(P2), succeeded(P2), upgrade(P3), succeeded(P3)]
    assert count_period_double_charges(kept_twice, [yk(P1, purpose=None), yk(P2, purpose="upgrade"), yk(P3, purpose="upgrade")], [])[0] == 1
    # a renewal started while the upgrade's charge was unsettled (the product forbids it) is counted with it
    racing = [checkout(P1), succeeded(P1), upgrade(P2), renewal(P3), succeeded(P2), succeeded(P3)]
    assert count_period_double_charges(racing, [yk(P1, purpose=None), yk(P2, purpose="upgrade"), yk(P3)], [])[0] == 1


def test_an_upgrade_payment_buys_its_period_through_plan_switched() -> None:
    events = [checkout(P1), succeeded(P1), (S, "SubscriptionActivated", {"subscription_id": SUB, "payment_id": P1}),
              upgrade(P2), succeeded(P2)]
    payments = [yk(P1, purpose=None), yk(P2, purpose="upgrade")]
    count, details = count_charges_without_a_period(events, payments, [])
    assert count == 1 and "upgrade" in details[0]
    assert count_charges_without_a_period([*events, switched(P2)], payments, []) == (0, [])
    assert count_charges_without_a_period([*events, switched(None)], payments, [])[0] == 1  # no payment named: P2 bought nothing


# ----------------------------------------------------------------------------- purchases per user


def charge(pay: str, user: str = "u1", purpose: str | None = None, status: str = "succeeded", value: str = "299.00",
           command: str | None = None) -> dict[str, Any]:
    meta = {"subscription_id": SUB, "payment_id": pay, "user_id": user, "command_id": command or f"cmd-{pay[-1]}",
            **({"purpose": purpose} if purpose else {})}
    return {"id": f"yk-{pay[-1]}", "status": status, "amount": {"value": value, "currency": "RUB"}, "metadata": meta}


def test_only_purchases_count_per_user_not_renewals_recoveries_or_upgrades() -> None:
    one_purchase = [charge(P1), charge(P2, purpose="upgrade"), charge(P3, purpose="recovery")]
    assert count_double_purchases(one_purchase, []) == (0, [])
    assert count_double_purchases([charge(P1), charge(P2, purpose="renewal")], []) == (0, [])
    count, details = count_double_purchases([charge(P1), charge(P2, purpose="purchase"), charge(P3, "u2")], [])
    assert count == 1 and "u1" in details[0]
    assert count_double_purchases([charge(P1), charge(P2)], [yk_refund(P2)])[0] == 0  # refunded in full
    assert count_double_purchases([charge(P1), charge(P2)], [yk_refund(P2, "1.00")])[0] == 1
    assert count_double_purchases([charge(P1), charge(P2, status="canceled")], [])[0] == 0


# ----------------------------------------------------------------------------- promo codes (0121)

CODE = "SALE"


def created(limit: int | None) -> tuple[str, str, dict[str, Any]]:
    return f"promo-{CODE}", "PromoCodeCreated", {"code": CODE, "percent_off": 10, "periods": 1, "max_redemptions": limit}


def redeemed(pay: str, user: str = "u1") -> tuple[str, str, dict[str, Any]]:
    return f"promo-{CODE}", "PromoCodeRedeemed", {"code": CODE, "user_id": user, "subscription_id": SUB, "payment_id": pay}


def released(pay: str, user: str = "u1") -> tuple[str, str, dict[str, Any]]:
    return f"promo-{CODE}", "PromoCodeReleased", {"code": CODE, "user_id": user, "subscription_id": SUB, "payment_id": pay,
                                                 "reason": "declined"}


def promo_checkout(pay: str) -> tuple[str, str, dict[str, Any]]:
    return S, "CheckoutStarted", {"subscription_id": SUB, "payment_id": pay, "amount": RUB, "promo": {"code": CODE}}


def test_uses_held_at_once_beyond_the_limit_are_counted() -> None:
    events = [created(2), redeemed(P1, "u1"), redeemed(P2, "u2"), redeemed(P3, "u3")]
    count, details = count_promo_uses_beyond_limit(events, [])
    assert count == 1 and "limit 2" in details[0]
    # a released use is free again: three customers, never more than two at once
    assert count_promo_uses_beyond_limit([created(2), redeemed(P1, "u1"), redeemed(P2, "u2"), released(P2, "u2"),
                                          redeemed(P3, "u3")], []) == (0, [])
    assert count_promo_uses_beyond_limit([created(None), redeemed(P1, "u1"), redeemed(P2, "u2")], []) == (0, [])


def test_a_released_use_whose_checkout_was_paid_after_all_counts_against_the_limit() -> None:
    events = [created(1), promo_checkout(P1), redeemed(P1, "u1"), released(P1, "u1"), promo_checkout(P2), redeemed(P2, "u2")]
    payments = [charge(P1, "u1", value="269.10"), charge(P2, "u2", value="269.10")]
    count, _ = count_promo_uses_beyond_limit(events, payments)
    assert count == 1
    payments[0]["status"] = "canceled"  # really declined: the release was right
    assert count_promo_uses_beyond_limit(events, payments) == (0, [])


def test_a_customer_using_one_code_twice_is_counted() -> None:
    count, details = count_promo_uses_beyond_limit([created(5), redeemed(P1, "u1"), redeemed(P2, "u1")], [])
    assert count == 1 and "u1" in details[0]
    assert count_promo_uses_beyond_limit([created(5), redeemed(P1, "u1"), released(P1, "u1"), redeemed(P2, "u1")], []) == (0, [])


def test_the_expected_charge_is_the_price_less_the_discount_rounded_down_and_at_least_one_rouble() -> None:
    assert expected_charge_minor(29900, None) == 29900
    assert expected_charge_minor(29900, Promo("P15", 1, percent_off=15)) == 25415  # 44.85 off
    assert expected_charge_minor(999, Promo("P15", 1, percent_off=15)) == 850  # 1.4985 off → 1.49 (down)
    assert expected_charge_minor(29900, Promo("A50", 1, amount_off="50.00")) == 24900
    assert expected_charge_minor(29900, Promo("A500", 1, amount_off="500.00")) == 100  # never below 1 ₽


def test_a_purchase_charged_other_than_its_discounted_price_is_counted() -> None:
    promos = {"P15": Promo("P15", 1, percent_off=15)}
    purchases = {"cmd-1": (PLAN_ID, "P15"), "cmd-2": (PLAN_ID, None)}  # by the purchase's command id
    good = [charge(P1, "u1", value="254.15"), charge(P2, "u2", value=PLAN_PRICE), charge(P3, "u1", "renewal", value="299.00")]
    assert count_purchase_amount_mismatches(good, purchases, promos) == (0, [])
    bad = [charge(P1, "u1", value="299.00"), charge(P2, "u2", value="254.15", status="pending"), charge(P3, "u9", value="1.00")]
    count, details = count_purchase_amount_mismatches(bad, purchases, promos)
    assert count == 2 and "expected 25415" in details[0]


def test_a_rebuy_without_the_code_is_judged_by_its_own_request() -> None:
    """Found in a chaos run (seed 1160880236): a user bought with CHAOS-AMT (249 ₽), the subscription
    expired, and the user bought again without a code (299 ₽, right). Judged by the user's first
    request, the second charge was counted as a mismatch."""
    promos = {"A50": Promo("A50", 1, amount_off="50.00")}
    purchases = {"cmd-buy-1": (PLAN_ID, "A50"), "cmd-buy-2": (PLAN_ID, None)}
    charges = [charge(P1, "u1", value="249.00", command="cmd-buy-1"), charge(P2, "u1", value="299.00", command="cmd-buy-2")]
    assert count_purchase_amount_mismatches(charges, purchases, promos) == (0, [])
    swapped = [charge(P1, "u1", value="299.00", command="cmd-buy-1"), charge(P2, "u1", value="249.00", command="cmd-buy-2")]
    assert count_purchase_amount_mismatches(swapped, purchases, promos)[0] == 2


def test_a_charge_given_up_on_and_later_found_declined_no_longer_joins_the_next_periods() -> None:
    """Found in a chaos run (seed 1872480285): a renewal whose create was never answered is given up
    on (PaymentFailed.outcome_unknown); YooKassa's late answer "canceled" is recorded as
    PaymentCreated{status: canceled}. Renewals of later periods are not the same period again."""
    late_cancel = (S, "PaymentCreated", {"subscription_id": SUB, "payment_id": P1, "status": "canceled"})
    events = [renewal(P1, "2026-02-01T00:00:00Z"), failed(P1, unknown=True), late_cancel,
              renewal(P2, "2026-03-03T00:00:00Z"), succeeded(P2), renewal(P3, "2026-04-02T00:00:00Z"), succeeded(P3)]
    assert count_period_double_charges(events, [yk(P1, "canceled"), yk(P2), yk(P3)], []) == (0, [])
    # still unanswered (or pending): the later charges may be the same renewal tried again
    pending = (S, "PaymentCreated", {"subscription_id": SUB, "payment_id": P1, "status": "pending"})
    still_open = [events[0], events[1], pending, *events[3:]]
    assert count_period_double_charges(still_open, [yk(P1, "pending"), yk(P2), yk(P3)], [])[0] == 1
