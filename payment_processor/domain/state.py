"""The account and plan aggregates, rebuilt from their events (`apply`), with no I/O.

The account stream is the consistency boundary: its subscriptions, payments and refunds, and
which commands already ended. State is a plain mutable object that only `apply` changes; the
decision functions read it and return new events, so the same events always give the same state.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from schemas import (
    AppliedPromo,
    AutoRenewChanged,
    CardCheckStarted,
    CheckoutStarted,
    CommandFailed,
    CommandRejected,
    CommandSucceeded,
    Customer,
    Envelope,
    Money,
    PaymentCreated,
    PaymentFailed,
    PaymentMethodReplaced,
    PaymentPurpose,
    PaymentStateUnknown,
    PaymentSucceeded,
    PlanArchived,
    PlanCreated,
    PlanSwitched,
    PlanSwitchScheduled,
    PlanSwitchWithdrawn,
    ReceiptRegistrationChanged,
    PlanPriceChangeScheduled,
    PriceChangeAnnounced,
    RecoveryStarted,
    RefundCreated,
    RefundFailed,
    RefundRequested,
    RefundStateUnknown,
    RefundSucceeded,
    RenewalConfirmationRequired,
    RenewalFailed,
    RenewalStarted,
    SubscriptionActivated,
    SubscriptionAdjusted,
    SubscriptionCanceled,
    SubscriptionExpired,
    SubscriptionExpiringSoon,
    SubscriptionRenewed,
    UpgradeStarted,
    account_user_id,
)
from schemas.commands import DEFAULT_PRODUCT

SubscriptionStatus = Literal["pending_payment", "active", "past_due", "canceled", "expired", "payment_failed"]
PaymentStatus = Literal["requested", "pending", "succeeded", "canceled", "unknown"]
RefundStatus = Literal["requested", "pending", "succeeded", "canceled", "unknown"]

LIVE_SUBSCRIPTION: frozenset[str] = frozenset({"active", "past_due"})
"""Statuses in which the customer has access and the subscription can be canceled or changed."""
FINAL_PAYMENT: frozenset[str] = frozenset({"succeeded", "canceled"})
FINAL_REFUND: frozenset[str] = frozenset({"succeeded", "canceled"})


@dataclass(frozen=True, slots=True)
class PriceStep:
    """An announced price: renewals whose period starts at/after `starts_at` cost `price`."""

    starts_at: datetime
    price: Money
    effective_at: datetime
    change_id: UUID


@dataclass
class Funding:
    """One payment's share of what paid the current period: `cap_minor` of it, counted from when
    its refunded + reserved stood at `baseline_minor`. A period is paid by one payment, except after
    an upgrade: the upgrade payment plus the credit carried from the earlier period's payments."""

    payment_id: UUID
    cap_minor: int
    baseline_minor: int = 0


@dataclass
class Subscription:
    subscription_id: UUID
    plan_id: str
    plan_name: str
    period_days: int
    price: Money
    status: SubscriptionStatus
    auto_renew: bool
    origin_command_id: UUID | None
    customer: Customer | None = None
    cancel_at_period_end: bool = False
    period_start: datetime | None = None
    period_end: datetime | None = None
    granted: bool = False
    payment_ids: list[UUID] = field(default_factory=list)
    current_payment_id: UUID | None = None
    """The payment that paid the current period (None for a granted one)."""
    payment_method_id: str | None = None
    payment_method_title: str | None = None
    renewal_attempt: int = 0
    """Failed renewal attempts for the current period (dunning)."""
    next_retry_at: datetime | None = None
    """During dunning: when the next renewal attempt is due (from the last RenewalFailed)."""
    dunning_over: bool = False
    """The last renewal attempt for the current period failed: the subscription is to expire."""
    reminded_for: datetime | None = None
    """The period end an "expiring soon" reminder was already sent for."""
    product: str = DEFAULT_PRODUCT
    funding: list[Funding] = field(default_factory=list)
    """What paid the current period (refunds of it are taken from these, newest first)."""
    switched_period: bool = False
    """The current period began with an upgrade: it is `period_days` from `period_start`."""
    pending_switch: PlanSwitchScheduled | None = None
    """A downgrade that takes effect with the renewal at the period end."""
    promo: AppliedPromo | None = None
    """The promo code the checkout applied (its terms discount renewals while periods remain)."""
    promo_periods_left: int = 0
    """Discounted periods still to come after the last paid one."""
    trial: bool = False
    """In a free trial: nothing was paid for the current period; the first renewal charges the plan's price."""
    renew_after_check: UUID | None = None
    """A card check started to turn auto-renewal on: it turns on when this check saves the card, unless
    the customer said otherwise (auto-renewal changed, canceled, expired) before that."""
    price_steps: list[PriceStep] = field(default_factory=list)
    """Plan price changes announced to this subscriber (PriceChangeAnnounced); see `pricing.renewal_price`."""

    @property
    def announced_changes(self) -> frozenset[UUID]:
        return frozenset(step.change_id for step in self.price_steps)


@dataclass
class Payment:
    payment_id: UUID
    subscription_id: UUID
    purpose: PaymentPurpose
    amount: Money
    origin_command_id: UUID
    idempotence_key: str
    customer: Customer
    intent: CheckoutStarted | RenewalStarted | CardCheckStarted | RecoveryStarted | UpgradeStarted
    requested_at: datetime
    status: PaymentStatus = "requested"
    provider_payment_id: str | None = None
    confirmation_url: str | None = None
    paid_at: datetime | None = None
    failure_reason: str | None = None
    refunded_minor: int = 0
    reserved_minor: int = 0
    """Refunds requested but not yet settled: not refundable again."""
    outcome_unknown: bool = False
    """We stopped asking about the create without an answer (PaymentFailed.outcome_unknown): it
    counts as failed, yet may have charged, so no new charge for its period starts while this holds."""
    receipt_registration: str | None = None
    """YooKassa's receipt_registration as last read (pending | succeeded | canceled)."""
    confirmation_requested: bool = False
    """A renewal charge YooKassa wants the customer to confirm (3-D Secure): the link was recorded
    (RenewalConfirmationRequired) and emailed; never again for this payment."""

    @property
    def renews_period(self) -> bool:
        """A charge for the next period of a live subscription: an automatic renewal or the customer
        paying an overdue one now. One such charge at a time per subscription."""
        return isinstance(self.intent, (RenewalStarted, RecoveryStarted))

    @property
    def refundable_minor(self) -> int:
        if self.status != "succeeded":
            return 0
        return max(self.amount.minor - self.refunded_minor - self.reserved_minor, 0)


@dataclass
class Refund:
    refund_id: UUID
    subscription_id: UUID
    payment_id: UUID
    provider_payment_id: str
    amount: Money
    origin_command_id: UUID
    idempotence_key: str
    intent: RefundRequested
    requested_at: datetime
    status: RefundStatus = "requested"
    provider_refund_id: str | None = None
    failure_reason: str | None = None
    outcome_unknown: bool = False
    """We stopped asking without an answer (RefundFailed.outcome_unknown): its amount stays reserved."""
    dashboard: bool = False
    """Made outside the product (YooKassa's dashboard) and recorded when found (docs/decisions/0122)."""
    receipt_registration: str | None = None


@dataclass
class AccountState:
    """Everything the processor knows about one billing account, at `version`."""

    stream_id: str
    version: int = 0
    customer: Customer | None = None
    subscriptions: dict[UUID, Subscription] = field(default_factory=dict)
    payments: dict[UUID, Payment] = field(default_factory=dict)
    refunds: dict[UUID, Refund] = field(default_factory=dict)
    events_per_command: dict[UUID, int] = field(default_factory=dict)
    """How many events each command produced so far: the next event id's index."""
    terminal: dict[UUID, str] = field(default_factory=dict)
    """Commands that ended, and how (succeeded | rejected | failed)."""
    intents: dict[UUID, tuple[Literal["payment", "refund"], UUID]] = field(default_factory=dict)
    """Command id → the provider operation it started (to resume it after a crash)."""
    trials_used: set[str] = field(default_factory=set)
    """Plans this account already had a free trial of (a trial is once per customer and plan)."""

    @property
    def user_id(self) -> str:
        return account_user_id(self.stream_id) or self.stream_id

    def payment_by_provider_id(self, provider_payment_id: str) -> Payment | None:
        for payment in self.payments.values():
            if payment.provider_payment_id == provider_payment_id:
                return payment
        return None

    def refund_by_provider_id(self, provider_refund_id: str) -> Refund | None:
        for refund in self.refunds.values():
            if refund.provider_refund_id == provider_refund_id:
                return refund
        return None


@dataclass(frozen=True, slots=True)
class PriceChange:
    """A plan's scheduled price (PlanPriceChangeScheduled)."""

    change_id: UUID
    price: Money
    effective_at: datetime
    grandfather: bool


@dataclass
class PlanState:
    stream_id: str
    version: int = 0
    plan_id: str | None = None
    name: str = ""
    price: Money | None = None
    period_days: int = 0
    description: str = ""
    product: str = DEFAULT_PRODUCT
    trial_days: int = 0
    archived: bool = False
    vat_code: int | None = None
    payment_subject: str | None = None
    payment_mode: str | None = None
    price_changes: list[PriceChange] = field(default_factory=list)
    """Scheduled prices, in increasing `effective_at` (the decider refuses one out of order)."""
    events_per_command: dict[UUID, int] = field(default_factory=dict)
    terminal: dict[UUID, str] = field(default_factory=dict)

    @property
    def exists(self) -> bool:
        return self.plan_id is not None

    def price_at(self, when: datetime) -> Money | None:
        """The price a purchase at `when` pays: the newest change in effect, else the created price."""
        price = self.price
        for change in self.price_changes:
            if change.effective_at <= when:
                price = change.price
        return price

    def change(self, change_id: UUID) -> PriceChange | None:
        return next((c for c in self.price_changes if c.change_id == change_id), None)


def _count(state: AccountState | PlanState, event: Envelope) -> None:
    state.version += 1
    command_id = event.metadata.command_id
    if command_id is not None:
        state.events_per_command[command_id] = state.events_per_command.get(command_id, 0) + 1
    data = event.data
    if isinstance(data, CommandSucceeded):
        state.terminal[data.command_id] = "succeeded"
    elif isinstance(data, CommandRejected):
        state.terminal[data.command_id] = "rejected"
    elif isinstance(data, CommandFailed):
        state.terminal[data.command_id] = "failed"


def apply_plan(state: PlanState, event: Envelope) -> PlanState:
    _count(state, event)
    data = event.data
    if isinstance(data, PlanCreated):
        state.plan_id, state.name, state.price = data.plan_id, data.name, data.price
        state.period_days, state.description = data.period_days, data.description
        state.product = data.product
        state.vat_code, state.payment_subject, state.payment_mode = data.vat_code, data.payment_subject, data.payment_mode
        state.trial_days = data.trial_days
    elif isinstance(data, PlanArchived):
        state.archived = True
    elif isinstance(data, PlanPriceChangeScheduled):
        state.price_changes.append(PriceChange(data.change_id, data.price, data.effective_at, data.grandfather))
    return state


def apply(state: AccountState, event: Envelope) -> AccountState:
    """Fold one event into the account state (in place) and return it."""
    _count(state, event)
    data = event.data
    command_id = event.metadata.command_id
    handler = _APPLIERS.get(type(data))
    if handler is not None:
        handler(state, data, event.occurred_at, command_id)
    return state


def build_account(stream_id: str, events: Iterable[Envelope]) -> AccountState:
    state = AccountState(stream_id=stream_id)
    for event in events:
        apply(state, event)
    return state


def build_plan(stream_id: str, events: Iterable[Envelope]) -> PlanState:
    state = PlanState(stream_id=stream_id)
    for event in events:
        apply_plan(state, event)
    return state


# --------------------------------------------------------------------------- appliers


def _open_payment(
    s: AccountState, e: Any, purpose: PaymentPurpose, at: datetime, cid: UUID | None, customer: Customer | None = None
) -> None:
    """Record a charge's intent, whatever its purpose: the payment, its place among the
    subscription's payments, and the command → operation link that resumes it after a crash."""
    origin = cid or e.payment_id
    s.payments[e.payment_id] = Payment(
        payment_id=e.payment_id,
        subscription_id=e.subscription_id,
        purpose=purpose,
        amount=e.amount,
        origin_command_id=origin,
        idempotence_key=e.idempotence_key,
        customer=customer or e.customer,
        intent=e,
        requested_at=at,
    )
    sub = s.subscriptions.get(e.subscription_id)
    if sub is not None and e.payment_id not in sub.payment_ids:
        sub.payment_ids.append(e.payment_id)
    s.intents[origin] = ("payment", e.payment_id)


def _checkout_started(s: AccountState, e: CheckoutStarted, at: datetime, cid: UUID | None) -> None:
    origin = cid or e.payment_id
    s.customer = e.customer
    s.subscriptions[e.subscription_id] = Subscription(
        subscription_id=e.subscription_id,
        plan_id=e.plan_id,
        plan_name=e.plan_name,
        period_days=e.period_days,
        price=e.promo.list_price if e.promo else e.amount,  # renewals start from the list price
        status="pending_payment",
        auto_renew=e.auto_renew,
        origin_command_id=origin,
        customer=e.customer,
        payment_ids=[e.payment_id],
        product=e.product,
        promo=e.promo,
        promo_periods_left=e.promo.periods_left if e.promo else 0,
    )
    _open_payment(s, e, "purchase", at, cid)


def _renewal_started(s: AccountState, e: RenewalStarted, at: datetime, cid: UUID | None) -> None:
    sub = s.subscriptions.get(e.subscription_id)
    customer = e.customer or (sub.customer if sub else None) or s.customer
    if customer is None:  # cannot happen for a subscription that was paid for; keep the fold total
        customer = Customer(email="unknown@invalid.invalid")
    _open_payment(s, e, "renewal", at, cid, customer)


def _recovery_started(s: AccountState, e: RecoveryStarted, at: datetime, cid: UUID | None) -> None:
    _open_payment(s, e, "recovery", at, cid)


def _confirmation_required(s: AccountState, e: RenewalConfirmationRequired, at: datetime, cid: UUID | None) -> None:
    payment = s.payments.get(e.payment_id)
    if payment is not None:
        payment.confirmation_requested = True
        payment.confirmation_url = payment.confirmation_url or e.confirmation_url


def _card_check_started(s: AccountState, e: CardCheckStarted, at: datetime, cid: UUID | None) -> None:
    origin = cid or e.payment_id
    s.customer = s.customer or e.customer
    sub = s.subscriptions.get(e.subscription_id)
    if sub is None and e.trial is not None:  # a trial purchase starts its subscription, pending the check
        sub = Subscription(
            subscription_id=e.subscription_id,
            plan_id=e.trial.plan_id,
            plan_name=e.trial.plan_name,
            period_days=e.trial.period_days,
            price=e.trial.price,
            status="pending_payment",
            auto_renew=e.trial.auto_renew,
            origin_command_id=origin,
            customer=e.customer,
            product=e.trial.product,
        )
        s.subscriptions[e.subscription_id] = sub
    _open_payment(s, e, "card_check", at, cid)
    if sub is not None and e.reason == "auto_renew":
        sub.renew_after_check = e.payment_id


def _payment_method_replaced(s: AccountState, e: PaymentMethodReplaced, at: datetime, cid: UUID | None) -> None:
    sub = s.subscriptions.get(e.subscription_id)
    if sub is not None:
        sub.payment_method_id, sub.payment_method_title = e.payment_method.id, e.payment_method.title


def _payment_created(s: AccountState, e: PaymentCreated, at: datetime, cid: UUID | None) -> None:
    payment = s.payments.get(e.payment_id)
    if payment is None:
        return
    payment.provider_payment_id = e.provider_payment_id
    payment.confirmation_url = e.confirmation_url or payment.confirmation_url
    if payment.status not in FINAL_PAYMENT:
        payment.status = "pending"
    elif payment.outcome_unknown and e.status == "canceled":
        payment.outcome_unknown = False  # a payment we gave up on turned out declined: nothing was charged


def _payment_succeeded(s: AccountState, e: PaymentSucceeded, at: datetime, cid: UUID | None) -> None:
    payment = s.payments.get(e.payment_id)
    if payment is None:
        return
    payment.status = "succeeded"
    payment.provider_payment_id = e.provider_payment_id
    payment.paid_at = e.paid_at
    payment.outcome_unknown = False
    payment.failure_reason = None
    payment.receipt_registration = e.receipt_registration
    sub = s.subscriptions.get(e.subscription_id)
    if sub is not None and e.payment_method is not None:
        sub.payment_method_id = e.payment_method.id
        sub.payment_method_title = e.payment_method.title


def _payment_failed(s: AccountState, e: PaymentFailed, at: datetime, cid: UUID | None) -> None:
    payment = s.payments.get(e.payment_id)
    if payment is not None:
        payment.status = "canceled"
        payment.failure_reason = e.reason
        payment.outcome_unknown = e.outcome_unknown
        if e.provider_payment_id:
            payment.provider_payment_id = e.provider_payment_id
    sub = s.subscriptions.get(e.subscription_id)
    if sub is not None and sub.status == "pending_payment" and (
        e.purpose == "purchase" or (e.purpose == "card_check" and sub.payment_ids[-1:] == [e.payment_id])
    ):
        sub.status = "payment_failed"  # a declined trial check fails its pending trial like a declined checkout
    if sub is not None and sub.renew_after_check == e.payment_id:
        sub.renew_after_check = None


def _payment_unknown(s: AccountState, e: PaymentStateUnknown, at: datetime, cid: UUID | None) -> None:
    payment = s.payments.get(e.payment_id)
    if payment is not None and payment.status not in FINAL_PAYMENT:
        payment.status = "unknown"
        if e.provider_payment_id:
            payment.provider_payment_id = e.provider_payment_id


def _activated(s: AccountState, e: SubscriptionActivated, at: datetime, cid: UUID | None) -> None:
    if e.customer is not None:
        s.customer = e.customer
    sub = s.subscriptions.get(e.subscription_id)
    if sub is None:  # a grant creates the subscription directly
        sub = Subscription(
            subscription_id=e.subscription_id,
            plan_id=e.plan_id,
            plan_name=e.plan_name,
            period_days=max((e.period_end - e.period_start).days, 1),
            price=e.amount_paid,
            status="active",
            auto_renew=e.auto_renew,
            origin_command_id=cid,
            customer=e.customer or s.customer,
            product=e.product,
        )
        s.subscriptions[e.subscription_id] = sub
    sub.status = "active"
    sub.period_start, sub.period_end = e.period_start, e.period_end
    sub.auto_renew = e.auto_renew
    sub.granted = e.granted
    sub.trial = e.trial
    if e.trial:
        s.trials_used.add(e.plan_id)
    sub.current_payment_id = e.payment_id
    sub.funding = [Funding(e.payment_id, e.amount_paid.minor)] if e.payment_id is not None else []
    sub.switched_period = False
    sub.renewal_attempt = 0
    sub.next_retry_at, sub.dunning_over = None, False
    if e.payment_method_title:
        sub.payment_method_title = e.payment_method_title
    if e.customer is not None:
        sub.customer = e.customer


def _refund_requested(s: AccountState, e: RefundRequested, at: datetime, cid: UUID | None) -> None:
    origin = cid or e.refund_id
    s.refunds[e.refund_id] = Refund(
        refund_id=e.refund_id,
        subscription_id=e.subscription_id,
        payment_id=e.payment_id,
        provider_payment_id=e.provider_payment_id,
        amount=e.amount,
        origin_command_id=origin,
        idempotence_key=e.idempotence_key,
        intent=e,
        requested_at=at,
    )
    payment = s.payments.get(e.payment_id)
    if payment is not None:
        payment.reserved_minor += e.amount.minor
    s.intents[origin] = ("refund", e.refund_id)


def _refund_created(s: AccountState, e: RefundCreated, at: datetime, cid: UUID | None) -> None:
    refund = s.refunds.get(e.refund_id)
    if refund is None:
        return
    refund.provider_refund_id = e.provider_refund_id
    if refund.status not in FINAL_REFUND:
        refund.status = "pending"


def _refund_settled(
    s: AccountState, refund_id: UUID, status: RefundStatus, reason: str | None = None, *, outcome_unknown: bool = False
) -> None:
    refund = s.refunds.get(refund_id)
    if refund is None or (refund.status in FINAL_REFUND and not refund.outcome_unknown):
        return
    payment = s.payments.get(refund.payment_id)
    if refund.outcome_unknown:
        # A late answer about a refund we gave up on: its amount was kept reserved until now.
        if status != "succeeded":
            refund.failure_reason = reason
            if not outcome_unknown and payment is not None:
                refund.outcome_unknown = False
                payment.reserved_minor = max(payment.reserved_minor - refund.amount.minor, 0)
            return
        refund.outcome_unknown = False
    elif outcome_unknown:
        # Given up without an answer: it counts as failed, but its amount stays reserved, since
        # YooKassa may have made it after all (docs/decisions/0104).
        refund.status, refund.failure_reason, refund.outcome_unknown = status, reason, True
        return
    refund.status = status
    refund.failure_reason = reason
    if payment is not None:
        payment.reserved_minor = max(payment.reserved_minor - refund.amount.minor, 0)
        if status == "succeeded":
            payment.refunded_minor += refund.amount.minor


def _refund_succeeded(s: AccountState, e: RefundSucceeded, at: datetime, cid: UUID | None) -> None:
    refund = s.refunds.get(e.refund_id)
    if refund is None and e.dashboard:
        _dashboard_refund(s, e, at, cid)
        return
    if refund is not None:
        refund.provider_refund_id = e.provider_refund_id
        refund.receipt_registration = e.receipt_registration
    _refund_settled(s, e.refund_id, "succeeded")


def _dashboard_refund(s: AccountState, e: RefundSucceeded, at: datetime, cid: UUID | None) -> None:
    """A refund YooKassa made without us asking: it exists only as this fact, already settled."""
    payment = s.payments.get(e.payment_id)
    provider_payment_id = payment.provider_payment_id if payment is not None and payment.provider_payment_id else ""
    origin = cid or e.refund_id
    # The state keeps every refund with the intent it came from; a dashboard refund had none, so
    # the fact stands in for it (never emitted, never sent to YooKassa: the refund is final).
    stand_in = RefundRequested(
        refund_id=e.refund_id,
        subscription_id=e.subscription_id,
        payment_id=e.payment_id,
        provider_payment_id=provider_payment_id,
        amount=e.amount,
        reason="made in YooKassa's dashboard",
        idempotence_key="",
        customer=e.customer,
        command_type="SyncRefund",
    )
    s.refunds[e.refund_id] = Refund(
        refund_id=e.refund_id,
        subscription_id=e.subscription_id,
        payment_id=e.payment_id,
        provider_payment_id=provider_payment_id,
        amount=e.amount,
        origin_command_id=origin,
        idempotence_key="",
        intent=stand_in,
        requested_at=at,
        status="succeeded",
        provider_refund_id=e.provider_refund_id,
        dashboard=True,
    )
    if payment is not None:
        payment.refunded_minor += e.amount.minor


def _receipt_registration(s: AccountState, e: ReceiptRegistrationChanged, at: datetime, cid: UUID | None) -> None:
    target = s.refunds.get(e.refund_id) if e.refund_id else s.payments.get(e.payment_id) if e.payment_id else None
    if target is not None:
        target.receipt_registration = e.status


def _refund_failed(s: AccountState, e: RefundFailed, at: datetime, cid: UUID | None) -> None:
    _refund_settled(s, e.refund_id, "canceled", e.reason, outcome_unknown=e.outcome_unknown)


def _refund_unknown(s: AccountState, e: RefundStateUnknown, at: datetime, cid: UUID | None) -> None:
    refund = s.refunds.get(e.refund_id)
    if refund is not None and refund.status not in FINAL_REFUND:
        refund.status = "unknown"
        if e.provider_refund_id:
            refund.provider_refund_id = e.provider_refund_id


def _canceled(s: AccountState, e: SubscriptionCanceled, at: datetime, cid: UUID | None) -> None:
    sub = s.subscriptions.get(e.subscription_id)
    if sub is None:
        return
    sub.renew_after_check = None
    if e.mode == "at_period_end":
        sub.cancel_at_period_end = True
        sub.auto_renew = False
    else:
        sub.status = "canceled"
        sub.auto_renew = False


def _auto_renew(s: AccountState, e: AutoRenewChanged, at: datetime, cid: UUID | None) -> None:
    sub = s.subscriptions.get(e.subscription_id)
    if sub is not None:
        sub.auto_renew = e.enabled
        sub.renew_after_check = None
        if e.enabled:
            sub.cancel_at_period_end = False  # renewing again withdraws a cancel at period end


def _renewed(s: AccountState, e: SubscriptionRenewed, at: datetime, cid: UUID | None) -> None:
    sub = s.subscriptions.get(e.subscription_id)
    if sub is None:
        return
    sub.status = "active"
    sub.period_start, sub.period_end = e.period_start, e.period_end
    sub.current_payment_id = e.payment_id
    sub.funding = [Funding(e.payment_id, e.amount.minor)]
    sub.switched_period = False
    sub.trial = False  # the first paid period after a trial
    sub.renewal_attempt = 0
    sub.next_retry_at, sub.dunning_over = None, False
    payment = s.payments.get(e.payment_id)
    if payment is not None and isinstance(payment.intent, (RenewalStarted, RecoveryStarted)) and payment.intent.promo is not None:
        sub.promo_periods_left = payment.intent.promo.periods_left  # one more discounted period was paid
    if e.plan_id is not None and e.plan_id != sub.plan_id:
        # A scheduled downgrade took effect with this renewal: its charge was the new plan's price.
        switch = sub.pending_switch
        sub.plan_id, sub.plan_name = e.plan_id, e.plan_name or e.plan_id
        sub.price = switch.price if switch is not None and switch.plan_id == e.plan_id else e.amount
        sub.period_days = max((e.period_end - e.period_start).days, 1)
        sub.price_steps = []  # announced price changes were the old plan's
    sub.pending_switch = None


def _upgrade_started(s: AccountState, e: UpgradeStarted, at: datetime, cid: UUID | None) -> None:
    _open_payment(s, e, "upgrade", at, cid)


def _plan_switched(s: AccountState, e: PlanSwitched, at: datetime, cid: UUID | None) -> None:
    sub = s.subscriptions.get(e.subscription_id)
    if sub is None:
        return
    funding = []
    if e.payment_id is not None:
        funding.append(Funding(e.payment_id, e.amount_charged.minor))
        sub.current_payment_id = e.payment_id
    for part in e.credit_from:
        paid = s.payments.get(part.payment_id)
        baseline = paid.refunded_minor + paid.reserved_minor if paid is not None else 0
        funding.append(Funding(part.payment_id, part.amount.minor, baseline))
    sub.funding = funding
    sub.switched_period, sub.granted, sub.trial = True, False, False
    sub.plan_id, sub.plan_name, sub.price, sub.period_days = e.plan_id, e.plan_name, e.price, e.period_days
    sub.price_steps = []  # announced price changes were the old plan's
    sub.status = "active"
    sub.period_start, sub.period_end = e.period_start, e.period_end
    sub.renewal_attempt = 0
    sub.next_retry_at, sub.dunning_over = None, False
    sub.pending_switch = None


def _switch_scheduled(s: AccountState, e: PlanSwitchScheduled, at: datetime, cid: UUID | None) -> None:
    sub = s.subscriptions.get(e.subscription_id)
    if sub is not None:
        sub.pending_switch = e


def _switch_withdrawn(s: AccountState, e: PlanSwitchWithdrawn, at: datetime, cid: UUID | None) -> None:
    sub = s.subscriptions.get(e.subscription_id)
    if sub is not None:
        sub.pending_switch = None


def _renewal_failed(s: AccountState, e: RenewalFailed, at: datetime, cid: UUID | None) -> None:
    sub = s.subscriptions.get(e.subscription_id)
    if sub is not None and sub.status in LIVE_SUBSCRIPTION:
        sub.status = "past_due"
        sub.renewal_attempt = max(sub.renewal_attempt, e.attempt)
        sub.next_retry_at = None if e.final else e.next_retry_at
        sub.dunning_over = e.final


def _expired(s: AccountState, e: SubscriptionExpired, at: datetime, cid: UUID | None) -> None:
    sub = s.subscriptions.get(e.subscription_id)
    if sub is not None:
        sub.status = "expired"
        sub.auto_renew = False
        sub.renew_after_check = None


def _expiring_soon(s: AccountState, e: SubscriptionExpiringSoon, at: datetime, cid: UUID | None) -> None:
    sub = s.subscriptions.get(e.subscription_id)
    if sub is not None:
        sub.reminded_for = e.period_end


def _adjusted(s: AccountState, e: SubscriptionAdjusted, at: datetime, cid: UUID | None) -> None:
    sub = s.subscriptions.get(e.subscription_id)
    if sub is not None:
        sub.period_end = e.period_end


def _price_announced(s: AccountState, e: PriceChangeAnnounced, at: datetime, cid: UUID | None) -> None:
    sub = s.subscriptions.get(e.subscription_id)
    if sub is not None and e.change_id not in sub.announced_changes:
        sub.price_steps.append(PriceStep(e.first_renewal_at, e.new_price, e.effective_at, e.change_id))


_APPLIERS = {
    CheckoutStarted: _checkout_started,
    RenewalStarted: _renewal_started,
    RecoveryStarted: _recovery_started,
    RenewalConfirmationRequired: _confirmation_required,
    CardCheckStarted: _card_check_started,
    PaymentMethodReplaced: _payment_method_replaced,
    PaymentCreated: _payment_created,
    PaymentSucceeded: _payment_succeeded,
    PaymentFailed: _payment_failed,
    PaymentStateUnknown: _payment_unknown,
    SubscriptionActivated: _activated,
    RefundRequested: _refund_requested,
    RefundCreated: _refund_created,
    RefundSucceeded: _refund_succeeded,
    RefundFailed: _refund_failed,
    RefundStateUnknown: _refund_unknown,
    SubscriptionCanceled: _canceled,
    AutoRenewChanged: _auto_renew,
    SubscriptionRenewed: _renewed,
    RenewalFailed: _renewal_failed,
    SubscriptionExpired: _expired,
    SubscriptionExpiringSoon: _expiring_soon,
    SubscriptionAdjusted: _adjusted,
    UpgradeStarted: _upgrade_started,
    PlanSwitched: _plan_switched,
    PlanSwitchScheduled: _switch_scheduled,
    PlanSwitchWithdrawn: _switch_withdrawn,
    ReceiptRegistrationChanged: _receipt_registration,
    PriceChangeAnnounced: _price_announced,
}
