"""YooKassa's view of a payment turned into events: created, succeeded (and what that buys), declined.

The effects of a success are where the money promises live: a purchase activates, a renewal
renews — unless the customer no longer wants it (renewal turned off while the charge was in
flight, docs/decisions/0105; the subscription ended; another subscription to the plan is live),
in which case the charge is refunded in full.
"""


from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from schemas import (
    AutoRenewChanged,
    CardCheckStarted,
    CheckoutStarted,
    Money,
    PaymentCreated,
    PaymentFailed,
    PaymentMethod,
    PaymentMethodReplaced,
    PaymentStateUnknown,
    PaymentSucceeded,
    PlanSwitched,
    PromoCodeReleased,
    RecoveryStarted,
    RefundRequested,
    RenewalConfirmationRequired,
    RenewalFailed,
    RenewalStarted,
    SubscriptionActivated,
    SubscriptionCanceled,
    SubscriptionRenewed,
    UpgradeStarted,
    derived_id,
)

from payment_processor.domain.card_checks import COMMAND_OF_REASON
from payment_processor.domain.decision import (
    Context,
    Emit,
    emit_failed,
    emit_succeeded,
    fmt_day,
    idempotence_key_for,
    live_subscription_in,
    refund_receipt,
)
from payment_processor.domain.provider import (
    CreatePayment,
    CreateRefund,
    FindPayment,
    ProviderOutcome,
    ProviderPayment,
    ProviderRefused,
    ProviderStep,
    ProviderUnknown,
    card_check_request,
    purchase_request,
    recovery_request,
    refund_request,
    renewal_request,
    upgrade_request,
)
from payment_processor.domain.refunds import receipt_registration_moved, registration
from payment_processor.domain.state import (
    FINAL_PAYMENT,
    LIVE_SUBSCRIPTION,
    AccountState,
    Payment,
    Subscription,
)


def payment_step(state: AccountState, payment: Payment) -> ProviderStep:
    """Ask again: read the payment if YooKassa gave it an id, else repeat the create (same key, same body)."""
    if payment.provider_payment_id:
        return FindPayment(payment.payment_id, payment.provider_payment_id)
    intent = payment.intent
    if isinstance(intent, CheckoutStarted):
        body = purchase_request(state.user_id, payment.origin_command_id, intent)
    elif isinstance(intent, UpgradeStarted):
        body = upgrade_request(state.user_id, payment.origin_command_id, intent)
    elif isinstance(intent, RecoveryStarted):
        body = recovery_request(state.user_id, payment.origin_command_id, intent)
    elif isinstance(intent, CardCheckStarted):
        body = card_check_request(state.user_id, payment.origin_command_id, intent)
    else:
        body = renewal_request(state.user_id, payment.origin_command_id, intent)
    return CreatePayment(payment.payment_id, payment.idempotence_key, body)


def observe_payment(
    state: AccountState, payment: Payment, outcome: ProviderOutcome, ctx: Context, by: UUID
) -> tuple[list[Emit], ProviderStep | None, bool]:
    """Events for YooKassa's view of `payment`; returns (events, next step, settled?)."""
    emits: list[Emit] = []
    next_step: ProviderStep | None = None

    if isinstance(outcome, ProviderUnknown) or (isinstance(outcome, ProviderRefused) and payment.provider_payment_id):
        # Not knowing is not failing. Only a create whose answer was lost makes the payment
        # "unknown"; a failed re-read of a payment YooKassa already gave us changes nothing.
        detail = outcome.detail
        if payment.provider_payment_id is None and payment.status != "unknown":
            emits.append(
                Emit(
                    PaymentStateUnknown(
                        payment_id=payment.payment_id,
                        subscription_id=payment.subscription_id,
                        detail=detail[:500],
                        purpose=payment.purpose,
                    ),
                    by,
                )
            )
        return emits, None, False

    late = payment.outcome_unknown and isinstance(outcome, ProviderPayment)
    if payment.status in FINAL_PAYMENT and not late:
        # Someone settled it meanwhile (concurrent sync), or we read it again for its receipt:
        # only a receipt registration that moved on is new.
        if isinstance(outcome, ProviderPayment) and payment.status == "succeeded":
            emits += receipt_registration_moved(
                payment.subscription_id, payment.receipt_registration, outcome.receipt_registration, by, payment_id=payment.payment_id
            )
        return emits, None, True

    if isinstance(outcome, ProviderRefused):
        reason = "no_answer_within_idempotence_window" if outcome.outcome_unknown else f"provider_refused:{outcome.code}"
        emits.append(
            Emit(
                PaymentFailed(
                    payment_id=payment.payment_id,
                    subscription_id=payment.subscription_id,
                    amount=payment.amount,
                    reason=reason,
                    party="merchant",
                    purpose=payment.purpose,
                    customer=payment.customer,
                    outcome_unknown=outcome.outcome_unknown,
                ),
                by,
            )
        )
        emits += renewal_failed(state, payment, reason, ctx, by)
        if not outcome.outcome_unknown:
            emits += promo_released(state, payment, reason, by)
        terminal = payment_origin_terminal(state, payment, outcome)
        if terminal:
            emits.append(terminal)
        return emits, None, True

    assert isinstance(outcome, ProviderPayment)
    if payment.provider_payment_id is None:
        emits.append(
            Emit(
                PaymentCreated(
                    payment_id=payment.payment_id,
                    subscription_id=payment.subscription_id,
                    provider_payment_id=outcome.id,
                    amount=payment.amount,
                    status=outcome.status,
                    confirmation_url=outcome.confirmation_url,
                    purpose=payment.purpose,
                ),
                by,
            )
        )
    if (
        not late
        and outcome.status == "pending"
        and outcome.confirmation_url
        and isinstance(payment.intent, RenewalStarted)
        and not payment.confirmation_requested
    ):
        # The bank wants the customer to confirm the renewal (3-D Secure): record the page once, so
        # the customer is emailed its link once; its success renews as any renewal does (0117).
        emits.append(
            Emit(
                RenewalConfirmationRequired(
                    subscription_id=payment.subscription_id,
                    payment_id=payment.payment_id,
                    amount=payment.amount,
                    confirmation_url=outcome.confirmation_url,
                    customer=payment.customer,
                ),
                by,
            )
        )
    if outcome.status == "succeeded":
        paid_at = outcome.captured_at or ctx.now
        method = (
            PaymentMethod(id=outcome.payment_method_id, title=outcome.payment_method_title)
            if outcome.payment_method_saved and outcome.payment_method_id
            else None
        )
        emits.append(
            Emit(
                PaymentSucceeded(
                    payment_id=payment.payment_id,
                    subscription_id=payment.subscription_id,
                    provider_payment_id=outcome.id,
                    amount=payment.amount,
                    paid_at=paid_at,
                    payment_method=method,
                    purpose=payment.purpose,
                    customer=payment.customer,
                    receipt_registration=registration(outcome.receipt_registration),
                ),
                by,
            )
        )
        effects, next_step = payment_succeeded_effects(state, payment, outcome, paid_at, ctx, by)
        emits += effects
    elif late:
        # declined or still pending: it already counts as failed; PaymentCreated records the answer
        if outcome.status == "canceled":
            emits += promo_released(state, payment, outcome.cancellation_reason or "canceled", by)
    elif outcome.status == "canceled":
        reason = outcome.cancellation_reason or "canceled"
        emits.append(
            Emit(
                PaymentFailed(
                    payment_id=payment.payment_id,
                    subscription_id=payment.subscription_id,
                    provider_payment_id=outcome.id,
                    amount=payment.amount,
                    reason=reason,
                    party=outcome.cancellation_party,
                    purpose=payment.purpose,
                    customer=payment.customer,
                ),
                by,
            )
        )
        emits += renewal_failed(state, payment, reason, ctx, by)
        emits += promo_released(state, payment, reason, by)
    terminal = payment_origin_terminal(state, payment, outcome, refunding=next_step is not None)
    if terminal:
        emits.append(terminal)
    return emits, next_step, outcome.status in FINAL_PAYMENT


def payment_succeeded_effects(
    state: AccountState, payment: Payment, seen: ProviderPayment, paid_at: datetime, ctx: Context, by: UUID
) -> tuple[list[Emit], ProviderStep | None]:
    sub = state.subscriptions.get(payment.subscription_id)
    if sub is None:  # cannot happen: the intent created it
        return [], None
    intent = payment.intent
    if isinstance(intent, CardCheckStarted):
        return card_check_succeeded_effects(state, payment, intent, sub, seen, paid_at, ctx, by)
    if isinstance(intent, CheckoutStarted):
        given_up = sub.status == "payment_failed" and payment.outcome_unknown and sub.payment_ids[-1:] == [payment.payment_id]
        if sub.status == "pending_payment" or given_up:
            other = live_subscription_in(state, sub.product, exclude=sub.subscription_id)
            if other is None:
                activated = SubscriptionActivated(
                    subscription_id=sub.subscription_id,
                    plan_id=sub.plan_id,
                    plan_name=sub.plan_name,
                    period_start=paid_at,
                    period_end=paid_at + timedelta(days=intent.period_days),
                    amount_paid=payment.amount,
                    auto_renew=sub.auto_renew,
                    payment_id=payment.payment_id,
                    payment_method_title=seen.payment_method_title if seen.payment_method_saved else None,
                    customer=payment.customer,
                    promo=intent.promo,
                )
                return [Emit(activated, by)], None
            why = (
                f"The payment for «{sub.plan_name}» succeeded after another subscription to the same product "
                f"became active (until {fmt_day(other.period_end)}); it is refunded in full."
            )
            return full_refund(state, payment, seen, sub, why, ctx, by, cancel=True)
        why = f"The payment for «{sub.plan_name}» succeeded after the subscription was {sub.status}; it is refunded in full."
        return full_refund(state, payment, seen, sub, why, ctx, by, cancel=False)

    if isinstance(intent, UpgradeStarted):
        return upgrade_succeeded(state, payment, intent, sub, seen, paid_at, ctx, by)
    if isinstance(intent, RecoveryStarted):
        # The customer paid the overdue period now: it renews one period from the current end (the
        # old end, unless an operator moved it meanwhile). No other charge of the period could
        # start while it was open, so a subscription no longer past due was paid some other way or
        # ended: then the payment is refunded in full (0117).
        if sub.status == "past_due" and sub.period_end is not None:
            renewed = SubscriptionRenewed(
                subscription_id=sub.subscription_id,
                payment_id=payment.payment_id,
                period_start=sub.period_end,
                period_end=sub.period_end + (intent.period_end - intent.period_start),
                amount=payment.amount,
                customer=payment.customer,
                promo=intent.promo,
                purpose="recovery",
                **plan_taking_effect(intent, sub),
            )
            return [Emit(renewed, by)], None
        why = f"The payment for «{sub.plan_name}» succeeded after the subscription was {sub.status.replace('_', ' ')}; it is refunded in full."
        return full_refund(state, payment, seen, sub, why, ctx, by, cancel=False)

    # a renewal
    assert isinstance(intent, RenewalStarted)
    if sub.status in LIVE_SUBSCRIPTION and (not sub.auto_renew or sub.cancel_at_period_end):
        # The customer turned renewal off while this charge was in flight: they said no before the
        # money moved, so the charge is not kept (docs/decisions/0105).
        why = (
            f"The renewal payment for «{sub.plan_name}» succeeded after renewal was turned off; "
            "it is refunded in full and the subscription ends with its period."
        )
        return full_refund(state, payment, seen, sub, why, ctx, by, cancel=False)
    if sub.status in LIVE_SUBSCRIPTION:
        start = intent.period_start if sub.period_end == intent.period_start else (sub.period_end or intent.period_start)
        renewed = SubscriptionRenewed(
            subscription_id=sub.subscription_id,
            payment_id=payment.payment_id,
            period_start=start,
            period_end=start + (intent.period_end - intent.period_start),
            amount=payment.amount,
            customer=payment.customer,
            promo=intent.promo,
            **plan_taking_effect(intent, sub),
        )
        return [Emit(renewed, by)], None
    why = f"The renewal payment for «{sub.plan_name}» succeeded after the subscription was {sub.status}; it is refunded in full."
    return full_refund(state, payment, seen, sub, why, ctx, by, cancel=False)


def plan_taking_effect(intent: RenewalStarted | RecoveryStarted, sub: Subscription) -> dict[str, Any]:
    """SubscriptionRenewed's plan fields: set only when the charge paid for another plan than the
    subscription's — a scheduled downgrade taking effect with the period it paid (0119, 0117)."""
    if intent.plan_id == sub.plan_id:
        return {}
    return {"plan_id": intent.plan_id, "plan_name": intent.plan_name, "previous_plan_name": sub.plan_name}


def upgrade_succeeded(
    state: AccountState, payment: Payment, intent: UpgradeStarted, sub: Subscription, seen: ProviderPayment, paid_at: datetime, ctx: Context, by: UUID
) -> tuple[list[Emit], ProviderStep | None]:
    """An upgrade charge went through: the subscription moves to the new plan with a new period from
    now — if it is still the live subscription and the period the credit was computed on. Otherwise
    (canceled, expired, renewed or switched meanwhile, or a renewal charge started after this one was
    given up on and may still succeed: it pays for the period the switch would replace) the charge is
    refunded in full."""
    renewal_open = any(
        p.purpose in ("renewal", "recovery") and (p.status not in FINAL_PAYMENT or p.outcome_unknown)
        for p in (state.payments.get(pid) for pid in sub.payment_ids) if p is not None
    )
    if (
        sub.status in LIVE_SUBSCRIPTION and sub.plan_id == intent.from_plan_id and sub.period_start == intent.replaces_period_start
        and not renewal_open
    ):
        switched = PlanSwitched(
            subscription_id=sub.subscription_id,
            from_plan_id=intent.from_plan_id,
            from_plan_name=intent.from_plan_name,
            plan_id=intent.plan_id,
            plan_name=intent.plan_name,
            price=intent.price,
            period_days=intent.period_days,
            period_start=paid_at,
            period_end=paid_at + timedelta(days=intent.period_days),
            payment_id=payment.payment_id,
            amount_charged=payment.amount,
            credit=intent.credit,
            credit_from=intent.credit_from,
            customer=payment.customer,
        )
        return [Emit(switched, by)], None
    what = sub.status.replace("_", " ") if sub.status not in LIVE_SUBSCRIPTION else "changed"
    why = f"The upgrade payment for «{intent.plan_name}» succeeded after the subscription was {what}; it is refunded in full."
    return full_refund(state, payment, seen, sub, why, ctx, by, cancel=False)


def card_check_succeeded_effects(
    state: AccountState,
    payment: Payment,
    intent: CardCheckStarted,
    sub: Subscription,
    seen: ProviderPayment,
    paid_at: datetime,
    ctx: Context,
    by: UUID,
) -> tuple[list[Emit], ProviderStep | None]:
    """A card check succeeded: attach the card where it is still wanted, then give the money back.

    The refund is requested in the same append as the success, whatever else happens: a check is
    never kept (docs/decisions/0118). The card itself is attached by PaymentSucceeded's
    `payment_method`; what else follows depends on why the check was made.
    """
    saved = seen.payment_method_saved and seen.payment_method_id
    emits: list[Emit] = []
    cancel = False
    if not saved:
        why = "The card check succeeded but YooKassa did not save the card, so nothing changed; the check is refunded."
    elif intent.reason == "trial":
        assert intent.trial is not None
        terms = intent.trial
        given_up = sub.status == "payment_failed" and payment.outcome_unknown and sub.payment_ids[-1:] == [payment.payment_id]
        other = live_subscription_in(state, sub.product, exclude=sub.subscription_id)
        if (sub.status == "pending_payment" or given_up) and other is None and terms.plan_id not in state.trials_used:
            activated = SubscriptionActivated(
                subscription_id=sub.subscription_id,
                plan_id=terms.plan_id,
                plan_name=terms.plan_name,
                period_start=paid_at,
                period_end=paid_at + timedelta(days=terms.trial_days),
                amount_paid=Money.from_minor(0, terms.price.currency),
                auto_renew=sub.auto_renew,
                payment_method_title=seen.payment_method_title,
                customer=payment.customer,
                trial=True,
                next_charge=terms.price,
            )
            emits.append(Emit(activated, by))
            why = f"Card check for the «{terms.plan_name}» trial: refunded at once."
        else:
            cancel = sub.status == "pending_payment"
            why = f"The card check for the «{terms.plan_name}» trial succeeded after the trial could no longer start; it is refunded."
    elif intent.reason == "replace_payment_method":
        if sub.status in LIVE_SUBSCRIPTION:
            replaced = PaymentMethodReplaced(
                subscription_id=sub.subscription_id,
                payment_id=payment.payment_id,
                payment_method=PaymentMethod(id=seen.payment_method_id, title=seen.payment_method_title),  # type: ignore[arg-type]
                previous_title=sub.payment_method_title,
                check_amount=payment.amount,
                customer=payment.customer,
            )
            emits.append(Emit(replaced, by))
        why = f"Card check for «{sub.plan_name}»: refunded at once."
    else:  # auto_renew: on only if the customer did not change their mind while the check ran
        if sub.status in LIVE_SUBSCRIPTION and sub.renew_after_check == payment.payment_id and not sub.auto_renew:
            changed = AutoRenewChanged(
                subscription_id=sub.subscription_id, enabled=True, reason="the card check saved a card", customer=payment.customer
            )
            emits.append(Emit(changed, by))
        why = f"Card check for «{sub.plan_name}» auto-renewal: refunded at once."
    refund_emits, step = full_refund(state, payment, seen, sub, why, ctx, by, cancel=cancel)
    return emits + refund_emits, step


def full_refund(
    state: AccountState,
    payment: Payment,
    seen: ProviderPayment,
    sub: Subscription,
    why: str,
    ctx: Context,
    by: UUID,
    *,
    cancel: bool,
) -> tuple[list[Emit], ProviderStep | None]:
    refund_id = derived_id("refund", by, payment.payment_id)
    amount = payment.amount
    emits: list[Emit] = []
    if cancel:
        emits.append(
            Emit(
                SubscriptionCanceled(
                    subscription_id=sub.subscription_id,
                    mode="duplicate_payment",
                    effective_at=ctx.now,
                    reason=why,
                    refund_id=refund_id,
                    refund_amount=amount,
                    customer=payment.customer,
                ),
                by,
            )
        )
    intent = RefundRequested(
        refund_id=refund_id,
        subscription_id=sub.subscription_id,
        payment_id=payment.payment_id,
        provider_payment_id=seen.id,
        amount=amount,
        reason=why[:500],
        idempotence_key=idempotence_key_for(refund_id),
        customer=payment.customer,
        command_type="SyncPayment",
        receipt=refund_receipt(payment, payment.customer, sub.plan_name, amount),
        purpose=payment.purpose,
    )
    emits.append(Emit(intent, by))
    return emits, CreateRefund(refund_id, intent.idempotence_key, refund_request(intent, sub.plan_name))


def promo_released(state: AccountState, payment: Payment, reason: str, by: UUID) -> list[Emit]:
    """A checkout that held a promo code's use and certainly took no money frees the use again. A
    checkout whose outcome stays unknown keeps it (it may have been paid with the discount)."""
    intent = payment.intent
    if not isinstance(intent, CheckoutStarted) or intent.promo is None:
        return []
    released = PromoCodeReleased(
        code=intent.promo.code,
        user_id=state.user_id,
        subscription_id=payment.subscription_id,
        payment_id=payment.payment_id,
        reason=reason[:500],
    )
    return [Emit(released, by)]


def renewal_failed(state: AccountState, payment: Payment, reason: str, ctx: Context, by: UUID) -> list[Emit]:
    intent = payment.intent
    if not isinstance(intent, RenewalStarted):
        return []  # a purchase's failure is the PaymentFailed itself (subscription → payment_failed)
    sub = state.subscriptions.get(payment.subscription_id)
    if sub is None or sub.status not in LIVE_SUBSCRIPTION or sub.period_end != intent.period_start:
        return []
    retries = ctx.dunning_retry_days
    final = intent.attempt > len(retries)
    next_retry_at = None if final else ctx.now + timedelta(days=retries[intent.attempt - 1])
    failed = RenewalFailed(
        subscription_id=sub.subscription_id,
        payment_id=payment.payment_id,
        attempt=intent.attempt,
        reason=reason,
        next_retry_at=next_retry_at,
        access_until=next_retry_at or sub.period_end,
        final=final,
        customer=payment.customer,
    )
    return [Emit(failed, by)]


def payment_origin_terminal(
    state: AccountState, payment: Payment, outcome: ProviderOutcome, *, refunding: bool = False
) -> Emit | None:
    """End the command that started the payment, now that its fate is known."""
    origin = payment.origin_command_id
    if origin in state.terminal:
        return None
    if payment.purpose == "renewal":
        ctype = "RenewSubscription"
        if isinstance(outcome, ProviderRefused):
            message = f"The renewal charge was refused: {outcome.detail}"
        else:
            assert isinstance(outcome, ProviderPayment)
            message = {
                "succeeded": "The renewal charge is refunded: renewal had been turned off." if refunding else "The subscription was renewed.",
                "canceled": f"The renewal charge was declined: {outcome.cancellation_reason or 'canceled'}.",
            }.get(outcome.status, "The renewal charge is pending at YooKassa.")
            if outcome.status == "pending" and outcome.confirmation_url:
                message = "The renewal charge waits for the customer to confirm it (3-D Secure); they were emailed the link."
        return emit_succeeded(origin, ctype, subscription_id=payment.subscription_id, payment_id=payment.payment_id, message=message)

    if payment.purpose == "upgrade":
        return _upgrade_terminal(payment, outcome, refunding=refunding)
    if payment.purpose == "recovery":
        return _recovery_terminal(payment, outcome, refunding=refunding)
    if payment.purpose == "card_check":
        return _card_check_terminal(payment, outcome)

    ctype = "PurchaseSubscription"
    if isinstance(outcome, ProviderRefused):
        return emit_failed(origin, ctype, f"YooKassa refused to create the payment: {outcome.detail}")
    assert isinstance(outcome, ProviderPayment)
    if outcome.status == "canceled":
        return emit_failed(origin, ctype, f"The payment was declined: {outcome.cancellation_reason or 'canceled'}.")
    message = None
    if outcome.status == "succeeded":
        message = "The payment was refunded: you already have this subscription." if refunding else "Paid."
    return emit_succeeded(
        origin,
        ctype,
        subscription_id=payment.subscription_id,
        payment_id=payment.payment_id,
        confirmation_url=outcome.confirmation_url or payment.confirmation_url,
        message=message,
    )


def _upgrade_terminal(payment: Payment, outcome: ProviderOutcome, *, refunding: bool) -> Emit:
    origin, ctype = payment.origin_command_id, "SwitchPlan"
    intent = payment.intent
    assert isinstance(intent, UpgradeStarted)
    if isinstance(outcome, ProviderRefused):
        return emit_failed(origin, ctype, f"YooKassa refused to create the upgrade payment: {outcome.detail}; nothing changed.")
    assert isinstance(outcome, ProviderPayment)
    if outcome.status == "canceled":
        return emit_failed(origin, ctype, f"The upgrade payment was declined ({outcome.cancellation_reason or 'canceled'}); nothing changed.")
    if outcome.status == "succeeded":
        message = (
            "The upgrade payment is refunded in full: the subscription changed meanwhile."
            if refunding
            else f"Upgraded to «{intent.plan_name}»: charged {intent.amount}, credit {intent.credit} for the unused days."
        )
    elif outcome.confirmation_url or payment.confirmation_url:
        message = f"Pay {intent.amount} on the payment page to upgrade to «{intent.plan_name}» (credit {intent.credit})."
    else:
        message = "The upgrade charge is pending at YooKassa."
    return emit_succeeded(
        origin,
        ctype,
        subscription_id=payment.subscription_id,
        payment_id=payment.payment_id,
        plan_id=intent.plan_id,
        confirmation_url=outcome.confirmation_url or payment.confirmation_url,
        message=message,
    )


def _recovery_terminal(payment: Payment, outcome: ProviderOutcome, *, refunding: bool) -> Emit:
    """End a pay-now: like a purchase, it ends once YooKassa gave the payment page (its outcome
    carries the URL), or with the payment's fate if that came first."""
    ctype = "PayOverdueSubscription"
    if isinstance(outcome, ProviderRefused):
        return emit_failed(payment.origin_command_id, ctype, f"YooKassa refused to create the payment: {outcome.detail}")
    assert isinstance(outcome, ProviderPayment)
    if outcome.status == "canceled":
        return emit_failed(payment.origin_command_id, ctype, f"The payment was declined: {outcome.cancellation_reason or 'canceled'}.")
    message = "Continue on the payment page to pay."
    if outcome.status == "succeeded":
        message = "The payment was refunded: the period had already been paid or the subscription ended." if refunding else "Paid; the subscription is renewed."
    return emit_succeeded(
        payment.origin_command_id,
        ctype,
        subscription_id=payment.subscription_id,
        payment_id=payment.payment_id,
        confirmation_url=outcome.confirmation_url or payment.confirmation_url,
        message=message,
    )


def _card_check_terminal(payment: Payment, outcome: ProviderOutcome) -> Emit:
    """End the command that started a card check: it succeeds once the check's page exists (the
    customer confirms there, like a purchase, decision 0041); a refused or declined check fails it."""
    intent = payment.intent
    assert isinstance(intent, CardCheckStarted)
    origin, ctype = payment.origin_command_id, COMMAND_OF_REASON[intent.reason]
    if isinstance(outcome, ProviderRefused):
        return emit_failed(origin, ctype, f"YooKassa refused to create the card check: {outcome.detail}. Nothing changed.")
    assert isinstance(outcome, ProviderPayment)
    if outcome.status == "canceled":
        return emit_failed(origin, ctype, f"The card check was declined: {outcome.cancellation_reason or 'canceled'}. Nothing changed.")
    if outcome.status == "succeeded":
        message = f"The card is checked and saved; the {payment.amount} check is refunded."
    else:
        message = (
            f"Confirm the card check at the link: {payment.amount} is taken and refunded at once. "
            "Nothing changes until it succeeds."
        )
    return emit_succeeded(
        origin,
        ctype,
        subscription_id=payment.subscription_id,
        payment_id=payment.payment_id,
        confirmation_url=outcome.confirmation_url or payment.confirmation_url,
        message=message,
    )
