"""Promo codes: their stream's state, their commands, and the discount arithmetic. Pure, no I/O.

A code lives on its own stream (`promo-<CODE>`): its terms and every use. The account stream is the
consistency boundary of a purchase, but a code's usage limit spans accounts, so a purchase with a
code also appends `PromoCodeRedeemed` to the code's stream — with the code stream's expected
version, in the SAME transaction as the account's CheckoutStarted (docs/decisions/0121). Two
purchases racing for the last use cannot both commit: the loser's append conflicts, it re-reads
and is refused `promo_code_exhausted`. A checkout that fails or is abandoned releases its use
(`PromoCodeReleased`, in the transaction of the account's PaymentFailed).

The discount arithmetic is `rules/discounts.py` (shared with the API's preview): percent rounded
down to the kopeck, at least 1 ₽ charged. 100 % off is refused at creation (a free period is a grant).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID

from rules.discounts import discount_minor
from schemas import (
    AppliedPromo,
    CommandFailed,
    CommandRejected,
    CommandSucceeded,
    Envelope,
    Metadata,
    Money,
    PromoCodeCreated,
    PromoCodeDeactivated,
    PromoCodeRedeemed,
    PromoCodeReleased,
    derived_id,
    new_envelope,
    promo_stream,
)

PROMO_STREAM_EVENTS = (PromoCodeRedeemed, PromoCodeReleased)
"""Events a purchase's decision emits for the CODE's stream, next to the account's own events."""


@dataclass
class Redemption:
    user_id: str
    subscription_id: UUID
    payment_id: UUID
    released: bool = False


@dataclass
class PromoState:
    """One promo code as its stream tells it."""

    stream_id: str
    version: int = 0
    code: str | None = None
    percent_off: int | None = None
    amount_off: Money | None = None
    periods: int = 1
    expires_at: datetime | None = None
    max_redemptions: int | None = None
    plan_ids: list[str] | None = None
    active: bool = False
    deactivated_reason: str | None = None
    redemptions: dict[UUID, Redemption] = field(default_factory=dict)
    """By payment id (the checkout that holds the use)."""
    events_per_command: dict[UUID, int] = field(default_factory=dict)
    terminal: dict[UUID, str] = field(default_factory=dict)

    @property
    def exists(self) -> bool:
        return self.code is not None

    @property
    def held(self) -> int:
        """Uses counted against the limit: every redemption not released."""
        return sum(1 for r in self.redemptions.values() if not r.released)

    @property
    def remaining(self) -> int | None:
        return None if self.max_redemptions is None else max(self.max_redemptions - self.held, 0)

    def used_by(self, user_id: str) -> bool:
        return any(r.user_id == user_id and not r.released for r in self.redemptions.values())


def apply_promo(state: PromoState, event: Envelope) -> PromoState:
    state.version += 1
    cid = event.metadata.command_id
    if cid is not None:
        state.events_per_command[cid] = state.events_per_command.get(cid, 0) + 1
    d = event.data
    if isinstance(d, CommandSucceeded):
        state.terminal[d.command_id] = "succeeded"
    elif isinstance(d, CommandRejected):
        state.terminal[d.command_id] = "rejected"
    elif isinstance(d, CommandFailed):
        state.terminal[d.command_id] = "failed"
    elif isinstance(d, PromoCodeCreated):
        state.code, state.percent_off, state.amount_off, state.periods = d.code, d.percent_off, d.amount_off, d.periods
        state.expires_at, state.max_redemptions, state.plan_ids = d.expires_at, d.max_redemptions, d.plan_ids
        state.active = True
    elif isinstance(d, PromoCodeDeactivated):
        state.active, state.deactivated_reason = False, d.reason
    elif isinstance(d, PromoCodeRedeemed):
        state.redemptions[d.payment_id] = Redemption(d.user_id, d.subscription_id, d.payment_id)
    elif isinstance(d, PromoCodeReleased):
        redemption = state.redemptions.get(d.payment_id)
        if redemption is not None:
            redemption.released = True
    return state


def build_promo(stream_id: str, events: Iterable[Envelope]) -> PromoState:
    state = PromoState(stream_id=stream_id)
    for event in events:
        apply_promo(state, event)
    return state


# --------------------------------------------------------------------------- the arithmetic


def applied(
    code: str, percent_off: int | None, amount_off: Money | None, periods: int, list_price: Money, periods_left: int
) -> AppliedPromo:
    """The discount on one charge of `list_price`, with `periods_left` discounted periods to come after it."""
    off = discount_minor(list_price.minor, percent_off=percent_off, amount_off_minor=amount_off.minor if amount_off else None)
    return AppliedPromo(
        code=code,
        percent_off=percent_off,
        amount_off=amount_off,
        periods=periods,
        list_price=list_price,
        discount=Money.from_minor(off, list_price.currency),
        periods_left=periods_left,
    )


def charged(list_price: Money, promo: AppliedPromo | None) -> Money:
    """What a charge takes: the list price less the discount."""
    if promo is None:
        return list_price
    return Money.from_minor(list_price.minor - promo.discount.minor, list_price.currency)


def renewal_discount(first: AppliedPromo | None, periods_left: int, list_price: Money) -> AppliedPromo | None:
    """A renewal's discount, applied on top of the renewal's list price: the checkout's terms while
    discounted periods remain, none after (None also when the code does not fit the currency)."""
    if first is None or periods_left <= 0:
        return None
    if first.amount_off is not None and first.amount_off.currency != list_price.currency:
        return None
    return applied(first.code, first.percent_off, first.amount_off, first.periods, list_price, periods_left - 1)


# --------------------------------------------------------------------------- a purchase with a code


def refusal(promo: PromoState | None, code: str, plan_id: str, list_price: Money, user_id: str, now: datetime) -> tuple[str, str] | None:
    """(rejection code, reason) when `code` may not discount this purchase, else None."""
    if promo is None or not promo.exists or promo.code != code:
        return "promo_code_not_found", f"There is no promo code «{code}»."
    if not promo.active:
        return "promo_code_expired", f"The promo code «{code}» has been withdrawn."
    if promo.expires_at is not None and now >= promo.expires_at:
        return "promo_code_expired", f"The promo code «{code}» expired on {promo.expires_at:%Y-%m-%d}."
    if promo.plan_ids is not None and plan_id not in promo.plan_ids:
        return "promo_code_not_applicable", f"The promo code «{code}» does not apply to this plan."
    if promo.amount_off is not None and promo.amount_off.currency != list_price.currency:
        return "promo_code_not_applicable", f"The promo code «{code}» is in {promo.amount_off.currency}, the plan in {list_price.currency}."
    if promo.used_by(user_id):
        return "promo_code_already_used", f"You have already used the promo code «{code}»."
    if promo.max_redemptions is not None and promo.held >= promo.max_redemptions:
        return "promo_code_exhausted", f"The promo code «{code}» has been used up."
    return None


def checkout_discount(promo: PromoState, list_price: Money) -> AppliedPromo:
    """The first charge's discount (call after `refusal` said None)."""
    assert promo.code is not None
    return applied(promo.code, promo.percent_off, promo.amount_off, promo.periods, list_price, promo.periods - 1)


def promo_envelopes(emits: list, command: Envelope, now: datetime) -> dict[str, list[Envelope]]:
    """The code streams' envelopes of a decision: ids derived from (code, kind, payment), so one
    checkout redeems and releases a code at most once each, whoever repeats the step."""
    out: dict[str, list[Envelope]] = {}
    for emit in emits:
        p = emit.payload
        if not isinstance(p, PROMO_STREAM_EVENTS):
            continue
        stream_id = promo_stream(p.code)
        metadata = Metadata(
            correlation_id=command.metadata.correlation_id,
            causation_id=str(command.id),
            command_id=emit.command_id,
            actor=command.metadata.actor,
        )
        out.setdefault(stream_id, []).append(
            new_envelope(p, stream_id=stream_id, metadata=metadata, id=derived_id("promo-event", p.code, p.type_name(), p.payment_id), occurred_at=now)
        )
    return out


def account_emits(emits: list) -> list:
    """The decision's events for the account stream (all but the code streams')."""
    return [e for e in emits if not isinstance(e.payload, PROMO_STREAM_EVENTS)]
