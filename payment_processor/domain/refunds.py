"""YooKassa's view of a refund turned into events, and the prorated refund quote for canceling now."""


from __future__ import annotations

from datetime import datetime
from uuid import UUID

from rules.refunds import refund_amount
from schemas import (
    ReceiptRegistrationChanged,
    RefundCreated,
    RefundFailed,
    RefundStateUnknown,
    RefundSucceeded,
    RenewalStarted,
)

from payment_processor.domain.decision import Context, Emit, emit_failed, emit_succeeded
from payment_processor.domain.provider import (
    CreateRefund,
    FindRefund,
    ProviderOutcome,
    ProviderRefund,
    ProviderRefused,
    ProviderStep,
    ProviderUnknown,
    refund_request,
)
from payment_processor.domain.state import (
    FINAL_REFUND,
    AccountState,
    Payment,
    Refund,
    Subscription,
)


def refund_step(state: AccountState, refund: Refund) -> ProviderStep:
    if refund.provider_refund_id:
        return FindRefund(refund.refund_id, refund.provider_refund_id)
    sub = state.subscriptions.get(refund.subscription_id)
    return CreateRefund(refund.refund_id, refund.idempotence_key, refund_request(refund.intent, sub.plan_name if sub else "subscription"))


def _refund_failed(refund: Refund, reason: str, by: UUID, *, outcome_unknown: bool = False) -> Emit:
    return Emit(
        RefundFailed(
            refund_id=refund.refund_id,
            subscription_id=refund.subscription_id,
            amount=refund.amount,
            reason=reason[:500],
            customer=refund.intent.customer,
            outcome_unknown=outcome_unknown,
        ),
        by,
    )


def observe_refund(
    state: AccountState, refund: Refund, outcome: ProviderOutcome, ctx: Context, by: UUID
) -> tuple[list[Emit], ProviderStep | None, bool]:
    emits: list[Emit] = []
    if isinstance(outcome, ProviderUnknown) or (isinstance(outcome, ProviderRefused) and refund.provider_refund_id):
        if refund.provider_refund_id is None and refund.status != "unknown":
            emits.append(
                Emit(
                    RefundStateUnknown(refund_id=refund.refund_id, subscription_id=refund.subscription_id, detail=outcome.detail[:500]),
                    by,
                )
            )
        return emits, None, False
    if refund.status in FINAL_REFUND and not (refund.outcome_unknown and isinstance(outcome, ProviderRefund)):
        if isinstance(outcome, ProviderRefund) and refund.status == "succeeded":
            emits += receipt_registration_moved(refund.subscription_id, refund.receipt_registration, outcome.receipt_registration, by, refund_id=refund.refund_id)
        return emits, None, True
    if isinstance(outcome, ProviderRefused):
        emits.append(_refund_failed(refund, f"provider_refused:{outcome.code}: {outcome.detail}", by, outcome_unknown=outcome.outcome_unknown))
    else:
        assert isinstance(outcome, ProviderRefund)
        if refund.provider_refund_id is None:
            emits.append(
                Emit(
                    RefundCreated(
                        refund_id=refund.refund_id,
                        subscription_id=refund.subscription_id,
                        provider_refund_id=outcome.id,
                        status=outcome.status,
                    ),
                    by,
                )
            )
        if outcome.status == "succeeded":
            emits.append(
                Emit(
                    RefundSucceeded(
                        refund_id=refund.refund_id,
                        subscription_id=refund.subscription_id,
                        payment_id=refund.payment_id,
                        provider_refund_id=outcome.id,
                        amount=refund.amount,
                        days_used=refund.intent.days_used,
                        customer=refund.intent.customer,
                        receipt_registration=registration(outcome.receipt_registration),
                    ),
                    by,
                )
            )
        elif outcome.status == "canceled":
            emits.append(_refund_failed(refund, outcome.cancellation_reason or "canceled", by))
    terminal = refund_origin_terminal(state, refund, outcome)
    if terminal:
        emits.append(terminal)
    settled = isinstance(outcome, ProviderRefused) or (isinstance(outcome, ProviderRefund) and outcome.status in FINAL_REFUND)
    return emits, None, settled


def registration(value: str | None) -> str | None:
    """YooKassa's receipt_registration, when it is one of the values we know (else not recorded)."""
    return value if value in ("pending", "succeeded", "canceled") else None


def receipt_registration_moved(
    subscription_id: UUID, recorded: str | None, seen: str | None, by: UUID, *, payment_id: UUID | None = None, refund_id: UUID | None = None
) -> list[Emit]:
    """A settled payment or refund read again: record a receipt registration that moved on."""
    seen = registration(seen)
    if seen is None or seen == recorded:
        return []
    changed = ReceiptRegistrationChanged(subscription_id=subscription_id, payment_id=payment_id, refund_id=refund_id, status=seen)  # type: ignore[arg-type]
    return [Emit(changed, by)]


def refund_origin_terminal(state: AccountState, refund: Refund, outcome: ProviderOutcome) -> Emit | None:
    origin = refund.origin_command_id
    if origin in state.terminal:
        return None
    ctype = refund.intent.command_type or "CancelSubscription"
    failed = isinstance(outcome, ProviderRefused) or (isinstance(outcome, ProviderRefund) and outcome.status == "canceled")
    if failed:
        why = outcome.detail if isinstance(outcome, ProviderRefused) else (outcome.cancellation_reason or "canceled")  # type: ignore[union-attr]
        if ctype == "AdminRefund":
            return emit_failed(origin, ctype, f"YooKassa did not make the refund: {why}")
        message = f"Canceled, but YooKassa did not make the refund ({why}); support will contact you."
    else:
        status = outcome.status if isinstance(outcome, ProviderRefund) else "pending"
        message = "Refunded." if status == "succeeded" else "The refund is on its way."
    return emit_succeeded(
        origin,
        ctype,
        subscription_id=refund.subscription_id,
        payment_id=refund.payment_id,
        refund_id=refund.refund_id,
        refund_amount=refund.amount,
        message=message,
    )


def paid_period(payment: Payment) -> tuple[datetime, int]:
    """When the period this payment paid for started, and its length in days."""
    intent = payment.intent
    if isinstance(intent, RenewalStarted):
        return intent.period_start, max((intent.period_end - intent.period_start).days, 1)
    assert payment.paid_at is not None
    return payment.paid_at, intent.period_days


def refund_quote(state: AccountState, sub: Subscription, now: datetime) -> tuple[Payment | None, int, int | None, int | None]:
    """(the payment to refund, amount in kopecks, days used, days in period) for canceling now."""
    payment = state.payments.get(sub.current_payment_id) if sub.current_payment_id else None
    if payment is None or payment.status != "succeeded" or sub.granted:
        return None, 0, None, None
    start, days = paid_period(payment)
    quote = refund_amount(payment.amount.minor, start, days, now, payment.refunded_minor + payment.reserved_minor)
    return payment, quote.amount_minor, quote.days_used, quote.days_in_period
