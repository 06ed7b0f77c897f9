"""What every decision of the account is made of: its context, the events it emits, and small builders.

Pure: no I/O, no clock (`Context.now` is business time given by the caller). Shared by the
command deciders (`commands`), the provider-answer handling (`answers`, `payments`, `refunds`).
"""


from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

from schemas import (
    CommandFailed,
    CommandOutcome,
    CommandRejected,
    CommandSucceeded,
    Customer,
    Envelope,
    Event,
    Money,
    Receipt,
    derived_id,
)

from payment_processor.domain.promo import PromoState
from payment_processor.domain.provider import (
    LEGACY_RECEIPT,
    ProviderStep,
    ReceiptSettings,
    build_receipt,
    settings_of,
)
from payment_processor.domain.state import (
    LIVE_SUBSCRIPTION,
    AccountState,
    Payment,
    PlanState,
    Subscription,
)

PENDING_AT_PROVIDER = frozenset({"pending", "waiting_for_capture"})


@dataclass(frozen=True)
class Context:
    """What a decision may depend on besides the stream: time, the plan, configuration."""

    now: datetime
    plan: PlanState | None = None
    promo: PromoState | None = None
    """The promo code a purchase names (its stream, read next to the account's)."""
    default_return_url: str = "http://127.0.0.1:8000/v1/return"
    dunning_retry_days: tuple[int, ...] = (1, 3, 5)
    """Days after a failed renewal attempt until the next one (issue 10 owns the policy)."""
    price_change_notice_days: int = 30
    """A subscriber hears of a price change at least this many days before paying it (docs/decisions/0120)."""
    create_retry_window: timedelta = timedelta(hours=23)
    """YooKassa remembers an Idempotence-Key for 24 h; repeating a create later could charge twice."""
    receipts: ReceiptSettings = LEGACY_RECEIPT
    """The processor's receipt defaults (for plans that set none) and the shop's tax system code."""
    card_check_amount: Money = Money(amount=Decimal("1.00"))
    """What a card check takes (and gives back at once): `PROCESSOR_CARD_CHECK_AMOUNT`."""


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


def fmt_day(at: datetime | None) -> str:
    return at.strftime("%Y-%m-%d") if at else "—"


def emit_succeeded(cid: UUID, ctype: str, **outcome: Any) -> Emit:
    return Emit(CommandSucceeded(command_id=cid, command_type=ctype, outcome=CommandOutcome(**outcome)), cid)


def emit_rejected(cid: UUID, ctype: str, code: str, reason: str) -> Emit:
    return Emit(CommandRejected(command_id=cid, command_type=ctype, code=code, reason=reason), cid)


def emit_failed(cid: UUID, ctype: str, reason: str) -> Emit:
    return Emit(CommandFailed(command_id=cid, command_type=ctype, reason=reason[:1000]), cid)


def reject(command: Envelope, code: str, reason: str) -> Decision:
    return Decision([emit_rejected(command_id_of(command), command.type, code, reason)])


def succeed(command: Envelope, **outcome: Any) -> Decision:
    return Decision([emit_succeeded(command_id_of(command), command.type, **outcome)])


def idempotence_key_for(operation_id: UUID, step: str = "create") -> str:
    return str(derived_id("yookassa", operation_id, step))


def failed_command(command_id: UUID, command_type: str, reason: str) -> Emit:
    """The terminal event for a command given up on (dead-lettered)."""
    return emit_failed(command_id, command_type, reason)


def live_subscription_to(state: AccountState, plan_id: str, *, exclude: UUID | None = None) -> Subscription | None:
    for sub in state.subscriptions.values():
        if sub.plan_id == plan_id and sub.subscription_id != exclude and sub.status in LIVE_SUBSCRIPTION:
            return sub
    return None


def pending_subscription_to(state: AccountState, plan_id: str) -> Subscription | None:
    for sub in state.subscriptions.values():
        if sub.plan_id == plan_id and sub.status == "pending_payment":
            return sub
    return None


def open_checkout_for(state: AccountState, plan_id: str) -> tuple[Subscription, Payment] | None:
    """A pending subscription to the plan whose payment page the customer can still use."""
    for sub in state.subscriptions.values():
        if sub.plan_id == plan_id and sub.status == "pending_payment" and sub.payment_ids:
            payment = state.payments.get(sub.payment_ids[-1])
            if payment is not None and payment.status == "pending" and payment.confirmation_url:
                return sub, payment
    return None


def find_subscription(state: AccountState, command: Envelope, subscription_id: UUID) -> Subscription | Decision:
    sub = state.subscriptions.get(subscription_id)
    if sub is None:
        return reject(command, "subscription_not_found", f"There is no subscription {subscription_id} on this account.")
    return sub


# --------------------------------------------------------------------------- receipts


def plan_receipt_settings(plan: PlanState | None, defaults: ReceiptSettings) -> ReceiptSettings:
    """A plan's receipt settings; what the plan leaves unset, the processor's defaults fill."""
    if plan is None:
        return defaults
    return ReceiptSettings(
        vat_code=plan.vat_code or defaults.vat_code,
        payment_subject=plan.payment_subject or defaults.payment_subject,
        payment_mode=plan.payment_mode or defaults.payment_mode,
        tax_system_code=defaults.tax_system_code,
    )


def renewal_receipt(state: AccountState, sub: Subscription, amount: Money, ctx: Context) -> Receipt | None:
    """A renewal's receipt says what the purchase's (or the trial check's) said — the plan's settings,
    captured with its price — with the shop's current tax system code; one recorded before receipts
    were configurable leaves the processor's defaults."""
    recorded = None
    for pid in sub.payment_ids:  # the purchase, or the card check that started a free trial
        p = state.payments.get(pid)
        if p is not None and (p.purpose == "purchase" or getattr(p.intent, "trial", None) is not None):
            recorded = p.intent.receipt
            break
    settings = settings_of(recorded) if recorded is not None else ctx.receipts
    settings = ReceiptSettings(settings.vat_code, settings.payment_subject, settings.payment_mode, ctx.receipts.tax_system_code)
    return build_receipt(sub.customer or state.customer, sub.plan_name, amount, settings)


def refund_receipt(payment: Payment, customer: Customer | None, description: str, amount: Money) -> Receipt | None:
    """A refund's receipt mirrors the refunded payment's (VAT, subject, mode, tax system) for the refunded amount."""
    return build_receipt(customer, description, amount, settings_of(payment.intent.receipt))
