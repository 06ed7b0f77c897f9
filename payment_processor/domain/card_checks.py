"""Card checks: a small redirect payment that saves a card and is refunded in full at once.

One mechanism serves three commands (docs/decisions/0118): replacing the card renewals charge
(`ReplacePaymentMethod`), turning auto-renewal on without a saved card (`SetAutoRenew`), and
starting a free trial (`PurchaseSubscription` of a plan with `trial_days`). The check is recorded
as an intent (`CardCheckStarted`, purpose `card_check`) before YooKassa is called, like every
payment; what its success does is decided in `payments.card_check_succeeded_effects`, and its
money always goes back through the ordinary refund machinery. A check never pays for a period.
"""

from __future__ import annotations

from uuid import UUID

from schemas import CardCheckReason, CardCheckStarted, Customer, Envelope, TrialTerms, derived_id

from payment_processor.domain.decision import (
    Context,
    Decision,
    Emit,
    command_id_of,
    idempotence_key_for,
    plan_receipt_settings,
    succeed,
)
from payment_processor.domain.provider import CARD_CHECK_DESCRIPTION, CreatePayment, build_receipt, card_check_request
from payment_processor.domain.state import AccountState, Payment, Subscription

COMMAND_OF_REASON: dict[str, str] = {
    "replace_payment_method": "ReplacePaymentMethod",
    "auto_renew": "SetAutoRenew",
    "trial": "PurchaseSubscription",
}
"""The command that starts a check for each reason (it ends when the check's page exists)."""


def open_card_check(state: AccountState, sub: Subscription, reason: CardCheckReason) -> Payment | None:
    """A check of this subscription for this reason whose page the customer can still use."""
    for pid in reversed(sub.payment_ids):
        p = state.payments.get(pid)
        if (
            p is not None
            and isinstance(p.intent, CardCheckStarted)
            and p.intent.reason == reason
            and p.status == "pending"
            and p.confirmation_url
        ):
            return p
    return None


def start_card_check(
    state: AccountState,
    command: Envelope,
    subscription_id: UUID,
    reason: CardCheckReason,
    customer: Customer,
    ctx: Context,
    *,
    return_url: str | None = None,
    trial: TrialTerms | None = None,
) -> Decision:
    """The intent and the create of a card check (the same request on every retry)."""
    cid = command_id_of(command)
    payment_id = derived_id("payment", cid)
    intent = CardCheckStarted(
        subscription_id=subscription_id,
        payment_id=payment_id,
        reason=reason,
        amount=ctx.card_check_amount,
        customer=customer,
        idempotence_key=idempotence_key_for(payment_id),
        return_url=return_url or ctx.default_return_url,
        trial=trial,
        # a trial's check says what the plan's receipts say: the first charge at the trial's end follows it
        receipt=build_receipt(
            customer, CARD_CHECK_DESCRIPTION, ctx.card_check_amount, plan_receipt_settings(ctx.plan, ctx.receipts) if trial else ctx.receipts
        ),
    )
    step = CreatePayment(payment_id, intent.idempotence_key, card_check_request(state.user_id, cid, intent))
    return Decision([Emit(intent, cid)], step=step)


def continue_open_check(command: Envelope, sub: Subscription, check: Payment) -> Decision:
    """A repeat while a check's page is open points at that page (like a repeat purchase, decision 0041)."""
    return succeed(
        command,
        subscription_id=sub.subscription_id,
        payment_id=check.payment_id,
        confirmation_url=check.confirmation_url,
        message="A card check is already open: confirm it at the link.",
    )
