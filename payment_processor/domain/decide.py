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
    Envelope,
    PlanArchived,
    PlanCreated,
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
    return reject(command, "wrong_stream", f"{command.type} is not a command for a plan.")
