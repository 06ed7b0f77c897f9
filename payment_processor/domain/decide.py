"""The decisions of the billing account: command → events (+ at most one provider step).

Pure functions, no I/O, no clock: `Context.now` is business time given by the caller.

* `decide(state, command, ctx)` answers a command. It returns the events to append now and,
  when money must move, the provider step to run AFTER those events are committed. The intent
  events (CheckoutStarted, RenewalStarted, RefundRequested) fix the Idempotence-Key and every
  field of the request body before YooKassa is called, so any retry sends the same request.
* `resolve(state, command, step, outcome, ctx)` (in `answers`) turns what YooKassa answered into events, on the
  state AFTER the intent was applied. It may ask for one more step (a late duplicate payment is
  refunded), and is safe to call again on a state that moved on (it only adds what is missing).

Every command ends in exactly one terminal event (CommandSucceeded / CommandRejected /
CommandFailed). A command whose provider outcome is unknown has no terminal event yet: it is
"processing" until a redelivery or the janitor's SyncPayment/SyncRefund settles it, and whoever
settles an operation also ends the command that started it.

The deciders, one per command, are in `commands`; what YooKassa's answers mean for a payment or
a refund is in `payments` and `refunds`; what they all share is in `decision`.
"""

from __future__ import annotations

from schemas import (
    ArchivePlan,
    CreatePlan,
    CreatePromoCode,
    DeactivatePromoCode,
    PromoCodeCreated,
    PromoCodeDeactivated,
    Envelope,
    PlanArchived,
    PlanCreated,
    PlanPriceChangeScheduled,
    SchedulePriceChange,
)

from payment_processor.domain.answers import resume
from payment_processor.domain.commands import ACCOUNT_DECIDERS
from payment_processor.domain.decision import (
    Context,
    Decision,
    Emit,
    command_id_of,
    emit_succeeded,
    reject,
)
from payment_processor.domain.promo import PromoState
from payment_processor.domain.state import (
    AccountState,
    PlanState,
)


def decide(state: AccountState, command: Envelope, ctx: Context) -> Decision:
    """Answer one command on the account stream."""
    cid = command_id_of(command)
    if cid in state.terminal:
        return Decision(already_handled=True)
    if cid in state.intents:
        return resume(state, command, ctx)
    decider = ACCOUNT_DECIDERS.get(type(command.data))
    if decider is None:
        return reject(command, "wrong_stream", f"{command.type} is not a command for a billing account.")
    return decider(state, command, ctx)


def decide_plan(state: PlanState, command: Envelope, ctx: Context) -> Decision:
    """Answer one command on a plan stream."""
    cid = command_id_of(command)
    if cid in state.terminal:
        return Decision(already_handled=True)
    c = command.data
    if isinstance(c, CreatePlan):
        if state.exists:
            return reject(command, "plan_exists", f"A plan with the id «{c.plan_id}» already exists.")
        if c.price.amount <= 0:
            return reject(command, "invalid_price", "A plan's price must be more than zero; grant free access instead.")
        # The plan's receipt settings are fixed here: what the operator left unset, the processor's defaults fill.
        receipts = ctx.receipts
        created = PlanCreated(
            plan_id=c.plan_id,
            name=c.name,
            price=c.price,
            period_days=c.period_days,
            description=c.description,
            trial_days=c.trial_days,
            vat_code=c.vat_code or receipts.vat_code,
            payment_subject=c.payment_subject or receipts.payment_subject,  # type: ignore[arg-type]
            payment_mode=c.payment_mode or receipts.payment_mode,  # type: ignore[arg-type]
        )
        return Decision([Emit(created, cid), emit_succeeded(cid, command.type, plan_id=c.plan_id)])
    if isinstance(c, ArchivePlan):
        if not state.exists:
            return reject(command, "plan_not_found", f"There is no plan «{c.plan_id}».")
        if state.archived:
            return reject(command, "plan_archived", f"The plan «{state.name}» is already archived.")
        return Decision([Emit(PlanArchived(plan_id=c.plan_id, reason=c.reason), cid), emit_succeeded(cid, command.type, plan_id=c.plan_id)])
    if isinstance(c, SchedulePriceChange):
        return _schedule_price_change(state, command, c, ctx)
    return reject(command, "wrong_stream", f"{command.type} is not a command for a plan.")


def _schedule_price_change(state: PlanState, command: Envelope, c: SchedulePriceChange, ctx: Context) -> Decision:
    """A new price from a future date on (docs/decisions/0120); the change is named by the command id."""
    cid = command_id_of(command)
    if not state.exists:
        return reject(command, "plan_not_found", f"There is no plan «{c.plan_id}».")
    if state.archived:
        return reject(command, "plan_archived", f"The plan «{state.name}» is archived: it has no price to change.")
    if c.effective_at <= ctx.now:
        return reject(command, "effective_date_not_in_future", "The new price must take effect in the future.")
    if c.price.amount <= 0:
        return reject(command, "invalid_price", "A plan's price must be more than zero.")
    current = state.price_at(c.effective_at)
    if current is not None and c.price.currency != current.currency:
        return reject(command, "currency_mismatch", f"The plan is priced in {current.currency}, not {c.price.currency}.")
    if state.price_changes and c.effective_at <= state.price_changes[-1].effective_at:
        last = state.price_changes[-1]
        return reject(
            command,
            "change_already_scheduled_later",
            f"A change to {last.price} on {last.effective_at.date().isoformat()} is already scheduled; a new one must take effect after it.",
        )
    if c.price == current:
        return reject(command, "same_price", f"The plan already costs {current} then.")
    scheduled = PlanPriceChangeScheduled(
        plan_id=c.plan_id, change_id=cid, price=c.price, effective_at=c.effective_at, grandfather=c.grandfather, reason=c.reason
    )
    return Decision([Emit(scheduled, cid), emit_succeeded(cid, command.type, plan_id=c.plan_id)])


def decide_promo(state: PromoState, command: Envelope, ctx: Context) -> Decision:
    """Answer an operator's command on a promo code's stream."""
    cid = command_id_of(command)
    if cid in state.terminal:
        return Decision(already_handled=True)
    c = command.data
    if isinstance(c, CreatePromoCode):
        if state.exists:
            return reject(command, "promo_code_exists", f"A promo code «{c.code}» already exists.")
        if (c.percent_off is None) == (c.amount_off is None):
            return reject(command, "invalid_promo_code", "A promo code takes either a percent off or an amount off, not both or neither.")
        if c.amount_off is not None and c.amount_off.minor <= 0:
            return reject(command, "invalid_promo_code", "The amount off must be more than zero.")
        if c.expires_at <= ctx.now:
            return reject(command, "invalid_promo_code", "The promo code would expire before it starts.")
        created = PromoCodeCreated(
            code=c.code, percent_off=c.percent_off, amount_off=c.amount_off, periods=c.periods, expires_at=c.expires_at,
            max_redemptions=c.max_redemptions, plan_ids=sorted(set(c.plan_ids)) if c.plan_ids is not None else None,
        )
        return Decision([Emit(created, cid), emit_succeeded(cid, command.type, message=f"Promo code «{c.code}» created.")])
    if isinstance(c, DeactivatePromoCode):
        if not state.exists:
            return reject(command, "promo_code_not_found", f"There is no promo code «{c.code}».")
        if not state.active:
            return reject(command, "promo_code_inactive", f"The promo code «{c.code}» is already deactivated.")
        return Decision([Emit(PromoCodeDeactivated(code=c.code, reason=c.reason), cid), emit_succeeded(cid, command.type, message=f"Promo code «{c.code}» deactivated.")])
    return reject(command, "wrong_stream", f"{command.type} is not a command for a promo code.")
