"""Money YooKassa moved without us asking: a refund made in its dashboard, recorded as a fact.

An operator can refund a payment in YooKassa's dashboard. Nothing of ours asked for it, so no
RefundRequested precedes it and no Idempotence-Key of ours names it; we hear of it through a
`refund.succeeded` notification or a reconciliation run (docs/decisions/0122). Both arrive as a
SyncRefund naming only YooKassa's refund id; the processor reads the refund from YooKassa's API
(never trusting a notification body) and, when the refunded payment is one of this account's,
records it here: a `RefundSucceeded` with `dashboard = true`, so the refundable amount shrinks,
the read models show it and the customer is emailed like for any refund.

It is not recorded while a refund of ours on the same payment has no YooKassa id yet: YooKassa's
refund may be that one (our create's answer was lost), and recording it twice would refund the
books twice. Nor while a pending refund of ours and this one together exceed the payment: one of
them was canceled at YooKassa, and the books must not hold both meanwhile. Ours settles first (the
janitor), then the next notification or reconciliation run records what is left.
"""

from __future__ import annotations

from uuid import UUID

from schemas import Envelope, RefundFailed, RefundSucceeded, derived_id

from payment_processor.domain.decision import Context, Decision, Emit, command_id_of, emit_succeeded
from payment_processor.domain.provider import ProviderRefund
from payment_processor.domain.state import FINAL_REFUND, AccountState, Payment, Refund


def dashboard_refund_id(provider_refund_id: str) -> UUID:
    """Our id of a dashboard refund: derived from YooKassa's, so whoever records it names it alike."""
    return derived_id("refund", "dashboard", provider_refund_id)


def record_dashboard_refund(state: AccountState, command: Envelope, seen: ProviderRefund, ctx: Context) -> Decision | None:
    """Events for YooKassa's refund `seen` that no refund of ours is; None when its payment is not ours."""
    cid = command_id_of(command)
    payment = state.payment_by_provider_id(seen.payment_id) if seen.payment_id else None
    if payment is None:
        return None
    if state.refund_by_provider_id(seen.id) is not None:
        return Decision([] if cid in state.terminal else [emit_succeeded(cid, command.type, payment_id=payment.payment_id, message="This refund is already recorded.")])
    if seen.status != "succeeded" or seen.amount is None:
        message = (
            "YooKassa canceled that refund: no money moved, nothing to record."
            if seen.status == "canceled"
            else f"YooKassa's refund {seen.id} is {seen.status}: it is recorded once it succeeds."
        )
        return Decision([emit_succeeded(cid, command.type, payment_id=payment.payment_id, message=message)])
    if payment.status != "succeeded":
        # Its success is not in our books yet (a lost notification): once it is, a late success
        # nobody wants is refunded in full — recording this first would refund the books twice.
        message = "The refunded payment's success is not recorded yet: this refund is recorded once it is."
        return Decision([emit_succeeded(cid, command.type, payment_id=payment.payment_id, message=message)])
    if _ours_without_an_id(state, payment):
        message = (
            "A refund of ours on this payment has no YooKassa id yet and may be this one: nothing is recorded "
            "until ours is settled; the next reconciliation records what is left."
        )
        return Decision([emit_succeeded(cid, command.type, payment_id=payment.payment_id, message=message)])
    if _ours_pending_beyond_the_payment(state, payment, seen.amount.minor):
        message = (
            "A refund of ours on this payment is still pending and, with this one, more than the payment would be "
            "refunded: YooKassa must have canceled one of them. Nothing is recorded until ours is settled; the next "
            "reconciliation records what is left."
        )
        return Decision([emit_succeeded(cid, command.type, payment_id=payment.payment_id, message=message)])
    sub = state.subscriptions.get(payment.subscription_id)
    refund_id = dashboard_refund_id(seen.id)
    customer = (sub.customer if sub else None) or state.customer or payment.customer
    emits = [
        Emit(
            RefundSucceeded(
                refund_id=refund_id,
                subscription_id=payment.subscription_id,
                payment_id=payment.payment_id,
                provider_refund_id=seen.id,
                amount=seen.amount,
                customer=customer,
                dashboard=True,
            ),
            cid,
        )
    ]
    emits += _release_impossible(state, payment, seen.amount.minor, cid)
    emits.append(
        emit_succeeded(
            cid,
            command.type,
            subscription_id=payment.subscription_id,
            payment_id=payment.payment_id,
            refund_id=refund_id,
            refund_amount=seen.amount,
            message="Recorded a refund made in YooKassa's dashboard.",
        )
    )
    return Decision(emits)


def _ours_pending_beyond_the_payment(state: AccountState, payment: Payment, new_minor: int) -> bool:
    """A refund of ours on the payment is pending (not given up) and the books cannot hold it beside
    this one. YooKassa never refunds more than was paid, so one of ours is canceled there — or this
    one would not exist — but which is not known until ours is read again (the janitor does)."""
    if payment.refunded_minor + payment.reserved_minor + new_minor <= payment.amount.minor:
        return False
    return any(
        r.payment_id == payment.payment_id and r.status not in FINAL_REFUND and not r.outcome_unknown
        for r in state.refunds.values()
    )


def _ours_without_an_id(state: AccountState, payment: Payment) -> bool:
    return any(
        r.payment_id == payment.payment_id and r.provider_refund_id is None and r.status not in FINAL_REFUND
        for r in state.refunds.values()
    )


def _release_impossible(state: AccountState, payment: Payment, new_minor: int, cid: UUID) -> list[Emit]:
    """Refunds of ours given up without an answer (their amount kept reserved, decision 0104) that
    YooKassa's books leave no room for once this refund counts: they were never made.

    YooKassa never refunds more than was paid, so if what it certainly refunded (ours that
    succeeded, dashboard refunds, ours still pending there) plus a given-up one exceeds the
    payment, that one does not exist. Released newest first until the rest fits.
    """
    given_up: list[Refund] = sorted(
        (r for r in state.refunds.values() if r.payment_id == payment.payment_id and r.outcome_unknown),
        key=lambda r: r.requested_at,
        reverse=True,
    )
    if not given_up:
        return []
    held = sum(r.amount.minor for r in given_up)
    room = payment.amount.minor - payment.refunded_minor - new_minor - (payment.reserved_minor - held)
    released: list[Emit] = []
    for refund in given_up:
        if held <= room:
            break
        held -= refund.amount.minor
        released.append(
            Emit(
                RefundFailed(
                    refund_id=refund.refund_id,
                    subscription_id=refund.subscription_id,
                    amount=refund.amount,
                    reason="never_made: YooKassa's refunds of the payment leave no room for it",
                    customer=None,  # the customer was told it failed when we gave up; no second email
                    outcome_unknown=False,
                ),
                cid,
            )
        )
    return released
