"""The account's command deciders: one function per command, state + command → events and at most one provider step."""


from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from schemas import (
    AppliedPromo,
    AdminCancelSubscription,
    AnnouncePriceChange,
    AdminRefund,
    AutoRenewChanged,
    CancelSubscription,
    CheckoutStarted,
    Envelope,
    ExpireSubscription,
    ExtendSubscription,
    GrantSubscription,
    Money,
    Receipt,
    PayOverdueSubscription,
    PromoCodeRedeemed,
    PriceChangeAnnounced,
    PurchaseSubscription,
    RecoveryStarted,
    RefundRequested,
    ReplacePaymentMethod,
    RenewalFailed,
    RenewalStarted,
    RenewSubscription,
    SendExpiryReminder,
    SetAutoRenew,
    SubscriptionActivated,
    SubscriptionAdjusted,
    SubscriptionCanceled,
    SubscriptionExpired,
    SubscriptionExpiringSoon,
    SwitchPlan,
    SyncPayment,
    SyncRefund,
    CreditPart,
    PlanSwitched,
    PlanSwitchScheduled,
    PlanSwitchWithdrawn,
    UpgradeStarted,
    TrialTerms,
    derived_id,
)

from payment_processor.domain.answers import (
    payment_step_or_give_up,
    refund_step_or_give_up,
)
from payment_processor.domain.card_checks import continue_open_check, open_card_check, start_card_check
from payment_processor.domain.decision import (
    Context,
    Decision,
    Emit,
    command_id_of,
    emit_succeeded,
    find_subscription,
    fmt_day,
    idempotence_key_for,
    live_subscription_in,
    open_checkout_for,
    pending_subscription_to,
    plan_receipt_settings,
    refund_receipt,
    reject,
    renewal_receipt,
    succeed,
)
from payment_processor.domain.promo import charged, checkout_discount, refusal, renewal_discount
from payment_processor.domain.provider import (
    CreatePayment,
    CreateRefund,
    FindPayment,
    FindRefund,
    build_receipt,
    purchase_request,
    recovery_request,
    refund_request,
    renewal_request,
    upgrade_request,
)
from payment_processor.domain.pricing import first_renewal_at_new_price, renewal_price
from payment_processor.domain.refunds import PeriodQuote, period_quote
from payment_processor.domain.state import (
    FINAL_PAYMENT,
    FINAL_REFUND,
    LIVE_SUBSCRIPTION,
    AccountState,
    Payment,
    PlanState,
    Subscription,
)


TRIAL_CLOCK_SKEW = timedelta(minutes=5)
"""How far a scheduler's clock may run ahead of the processor's when it finds a trial's end due."""


def _plan_for_new_subscription(
    state: AccountState, command: Envelope, plan_id: str, subscription_id: UUID, ctx: Context, *, archived: str
) -> tuple[PlanState, None] | tuple[None, Decision]:
    """The plan a purchase or grant starts a subscription to, or the refusal: unknown or archived
    plan, or a subscription id this account already has."""
    plan = ctx.plan
    if plan is None or not plan.exists or plan.plan_id != plan_id:
        return None, reject(command, "plan_not_found", f"There is no plan «{plan_id}».")
    if plan.archived:
        return None, reject(command, "plan_archived", f"The plan «{plan.name}» {archived}.")
    if subscription_id in state.subscriptions:
        return None, reject(command, "duplicate_subscription", f"Subscription {subscription_id} already exists.")
    return plan, None


def _purchase(state: AccountState, command: Envelope, ctx: Context) -> Decision:
    c: PurchaseSubscription = command.data  # type: ignore[assignment]
    cid = command_id_of(command)
    plan, refused = _plan_for_new_subscription(state, command, c.plan_id, c.subscription_id, ctx, archived="is no longer sold")
    if refused is not None:
        return refused
    live = live_subscription_in(state, plan.product)
    if live is not None:
        if live.plan_id == c.plan_id:
            why = f"You already have the «{plan.name}» subscription (paid until {fmt_day(live.period_end)})."
        else:
            why = (
                f"You already have the «{live.plan_name}» subscription (paid until {fmt_day(live.period_end)}); "
                f"switch it to «{plan.name}» instead (POST /v1/subscriptions/{live.subscription_id}/switch)."
            )
        return reject(command, "already_subscribed", why)
    open_checkout = open_checkout_for(state, c.plan_id)
    if open_checkout is not None:
        # A repeat purchase while a checkout is open points at that checkout (docs/decisions/0041).
        sub, payment = open_checkout
        return succeed(
            command,
            subscription_id=sub.subscription_id,
            payment_id=payment.payment_id,
            confirmation_url=payment.confirmation_url,
            message=f"A checkout for «{plan.name}» is already open: continue it to pay.",
        )
    # A checkout whose creation is still unknown (no payment page ever reached the customer)
    # does not block a new one; should it succeed after all, it is refunded as a duplicate.
    price = plan.price_at(ctx.now)
    assert price is not None
    if plan.trial_days > 0 and c.plan_id not in state.trials_used:
        if c.promo_code is not None:  # a trial is not a promo code, and the two do not stack (decision 0121)
            return reject(command, "promo_code_not_applicable",
                          f"«{plan.name}» starts with a free trial; the promo code «{c.promo_code}» cannot be combined with it.")
        # A free trial, once per customer and plan: a card check saves the card the first charge
        # (at the trial's end) uses; the trial starts when the check succeeds (decision 0118).
        terms = TrialTerms(
            plan_id=c.plan_id,
            plan_name=plan.name,
            price=price,
            period_days=plan.period_days,
            trial_days=plan.trial_days,
            auto_renew=c.auto_renew,
            product=plan.product,
        )
        return start_card_check(
            state, command, c.subscription_id, "trial", c.customer, ctx, return_url=c.return_url, trial=terms
        )
    payment_id = derived_id("payment", cid)
    promo = None
    if c.promo_code is not None:
        refused_code = refusal(ctx.promo, c.promo_code, c.plan_id, price, state.user_id, ctx.now)
        if refused_code is not None:
            return reject(command, *refused_code)
        assert ctx.promo is not None
        promo = checkout_discount(ctx.promo, price)
    intent = CheckoutStarted(
        subscription_id=c.subscription_id,
        payment_id=payment_id,
        plan_id=c.plan_id,
        plan_name=plan.name,
        amount=charged(price, promo),
        period_days=plan.period_days,
        auto_renew=c.auto_renew,
        customer=c.customer,
        idempotence_key=idempotence_key_for(payment_id),
        return_url=c.return_url or ctx.default_return_url,
        product=plan.product,
        promo=promo,
        receipt=build_receipt(c.customer, plan.name, charged(price, promo), plan_receipt_settings(plan, ctx.receipts)),
    )
    step = CreatePayment(payment_id, intent.idempotence_key, purchase_request(state.user_id, cid, intent))
    emits = [Emit(intent, cid)]
    if promo is not None:
        # The use is held on the code's stream in the same transaction (docs/decisions/0121).
        redeemed = PromoCodeRedeemed(code=promo.code, user_id=state.user_id, subscription_id=c.subscription_id, payment_id=payment_id)
        emits.append(Emit(redeemed, cid))
    return Decision(emits, step=step)


def _sync_payment(state: AccountState, command: Envelope, ctx: Context) -> Decision:
    c: SyncPayment = command.data  # type: ignore[assignment]
    payment = None
    if c.payment_id is not None:
        payment = state.payments.get(c.payment_id)
    elif c.provider_payment_id is not None:
        payment = state.payment_by_provider_id(c.provider_payment_id)
    if payment is None:
        if c.provider_payment_id is not None:
            # A YooKassa payment we never heard the id of (its create's answer was lost): read it,
            # and its metadata tells whether it is ours (docs/decisions/0104).
            return Decision(step=FindPayment(None, c.provider_payment_id))
        return reject(command, "payment_not_found", "This account has no such payment.")
    if payment.status in FINAL_PAYMENT:
        provider_id = payment.provider_payment_id or c.provider_payment_id
        if (payment.outcome_unknown or payment.receipt_registration == "pending") and provider_id:
            # A late answer to match, or a receipt still on its way to the tax service: read it again.
            return Decision(step=FindPayment(payment.payment_id, provider_id))
        return succeed(command, payment_id=payment.payment_id, message=f"The payment is already {payment.status}.")
    return payment_step_or_give_up(state, payment, command, ctx)


def _sync_refund(state: AccountState, command: Envelope, ctx: Context) -> Decision:
    c: SyncRefund = command.data  # type: ignore[assignment]
    refund = None
    if c.refund_id is not None:
        refund = state.refunds.get(c.refund_id)
    elif c.provider_refund_id is not None:
        refund = state.refund_by_provider_id(c.provider_refund_id)
    if refund is None:
        if c.provider_refund_id is not None:
            # A YooKassa refund we never heard the id of: a late answer about one we gave up on
            # (0104) or one made in YooKassa's dashboard (0122); what YooKassa's API says tells.
            return Decision(step=FindRefund(None, c.provider_refund_id))
        return reject(command, "refund_not_found", "This account has no such refund.")
    if refund.status in FINAL_REFUND:
        provider_id = refund.provider_refund_id or c.provider_refund_id
        if (refund.outcome_unknown or refund.receipt_registration == "pending") and provider_id:
            return Decision(step=FindRefund(refund.refund_id, provider_id))
        return succeed(command, refund_id=refund.refund_id, message=f"The refund is already {refund.status}.")
    return refund_step_or_give_up(state, refund, command, ctx)


def _cancel_now(
    state: AccountState, command: Envelope, sub: Subscription, ctx: Context, *, mode: str, reason: str | None, refund: bool
) -> Decision:
    cid = command_id_of(command)
    quote = period_quote(state, sub, ctx.now) if refund else PeriodQuote(0)
    currency = sub.price.currency
    if not quote.parts:
        canceled = SubscriptionCanceled(
            subscription_id=sub.subscription_id,
            mode=mode,  # type: ignore[arg-type]
            effective_at=ctx.now,
            reason=reason,
            refund_amount=Money.from_minor(0, currency) if refund else None,
            customer=sub.customer or state.customer,
        )
        message = "Canceled; nothing is left to refund." if refund else "Canceled."
        return Decision(
            [
                Emit(canceled, cid),
                emit_succeeded(
                    cid,
                    command.type,
                    subscription_id=sub.subscription_id,
                    refund_amount=Money.from_minor(0, currency) if refund else None,
                    message=message,
                ),
            ]
        )
    customer = sub.customer or state.customer or quote.parts[0][0].customer
    refunds = _refund_intents(command, sub, quote, reason, customer)
    canceled = SubscriptionCanceled(
        subscription_id=sub.subscription_id,
        mode=mode,  # type: ignore[arg-type]
        effective_at=ctx.now,
        reason=reason,
        refund_id=refunds[0].refund_id,
        refund_amount=Money.from_minor(quote.amount_minor, refunds[0].amount.currency),
        customer=customer,
    )
    first = refunds[0]
    step = CreateRefund(first.refund_id, first.idempotence_key, refund_request(first, sub.plan_name))
    return Decision([Emit(canceled, cid), *(Emit(r, cid) for r in refunds)], step=step)


def _refund_intents(command: Envelope, sub: Subscription, quote: PeriodQuote, reason: str | None, customer: Any) -> list[RefundRequested]:
    """One refund per payment the quote takes from (YooKassa refunds per payment); the first keeps
    the id a single refund always had. The others are asked for once the first is answered."""
    cid = command_id_of(command)
    intents = []
    for index, (payment, amount_minor) in enumerate(quote.parts):
        refund_id = derived_id("refund", cid) if index == 0 else derived_id("refund", cid, index)
        assert payment.provider_payment_id is not None
        intents.append(
            RefundRequested(
                refund_id=refund_id,
                subscription_id=sub.subscription_id,
                payment_id=payment.payment_id,
                provider_payment_id=payment.provider_payment_id,
                amount=Money.from_minor(amount_minor, payment.amount.currency),
                days_used=quote.days_used,
                days_in_period=quote.days_in_period,
                reason=reason,
                idempotence_key=idempotence_key_for(refund_id),
                customer=customer,
                command_type=command.type,
                receipt=refund_receipt(payment, customer, sub.plan_name, Money.from_minor(amount_minor, payment.amount.currency)),
            )
        )
    return intents


def _cancel(state: AccountState, command: Envelope, ctx: Context) -> Decision:
    c: CancelSubscription = command.data  # type: ignore[assignment]
    sub = find_subscription(state, command, c.subscription_id)
    if isinstance(sub, Decision):
        return sub
    if sub.status in ("canceled", "expired", "payment_failed"):
        return reject(command, "already_canceled", f"The subscription is already {sub.status.replace('_', ' ')}.")
    if sub.status == "pending_payment":
        return reject(command, "not_active", "The subscription is not active yet: its payment is still pending.")
    if c.mode == "at_period_end":
        if sub.cancel_at_period_end:
            return reject(command, "already_canceled", f"The subscription already ends on {fmt_day(sub.period_end)}.")
        cid = command_id_of(command)
        canceled = SubscriptionCanceled(
            subscription_id=sub.subscription_id,
            mode="at_period_end",
            effective_at=sub.period_end or ctx.now,
            reason=c.reason,
            customer=sub.customer or state.customer,
        )
        return Decision(
            [
                Emit(canceled, cid),
                emit_succeeded(
                    cid,
                    command.type,
                    subscription_id=sub.subscription_id,
                    message=f"The subscription will end on {fmt_day(sub.period_end)} and will not renew.",
                ),
            ]
        )
    return _cancel_now(state, command, sub, ctx, mode="refund_now", reason=c.reason, refund=True)


def _admin_cancel(state: AccountState, command: Envelope, ctx: Context) -> Decision:
    c: AdminCancelSubscription = command.data  # type: ignore[assignment]
    sub = find_subscription(state, command, c.subscription_id)
    if isinstance(sub, Decision):
        return sub
    if sub.status in ("canceled", "expired", "payment_failed"):
        return reject(command, "already_canceled", f"The subscription is already {sub.status.replace('_', ' ')}.")
    return _cancel_now(state, command, sub, ctx, mode="admin", reason=c.reason, refund=c.refund and sub.status != "pending_payment")


def _admin_refund(state: AccountState, command: Envelope, ctx: Context) -> Decision:
    c: AdminRefund = command.data  # type: ignore[assignment]
    cid = command_id_of(command)
    sub = find_subscription(state, command, c.subscription_id)
    if isinstance(sub, Decision):
        return sub
    wanted = c.amount.minor
    if wanted <= 0:
        return reject(command, "invalid_amount", "The refund amount must be more than zero.")
    paid = [
        state.payments[p]
        for p in reversed(sub.payment_ids)
        if p in state.payments and state.payments[p].status == "succeeded" and state.payments[p].purpose != "card_check"
    ]
    best = max((p.refundable_minor for p in paid), default=0)
    payment = next((p for p in paid if p.refundable_minor >= wanted and p.amount.currency == c.amount.currency), None)
    if payment is None:
        return reject(
            command,
            "amount_exceeds_refundable",
            f"At most {Money.from_minor(best, sub.price.currency)} can be refunded in one refund for this subscription.",
        )
    assert payment.provider_payment_id is not None
    refund_id = derived_id("refund", cid)
    customer = sub.customer or state.customer or payment.customer
    intent = RefundRequested(
        refund_id=refund_id,
        subscription_id=sub.subscription_id,
        payment_id=payment.payment_id,
        provider_payment_id=payment.provider_payment_id,
        amount=c.amount,
        reason=c.reason,
        idempotence_key=idempotence_key_for(refund_id),
        customer=customer,
        command_type=command.type,
        receipt=refund_receipt(payment, customer, sub.plan_name, c.amount),
    )
    return Decision([Emit(intent, cid)], step=CreateRefund(refund_id, intent.idempotence_key, refund_request(intent, sub.plan_name)))


def _set_auto_renew(state: AccountState, command: Envelope, ctx: Context) -> Decision:
    c: SetAutoRenew = command.data  # type: ignore[assignment]
    cid = command_id_of(command)
    sub = find_subscription(state, command, c.subscription_id)
    if isinstance(sub, Decision):
        return sub
    if sub.status not in LIVE_SUBSCRIPTION:
        return reject(command, "not_active", f"The subscription is {sub.status.replace('_', ' ')}.")
    # Turning auto-renewal back on withdraws a cancel at period end (the subscription resumes).
    if c.enabled and not sub.payment_method_id and sub.granted:
        return reject(command, "no_payment_method", "A granted subscription has no saved card and no price to renew at.")
    if c.enabled and not sub.payment_method_id:
        # No card to renew with: check (and save) one first; renewal turns on when it succeeds.
        check = open_card_check(state, sub, "auto_renew")
        if check is not None and sub.renew_after_check == check.payment_id:
            return continue_open_check(command, sub, check)
        customer = sub.customer or state.customer
        if customer is None:
            return reject(command, "no_customer", "There is nobody to send the card check's receipt to.")
        return start_card_check(state, command, sub.subscription_id, "auto_renew", customer, ctx, return_url=c.return_url)
    if not c.enabled and sub.renew_after_check is not None and not sub.auto_renew:
        # The customer withdraws a "turn it on" whose card check is still open: it will not turn on.
        changed = AutoRenewChanged(
            subscription_id=sub.subscription_id, enabled=False, reason=c.reason or "withdrawn before the card check ended",
            customer=sub.customer or state.customer,
        )
        return Decision([Emit(changed, cid), emit_succeeded(cid, command.type, subscription_id=sub.subscription_id)])
    if sub.auto_renew == c.enabled and not (c.enabled and sub.cancel_at_period_end):
        return succeed(command, subscription_id=sub.subscription_id, message=f"Auto-renewal is already {'on' if c.enabled else 'off'}.")
    changed = AutoRenewChanged(subscription_id=sub.subscription_id, enabled=c.enabled, reason=c.reason, customer=sub.customer or state.customer)
    return Decision([Emit(changed, cid), emit_succeeded(cid, command.type, subscription_id=sub.subscription_id)])


def _replace_payment_method(state: AccountState, command: Envelope, ctx: Context) -> Decision:
    c: ReplacePaymentMethod = command.data  # type: ignore[assignment]
    sub = find_subscription(state, command, c.subscription_id)
    if isinstance(sub, Decision):
        return sub
    if sub.status not in LIVE_SUBSCRIPTION:
        return reject(command, "not_active", f"Only a live subscription's card can be replaced; this one is {sub.status.replace('_', ' ')}.")
    check = open_card_check(state, sub, "replace_payment_method")
    if check is not None:
        return continue_open_check(command, sub, check)
    customer = sub.customer or state.customer
    if customer is None:
        return reject(command, "no_customer", "There is nobody to send the card check's receipt to.")
    return start_card_check(state, command, sub.subscription_id, "replace_payment_method", customer, ctx, return_url=c.return_url)


def _extend(state: AccountState, command: Envelope, ctx: Context) -> Decision:
    c: ExtendSubscription = command.data  # type: ignore[assignment]
    cid = command_id_of(command)
    sub = find_subscription(state, command, c.subscription_id)
    if isinstance(sub, Decision):
        return sub
    if sub.status not in LIVE_SUBSCRIPTION or sub.period_end is None:
        return reject(command, "not_active", f"Only an active subscription can be extended; this one is {sub.status.replace('_', ' ')}.")
    new_end = sub.period_end + timedelta(days=c.days)
    adjusted = SubscriptionAdjusted(
        subscription_id=sub.subscription_id, days=c.days, period_end=new_end, reason=c.reason, customer=sub.customer or state.customer
    )
    return Decision(
        [Emit(adjusted, cid), emit_succeeded(cid, command.type, subscription_id=sub.subscription_id, message=f"Now ends on {fmt_day(new_end)}.")]
    )


def _grant(state: AccountState, command: Envelope, ctx: Context) -> Decision:
    c: GrantSubscription = command.data  # type: ignore[assignment]
    cid = command_id_of(command)
    plan, refused = _plan_for_new_subscription(state, command, c.plan_id, c.subscription_id, ctx, archived="is archived")
    if refused is not None:
        return refused
    live = live_subscription_in(state, plan.product)
    if live is not None or pending_subscription_to(state, c.plan_id) is not None:
        name = live.plan_name if live is not None else plan.name
        return reject(command, "already_subscribed", f"The account already has an active or pending «{name}» subscription; extend it instead.")
    days = c.days or plan.period_days
    currency = plan.price.currency if plan.price else "RUB"
    activated = SubscriptionActivated(
        subscription_id=c.subscription_id,
        plan_id=c.plan_id,
        plan_name=plan.name,
        period_start=ctx.now,
        period_end=ctx.now + timedelta(days=days),
        amount_paid=Money.from_minor(0, currency),
        auto_renew=False,
        granted=True,
        reason=c.reason,
        customer=c.customer or state.customer,
        product=plan.product,
    )
    return Decision([Emit(activated, cid), emit_succeeded(cid, command.type, subscription_id=c.subscription_id, plan_id=c.plan_id)])


@dataclass(frozen=True, slots=True)
class PeriodTerms:
    """What paying a subscription's next period buys and costs (see `next_period_terms`)."""

    plan_id: str
    plan_name: str
    period_start: datetime
    period_end: datetime
    amount: Money
    promo: AppliedPromo | None
    receipt: Receipt | None

    def intent_fields(self) -> dict[str, Any]:
        """The fields a RenewalStarted or RecoveryStarted takes from these terms."""
        return {
            "plan_id": self.plan_id, "plan_name": self.plan_name, "amount": self.amount, "promo": self.promo,
            "period_start": self.period_start, "period_end": self.period_end, "receipt": self.receipt,
        }


def next_period_terms(state: AccountState, sub: Subscription, ctx: Context) -> PeriodTerms:
    """The terms of `sub`'s next period — the ONE computation shared by the automatic renewal (and
    its dunning retries) and the customer paying an overdue period now (0117), so the two never
    disagree: the plan's renewal list price (its scheduled price changes, 0120) less a promo code's
    discount while discounted periods remain (0121). A scheduled downgrade (0119) makes the next
    period the new plan's: its days, at the price the customer was told when scheduling it, the
    discount continuing on that price, and its receipt settings when the plan is in `ctx`."""
    period_start, period_end = next_period(sub)
    switch = sub.pending_switch
    if switch is None:
        list_price = renewal_price(sub, period_start)
        promo = renewal_discount(sub.promo, sub.promo_periods_left, list_price)
        amount = charged(list_price, promo)
        return PeriodTerms(sub.plan_id, sub.plan_name, period_start, period_end, amount, promo, renewal_receipt(state, sub, amount, ctx))
    promo = renewal_discount(sub.promo, sub.promo_periods_left, switch.price)
    amount = charged(switch.price, promo)
    plan = ctx.plan if ctx.plan is not None and ctx.plan.plan_id == switch.plan_id else None
    receipt = (
        build_receipt(sub.customer or state.customer, switch.plan_name, amount, plan_receipt_settings(plan, ctx.receipts))
        if plan is not None
        else renewal_receipt(state, sub, amount, ctx)
    )
    end = period_start + timedelta(days=switch.period_days)
    return PeriodTerms(switch.plan_id, switch.plan_name, period_start, end, amount, promo, receipt)


def next_period(sub: Subscription) -> tuple[datetime, datetime]:
    """The period a renewal charge pays for: one period from the old end, never from now (0090)."""
    assert sub.period_end is not None
    return sub.period_end, sub.period_end + timedelta(days=sub.period_days)


RECOVERY_OPEN = "the customer's own payment for this period is open; it is not charged again"
UNKNOWN_OPEN = "an earlier renewal charge's outcome is still unknown; it is not charged again"


def _renew(state: AccountState, command: Envelope, ctx: Context) -> Decision:
    c: RenewSubscription = command.data  # type: ignore[assignment]
    cid = command_id_of(command)
    sub = find_subscription(state, command, c.subscription_id)
    if isinstance(sub, Decision):
        return sub
    if sub.period_end != c.period_end:
        return succeed(command, subscription_id=sub.subscription_id, message="This period was already renewed or changed; nothing to charge.")
    if sub.status not in LIVE_SUBSCRIPTION or sub.period_end is None:
        return reject(command, "not_renewable", f"The subscription is {sub.status.replace('_', ' ')}.")
    if not sub.auto_renew or sub.cancel_at_period_end:
        return reject(command, "auto_renew_off", "Auto-renewal is off for this subscription.")
    if not sub.payment_method_id:
        return reject(command, "no_payment_method", "There is no saved card to renew this subscription with.")
    if sub.trial and ctx.now < sub.period_end - TRIAL_CLOCK_SKEW:
        # A trial is free until its very end: the scheduler charges it then, and an early charge is
        # refused. Only clearly early: a scheduler whose clock runs a little ahead of ours must not
        # strand the renewal (its command id is fixed, a refusal would be final).
        return reject(command, "not_due", f"The trial ends on {sub.period_end.isoformat()}; it is charged then, not before.")
    # One charge at a time per subscription: a charge still in flight, or one whose outcome we
    # never heard, may yet succeed — whatever period it was started for (an operator may have
    # moved the period end since), it is the charge for the next period. The customer paying
    # now (a recovery) counts too (0117).
    for pid in sub.payment_ids:
        p = state.payments.get(pid)
        if p is not None and isinstance(p.intent, RenewalStarted) and p.status not in FINAL_PAYMENT:
            return succeed(command, subscription_id=sub.subscription_id, payment_id=pid, message="A renewal charge for this period is in progress.")
    for pid in sub.payment_ids:
        p = state.payments.get(pid)
        if p is not None and p.renews_period and p.outcome_unknown:
            return _renewal_blocked(state, command, sub, p, c.attempt, ctx)
        if p is not None and isinstance(p.intent, RecoveryStarted) and p.status not in FINAL_PAYMENT:
            # The customer is paying this period themselves: the retry does not charge, and counts
            # as one more attempt so dunning runs on should they not pay.
            return _renewal_blocked(state, command, sub, p, c.attempt, ctx, reason=RECOVERY_OPEN)
    upgrade = open_upgrade(state, sub)
    if upgrade is not None:
        # An upgrade payment still open would start a new period of its own: one charge at a time.
        return _renewal_blocked(state, command, sub, upgrade, c.attempt, ctx, reason="an upgrade payment for this subscription is still open")
    payment_id = derived_id("payment", cid)
    terms = next_period_terms(state, sub, ctx)  # a scheduled downgrade's plan, price and days included
    intent = RenewalStarted(
        subscription_id=sub.subscription_id,
        payment_id=payment_id,
        **terms.intent_fields(),
        attempt=c.attempt,
        payment_method_id=sub.payment_method_id,
        idempotence_key=idempotence_key_for(payment_id),
        customer=sub.customer or state.customer,
    )
    step = CreatePayment(payment_id, intent.idempotence_key, renewal_request(state.user_id, cid, intent))
    return Decision([Emit(intent, cid)], step=step)


def _renewal_blocked(
    state: AccountState, command: Envelope, sub: Subscription, unknown: Payment, attempt: int, ctx: Context, *, reason: str = UNKNOWN_OPEN
) -> Decision:
    """A renewal attempt that may not charge: an earlier charge's outcome is still unknown, the
    customer's own payment of the period (pay now) is open, or an upgrade payment is (0119).

    Charging again could take the money twice; not charging is one more failed attempt, so dunning
    runs its course (and the subscription expires at its end) unless the other charge succeeds.
    """
    cid = command_id_of(command)
    retries = ctx.dunning_retry_days
    final = attempt > len(retries)
    next_retry_at = None if final else ctx.now + timedelta(days=retries[attempt - 1])
    failed = RenewalFailed(
        subscription_id=sub.subscription_id,
        payment_id=unknown.payment_id,
        attempt=attempt,
        reason=reason,
        next_retry_at=next_retry_at,
        access_until=next_retry_at or sub.period_end,
        final=final,
        customer=sub.customer or state.customer,
    )
    message = f"Not charged: {reason.split(';')[0]}."
    return Decision([Emit(failed, cid), emit_succeeded(cid, command.type, subscription_id=sub.subscription_id, message=message)])


def _pay_overdue(state: AccountState, command: Envelope, ctx: Context) -> Decision:
    """The customer pays a past-due subscription now, on a payment page (docs/decisions/0117).

    One renewal charge at a time: an open payment page for the next period (an earlier pay-now, or
    an automatic renewal waiting for 3-D Secure) is handed back instead of a new one (as a repeat
    purchase is, 0041); a charge still being created or in flight without a page, or one whose
    outcome we never heard, refuses (`renewal_in_progress`) — the janitor settles it within minutes.
    """
    c: PayOverdueSubscription = command.data  # type: ignore[assignment]
    cid = command_id_of(command)
    sub = find_subscription(state, command, c.subscription_id)
    if isinstance(sub, Decision):
        return sub
    if sub.status != "past_due" or sub.period_end is None:
        return reject(command, "not_past_due", f"The subscription is {sub.status.replace('_', ' ')}: nothing is overdue to pay.")
    upgrade = unsettled_upgrade(state, sub)
    if upgrade is not None:
        # An upgrade payment (which starts a new period on the new plan) is what kept the renewal
        # from charging (0119): paying the period too would charge twice for the same days.
        return reject(command, "switch_in_progress", _upgrade_unsettled_reason(upgrade, "Paid, it starts a new period on the new plan."))
    for pid in reversed(sub.payment_ids):
        p = state.payments.get(pid)
        if p is None or not p.renews_period:
            continue
        if p.status == "pending" and p.confirmation_url:
            return succeed(
                command,
                subscription_id=sub.subscription_id,
                payment_id=p.payment_id,
                confirmation_url=p.confirmation_url,
                message="A payment for this subscription is already open: continue it to pay.",
            )
        if p.status not in FINAL_PAYMENT or p.outcome_unknown:
            why = "its outcome is not known yet" if p.outcome_unknown or p.status == "unknown" else "it is in progress"
            return reject(
                command,
                "renewal_in_progress",
                f"An earlier payment for this subscription's next period has no final answer: {why}. Try again in a few minutes.",
            )
    customer = sub.customer or state.customer
    assert customer is not None
    payment_id = derived_id("payment", cid)
    terms = next_period_terms(state, sub, ctx)  # what the renewal would charge: a scheduled downgrade too
    intent = RecoveryStarted(
        subscription_id=sub.subscription_id,
        payment_id=payment_id,
        **terms.intent_fields(),
        customer=customer,
        idempotence_key=idempotence_key_for(payment_id),
        return_url=c.return_url or ctx.default_return_url,
    )
    step = CreatePayment(payment_id, intent.idempotence_key, recovery_request(state.user_id, cid, intent))
    return Decision([Emit(intent, cid)], step=step)


def _expire(state: AccountState, command: Envelope, ctx: Context) -> Decision:
    c: ExpireSubscription = command.data  # type: ignore[assignment]
    cid = command_id_of(command)
    sub = find_subscription(state, command, c.subscription_id)
    if isinstance(sub, Decision):
        return sub
    if sub.status not in LIVE_SUBSCRIPTION:
        return succeed(command, subscription_id=sub.subscription_id, message=f"Nothing to do: the subscription is {sub.status.replace('_', ' ')}.")
    if sub.period_end != c.period_end:
        return succeed(command, subscription_id=sub.subscription_id, message="The period changed; the subscription does not end now.")
    if sub.period_end is not None and ctx.now < sub.period_end:
        return reject(command, "not_due", f"The period ends on {sub.period_end.isoformat()}; it cannot expire before that.")
    expired = SubscriptionExpired(
        subscription_id=sub.subscription_id, expired_at=ctx.now, reason=c.reason, customer=sub.customer or state.customer
    )
    return Decision([Emit(expired, cid), emit_succeeded(cid, command.type, subscription_id=sub.subscription_id)])


def _remind(state: AccountState, command: Envelope, ctx: Context) -> Decision:
    c: SendExpiryReminder = command.data  # type: ignore[assignment]
    cid = command_id_of(command)
    sub = find_subscription(state, command, c.subscription_id)
    if isinstance(sub, Decision):
        return sub
    if sub.status not in LIVE_SUBSCRIPTION or sub.period_end != c.period_end or sub.reminded_for == c.period_end:
        return succeed(command, subscription_id=sub.subscription_id, message="No reminder needed.")
    soon = SubscriptionExpiringSoon(
        subscription_id=sub.subscription_id,
        period_end=c.period_end,
        auto_renew=sub.auto_renew,
        customer=sub.customer or state.customer,
        trial=sub.trial,
        next_charge=renewal_price(sub, sub.period_end) if sub.auto_renew and not sub.cancel_at_period_end else None,
    )
    return Decision([Emit(soon, cid), emit_succeeded(cid, command.type, subscription_id=sub.subscription_id)])


def open_upgrade(state: AccountState, sub: Subscription) -> Payment | None:
    """An upgrade payment of the subscription YooKassa has not settled yet."""
    for pid in sub.payment_ids:
        p = state.payments.get(pid)
        if p is not None and p.purpose == "upgrade" and p.status not in FINAL_PAYMENT:
            return p
    return None


def unsettled_upgrade(state: AccountState, sub: Subscription) -> Payment | None:
    """An upgrade payment that may still take money for the subscription's current time: one YooKassa
    has not settled (`open_upgrade`), or one of the current period and plan it never answered (given
    up, `outcome_unknown`, decision 0104) whose late success would still switch the plan. Another
    upgrade or a pay-now meanwhile could charge twice for the same days."""
    open_one = open_upgrade(state, sub)
    if open_one is not None:
        return open_one
    for pid in sub.payment_ids:
        p = state.payments.get(pid)
        if p is None or p.purpose != "upgrade" or not p.outcome_unknown or not isinstance(p.intent, UpgradeStarted):
            continue
        if p.intent.replaces_period_start == sub.period_start and p.intent.from_plan_id == sub.plan_id:
            return p
    return None


def _upgrade_unsettled_reason(upgrade: Payment, then: str) -> str:
    if upgrade.outcome_unknown:
        return ("An earlier upgrade payment got no answer from YooKassa and may still have gone through; it is matched "
                f"against YooKassa's records and settled first (the daily reconciliation at the latest). {then}")
    where = f" Pay it at {upgrade.confirmation_url}." if upgrade.confirmation_url else ""
    return f"An upgrade payment for this subscription is still open.{where} {then}"


def _switch(state: AccountState, command: Envelope, ctx: Context) -> Decision:
    """Upgrade now (a dearer plan: its price less the credit for the unused days), or downgrade at
    the period end (any other plan of the product); switching back withdraws a scheduled downgrade."""
    c: SwitchPlan = command.data  # type: ignore[assignment]
    cid = command_id_of(command)
    sub = find_subscription(state, command, c.subscription_id)
    if isinstance(sub, Decision):
        return sub
    plan = ctx.plan
    if plan is None or not plan.exists or plan.plan_id != c.plan_id:
        return reject(command, "plan_not_found", f"There is no plan «{c.plan_id}».")
    if sub.status == "past_due":
        return reject(command, "past_due", "The subscription is past due: pay for it first, then switch plans.")
    if sub.status not in LIVE_SUBSCRIPTION or sub.period_end is None:
        return reject(command, "not_active", f"Only a live subscription can switch plans; this one is {sub.status.replace('_', ' ')}.")
    if plan.product != sub.product:
        return reject(command, "other_product", f"«{plan.name}» is a plan of another product; buy it separately.")
    upgrade = unsettled_upgrade(state, sub)
    if upgrade is not None:
        return reject(command, "switch_in_progress", _upgrade_unsettled_reason(upgrade, "Switch once it has settled."))
    for pid in sub.payment_ids:
        p = state.payments.get(pid)
        if p is not None and p.purpose == "renewal" and (p.status not in FINAL_PAYMENT or p.outcome_unknown):
            # Not while a renewal charge may still succeed: it would pay for a period the switch replaces.
            return reject(command, "charge_in_progress", "A renewal charge for this subscription is in progress; switch once it has settled.")
    customer = sub.customer or state.customer
    if c.plan_id == sub.plan_id:
        pending = sub.pending_switch
        if pending is None:
            return reject(command, "same_plan", f"The subscription is already on «{sub.plan_name}».")
        withdrawn = PlanSwitchWithdrawn(
            subscription_id=sub.subscription_id, plan_id=pending.plan_id, plan_name=pending.plan_name,
            reason="switched back to the current plan", customer=customer,
        )
        message = f"The switch to «{pending.plan_name}» is withdrawn; «{sub.plan_name}» renews as before."
        return Decision([Emit(withdrawn, cid), emit_succeeded(cid, command.type, subscription_id=sub.subscription_id, plan_id=sub.plan_id, message=message)])
    if plan.archived:
        return reject(command, "plan_archived", f"The plan «{plan.name}» is no longer sold.")
    price = plan.price_at(ctx.now)  # the plan's price now (a scheduled price change may be in effect)
    assert price is not None
    if price.currency != sub.price.currency:
        return reject(command, "other_product", f"«{plan.name}» is sold in {price.currency}, this subscription in {sub.price.currency}.")
    if price.minor > sub.price.minor:
        return _upgrade(state, command, sub, plan, price, c, ctx)
    # a downgrade (or a plan of the same price): it takes effect with the renewal at the period end
    if not sub.auto_renew or sub.cancel_at_period_end or sub.granted:
        return reject(
            command, "auto_renew_off",
            f"The subscription ends on {fmt_day(sub.period_end)} and does not renew; turn auto-renewal on to switch to «{plan.name}» at the period end.",
        )
    if sub.pending_switch is not None and sub.pending_switch.plan_id == plan.plan_id:
        return succeed(command, subscription_id=sub.subscription_id, plan_id=plan.plan_id, message=f"The switch to «{plan.name}» on {fmt_day(sub.period_end)} is already scheduled.")
    scheduled = PlanSwitchScheduled(
        subscription_id=sub.subscription_id, from_plan_name=sub.plan_name, plan_id=plan.plan_id, plan_name=plan.name,
        price=price, period_days=plan.period_days, effective_at=sub.period_end, customer=customer,
    )
    message = f"«{plan.name}» starts on {fmt_day(sub.period_end)} with the renewal ({price}); until then «{sub.plan_name}» stays."
    return Decision([Emit(scheduled, cid), emit_succeeded(cid, command.type, subscription_id=sub.subscription_id, plan_id=plan.plan_id, message=message)])


def upgrade_quote(state: AccountState, sub: Subscription, price: Money, now: datetime) -> tuple[int, PeriodQuote]:
    """(the charge, the credit) of an upgrade to a plan costing `price` now: the credit is what
    canceling the current period now would refund (`period_quote`), at most the whole price."""
    quote = period_quote(state, sub, now)
    if quote.amount_minor <= price.minor:
        return price.minor - quote.amount_minor, quote
    left, parts = price.minor, []
    for payment, share in quote.parts:  # the credit covers the price: carry only the price
        if left > 0:
            parts.append((payment, min(share, left)))
            left -= min(share, left)
    return 0, PeriodQuote(price.minor, quote.days_used, quote.days_in_period, tuple(parts))


def _upgrade(
    state: AccountState, command: Envelope, sub: Subscription, plan: PlanState, price: Money, c: SwitchPlan, ctx: Context
) -> Decision:
    cid = command_id_of(command)
    assert sub.period_start is not None
    if any(r.subscription_id == sub.subscription_id and r.status not in FINAL_REFUND for r in state.refunds.values()):
        return reject(command, "refund_in_progress", "A refund for this subscription is in progress; switch once it has settled.")
    charge_minor, credit = upgrade_quote(state, sub, price, ctx.now)
    currency = price.currency
    credit_from = [CreditPart(payment_id=p.payment_id, amount=Money.from_minor(m, currency)) for p, m in credit.parts]
    customer = sub.customer or state.customer
    if charge_minor == 0:
        switched = PlanSwitched(
            subscription_id=sub.subscription_id, from_plan_id=sub.plan_id, from_plan_name=sub.plan_name,
            plan_id=plan.plan_id or c.plan_id, plan_name=plan.name, price=price, period_days=plan.period_days,
            period_start=ctx.now, period_end=ctx.now + timedelta(days=plan.period_days),
            amount_charged=Money.from_minor(0, currency), credit=Money.from_minor(credit.amount_minor, currency),
            credit_from=credit_from, customer=customer,
        )
        message = f"Upgraded to «{plan.name}»: the credit for the unused days covers its price; nothing was charged."
        return Decision([Emit(switched, cid), emit_succeeded(cid, command.type, subscription_id=sub.subscription_id, plan_id=plan.plan_id, message=message)])
    assert customer is not None
    payment_id = derived_id("payment", cid)
    intent = UpgradeStarted(
        subscription_id=sub.subscription_id,
        payment_id=payment_id,
        from_plan_id=sub.plan_id,
        from_plan_name=sub.plan_name,
        replaces_period_start=sub.period_start,
        plan_id=plan.plan_id or c.plan_id,
        plan_name=plan.name,
        price=price,
        period_days=plan.period_days,
        amount=Money.from_minor(charge_minor, currency),
        credit=Money.from_minor(credit.amount_minor, currency),
        credit_days_used=credit.days_used or 0,
        credit_days_in_period=credit.days_in_period or sub.period_days,
        credit_from=credit_from,
        payment_method_id=sub.payment_method_id,
        return_url=None if sub.payment_method_id else (c.return_url or ctx.default_return_url),
        idempotence_key=idempotence_key_for(payment_id),
        customer=customer,
        receipt=build_receipt(customer, plan.name, Money.from_minor(charge_minor, currency), plan_receipt_settings(plan, ctx.receipts)),
    )
    step = CreatePayment(payment_id, intent.idempotence_key, upgrade_request(state.user_id, cid, intent))
    return Decision([Emit(intent, cid)], step=step)


def _announce_price_change(state: AccountState, command: Envelope, ctx: Context) -> Decision:
    """Tell a subscriber about a plan's price change, fixing the first renewal at the new price
    (docs/decisions/0120); anything that makes the notice pointless ends the command quietly."""
    c: AnnouncePriceChange = command.data  # type: ignore[assignment]
    cid = command_id_of(command)
    sub = find_subscription(state, command, c.subscription_id)
    if isinstance(sub, Decision):
        return sub
    plan = ctx.plan
    change = plan.change(c.change_id) if plan is not None and plan.plan_id == c.plan_id else None
    if change is None:
        return reject(command, "price_change_not_found", f"The plan «{c.plan_id}» has no price change {c.change_id}.")
    if sub.plan_id != c.plan_id or sub.status not in LIVE_SUBSCRIPTION or sub.period_end is None or sub.granted:
        return succeed(command, subscription_id=sub.subscription_id, message="No notice needed: the subscription does not renew on this plan.")
    if change.grandfather:
        return succeed(command, subscription_id=sub.subscription_id, message="No notice needed: existing subscribers keep their price.")
    if c.change_id in sub.announced_changes:
        return succeed(command, subscription_id=sub.subscription_id, message="The subscriber was already told.")
    first = first_renewal_at_new_price(sub.period_end, sub.period_days, change.effective_at, ctx.now, ctx.price_change_notice_days)
    old = renewal_price(sub, first)
    if old == change.price:
        return succeed(command, subscription_id=sub.subscription_id, message="No notice needed: the subscriber already pays this price.")
    announced = PriceChangeAnnounced(
        subscription_id=sub.subscription_id,
        plan_id=c.plan_id,
        change_id=c.change_id,
        old_price=old,
        new_price=change.price,
        effective_at=change.effective_at,
        first_renewal_at=first,
        customer=sub.customer or state.customer,
    )
    message = f"Renewals from {fmt_day(first)} cost {change.price}."
    return Decision([Emit(announced, cid), emit_succeeded(cid, command.type, subscription_id=sub.subscription_id, message=message)])


ACCOUNT_DECIDERS: dict[type, Callable[[AccountState, Envelope, Context], Decision]] = {
    PurchaseSubscription: _purchase,
    CancelSubscription: _cancel,
    SetAutoRenew: _set_auto_renew,
    ReplacePaymentMethod: _replace_payment_method,
    SyncPayment: _sync_payment,
    SyncRefund: _sync_refund,
    RenewSubscription: _renew,
    ExpireSubscription: _expire,
    SendExpiryReminder: _remind,
    PayOverdueSubscription: _pay_overdue,
    ExtendSubscription: _extend,
    GrantSubscription: _grant,
    AdminRefund: _admin_refund,
    AdminCancelSubscription: _admin_cancel,
    SwitchPlan: _switch,
    AnnouncePriceChange: _announce_price_change,
}
