"""YooKassa's view of a refund turned into events, and the prorated refund quote for canceling now."""


from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from rules.refunds import refund_amount
from schemas import (
    Money,
    ReceiptRegistrationChanged,
    RefundCreated,
    RefundFailed,
    RefundStateUnknown,
    RecoveryStarted,
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


def siblings(state: AccountState, refund: Refund) -> list[Refund]:
    """The other refunds the same command asked for (canceling a period an upgrade paid for with
    two payments refunds each of them, docs/decisions/0119)."""
    return [
        r for r in state.refunds.values()
        if r.origin_command_id == refund.origin_command_id and r.refund_id != refund.refund_id
    ]


def unasked_sibling(state: AccountState, refund: Refund) -> Refund | None:
    """A refund of the same command YooKassa has not been asked about yet: ask it next."""
    return next((r for r in siblings(state, refund) if r.status == "requested" and r.provider_refund_id is None), None)


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
    others = siblings(state, refund)
    if any(r.status == "requested" for r in others):
        return None  # the command ends once YooKassa has been asked about each of its refunds
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
        refund_id=min([refund, *others], key=lambda r: r.requested_at).refund_id if others else refund.refund_id,
        refund_amount=Money.from_minor(refund.amount.minor + sum(r.amount.minor for r in others), refund.amount.currency),
        message=message,
    )


def paid_period(payment: Payment, renewed_from: datetime | None = None) -> tuple[datetime, int]:
    """When the period this payment paid for started, and its length in days.

    A renewal or pay-now renews from the period end current when it succeeds (`SubscriptionRenewed`,
    `renewed_from`), which is later than its intent's `period_start` when an operator extended the
    subscription while the charge was open (0117): the days in between were the extension, not the
    paid period, so they are not used days of it."""
    intent = payment.intent
    if isinstance(intent, (RenewalStarted, RecoveryStarted)):
        return renewed_from or intent.period_start, max((intent.period_end - intent.period_start).days, 1)
    assert payment.paid_at is not None
    return payment.paid_at, intent.period_days


@dataclass(frozen=True, slots=True)
class PeriodQuote:
    """The refund of the current period's unused days, and the payments it is taken from."""

    amount_minor: int
    days_used: int | None = None
    days_in_period: int | None = None
    parts: tuple[tuple[Payment, int], ...] = ()
    """(payment, kopecks from it), newest payment first; the sum is `amount_minor`."""


def period_quote(state: AccountState, sub: Subscription, now: datetime) -> PeriodQuote:
    """What canceling now returns for the current period (and what an upgrade credits):
    `rules.refunds.refund_amount` on what was actually paid for the period, less what was already
    refunded or reserved of it, taken from the period's payments newest first."""
    funding = [(state.payments.get(f.payment_id), f) for f in sub.funding]
    funding = [(p, f) for p, f in funding if p is not None and p.status == "succeeded"]
    if not funding or sub.granted:
        return PeriodQuote(0)
    if sub.switched_period:
        assert sub.period_start is not None
        start, days = sub.period_start, sub.period_days
    else:
        start, days = paid_period(funding[0][0], sub.period_start)  # the period it renewed (SubscriptionRenewed)
    paid = sum(f.cap_minor for _, f in funding)
    taken = {f.payment_id: min(max(p.refunded_minor + p.reserved_minor - f.baseline_minor, 0), f.cap_minor) for p, f in funding}
    quote = refund_amount(paid, start, days, now, sum(taken.values()))
    left, parts = quote.amount_minor, []
    for payment, f in funding:
        share = min(left, f.cap_minor - taken[f.payment_id], payment.refundable_minor)
        if share > 0:
            parts.append((payment, share))
            left -= share
    amount = quote.amount_minor - left  # never more than the payments still hold
    return PeriodQuote(amount, quote.days_used, quote.days_in_period, tuple(parts))


def refund_quote(state: AccountState, sub: Subscription, now: datetime) -> tuple[Payment | None, int, int | None, int | None]:
    """`period_quote` in brief: (the payment the refund comes from first, the amount, days used, days in period)."""
    quote = period_quote(state, sub, now)
    return (quote.parts[0][0] if quote.parts else None), quote.amount_minor, quote.days_used, quote.days_in_period
