"""The decisions of the billing account: command → events (+ at most one provider step).

Pure functions, no I/O, no clock: `Context.now` is business time given by the caller.

* `decide(state, command, ctx)` answers a command. It returns the events to append now and,
  when money must move, the provider step to run AFTER those events are committed. The intent
  events (CheckoutStarted, RenewalStarted, RefundRequested) fix the Idempotence-Key and every
  field of the request body before YooKassa is called, so any retry sends the same request.
* `resolve(state, command, step, outcome, ctx)` turns what YooKassa answered into events, on the
  state AFTER the intent was applied. It may ask for one more step (a late duplicate payment is
  refunded), and is safe to call again on a state that moved on (it only adds what is missing).

Every command ends in exactly one terminal event (CommandSucceeded / CommandRejected /
CommandFailed). A command whose provider outcome is unknown has no terminal event yet: it is
"processing" until a redelivery or the janitor's SyncPayment/SyncRefund settles it, and whoever
settles an operation also ends the command that started it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from eventstore.refunds import refund_amount
from schemas import (
    AdminCancelSubscription,
    AdminRefund,
    ArchivePlan,
    AutoRenewChanged,
    CancelSubscription,
    CheckoutStarted,
    CommandFailed,
    CommandOutcome,
    CommandRejected,
    CommandSucceeded,
    CreatePlan,
    Envelope,
    Event,
    ExpireSubscription,
    ExtendSubscription,
    GrantSubscription,
    Money,
    PaymentCreated,
    PaymentFailed,
    PaymentMethod,
    PaymentStateUnknown,
    PaymentSucceeded,
    PlanArchived,
    PlanCreated,
    PurchaseSubscription,
    RefundCreated,
    RefundFailed,
    RefundRequested,
    RefundStateUnknown,
    RefundSucceeded,
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
    SubscriptionRenewed,
    SyncPayment,
    SyncRefund,
    derived_id,
)
from payment_processor.domain.provider import (
    CreatePayment,
    CreateRefund,
    FindPayment,
    FindRefund,
    ProviderOutcome,
    ProviderPayment,
    ProviderRefund,
    ProviderRefused,
    ProviderStep,
    ProviderUnknown,
    purchase_request,
    refund_request,
    renewal_request,
)
from payment_processor.domain.state import (
    FINAL_PAYMENT,
    FINAL_REFUND,
    LIVE_SUBSCRIPTION,
    AccountState,
    Payment,
    PlanState,
    Refund,
    Subscription,
)

PENDING_AT_PROVIDER = frozenset({"pending", "waiting_for_capture"})


@dataclass(frozen=True)
class Context:
    """What a decision may depend on besides the stream: time, the plan, configuration."""

    now: datetime
    plan: PlanState | None = None
    default_return_url: str = "http://127.0.0.1:8000/v1/return"
    dunning_retry_days: tuple[int, ...] = (1, 3, 5)
    """Days after a failed renewal attempt until the next one (issue 10 owns the policy)."""
    create_retry_window: timedelta = timedelta(hours=23)
    """YooKassa remembers an Idempotence-Key for 24 h; repeating a create later could charge twice."""


@dataclass(frozen=True, slots=True)
class Emit:
    """One event to append, and the command it belongs to (its `metadata.command_id`)."""

    payload: Event
    command_id: UUID


@dataclass
class Decision:
    events: list[Emit] = field(default_factory=list)
    step: ProviderStep | None = None
    already_handled: bool = False
    retry_later: str | None = None
    """Nothing to record yet, and nothing else will ask again: the command must be retried (the
    consumer's bounded retries, then the dead-letter topic and CommandFailed)."""

    @property
    def terminals(self) -> list[Emit]:
        return [e for e in self.events if isinstance(e.payload, (CommandSucceeded, CommandRejected, CommandFailed))]


def command_id_of(command: Envelope) -> UUID:
    return command.metadata.command_id or command.id


def terminal_outcome(payload: Event) -> dict[str, Any]:
    """What the handled-command record stores for a terminal event."""
    if isinstance(payload, CommandSucceeded):
        return {"status": "succeeded", **payload.outcome.model_dump(mode="json", exclude_none=True)}
    if isinstance(payload, CommandRejected):
        return {"status": "rejected", "code": payload.code, "reason": payload.reason}
    if isinstance(payload, CommandFailed):
        return {"status": "failed", "reason": payload.reason}
    raise TypeError(f"{type(payload).__name__} is not a terminal event")


# --------------------------------------------------------------------------- small builders


def _fmt_day(at: datetime | None) -> str:
    return at.strftime("%Y-%m-%d") if at else "—"


def _succeeded(cid: UUID, ctype: str, **outcome: Any) -> Emit:
    return Emit(CommandSucceeded(command_id=cid, command_type=ctype, outcome=CommandOutcome(**outcome)), cid)


def _rejected(cid: UUID, ctype: str, code: str, reason: str) -> Emit:
    return Emit(CommandRejected(command_id=cid, command_type=ctype, code=code, reason=reason), cid)


def _failed(cid: UUID, ctype: str, reason: str) -> Emit:
    return Emit(CommandFailed(command_id=cid, command_type=ctype, reason=reason[:1000]), cid)


def _reject(command: Envelope, code: str, reason: str) -> Decision:
    return Decision([_rejected(command_id_of(command), command.type, code, reason)])


def _succeed(command: Envelope, **outcome: Any) -> Decision:
    return Decision([_succeeded(command_id_of(command), command.type, **outcome)])


def _key(operation_id: UUID, step: str = "create") -> str:
    return str(derived_id("yookassa", operation_id, step))


def failed_command(command_id: UUID, command_type: str, reason: str) -> Emit:
    """The terminal event for a command given up on (dead-lettered)."""
    return _failed(command_id, command_type, reason)


# --------------------------------------------------------------------------- entry points


def decide(state: AccountState, command: Envelope, ctx: Context) -> Decision:
    """Answer one command on the account stream."""
    cid = command_id_of(command)
    if cid in state.terminal:
        return Decision(already_handled=True)
    if cid in state.intents:
        return _resume(state, command, ctx)
    decider = _ACCOUNT_DECIDERS.get(type(command.data))
    if decider is None:
        return _reject(command, "wrong_stream", f"{command.type} is not a command for a billing account.")
    return decider(state, command, ctx)


def decide_plan(state: PlanState, command: Envelope, ctx: Context) -> Decision:
    """Answer one command on a plan stream."""
    cid = command_id_of(command)
    if cid in state.terminal:
        return Decision(already_handled=True)
    c = command.data
    if isinstance(c, CreatePlan):
        if state.exists:
            return _reject(command, "plan_exists", f"A plan with the id «{c.plan_id}» already exists.")
        if c.price.amount <= 0:
            return _reject(command, "invalid_price", "A plan's price must be more than zero; grant free access instead.")
        created = PlanCreated(plan_id=c.plan_id, name=c.name, price=c.price, period_days=c.period_days, description=c.description)
        return Decision([Emit(created, cid), _succeeded(cid, command.type, plan_id=c.plan_id)])
    if isinstance(c, ArchivePlan):
        if not state.exists:
            return _reject(command, "plan_not_found", f"There is no plan «{c.plan_id}».")
        if state.archived:
            return _reject(command, "plan_archived", f"The plan «{state.name}» is already archived.")
        return Decision([Emit(PlanArchived(plan_id=c.plan_id, reason=c.reason), cid), _succeeded(cid, command.type, plan_id=c.plan_id)])
    return _reject(command, "wrong_stream", f"{command.type} is not a command for a plan.")


def resolve(state: AccountState, command: Envelope, step: ProviderStep, outcome: ProviderOutcome, ctx: Context) -> Decision:
    """Events for what YooKassa answered to `step` (state already holds the intent)."""
    cid = command_id_of(command)
    if isinstance(step, (CreatePayment, FindPayment)):
        payment = state.payments.get(step.payment_id) if step.payment_id else _payment_named_by(state, outcome)
        if payment is None:
            return _not_ours(command, "payment", step, outcome)
        emits, next_step, settled = _observe_payment(state, payment, outcome, ctx, cid)
        origin = payment.origin_command_id
    else:
        refund = state.refunds.get(step.refund_id) if step.refund_id else _refund_named_by(state, outcome)
        if refund is None:
            return _not_ours(command, "refund", step, outcome)
        emits, next_step, settled = _observe_refund(state, refund, outcome, ctx, cid)
        origin = refund.origin_command_id
        # A refund started by the command in hand (e.g. a late duplicate payment) ends it now.
    if next_step is None and cid != origin and cid not in state.terminal:
        emits.append(_succeeded(cid, command.type, **_sync_outcome(step, outcome)))
    return Decision(emits, step=next_step)


def _payment_named_by(state: AccountState, outcome: ProviderOutcome) -> Payment | None:
    """Ours, as YooKassa's own copy of the payment names it in `metadata.payment_id` (read from
    its API, not from a notification body), and only if no other YooKassa payment is ours already."""
    if not isinstance(outcome, ProviderPayment) or not outcome.our_payment_id:
        return None
    try:
        payment = state.payments.get(UUID(outcome.our_payment_id))
    except ValueError:
        return None
    if payment is None or payment.provider_payment_id not in (None, outcome.id):
        return None
    return payment


def _refund_named_by(state: AccountState, outcome: ProviderOutcome) -> Refund | None:
    """A refund we stopped asking about (no YooKassa id ever heard), of the same payment and amount."""
    if not isinstance(outcome, ProviderRefund) or outcome.payment_id is None:
        return None
    for refund in sorted(state.refunds.values(), key=lambda r: r.requested_at):
        if (
            refund.outcome_unknown
            and refund.provider_refund_id is None
            and refund.provider_payment_id == outcome.payment_id
            and (outcome.amount is None or outcome.amount == refund.amount)
        ):
            return refund
    return None


def _not_ours(command: Envelope, kind: str, step: ProviderStep, outcome: ProviderOutcome) -> Decision:
    object_id = getattr(step, f"provider_{kind}_id", "")
    if isinstance(outcome, ProviderUnknown):
        # We could not read it, so we cannot tell whether it is a late answer about one of ours,
        # and no janitor follows an id we never recorded: this notification must be retried,
        # not dropped (the model-based test found a late success lost to one 500 here).
        return Decision(retry_later=f"YooKassa could not be asked about {kind} {object_id}: {outcome.detail}"[:1000])
    if isinstance(outcome, ProviderRefused):
        why = f"YooKassa refused to show {kind} {object_id} ({outcome.detail})."
    else:
        why = f"YooKassa's {kind} {object_id} is not one of this account's."
    return _reject(command, f"{kind}_not_found", why[:1000])


def _sync_outcome(step: ProviderStep, outcome: ProviderOutcome) -> dict[str, Any]:
    if isinstance(outcome, ProviderUnknown):
        message = f"YooKassa did not answer ({outcome.detail}); it will be asked again."
    elif isinstance(outcome, ProviderRefused):
        message = f"YooKassa refused the request: {outcome.detail}"
    else:
        message = f"YooKassa says: {outcome.status}"
    if isinstance(step, (CreatePayment, FindPayment)):
        return {"payment_id": step.payment_id or (outcome.our_payment_id if isinstance(outcome, ProviderPayment) else None), "message": message}
    return {"refund_id": step.refund_id, "message": message}


# --------------------------------------------------------------------------- resuming an intent


def _resume(state: AccountState, command: Envelope, ctx: Context) -> Decision:
    """The command started a provider operation before (crash, redelivery): continue it."""
    kind, op_id = state.intents[command_id_of(command)]
    if kind == "payment":
        payment = state.payments[op_id]
        if payment.status in FINAL_PAYMENT or (payment.status == "pending" and payment.provider_payment_id):
            # Settled meanwhile without ending this command (should not happen): end it now.
            view = ProviderPayment(
                id=payment.provider_payment_id or "",
                status=payment.status,
                confirmation_url=payment.confirmation_url,
                cancellation_reason=payment.failure_reason,
            )
            terminal = _payment_origin_terminal(state, payment, view)
            return Decision([terminal] if terminal else [])
        return _payment_step_or_give_up(state, payment, command, ctx)
    refund = state.refunds[op_id]
    if refund.status in FINAL_REFUND or (refund.status == "pending" and refund.provider_refund_id):
        view_r = ProviderRefund(id=refund.provider_refund_id or "", status=refund.status, cancellation_reason=refund.failure_reason)
        terminal = _refund_origin_terminal(state, refund, view_r)
        return Decision([terminal] if terminal else [])
    return _refund_step_or_give_up(state, refund, command, ctx)


def payment_step(state: AccountState, payment: Payment) -> ProviderStep:
    """Ask again: read the payment if YooKassa gave it an id, else repeat the create (same key, same body)."""
    if payment.provider_payment_id:
        return FindPayment(payment.payment_id, payment.provider_payment_id)
    intent = payment.intent
    if isinstance(intent, CheckoutStarted):
        body = purchase_request(state.user_id, payment.origin_command_id, intent)
    else:
        body = renewal_request(state.user_id, payment.origin_command_id, intent)
    return CreatePayment(payment.payment_id, payment.idempotence_key, body)


def refund_step(state: AccountState, refund: Refund) -> ProviderStep:
    if refund.provider_refund_id:
        return FindRefund(refund.refund_id, refund.provider_refund_id)
    sub = state.subscriptions.get(refund.subscription_id)
    return CreateRefund(refund.refund_id, refund.idempotence_key, refund_request(refund.intent, sub.plan_name if sub else "subscription"))


def _payment_step_or_give_up(state: AccountState, payment: Payment, command: Envelope, ctx: Context) -> Decision:
    if payment.provider_payment_id is None and ctx.now - payment.requested_at > ctx.create_retry_window:
        # YooKassa forgets the key by now: a repeat could create a second payment. It never
        # answered the create in a whole day, yet it may have made it (a renewal charges the saved
        # card with no one watching). Stop asking; the payment counts as failed but stays marked
        # `outcome_unknown`: a late answer is matched by its metadata and settled, and no other
        # charge for its period starts meanwhile (docs/decisions/0104).
        outcome = ProviderRefused(
            "no_answer", "YooKassa never answered the create within its idempotence window", outcome_unknown=True
        )
        return resolve(state, command, payment_step(state, payment), outcome, ctx)
    return Decision(step=payment_step(state, payment))


def _refund_step_or_give_up(state: AccountState, refund: Refund, command: Envelope, ctx: Context) -> Decision:
    if refund.provider_refund_id is None and ctx.now - refund.requested_at > ctx.create_retry_window:
        outcome = ProviderRefused(
            "no_answer", "YooKassa never answered the create within its idempotence window", outcome_unknown=True
        )
        return resolve(state, command, refund_step(state, refund), outcome, ctx)
    return Decision(step=refund_step(state, refund))


# --------------------------------------------------------------------------- payments observed


def _observe_payment(
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
        return emits, None, True  # someone settled it meanwhile (concurrent sync); add nothing

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
        emits += _renewal_failed(state, payment, reason, ctx, by)
        terminal = _payment_origin_terminal(state, payment, outcome)
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
                ),
                by,
            )
        )
        effects, next_step = _payment_succeeded_effects(state, payment, outcome, paid_at, ctx, by)
        emits += effects
    elif late:
        pass  # declined or still pending: it already counts as failed; PaymentCreated records the answer
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
        emits += _renewal_failed(state, payment, reason, ctx, by)
    terminal = _payment_origin_terminal(state, payment, outcome, refunding=next_step is not None)
    if terminal:
        emits.append(terminal)
    return emits, next_step, outcome.status in FINAL_PAYMENT


def _payment_succeeded_effects(
    state: AccountState, payment: Payment, seen: ProviderPayment, paid_at: datetime, ctx: Context, by: UUID
) -> tuple[list[Emit], ProviderStep | None]:
    sub = state.subscriptions.get(payment.subscription_id)
    if sub is None:  # cannot happen: the intent created it
        return [], None
    intent = payment.intent
    if isinstance(intent, CheckoutStarted):
        given_up = sub.status == "payment_failed" and payment.outcome_unknown and sub.payment_ids[-1:] == [payment.payment_id]
        if sub.status == "pending_payment" or given_up:
            other = _live_subscription_to(state, sub.plan_id, exclude=sub.subscription_id)
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
                )
                return [Emit(activated, by)], None
            why = (
                f"The payment for «{sub.plan_name}» succeeded after another subscription to the same plan "
                f"became active (until {_fmt_day(other.period_end)}); it is refunded in full."
            )
            return _full_refund(state, payment, seen, sub, why, ctx, by, cancel=True)
        why = f"The payment for «{sub.plan_name}» succeeded after the subscription was {sub.status}; it is refunded in full."
        return _full_refund(state, payment, seen, sub, why, ctx, by, cancel=False)

    # a renewal
    assert isinstance(intent, RenewalStarted)
    if sub.status in LIVE_SUBSCRIPTION and (not sub.auto_renew or sub.cancel_at_period_end):
        # The customer turned renewal off while this charge was in flight: they said no before the
        # money moved, so the charge is not kept (docs/decisions/0105).
        why = (
            f"The renewal payment for «{sub.plan_name}» succeeded after renewal was turned off; "
            "it is refunded in full and the subscription ends with its period."
        )
        return _full_refund(state, payment, seen, sub, why, ctx, by, cancel=False)
    if sub.status in LIVE_SUBSCRIPTION:
        start = intent.period_start if sub.period_end == intent.period_start else (sub.period_end or intent.period_start)
        renewed = SubscriptionRenewed(
            subscription_id=sub.subscription_id,
            payment_id=payment.payment_id,
            period_start=start,
            period_end=start + (intent.period_end - intent.period_start),
            amount=payment.amount,
            customer=payment.customer,
        )
        return [Emit(renewed, by)], None
    why = f"The renewal payment for «{sub.plan_name}» succeeded after the subscription was {sub.status}; it is refunded in full."
    return _full_refund(state, payment, seen, sub, why, ctx, by, cancel=False)


def _full_refund(
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
        idempotence_key=_key(refund_id),
        customer=payment.customer,
        command_type="SyncPayment",
    )
    emits.append(Emit(intent, by))
    return emits, CreateRefund(refund_id, intent.idempotence_key, refund_request(intent, sub.plan_name))


def _renewal_failed(state: AccountState, payment: Payment, reason: str, ctx: Context, by: UUID) -> list[Emit]:
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


def _payment_origin_terminal(
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
        return _succeeded(origin, ctype, subscription_id=payment.subscription_id, payment_id=payment.payment_id, message=message)

    ctype = "PurchaseSubscription"
    if isinstance(outcome, ProviderRefused):
        return _failed(origin, ctype, f"YooKassa refused to create the payment: {outcome.detail}")
    assert isinstance(outcome, ProviderPayment)
    if outcome.status == "canceled":
        return _failed(origin, ctype, f"The payment was declined: {outcome.cancellation_reason or 'canceled'}.")
    message = None
    if outcome.status == "succeeded":
        message = "The payment was refunded: you already have this subscription." if refunding else "Paid."
    return _succeeded(
        origin,
        ctype,
        subscription_id=payment.subscription_id,
        payment_id=payment.payment_id,
        confirmation_url=outcome.confirmation_url or payment.confirmation_url,
        message=message,
    )


# --------------------------------------------------------------------------- refunds observed


def _observe_refund(
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
        return emits, None, True
    if isinstance(outcome, ProviderRefused):
        emits.append(
            Emit(
                RefundFailed(
                    refund_id=refund.refund_id,
                    subscription_id=refund.subscription_id,
                    amount=refund.amount,
                    reason=f"provider_refused:{outcome.code}: {outcome.detail}"[:500],
                    customer=refund.intent.customer,
                    outcome_unknown=outcome.outcome_unknown,
                ),
                by,
            )
        )
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
                    ),
                    by,
                )
            )
        elif outcome.status == "canceled":
            emits.append(
                Emit(
                    RefundFailed(
                        refund_id=refund.refund_id,
                        subscription_id=refund.subscription_id,
                        amount=refund.amount,
                        reason=outcome.cancellation_reason or "canceled",
                        customer=refund.intent.customer,
                    ),
                    by,
                )
            )
    terminal = _refund_origin_terminal(state, refund, outcome)
    if terminal:
        emits.append(terminal)
    settled = isinstance(outcome, ProviderRefused) or (isinstance(outcome, ProviderRefund) and outcome.status in FINAL_REFUND)
    return emits, None, settled


def _refund_origin_terminal(state: AccountState, refund: Refund, outcome: ProviderOutcome) -> Emit | None:
    origin = refund.origin_command_id
    if origin in state.terminal:
        return None
    ctype = refund.intent.command_type or "CancelSubscription"
    failed = isinstance(outcome, ProviderRefused) or (isinstance(outcome, ProviderRefund) and outcome.status == "canceled")
    if failed:
        why = outcome.detail if isinstance(outcome, ProviderRefused) else (outcome.cancellation_reason or "canceled")  # type: ignore[union-attr]
        if ctype == "AdminRefund":
            return _failed(origin, ctype, f"YooKassa did not make the refund: {why}")
        message = f"Canceled, but YooKassa did not make the refund ({why}); support will contact you."
    else:
        status = outcome.status if isinstance(outcome, ProviderRefund) else "pending"
        message = "Refunded." if status == "succeeded" else "The refund is on its way."
    return _succeeded(
        origin,
        ctype,
        subscription_id=refund.subscription_id,
        payment_id=refund.payment_id,
        refund_id=refund.refund_id,
        refund_amount=refund.amount,
        message=message,
    )


# --------------------------------------------------------------------------- commands


def _live_subscription_to(state: AccountState, plan_id: str, *, exclude: UUID | None = None) -> Subscription | None:
    for sub in state.subscriptions.values():
        if sub.plan_id == plan_id and sub.subscription_id != exclude and sub.status in LIVE_SUBSCRIPTION:
            return sub
    return None


def _pending_subscription_to(state: AccountState, plan_id: str) -> Subscription | None:
    for sub in state.subscriptions.values():
        if sub.plan_id == plan_id and sub.status == "pending_payment":
            return sub
    return None


def _open_checkout(state: AccountState, plan_id: str) -> tuple[Subscription, Payment] | None:
    """A pending subscription to the plan whose payment page the customer can still use."""
    for sub in state.subscriptions.values():
        if sub.plan_id == plan_id and sub.status == "pending_payment" and sub.payment_ids:
            payment = state.payments.get(sub.payment_ids[-1])
            if payment is not None and payment.status == "pending" and payment.confirmation_url:
                return sub, payment
    return None


def _subscription(state: AccountState, command: Envelope, subscription_id: UUID) -> Subscription | Decision:
    sub = state.subscriptions.get(subscription_id)
    if sub is None:
        return _reject(command, "subscription_not_found", f"There is no subscription {subscription_id} on this account.")
    return sub


def _purchase(state: AccountState, command: Envelope, ctx: Context) -> Decision:
    c: PurchaseSubscription = command.data  # type: ignore[assignment]
    cid = command_id_of(command)
    plan = ctx.plan
    if plan is None or not plan.exists or plan.plan_id != c.plan_id:
        return _reject(command, "plan_not_found", f"There is no plan «{c.plan_id}».")
    if plan.archived:
        return _reject(command, "plan_archived", f"The plan «{plan.name}» is no longer sold.")
    if c.subscription_id in state.subscriptions:
        return _reject(command, "duplicate_subscription", f"Subscription {c.subscription_id} already exists.")
    live = _live_subscription_to(state, c.plan_id)
    if live is not None:
        return _reject(
            command,
            "already_subscribed",
            f"You already have the «{plan.name}» subscription (paid until {_fmt_day(live.period_end)}).",
        )
    open_checkout = _open_checkout(state, c.plan_id)
    if open_checkout is not None:
        # A repeat purchase while a checkout is open points at that checkout (docs/decisions/0041).
        sub, payment = open_checkout
        return _succeed(
            command,
            subscription_id=sub.subscription_id,
            payment_id=payment.payment_id,
            confirmation_url=payment.confirmation_url,
            message=f"A checkout for «{plan.name}» is already open: continue it to pay.",
        )
    # A checkout whose creation is still unknown (no payment page ever reached the customer)
    # does not block a new one; should it succeed after all, it is refunded as a duplicate.
    assert plan.price is not None
    payment_id = derived_id("payment", cid)
    intent = CheckoutStarted(
        subscription_id=c.subscription_id,
        payment_id=payment_id,
        plan_id=c.plan_id,
        plan_name=plan.name,
        amount=plan.price,
        period_days=plan.period_days,
        auto_renew=c.auto_renew,
        customer=c.customer,
        idempotence_key=_key(payment_id),
        return_url=c.return_url or ctx.default_return_url,
    )
    step = CreatePayment(payment_id, intent.idempotence_key, purchase_request(state.user_id, cid, intent))
    return Decision([Emit(intent, cid)], step=step)


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
        return _reject(command, "payment_not_found", "This account has no such payment.")
    if payment.status in FINAL_PAYMENT:
        provider_id = payment.provider_payment_id or c.provider_payment_id
        if payment.outcome_unknown and provider_id:
            return Decision(step=FindPayment(payment.payment_id, provider_id))
        return _succeed(command, payment_id=payment.payment_id, message=f"The payment is already {payment.status}.")
    return _payment_step_or_give_up(state, payment, command, ctx)


def _sync_refund(state: AccountState, command: Envelope, ctx: Context) -> Decision:
    c: SyncRefund = command.data  # type: ignore[assignment]
    refund = None
    if c.refund_id is not None:
        refund = state.refunds.get(c.refund_id)
    elif c.provider_refund_id is not None:
        refund = state.refund_by_provider_id(c.provider_refund_id)
    if refund is None:
        if c.provider_refund_id is not None and any(r.outcome_unknown for r in state.refunds.values()):
            return Decision(step=FindRefund(None, c.provider_refund_id))
        return _reject(command, "refund_not_found", "This account has no such refund.")
    if refund.status in FINAL_REFUND:
        provider_id = refund.provider_refund_id or c.provider_refund_id
        if refund.outcome_unknown and provider_id:
            return Decision(step=FindRefund(refund.refund_id, provider_id))
        return _succeed(command, refund_id=refund.refund_id, message=f"The refund is already {refund.status}.")
    return _refund_step_or_give_up(state, refund, command, ctx)


def _paid_period(payment: Payment) -> tuple[datetime, int]:
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
    start, days = _paid_period(payment)
    quote = refund_amount(payment.amount.minor, start, days, now, payment.refunded_minor + payment.reserved_minor)
    return payment, quote.amount_minor, quote.days_used, quote.days_in_period


def _cancel_now(
    state: AccountState, command: Envelope, sub: Subscription, ctx: Context, *, mode: str, reason: str | None, refund: bool
) -> Decision:
    cid = command_id_of(command)
    payment, amount_minor, used, days = refund_quote(state, sub, ctx.now) if refund else (None, 0, None, None)
    currency = sub.price.currency
    if payment is None or amount_minor <= 0:
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
                _succeeded(
                    cid,
                    command.type,
                    subscription_id=sub.subscription_id,
                    refund_amount=Money.from_minor(0, currency) if refund else None,
                    message=message,
                ),
            ]
        )
    refund_id = derived_id("refund", cid)
    amount = Money.from_minor(amount_minor, payment.amount.currency)
    customer = sub.customer or state.customer or payment.customer
    canceled = SubscriptionCanceled(
        subscription_id=sub.subscription_id,
        mode=mode,  # type: ignore[arg-type]
        effective_at=ctx.now,
        reason=reason,
        refund_id=refund_id,
        refund_amount=amount,
        customer=customer,
    )
    assert payment.provider_payment_id is not None
    intent = RefundRequested(
        refund_id=refund_id,
        subscription_id=sub.subscription_id,
        payment_id=payment.payment_id,
        provider_payment_id=payment.provider_payment_id,
        amount=amount,
        days_used=used,
        days_in_period=days,
        reason=reason,
        idempotence_key=_key(refund_id),
        customer=customer,
        command_type=command.type,
    )
    step = CreateRefund(refund_id, intent.idempotence_key, refund_request(intent, sub.plan_name))
    return Decision([Emit(canceled, cid), Emit(intent, cid)], step=step)


def _cancel(state: AccountState, command: Envelope, ctx: Context) -> Decision:
    c: CancelSubscription = command.data  # type: ignore[assignment]
    sub = _subscription(state, command, c.subscription_id)
    if isinstance(sub, Decision):
        return sub
    if sub.status in ("canceled", "expired", "payment_failed"):
        return _reject(command, "already_canceled", f"The subscription is already {sub.status.replace('_', ' ')}.")
    if sub.status == "pending_payment":
        return _reject(command, "not_active", "The subscription is not active yet: its payment is still pending.")
    if c.mode == "at_period_end":
        if sub.cancel_at_period_end:
            return _reject(command, "already_canceled", f"The subscription already ends on {_fmt_day(sub.period_end)}.")
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
                _succeeded(
                    cid,
                    command.type,
                    subscription_id=sub.subscription_id,
                    message=f"The subscription will end on {_fmt_day(sub.period_end)} and will not renew.",
                ),
            ]
        )
    return _cancel_now(state, command, sub, ctx, mode="refund_now", reason=c.reason, refund=True)


def _admin_cancel(state: AccountState, command: Envelope, ctx: Context) -> Decision:
    c: AdminCancelSubscription = command.data  # type: ignore[assignment]
    sub = _subscription(state, command, c.subscription_id)
    if isinstance(sub, Decision):
        return sub
    if sub.status in ("canceled", "expired", "payment_failed"):
        return _reject(command, "already_canceled", f"The subscription is already {sub.status.replace('_', ' ')}.")
    return _cancel_now(state, command, sub, ctx, mode="admin", reason=c.reason, refund=c.refund and sub.status != "pending_payment")


def _admin_refund(state: AccountState, command: Envelope, ctx: Context) -> Decision:
    c: AdminRefund = command.data  # type: ignore[assignment]
    cid = command_id_of(command)
    sub = _subscription(state, command, c.subscription_id)
    if isinstance(sub, Decision):
        return sub
    wanted = c.amount.minor
    if wanted <= 0:
        return _reject(command, "invalid_amount", "The refund amount must be more than zero.")
    paid = [state.payments[p] for p in reversed(sub.payment_ids) if p in state.payments and state.payments[p].status == "succeeded"]
    best = max((p.refundable_minor for p in paid), default=0)
    payment = next((p for p in paid if p.refundable_minor >= wanted and p.amount.currency == c.amount.currency), None)
    if payment is None:
        return _reject(
            command,
            "amount_exceeds_refundable",
            f"At most {Money.from_minor(best, sub.price.currency)} can be refunded in one refund for this subscription.",
        )
    assert payment.provider_payment_id is not None
    refund_id = derived_id("refund", cid)
    intent = RefundRequested(
        refund_id=refund_id,
        subscription_id=sub.subscription_id,
        payment_id=payment.payment_id,
        provider_payment_id=payment.provider_payment_id,
        amount=c.amount,
        reason=c.reason,
        idempotence_key=_key(refund_id),
        customer=sub.customer or state.customer or payment.customer,
        command_type=command.type,
    )
    return Decision([Emit(intent, cid)], step=CreateRefund(refund_id, intent.idempotence_key, refund_request(intent, sub.plan_name)))


def _set_auto_renew(state: AccountState, command: Envelope, ctx: Context) -> Decision:
    c: SetAutoRenew = command.data  # type: ignore[assignment]
    cid = command_id_of(command)
    sub = _subscription(state, command, c.subscription_id)
    if isinstance(sub, Decision):
        return sub
    if sub.status not in LIVE_SUBSCRIPTION:
        return _reject(command, "not_active", f"The subscription is {sub.status.replace('_', ' ')}.")
    # Turning auto-renewal back on withdraws a cancel at period end (the subscription resumes).
    if c.enabled and not sub.payment_method_id:
        return _reject(command, "no_payment_method", "There is no saved card to renew this subscription with.")
    if sub.auto_renew == c.enabled and not (c.enabled and sub.cancel_at_period_end):
        return _succeed(command, subscription_id=sub.subscription_id, message=f"Auto-renewal is already {'on' if c.enabled else 'off'}.")
    changed = AutoRenewChanged(subscription_id=sub.subscription_id, enabled=c.enabled, reason=c.reason, customer=sub.customer or state.customer)
    return Decision([Emit(changed, cid), _succeeded(cid, command.type, subscription_id=sub.subscription_id)])


def _extend(state: AccountState, command: Envelope, ctx: Context) -> Decision:
    c: ExtendSubscription = command.data  # type: ignore[assignment]
    cid = command_id_of(command)
    sub = _subscription(state, command, c.subscription_id)
    if isinstance(sub, Decision):
        return sub
    if sub.status not in LIVE_SUBSCRIPTION or sub.period_end is None:
        return _reject(command, "not_active", f"Only an active subscription can be extended; this one is {sub.status.replace('_', ' ')}.")
    new_end = sub.period_end + timedelta(days=c.days)
    adjusted = SubscriptionAdjusted(
        subscription_id=sub.subscription_id, days=c.days, period_end=new_end, reason=c.reason, customer=sub.customer or state.customer
    )
    return Decision(
        [Emit(adjusted, cid), _succeeded(cid, command.type, subscription_id=sub.subscription_id, message=f"Now ends on {_fmt_day(new_end)}.")]
    )


def _grant(state: AccountState, command: Envelope, ctx: Context) -> Decision:
    c: GrantSubscription = command.data  # type: ignore[assignment]
    cid = command_id_of(command)
    plan = ctx.plan
    if plan is None or not plan.exists or plan.plan_id != c.plan_id:
        return _reject(command, "plan_not_found", f"There is no plan «{c.plan_id}».")
    if plan.archived:
        return _reject(command, "plan_archived", f"The plan «{plan.name}» is archived.")
    if c.subscription_id in state.subscriptions:
        return _reject(command, "duplicate_subscription", f"Subscription {c.subscription_id} already exists.")
    if _live_subscription_to(state, c.plan_id) is not None or _pending_subscription_to(state, c.plan_id) is not None:
        return _reject(command, "already_subscribed", f"The account already has an active or pending «{plan.name}» subscription; extend it instead.")
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
    )
    return Decision([Emit(activated, cid), _succeeded(cid, command.type, subscription_id=c.subscription_id, plan_id=c.plan_id)])


def _renew(state: AccountState, command: Envelope, ctx: Context) -> Decision:
    c: RenewSubscription = command.data  # type: ignore[assignment]
    cid = command_id_of(command)
    sub = _subscription(state, command, c.subscription_id)
    if isinstance(sub, Decision):
        return sub
    if sub.period_end != c.period_end:
        return _succeed(command, subscription_id=sub.subscription_id, message="This period was already renewed or changed; nothing to charge.")
    if sub.status not in LIVE_SUBSCRIPTION or sub.period_end is None:
        return _reject(command, "not_renewable", f"The subscription is {sub.status.replace('_', ' ')}.")
    if not sub.auto_renew or sub.cancel_at_period_end:
        return _reject(command, "auto_renew_off", "Auto-renewal is off for this subscription.")
    if not sub.payment_method_id:
        return _reject(command, "no_payment_method", "There is no saved card to renew this subscription with.")
    # One charge at a time per subscription: a charge still in flight, or one whose outcome we
    # never heard, may yet succeed — whatever period it was started for (an operator may have
    # moved the period end since), it is the charge for the next period.
    for pid in sub.payment_ids:
        p = state.payments.get(pid)
        if p is not None and isinstance(p.intent, RenewalStarted) and p.status not in FINAL_PAYMENT:
            return _succeed(command, subscription_id=sub.subscription_id, payment_id=pid, message="A renewal charge for this period is in progress.")
    for pid in sub.payment_ids:
        p = state.payments.get(pid)
        if p is not None and isinstance(p.intent, RenewalStarted) and p.outcome_unknown:
            return _renewal_blocked(state, command, sub, p, c.attempt, ctx)
    payment_id = derived_id("payment", cid)
    intent = RenewalStarted(
        subscription_id=sub.subscription_id,
        payment_id=payment_id,
        plan_id=sub.plan_id,
        plan_name=sub.plan_name,
        amount=sub.price,
        period_start=sub.period_end,
        period_end=sub.period_end + timedelta(days=sub.period_days),
        attempt=c.attempt,
        payment_method_id=sub.payment_method_id,
        idempotence_key=_key(payment_id),
        customer=sub.customer or state.customer,
    )
    step = CreatePayment(payment_id, intent.idempotence_key, renewal_request(state.user_id, cid, intent))
    return Decision([Emit(intent, cid)], step=step)


def _renewal_blocked(state: AccountState, command: Envelope, sub: Subscription, unknown: Payment, attempt: int, ctx: Context) -> Decision:
    """A renewal attempt that may not charge: an earlier charge's outcome is still unknown.

    Charging again could take the money twice; not charging is one more failed attempt, so dunning
    runs its course (and the subscription expires at its end) unless the late answer arrives.
    """
    cid = command_id_of(command)
    reason = "an earlier renewal charge's outcome is still unknown; it is not charged again"
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
    message = "Not charged: an earlier renewal charge's outcome is still unknown."
    return Decision([Emit(failed, cid), _succeeded(cid, command.type, subscription_id=sub.subscription_id, message=message)])


def _expire(state: AccountState, command: Envelope, ctx: Context) -> Decision:
    c: ExpireSubscription = command.data  # type: ignore[assignment]
    cid = command_id_of(command)
    sub = _subscription(state, command, c.subscription_id)
    if isinstance(sub, Decision):
        return sub
    if sub.status not in LIVE_SUBSCRIPTION:
        return _succeed(command, subscription_id=sub.subscription_id, message=f"Nothing to do: the subscription is {sub.status.replace('_', ' ')}.")
    if sub.period_end != c.period_end:
        return _succeed(command, subscription_id=sub.subscription_id, message="The period changed; the subscription does not end now.")
    if sub.period_end is not None and ctx.now < sub.period_end:
        return _reject(command, "not_due", f"The period ends on {sub.period_end.isoformat()}; it cannot expire before that.")
    expired = SubscriptionExpired(
        subscription_id=sub.subscription_id, expired_at=ctx.now, reason=c.reason, customer=sub.customer or state.customer
    )
    return Decision([Emit(expired, cid), _succeeded(cid, command.type, subscription_id=sub.subscription_id)])


def _remind(state: AccountState, command: Envelope, ctx: Context) -> Decision:
    c: SendExpiryReminder = command.data  # type: ignore[assignment]
    cid = command_id_of(command)
    sub = _subscription(state, command, c.subscription_id)
    if isinstance(sub, Decision):
        return sub
    if sub.status not in LIVE_SUBSCRIPTION or sub.period_end != c.period_end or sub.reminded_for == c.period_end:
        return _succeed(command, subscription_id=sub.subscription_id, message="No reminder needed.")
    soon = SubscriptionExpiringSoon(
        subscription_id=sub.subscription_id, period_end=c.period_end, auto_renew=sub.auto_renew, customer=sub.customer or state.customer
    )
    return Decision([Emit(soon, cid), _succeeded(cid, command.type, subscription_id=sub.subscription_id)])


_ACCOUNT_DECIDERS: dict[type, Callable[[AccountState, Envelope, Context], Decision]] = {
    PurchaseSubscription: _purchase,
    CancelSubscription: _cancel,
    SetAutoRenew: _set_auto_renew,
    SyncPayment: _sync_payment,
    SyncRefund: _sync_refund,
    RenewSubscription: _renew,
    ExpireSubscription: _expire,
    SendExpiryReminder: _remind,
    ExtendSubscription: _extend,
    GrantSubscription: _grant,
    AdminRefund: _admin_refund,
    AdminCancelSubscription: _admin_cancel,
}
