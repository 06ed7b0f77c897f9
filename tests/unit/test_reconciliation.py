"""Reconciliation, pure: a dashboard refund recorded as a fact, and the classification of differences.

The account is driven through `decide`/`resolve` as in `test_processor_domain.py`; YooKassa's side
is plain values, as the gateway maps them. The real sandbox and processes are in
`tests/e2e/test_reconciliation_e2e.py`.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import schemas as s
from payment_processor.domain.outside import dashboard_refund_id
from payment_processor.domain.provider import ProviderPayment, ProviderRefund
from payment_processor.domain.reconcile import Window, compare, our_objects, with_command_ids
from tests.unit.test_processor_domain import STREAM, T0, UNKNOWN, USER, Account, pid, terminal, types

RUB = s.Money.from_minor


def dashboard(n: int, amount: str, payment: int = 1, status: str = "succeeded") -> ProviderRefund:
    return ProviderRefund(
        id=f"3a8e0000-00d0-5000-9000-{n:012d}", status=status, amount=s.Money(amount=amount), payment_id=pid(payment),
        created_at=T0 + timedelta(minutes=5),
    )


def _give_up_on_a_refund(acc: Account, sub_id: uuid.UUID, amount: str):
    """An operator's refund whose create YooKassa never answers: given up after the key's window,
    its amount stays reserved (decision 0104)."""
    acc.run(s.AdminRefund(subscription_id=sub_id, amount=s.Money(amount=amount), reason="x"), UNKNOWN, actor="admin")
    refund = next(r for r in acc.state.refunds.values() if r.amount == s.Money(amount=amount) and r.provider_refund_id is None)
    acc.now += timedelta(hours=23, minutes=1)
    acc.run(s.SyncRefund(refund_id=refund.refund_id), actor="system")
    assert acc.state.refunds[refund.refund_id].outcome_unknown
    return refund


# --------------------------------------------------------------------------- a dashboard refund, recorded


def test_a_dashboard_refund_is_recorded_once_and_shrinks_what_is_refundable() -> None:
    acc = Account()
    sub_id = acc.active()
    payment_id = acc.state.subscriptions[sub_id].current_payment_id
    seen = dashboard(1, "100.00")
    events = acc.run(s.SyncRefund(provider_refund_id=seen.id, hint_status="succeeded"), seen, actor="provider")
    assert types(events) == ["RefundSucceeded", "CommandSucceeded"]
    recorded = events[0].data
    assert recorded.dashboard and recorded.refund_id == dashboard_refund_id(seen.id)
    assert recorded.payment_id == payment_id and recorded.customer is not None  # emailed like any refund
    assert recorded.amount == s.Money(amount="100.00")
    payment = acc.state.payments[payment_id]
    assert (payment.refunded_minor, payment.refundable_minor) == (10000, 19900)
    assert acc.state.subscriptions[sub_id].status == "active"  # like an admin refund: no cancel

    # the same refund heard again (a notification and a reconciliation, or a rerun): nothing new
    again = acc.run(s.SyncRefund(provider_refund_id=seen.id), actor="provider")
    assert types(again) == ["CommandSucceeded"] and acc.state.payments[payment_id].refunded_minor == 10000

    # and the customer's own cancel refunds only what is left of the prorated amount
    too_much = acc.run(s.AdminRefund(subscription_id=sub_id, amount=s.Money(amount="199.01"), reason="x"), actor="admin")
    assert too_much[0].data.code == "amount_exceeds_refundable"


def test_a_refund_of_someone_elses_payment_is_still_not_found() -> None:
    acc = Account()
    acc.active()
    foreign = dashboard(2, "10.00", payment=77)
    events = acc.run(s.SyncRefund(provider_refund_id=foreign.id), foreign, actor="provider")
    assert types(events) == ["CommandRejected"] and events[0].data.code == "refund_not_found"


def test_a_pending_or_canceled_dashboard_refund_records_nothing_yet() -> None:
    acc = Account()
    acc.active()
    for status in ("pending", "canceled"):
        events = acc.run(s.SyncRefund(provider_refund_id=dashboard(3, "10.00").id), dashboard(3, "10.00", status=status), actor="provider")
        assert types(events) == ["CommandSucceeded"] and not acc.state.refunds


def test_not_recorded_while_a_refund_of_ours_on_the_payment_has_no_yookassa_id() -> None:
    """YooKassa's refund may be ours whose create answer was lost: recording it would count it twice."""
    acc = Account()
    sub_id = acc.active()
    acc.run(s.AdminRefund(subscription_id=sub_id, amount=s.Money(amount="50.00"), reason="x"), UNKNOWN, actor="admin")
    maybe_ours = dashboard(4, "50.00")
    events = acc.run(s.SyncRefund(provider_refund_id=maybe_ours.id), maybe_ours, actor="provider")
    assert types(events) == ["CommandSucceeded"] and "no YooKassa id yet" in terminal(events).outcome.message
    assert all(not r.dashboard for r in acc.state.refunds.values())


def test_not_recorded_before_the_payments_success_is() -> None:
    """A success never heard (pending in our books) may be refunded in full once heard: the books first."""
    acc = Account()
    sub_id, _ = acc.purchase(ProviderPayment(id=pid(1), status="pending", confirmation_url="http://pay/1"))
    seen = dashboard(7, "100.00")
    events = acc.run(s.SyncRefund(provider_refund_id=seen.id), seen, actor="provider")
    assert types(events) == ["CommandSucceeded"] and "not recorded yet" in terminal(events).outcome.message
    assert not acc.state.refunds


def test_a_late_refund_is_not_matched_to_one_given_up_while_an_equal_one_is_in_flight() -> None:
    """Two equal refunds of ours: the first given up, the second's create lost after YooKassa made it.
    YooKassa's refund is the second's answer; matching it to the first recorded it twice."""
    acc = Account()
    sub_id = acc.active()
    payment_id = acc.state.subscriptions[sub_id].current_payment_id
    one = s.Money(amount="1.00")
    acc.run(s.AdminRefund(subscription_id=sub_id, amount=one, reason="x"), UNKNOWN, actor="admin")
    first = next(iter(acc.state.refunds.values()))
    acc.now += timedelta(hours=23, minutes=1)
    acc.run(s.SyncRefund(refund_id=first.refund_id), actor="system")  # given up: reserved
    acc.run(s.AdminRefund(subscription_id=sub_id, amount=one, reason="x"), UNKNOWN, actor="admin")
    second = next(r for r in acc.state.refunds.values() if r.refund_id != first.refund_id)
    theirs = ProviderRefund(id=dashboard(8, "1.00").id, status="succeeded", amount=one, payment_id=pid(1))
    heard = acc.run(s.SyncRefund(provider_refund_id=theirs.id), theirs, actor="provider")
    assert types(heard) == ["CommandSucceeded"]  # not matched, not recorded: ours in flight may be it
    acc.run(s.SyncRefund(refund_id=second.refund_id), theirs, actor="system")  # its create's answer: that refund
    recorded = [r for r in acc.state.refunds.values() if r.provider_refund_id == theirs.id]
    assert [r.refund_id for r in recorded] == [second.refund_id]
    assert acc.state.payments[payment_id].refunded_minor == 100


def test_a_refund_given_up_on_that_no_longer_fits_is_released() -> None:
    """Ours given up (amount kept reserved) + a full dashboard refund > paid: ours was never made."""
    acc = Account()
    sub_id = acc.active()
    payment_id = acc.state.subscriptions[sub_id].current_payment_id
    refund = _give_up_on_a_refund(acc, sub_id, "100.00")
    whole = dashboard(5, "299.00")
    events = acc.run(s.SyncRefund(provider_refund_id=whole.id), whole, actor="provider")
    assert types(events) == ["RefundSucceeded", "RefundFailed", "CommandSucceeded"]
    assert events[1].data.refund_id == refund.refund_id and events[1].data.customer is None
    payment = acc.state.payments[payment_id]
    assert (payment.refunded_minor, payment.reserved_minor) == (29900, 0)


def test_not_recorded_while_a_pending_refund_of_ours_and_it_would_exceed_the_payment() -> None:
    """Found by the model: ours pending in our books (canceled at YooKassa, not heard yet) plus a large
    dashboard refund put more than the payment in the books as refunded or reserved — and a refund
    given up beside them was released as "never made" on that wrong sum. Ours settles first."""
    acc = Account()
    sub_id = acc.active()
    payment_id = acc.state.subscriptions[sub_id].current_payment_id
    given_up = _give_up_on_a_refund(acc, sub_id, "1.00")
    ours = ProviderRefund(id="3a8e0000-0000-5000-8000-000000000009", status="pending", amount=s.Money(amount="250.00"), payment_id=pid(1))
    acc.run(s.AdminRefund(subscription_id=sub_id, amount=s.Money(amount="250.00"), reason="x"), ours, actor="admin")
    pending = next(r for r in acc.state.refunds.values() if r.refund_id != given_up.refund_id)
    theirs = dashboard(10, "250.00")  # YooKassa canceled ours; an operator refunded in the dashboard instead
    heard = acc.run(s.SyncRefund(provider_refund_id=theirs.id), theirs, actor="provider")
    assert types(heard) == ["CommandSucceeded"] and "still pending" in terminal(heard).outcome.message
    payment = acc.state.payments[payment_id]
    assert payment.refunded_minor + payment.reserved_minor <= payment.amount.minor
    assert acc.state.refunds[given_up.refund_id].outcome_unknown  # still reserved, not released as "never made"
    # the janitor reads ours: canceled. The next reconciliation records the dashboard refund.
    canceled = ProviderRefund(id=ours.id, status="canceled", amount=ours.amount, payment_id=pid(1), cancellation_reason="canceled_by_merchant")
    acc.run(s.SyncRefund(refund_id=pending.refund_id), canceled, actor="system")
    recorded = acc.run(s.SyncRefund(provider_refund_id=theirs.id), theirs, actor="provider")
    assert "RefundSucceeded" in types(recorded)
    payment = acc.state.payments[payment_id]
    assert (payment.refunded_minor, payment.reserved_minor) == (25000, 100)  # the given-up 1.00 still fits: kept


def test_a_given_up_refund_of_the_same_amount_is_the_late_answer_not_a_dashboard_refund() -> None:
    acc = Account()
    sub_id = acc.active()
    acc.run(s.AdminRefund(subscription_id=sub_id, amount=s.Money(amount="100.00"), reason="x"), UNKNOWN, actor="admin")
    refund = next(iter(acc.state.refunds.values()))
    acc.now += timedelta(hours=23, minutes=1)
    acc.run(s.SyncRefund(refund_id=refund.refund_id), actor="system")
    late = dashboard(6, "100.00")
    events = acc.run(s.SyncRefund(provider_refund_id=late.id), late, actor="provider")
    assert types(events) == ["RefundCreated", "RefundSucceeded", "CommandSucceeded"]
    assert not events[1].data.dashboard and events[1].data.refund_id == refund.refund_id


# --------------------------------------------------------------------------- the comparison

WINDOW = Window(T0 - timedelta(hours=1), T0 + timedelta(hours=1))


def _ours(acc: Account) -> list:
    return our_objects(STREAM, acc.log)


def _theirs_payment(acc: Account, payment_id: uuid.UUID, **changes) -> ProviderPayment:
    p = acc.state.payments[payment_id]
    view = {
        "id": p.provider_payment_id, "status": p.status, "amount": p.amount, "created_at": T0,
        "metadata": {"user_id": USER, "payment_id": str(payment_id)},
    }
    return ProviderPayment(**{**view, **changes})


def test_our_objects_are_the_folded_payments_and_refunds_with_a_yookassa_id() -> None:
    acc = Account()
    sub_id = acc.active()
    acc.run(s.SyncRefund(provider_refund_id=dashboard(1, "10.00").id), dashboard(1, "10.00"), actor="provider")
    ours = {(o.object_type, o.provider_id): o for o in _ours(acc)}
    payment_id = acc.state.subscriptions[sub_id].current_payment_id
    assert ours[("payment", pid(1))].our_id == payment_id and ours[("payment", pid(1))].status == "succeeded"
    refund = ours[("refund", dashboard(1, "10.00").id)]
    assert refund.status == "succeeded" and refund.amount == RUB(1000) and refund.provider_payment_id == pid(1)
    assert refund.known_since == T0 and refund.user_id == USER


def test_everything_agreeing_is_no_difference() -> None:
    acc = Account()
    sub_id = acc.active()
    theirs = [_theirs_payment(acc, acc.state.subscriptions[sub_id].current_payment_id)]
    assert compare(WINDOW, theirs, [], _ours(acc)) == []


def test_a_dashboard_refund_of_our_payment_is_a_fact_with_a_derived_command_id() -> None:
    acc = Account()
    sub_id = acc.active()
    theirs = [_theirs_payment(acc, acc.state.subscriptions[sub_id].current_payment_id)]
    refunds = [dashboard(1, "100.00"), dashboard(2, "5.00", status="pending"), dashboard(3, "5.00", status="canceled")]
    found = compare(WINDOW, theirs, refunds, _ours(acc))
    assert [(d.kind, d.object_type, d.provider_status) for d in found] == [("unknown_to_us", "refund", "succeeded"), ("unknown_to_us", "refund", "pending")]
    fact = found[0]
    assert isinstance(fact.fact, s.SyncRefund) and fact.fact.provider_refund_id == refunds[0].id and fact.user_id == USER
    assert fact.stream_id == STREAM
    assert found[1].fact is None  # pending: recorded once it succeeds


def test_fact_command_ids_are_the_same_on_a_rerun_and_move_on_only_past_an_ended_command() -> None:
    acc = Account()
    acc.active()
    found = compare(WINDOW, [], [dashboard(1, "100.00")], _ours(acc))
    first = with_command_ids(found, lambda cid: False)[0].command_id
    assert first is not None and with_command_ids(found, lambda cid: False)[0].command_id == first  # a rerun: the same id
    ended = {first}
    second = with_command_ids(found, ended.__contains__)[0].command_id
    assert second not in (None, first)  # that command ended without recording it: ask again
    exhausted = with_command_ids(found, lambda cid: True)[0]
    assert exhausted.fact is None and exhausted.command_id is None and "operator" in exhausted.detail


def test_no_fact_while_a_refund_of_ours_on_the_payment_has_no_yookassa_id() -> None:
    acc = Account()
    sub_id = acc.active()
    acc.run(s.AdminRefund(subscription_id=sub_id, amount=s.Money(amount="50.00"), reason="x"), UNKNOWN, actor="admin")
    theirs = [_theirs_payment(acc, acc.state.subscriptions[sub_id].current_payment_id)]
    found = compare(WINDOW, theirs, [dashboard(1, "50.00")], _ours(acc))
    assert [(d.kind, d.fact) for d in found] == [("unknown_to_us", None)] and "reconcile again" in found[0].detail


def test_a_payment_naming_ours_that_we_never_heard_of_goes_the_late_answer_way() -> None:
    acc = Account()
    acc.active()
    ours_never = uuid.uuid4()
    silent = ProviderPayment(
        id=pid(9), status="succeeded", amount=RUB(29900), created_at=T0, metadata={"user_id": USER, "payment_id": str(ours_never)}
    )
    stranger = ProviderPayment(id=pid(10), status="succeeded", amount=RUB(100), created_at=T0, metadata={"order": "42"})
    found = {d.provider_id: d for d in compare(WINDOW, [silent, stranger], [], _ours(acc))}
    assert isinstance(found[pid(9)].fact, s.SyncPayment) and found[pid(9)].fact.provider_payment_id == pid(9)
    assert found[pid(9)].user_id == USER and found[pid(9)].our_id == ours_never
    assert found[pid(10)].kind == "unknown_to_us" and found[pid(10)].fact is None


def test_status_and_amount_differences() -> None:
    acc = Account()
    sub_id = acc.active()
    payment_id = acc.state.subscriptions[sub_id].current_payment_id
    # YooKassa says canceled and 290 ₽ for a payment we recorded as succeeded for 299 ₽: an operator looks
    found = compare(WINDOW, [_theirs_payment(acc, payment_id, status="canceled", amount=RUB(29000))], [], _ours(acc))
    assert sorted(d.kind for d in found) == ["amount_differs", "status_differs"]
    assert all(d.fact is None for d in found)
    status = next(d for d in found if d.kind == "status_differs")
    assert (status.our_status, status.provider_status) == ("succeeded", "canceled")


def test_a_final_status_we_never_heard_is_a_fact() -> None:
    """A lost notification: ours still pending, YooKassa's succeeded."""
    acc = Account()
    sub_id, _ = acc.purchase(ProviderPayment(id=pid(1), status="pending", confirmation_url="http://pay/1"))
    payment_id = acc.state.subscriptions[sub_id].payment_ids[0]
    found = compare(WINDOW, [_theirs_payment(acc, payment_id, status="succeeded")], [], _ours(acc))
    assert [d.kind for d in found] == ["status_differs"]
    assert isinstance(found[0].fact, s.SyncPayment) and found[0].fact.payment_id == payment_id
    # still pending there too: the same (a customer on the payment page)
    assert compare(WINDOW, [_theirs_payment(acc, payment_id, status="waiting_for_capture")], [], _ours(acc)) == []


def test_ours_missing_at_yookassa_is_unknown_to_the_provider_only_inside_the_window() -> None:
    acc = Account()
    acc.active()
    found = compare(WINDOW, [], [], _ours(acc))
    assert [(d.kind, d.provider_id, d.fact) for d in found] == [("unknown_to_provider", pid(1), None)]
    later = Window(T0 + timedelta(hours=2), T0 + timedelta(hours=3))
    assert compare(later, [], [], _ours(acc)) == []


def test_objects_at_the_window_edge_match_instead_of_being_reported() -> None:
    """Created at YooKassa before the window, recorded by us inside it: listed with the margin, matched."""
    acc = Account()
    sub_id = acc.active()
    payment_id = acc.state.subscriptions[sub_id].current_payment_id
    before = _theirs_payment(acc, payment_id, created_at=WINDOW.since - timedelta(minutes=1))
    assert compare(WINDOW, [before], [], _ours(acc)) == []
    # and YooKassa's objects outside the window are not classified at all
    assert compare(Window(T0 + timedelta(hours=5), T0 + timedelta(hours=6)), [dashboard(1, "1.00")], [], []) == []


def test_the_cli_summary_names_every_difference(capsys) -> None:
    from payment_processor.entrypoints.reconcile import _print

    run = {"run_id": "r1", "status": "done", "window_start": "2026-12-05T00:00:00+00:00", "window_end": "2026-12-06T00:00:00+00:00",
           "payments_seen": 3, "refunds_seen": 1, "differences": 1, "recorded": 1}
    difference = {"status": "recorded", "kind": "unknown_to_us", "object_type": "refund", "provider_id": "3a8e-1", "our_status": None,
                  "provider_status": "succeeded", "our_amount_minor": None, "provider_amount_minor": 10000, "currency": "RUB",
                  "detail": "a refund made in YooKassa's dashboard."}
    _print({"run": run, "differences": [difference]})
    out = capsys.readouterr().out
    assert "run r1 done" in out and "1 differences, 1 recorded" in out
    assert "unknown_to_us" in out and "3a8e-1" in out and "- / 100.00 RUB" in out and "dashboard" in out
