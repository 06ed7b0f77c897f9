"""The chaos run's new counts on synthetic events and YooKassa payments: each one can count.

A counter that only ever says 0 proves nothing; these build the violation it looks for (and the
look-alikes it must not count) from plain event data and sandbox payment records.
"""

from __future__ import annotations

from typing import Any

from bench.chaos import count_charges_after_decline, count_charges_without_a_period, count_period_double_charges

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
