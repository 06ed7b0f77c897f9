"""What YooKassa answered, turned into events: `resolve`, resuming an intent after a crash, giving up.

An answer may arrive for the command that asked (the same handler call), for a redelivery of it,
for the janitor's SyncPayment/SyncRefund, or for a notification — even one naming a YooKassa
object we never heard the id of, matched by what YooKassa itself returns (docs/decisions/0104).
Whoever settles an operation also ends the command that started it.
"""


from __future__ import annotations

from typing import Any
from uuid import UUID

from schemas import (
    Envelope,
)

from payment_processor.domain.decision import (
    Context,
    Decision,
    command_id_of,
    emit_succeeded,
    reject,
)
from payment_processor.domain.payments import (
    observe_payment,
    payment_origin_terminal,
    payment_step,
)
from payment_processor.domain.outside import record_dashboard_refund
from payment_processor.domain.provider import (
    CreatePayment,
    FindPayment,
    ProviderOutcome,
    ProviderPayment,
    ProviderRefund,
    ProviderRefused,
    ProviderStep,
    ProviderUnknown,
)
from payment_processor.domain.refunds import (
    observe_refund,
    refund_origin_terminal,
    refund_step,
    unasked_sibling,
)
from payment_processor.domain.state import (
    FINAL_PAYMENT,
    FINAL_REFUND,
    AccountState,
    Payment,
    Refund,
)


def resolve(state: AccountState, command: Envelope, step: ProviderStep, outcome: ProviderOutcome, ctx: Context) -> Decision:
    """Events for what YooKassa answered to `step` (state already holds the intent)."""
    cid = command_id_of(command)
    if isinstance(step, (CreatePayment, FindPayment)):
        payment = state.payments.get(step.payment_id) if step.payment_id else _payment_named_by(state, outcome)
        if payment is None:
            return _not_ours(command, "payment", step, outcome)
        emits, next_step, settled = observe_payment(state, payment, outcome, ctx, cid)
        origin = payment.origin_command_id
    else:
        refund = state.refunds.get(step.refund_id) if step.refund_id else _refund_named_by(state, outcome)
        if refund is None:
            if step.refund_id is None and isinstance(outcome, ProviderRefund):
                # No refund of ours: one made in YooKassa's dashboard, if its payment is ours (0122).
                recorded = record_dashboard_refund(state, command, outcome, ctx)
                if recorded is not None:
                    return recorded
            return _not_ours(command, "refund", step, outcome)
        emits, next_step, settled = observe_refund(state, refund, outcome, ctx, cid)
        origin = refund.origin_command_id
        sibling = unasked_sibling(state, refund) if next_step is None else None
        if sibling is not None:
            next_step = refund_step(state, sibling)  # the same command's next refund (docs/decisions/0119)
        # A refund started by the command in hand (e.g. a late duplicate payment) ends it now.
    if next_step is None and cid != origin and cid not in state.terminal:
        emits.append(emit_succeeded(cid, command.type, **_sync_outcome(step, outcome)))
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
    if any(
        r.provider_payment_id == outcome.payment_id and r.provider_refund_id is None and r.status not in FINAL_REFUND
        for r in state.refunds.values()
    ):
        # A refund of ours on that payment is still in flight without an id: YooKassa's refund may
        # be its answer, and its own create (same key) will say so. Matching it to one we gave up
        # on would record one refund twice (the account model found this).
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
    return reject(command, f"{kind}_not_found", why[:1000])


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


def resume(state: AccountState, command: Envelope, ctx: Context) -> Decision:
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
            terminal = payment_origin_terminal(state, payment, view)
            return Decision([terminal] if terminal else [])
        return payment_step_or_give_up(state, payment, command, ctx)
    refund = state.refunds[op_id]
    sibling = unasked_sibling(state, refund)
    if sibling is not None:
        refund = sibling
    if refund.status in FINAL_REFUND or (refund.status == "pending" and refund.provider_refund_id):
        view_r = ProviderRefund(id=refund.provider_refund_id or "", status=refund.status, cancellation_reason=refund.failure_reason)
        terminal = refund_origin_terminal(state, refund, view_r)
        return Decision([terminal] if terminal else [])
    return refund_step_or_give_up(state, refund, command, ctx)


def payment_step_or_give_up(state: AccountState, payment: Payment, command: Envelope, ctx: Context) -> Decision:
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


def refund_step_or_give_up(state: AccountState, refund: Refund, command: Envelope, ctx: Context) -> Decision:
    if refund.provider_refund_id is None and ctx.now - refund.requested_at > ctx.create_retry_window:
        outcome = ProviderRefused(
            "no_answer", "YooKassa never answered the create within its idempotence window", outcome_unknown=True
        )
        return resolve(state, command, refund_step(state, refund), outcome, ctx)
    return Decision(step=refund_step(state, refund))
