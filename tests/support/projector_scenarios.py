"""Event histories for projector and replay tests, built with the real contracts.

`AccountScenario` writes what the payment processor appends for one account — purchases that
succeed, are declined or are lost and settled later, cancels with and without refund, renewals
that succeed or fail, grants, extensions, rejected commands — as typed `Envelope`s
(`schemas.new_envelope`), grouped per append. Times advance deterministically from a start, so
two runs of one scenario give identical events.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from schemas import (
    Actor,
    AutoRenewChanged,
    CardCheckStarted,
    CheckoutStarted,
    CommandFailed,
    CommandOutcome,
    CommandRejected,
    CommandSucceeded,
    Customer,
    Envelope,
    Metadata,
    Money,
    PaymentCreated,
    PaymentFailed,
    PaymentMethod,
    PaymentMethodReplaced,
    PaymentStateUnknown,
    PaymentSucceeded,
    PlanArchived,
    PlanCreated,
    PlanPriceChangeScheduled,
    PriceChangeAnnounced,
    RecoveryStarted,
    RefundCreated,
    RefundFailed,
    RefundRequested,
    RefundStateUnknown,
    RefundSucceeded,
    Receipt,
    ReceiptItem,
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
    PlanSwitched,
    PlanSwitchScheduled,
    PlanSwitchWithdrawn,
    TrialTerms,
    account_stream,
    derived_id,
    new_envelope,
    plan_stream,
    promo_stream,
    AppliedPromo,
    PromoCodeCreated,
    PromoCodeRedeemed,
    PromoCodeReleased,
)

CHECK = Money(amount="1.00")
"""A card check's amount (refunded at once)."""

if TYPE_CHECKING:
    from infra.settings import Settings
    from projector.entrypoints.consumer import ProjectorConsumer
    from eventstore.store import EventStore, RecordedEvent

START = datetime(2026, 1, 1, 9, 0, tzinfo=timezone.utc)


@dataclass
class Append:
    stream_id: str
    events: list[Envelope]


@dataclass
class Sub:
    subscription_id: uuid.UUID
    plan_id: str
    plan_name: str
    price: Money
    period_days: int
    status: str = "pending_payment"
    period_end: datetime | None = None
    paid_payment_id: uuid.UUID | None = None
    provider_payment_id: str | None = None
    attempt: int = 0
    upcoming: tuple[datetime, Money] | None = None
    """An announced price change: (first renewal at it, the new price)."""


@dataclass
class PlanInfo:
    plan_id: str
    name: str
    price: Money
    period_days: int


class Clock:
    def __init__(self, start: datetime = START) -> None:
        self.now = start

    def tick(self, seconds: float = 1.0) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


@dataclass
class History:
    """Appends in log order (each one `EventStore.append`-able with the stream's next version).

    Ids come from `new_id()`: unique per history (random prefix) unless `id_prefix` is fixed, in
    which case two histories built the same way are identical.
    """

    appends: list[Append] = field(default_factory=list)
    id_prefix: str = field(default_factory=lambda: uuid.uuid4().hex)
    _counter: int = 0

    def new_id(self) -> uuid.UUID:
        self._counter += 1
        return uuid.uuid5(uuid.NAMESPACE_URL, f"scenario:{self.id_prefix}:{self._counter}")

    def events(self) -> list[Envelope]:
        return [e for a in self.appends for e in a.events]

    def promo_code(self, clock: "Clock") -> str:
        """This history's promo code, created (on its own stream) the first time a purchase uses it."""
        code = f"P{self.id_prefix[:10].upper()}"
        if not any(a.stream_id == promo_stream(code) for a in self.appends):
            command_id = self.new_id()
            meta = Metadata(correlation_id=str(command_id), command_id=command_id, actor=Actor(kind="admin", id="ops"))
            self.appends.append(Append(promo_stream(code), [
                new_envelope(PromoCodeCreated(code=code, percent_off=20, periods=2, expires_at=clock.now + timedelta(days=365),
                                              max_redemptions=1000), stream_id=promo_stream(code), metadata=meta, occurred_at=clock.tick()),
                new_envelope(CommandSucceeded(command_id=command_id, command_type="CreatePromoCode"),
                             stream_id=promo_stream(code), metadata=meta, occurred_at=clock.tick(0.001)),
            ]))
        return code


def plan_events(history: History, clock: Clock, plan: PlanInfo, *, archive: bool = False) -> None:
    command_id = history.new_id()
    meta = Metadata(correlation_id=str(command_id), command_id=command_id, actor=Actor(kind="admin", id="ops"))
    stream = plan_stream(plan.plan_id)
    events = [
        new_envelope(PlanCreated(plan_id=plan.plan_id, name=plan.name, price=plan.price, period_days=plan.period_days,
                                 description=f"{plan.name} plan"), stream_id=stream, metadata=meta, occurred_at=clock.tick()),
        new_envelope(CommandSucceeded(command_id=command_id, command_type="CreatePlan", outcome=CommandOutcome(plan_id=plan.plan_id)),
                     stream_id=stream, metadata=meta, occurred_at=clock.tick(0.001)),
    ]
    history.appends.append(Append(stream, events))
    if not archive:  # every live plan has a price change scheduled (its id is the command's)
        command_id = history.new_id()
        meta = Metadata(correlation_id=str(command_id), command_id=command_id, actor=Actor(kind="admin", id="ops"))
        new_price = Money.from_minor(plan.price.minor + 5000, plan.price.currency)
        history.appends.append(Append(stream, [
            new_envelope(PlanPriceChangeScheduled(plan_id=plan.plan_id, change_id=command_id, price=new_price,
                                                  effective_at=clock.now + timedelta(days=10), reason="costs"),
                         stream_id=stream, metadata=meta, occurred_at=clock.tick()),
            new_envelope(CommandSucceeded(command_id=command_id, command_type="SchedulePriceChange", outcome=CommandOutcome(plan_id=plan.plan_id)),
                         stream_id=stream, metadata=meta, occurred_at=clock.tick(0.001)),
        ]))
    if archive:
        command_id = history.new_id()
        meta = Metadata(correlation_id=str(command_id), command_id=command_id, actor=Actor(kind="admin", id="ops"))
        history.appends.append(Append(stream, [
            new_envelope(PlanArchived(plan_id=plan.plan_id, reason="retired"), stream_id=stream, metadata=meta, occurred_at=clock.tick()),
            new_envelope(CommandSucceeded(command_id=command_id, command_type="ArchivePlan", outcome=CommandOutcome(plan_id=plan.plan_id)),
                         stream_id=stream, metadata=meta, occurred_at=clock.tick(0.001)),
        ]))


class AccountScenario:
    """Builds one account's appends as the processor would write them."""

    def __init__(self, history: History, clock: Clock, user_id: str | None = None, *, locale: str = "ru") -> None:
        self.history = history
        self.clock = clock
        self.user_id = user_id or f"u-{uuid.uuid4().hex[:12]}"
        self.stream = account_stream(self.user_id)
        self.customer = Customer(email=f"{self.user_id}@example.com", locale=locale)  # type: ignore[arg-type]
        self.subs: list[Sub] = []

    # ------------------------------------------------------------------ plumbing

    def _meta(self, command_id: uuid.UUID, kind: str = "user", actor_id: str | None = None) -> Metadata:
        return Metadata(
            correlation_id=str(command_id), causation_id=str(command_id), command_id=command_id,
            actor=Actor(kind=kind, id=actor_id or self.user_id),  # type: ignore[arg-type]
        )

    def _append(self, command_id: uuid.UUID, payloads: Sequence[object], *, kind: str = "user", actor_id: str | None = None) -> Append:
        meta = self._meta(command_id, kind, actor_id)
        events = [
            new_envelope(p, stream_id=self.stream, metadata=meta, occurred_at=self.clock.tick(0.5),  # type: ignore[arg-type]
                         id=derived_id("event", command_id, self.clock.now.isoformat(), i))
            for i, p in enumerate(payloads)
        ]
        append = Append(self.stream, events)
        self.history.appends.append(append)
        return append

    # ------------------------------------------------------------------ purchases

    def purchase(self, plan: PlanInfo, outcome: str = "success", *, auto_renew: bool = True, promo: bool = False) -> Sub:
        """outcome: success | decline | abandon | unknown_then_success | unknown_then_failed | pending; with
        `promo`, the history's promo code (20 % off two periods) holds a use, released if the checkout fails."""
        command_id = self.history.new_id()
        sub = Sub(derived_id("subscription", command_id), plan.plan_id, plan.name, plan.price, plan.period_days)
        self.subs.append(sub)
        payment_id = derived_id("payment", command_id)
        provider_id = str(self.history.new_id())
        url = f"http://127.0.0.1:8010/pay/{provider_id}"
        applied = None
        if promo:
            code = self.history.promo_code(self.clock)
            off = plan.price.minor * 20 // 100
            applied = AppliedPromo(code=code, percent_off=20, periods=2, list_price=plan.price,
                                   discount=Money.from_minor(off), periods_left=1)
            self.history.appends.append(Append(promo_stream(code), [new_envelope(
                PromoCodeRedeemed(code=code, user_id=self.user_id, subscription_id=sub.subscription_id, payment_id=payment_id),
                stream_id=promo_stream(code), metadata=self._meta(command_id), occurred_at=self.clock.tick(0.1),
                id=derived_id("promo-event", code, "PromoCodeRedeemed", payment_id))]))
        charge = Money.from_minor(plan.price.minor - (applied.discount.minor if applied else 0))
        self._append(command_id, [CheckoutStarted(
            subscription_id=sub.subscription_id, payment_id=payment_id, plan_id=plan.plan_id, plan_name=plan.name,
            amount=charge, period_days=plan.period_days, auto_renew=auto_renew, customer=self.customer,
            idempotence_key=str(derived_id("yookassa", payment_id, "create")), promo=applied,
            receipt=Receipt(email=self.customer.email, tax_system_code=2, items=[ReceiptItem(
                description=plan.name, amount=charge, vat_code=4, payment_subject="service", payment_mode="full_prepayment")]))])
        if outcome.startswith("unknown"):
            self._append(command_id, [PaymentStateUnknown(payment_id=payment_id, subscription_id=sub.subscription_id,
                                                          detail="timeout creating the payment")])
            sync_id = self.history.new_id()
            if outcome == "unknown_then_failed":
                self._append(sync_id, [
                    PaymentFailed(payment_id=payment_id, subscription_id=sub.subscription_id, provider_payment_id=provider_id,
                                  amount=charge, reason="expired_on_confirmation", party="yoo_money", customer=self.customer),
                    CommandFailed(command_id=command_id, command_type="PurchaseSubscription", reason="payment could not be created"),
                    CommandSucceeded(command_id=sync_id, command_type="SyncPayment"),
                ], kind="system", actor_id="janitor")
                sub.status = "payment_failed"
                return sub
            self._append(sync_id, [
                PaymentCreated(payment_id=payment_id, subscription_id=sub.subscription_id, provider_payment_id=provider_id,
                               amount=charge, status="pending", confirmation_url=url),
                CommandSucceeded(command_id=command_id, command_type="PurchaseSubscription",
                                 outcome=CommandOutcome(subscription_id=sub.subscription_id, payment_id=payment_id, confirmation_url=url)),
                CommandSucceeded(command_id=sync_id, command_type="SyncPayment"),
            ], kind="system", actor_id="janitor")
            outcome = "success"
        else:
            self._append(command_id, [
                PaymentCreated(payment_id=payment_id, subscription_id=sub.subscription_id, provider_payment_id=provider_id,
                               amount=charge, status="pending", confirmation_url=url),
                CommandSucceeded(command_id=command_id, command_type="PurchaseSubscription",
                                 outcome=CommandOutcome(subscription_id=sub.subscription_id, payment_id=payment_id, confirmation_url=url)),
            ])
        if outcome == "pending":
            return sub
        self.clock.tick(30)
        sync_id = self.history.new_id()
        if outcome == "success":
            paid_at = self.clock.tick()
            end = paid_at + timedelta(days=plan.period_days)
            self._append(sync_id, [
                PaymentSucceeded(payment_id=payment_id, subscription_id=sub.subscription_id, provider_payment_id=provider_id,
                                 amount=charge, paid_at=paid_at, customer=self.customer,
                                 payment_method=PaymentMethod(id=str(self.history.new_id()), title="Bank card *4444")),
                SubscriptionActivated(subscription_id=sub.subscription_id, plan_id=plan.plan_id, plan_name=plan.name,
                                      period_start=paid_at, period_end=end, amount_paid=charge, auto_renew=auto_renew,
                                      payment_id=payment_id, payment_method_title="Bank card *4444", customer=self.customer),
                CommandSucceeded(command_id=sync_id, command_type="SyncPayment",
                                 outcome=CommandOutcome(subscription_id=sub.subscription_id, payment_id=payment_id)),
            ], kind="provider", actor_id="yookassa")
            sub.status, sub.period_end, sub.paid_payment_id, sub.provider_payment_id = "active", end, payment_id, provider_id
        else:
            reason = "insufficient_funds" if outcome == "decline" else "expired_on_confirmation"
            self._append(sync_id, [
                PaymentFailed(payment_id=payment_id, subscription_id=sub.subscription_id, provider_payment_id=provider_id,
                              amount=charge, reason=reason, party="payment_network", customer=self.customer),
                CommandSucceeded(command_id=sync_id, command_type="SyncPayment"),
            ], kind="provider", actor_id="yookassa")
            sub.status = "payment_failed"
            if applied is not None:
                self.history.appends.append(Append(promo_stream(applied.code), [new_envelope(
                    PromoCodeReleased(code=applied.code, user_id=self.user_id, subscription_id=sub.subscription_id,
                                      payment_id=payment_id, reason=reason),
                    stream_id=promo_stream(applied.code), metadata=self._meta(sync_id, "provider", "yookassa"),
                    occurred_at=self.clock.tick(0.1), id=derived_id("promo-event", applied.code, "PromoCodeReleased", payment_id))]))
        return sub

    def trial(self, plan: PlanInfo, *, success: bool = True, days: int = 7) -> Sub:
        """A trial purchase: a card check that, when it succeeds, starts a free trial and is refunded."""
        command_id = self.history.new_id()
        sub = Sub(derived_id("subscription", command_id), plan.plan_id, plan.name, plan.price, plan.period_days)
        self.subs.append(sub)
        terms = TrialTerms(plan_id=plan.plan_id, plan_name=plan.name, price=plan.price, period_days=plan.period_days, trial_days=days)
        payment_id, provider_id = self._check(command_id, sub, "trial", terms)
        if not success:
            self._append(self.history.new_id(), [
                PaymentFailed(payment_id=payment_id, subscription_id=sub.subscription_id, provider_payment_id=provider_id,
                              amount=CHECK, reason="card_expired", purpose="card_check", customer=self.customer),
            ], kind="provider", actor_id="yookassa")
            sub.status = "payment_failed"
            return sub
        start = self.clock.tick()
        end = start + timedelta(days=days)
        self._check_succeeded(sub, payment_id, provider_id, [
            SubscriptionActivated(subscription_id=sub.subscription_id, plan_id=plan.plan_id, plan_name=plan.name, period_start=start,
                                  period_end=end, amount_paid=Money.from_minor(0), auto_renew=True, customer=self.customer,
                                  trial=True, next_charge=plan.price),
        ])
        sub.status, sub.period_end = "active", end
        return sub

    def replace_card(self, sub: Sub) -> None:
        command_id = self.history.new_id()
        payment_id, provider_id = self._check(command_id, sub, "replace_payment_method", None)
        self._check_succeeded(sub, payment_id, provider_id, [
            PaymentMethodReplaced(subscription_id=sub.subscription_id, payment_id=payment_id,
                                  payment_method=PaymentMethod(id=f"pm-{provider_id}", title="Bank card *1111"),
                                  previous_title="Bank card *4444", check_amount=CHECK, customer=self.customer),
        ])

    def _check(self, command_id: uuid.UUID, sub: Sub, reason: str, terms: TrialTerms | None) -> tuple[uuid.UUID, str]:
        payment_id = derived_id("payment", command_id)
        provider_id = str(self.history.new_id())
        url = f"http://127.0.0.1:8010/pay/{provider_id}"
        ctype = "PurchaseSubscription" if reason == "trial" else "ReplacePaymentMethod"
        self._append(command_id, [
            CardCheckStarted(subscription_id=sub.subscription_id, payment_id=payment_id, reason=reason, amount=CHECK,  # type: ignore[arg-type]
                             customer=self.customer, idempotence_key=str(derived_id("yookassa", payment_id, "create")), trial=terms),
            PaymentCreated(payment_id=payment_id, subscription_id=sub.subscription_id, provider_payment_id=provider_id, amount=CHECK,
                           status="pending", confirmation_url=url, purpose="card_check"),
            CommandSucceeded(command_id=command_id, command_type=ctype,
                             outcome=CommandOutcome(subscription_id=sub.subscription_id, payment_id=payment_id, confirmation_url=url)),
        ])
        return payment_id, provider_id

    def _check_succeeded(self, sub: Sub, payment_id: uuid.UUID, provider_id: str, effects: list[object]) -> None:
        sync_id = self.history.new_id()
        refund_id = derived_id("refund", sync_id, payment_id)
        self._append(sync_id, [
            PaymentSucceeded(payment_id=payment_id, subscription_id=sub.subscription_id, provider_payment_id=provider_id, amount=CHECK,
                             paid_at=self.clock.tick(), purpose="card_check", customer=self.customer,
                             payment_method=PaymentMethod(id=f"pm-{provider_id}", title="Bank card *1111")),
            *effects,
            RefundRequested(refund_id=refund_id, subscription_id=sub.subscription_id, payment_id=payment_id,
                            provider_payment_id=provider_id, amount=CHECK, reason="Card check: refunded at once",
                            idempotence_key=str(derived_id("yookassa", refund_id, "create")), customer=self.customer,
                            command_type="SyncPayment", purpose="card_check"),
            RefundCreated(refund_id=refund_id, subscription_id=sub.subscription_id, provider_refund_id=str(self.history.new_id()),
                          status="succeeded"),
            RefundSucceeded(refund_id=refund_id, subscription_id=sub.subscription_id, payment_id=payment_id,
                            provider_refund_id=str(self.history.new_id()), amount=CHECK, customer=self.customer),
            CommandSucceeded(command_id=sync_id, command_type="SyncPayment", outcome=CommandOutcome(payment_id=payment_id)),
        ], kind="provider", actor_id="yookassa")

    def reject_purchase(self, plan_id: str, code: str = "plan_archived") -> None:
        command_id = self.history.new_id()
        self._append(command_id, [CommandRejected(command_id=command_id, command_type="PurchaseSubscription", code=code,
                                                  reason=f"plan {plan_id} cannot be bought now")])

    def grant(self, plan: PlanInfo, days: int = 30) -> Sub:
        command_id = self.history.new_id()
        sub = Sub(derived_id("subscription", command_id), plan.plan_id, plan.name, Money.from_minor(0), days)
        self.subs.append(sub)
        start = self.clock.tick()
        end = start + timedelta(days=days)
        self._append(command_id, [
            SubscriptionActivated(subscription_id=sub.subscription_id, plan_id=plan.plan_id, plan_name=plan.name,
                                  period_start=start, period_end=end, amount_paid=Money.from_minor(0), auto_renew=False,
                                  granted=True, reason="support gesture", customer=self.customer),
            CommandSucceeded(command_id=command_id, command_type="GrantSubscription",
                             outcome=CommandOutcome(subscription_id=sub.subscription_id)),
        ], kind="admin", actor_id="ops")
        sub.status, sub.period_end = "active", end
        return sub

    # ------------------------------------------------------------------ changes

    def cancel(self, sub: Sub, mode: str = "refund_now", refund_outcome: str = "success", *, admin: bool = False) -> None:
        """mode: refund_now | at_period_end; refund_outcome: success | failed | unknown_then_success."""
        command_id = self.history.new_id()
        kind, actor = ("admin", "ops") if admin else ("user", None)
        if mode == "at_period_end" or sub.paid_payment_id is None:
            self._append(command_id, [
                SubscriptionCanceled(subscription_id=sub.subscription_id, mode="at_period_end",
                                     effective_at=sub.period_end or self.clock.now, customer=self.customer),
                CommandSucceeded(command_id=command_id, command_type="CancelSubscription",
                                 outcome=CommandOutcome(subscription_id=sub.subscription_id)),
            ], kind=kind, actor_id=actor)
            return
        refund_id = derived_id("refund", command_id)
        amount = Money.from_minor(sub.price.minor * 29 // 30, sub.price.currency)
        self._append(command_id, [RefundRequested(
            refund_id=refund_id, subscription_id=sub.subscription_id, payment_id=sub.paid_payment_id,
            provider_payment_id=sub.provider_payment_id or str(self.history.new_id()), amount=amount, days_used=1, days_in_period=30,
            reason="user canceled", idempotence_key=str(derived_id("yookassa", refund_id, "create")), customer=self.customer)],
            kind=kind, actor_id=actor)
        provider_refund_id = str(self.history.new_id())
        if refund_outcome == "unknown_then_success":
            self._append(command_id, [RefundStateUnknown(refund_id=refund_id, subscription_id=sub.subscription_id, detail="timeout")],
                         kind=kind, actor_id=actor)
            command_id_final, kind, actor = self.history.new_id(), "system", "janitor"
        else:
            command_id_final = command_id
        if refund_outcome == "failed":
            self._append(command_id, [
                RefundCreated(refund_id=refund_id, subscription_id=sub.subscription_id, provider_refund_id=provider_refund_id, status="pending"),
                RefundFailed(refund_id=refund_id, subscription_id=sub.subscription_id, amount=amount, reason="payment too old",
                             customer=self.customer),
                CommandFailed(command_id=command_id, command_type="CancelSubscription", reason="YooKassa refused the refund"),
            ], kind=kind, actor_id=actor)
            return
        payloads: list[object] = [
            RefundCreated(refund_id=refund_id, subscription_id=sub.subscription_id, provider_refund_id=provider_refund_id, status="succeeded"),
            RefundSucceeded(refund_id=refund_id, subscription_id=sub.subscription_id, payment_id=sub.paid_payment_id,
                            provider_refund_id=provider_refund_id, amount=amount, days_used=1, customer=self.customer),
            SubscriptionCanceled(subscription_id=sub.subscription_id, mode="admin" if admin else "refund_now",
                                 effective_at=self.clock.now, refund_id=refund_id, refund_amount=amount, customer=self.customer,
                                 reason="changed my mind"),
            CommandSucceeded(command_id=command_id if command_id_final == command_id else command_id,
                             command_type="AdminCancelSubscription" if admin else "CancelSubscription",
                             outcome=CommandOutcome(subscription_id=sub.subscription_id, refund_id=refund_id, refund_amount=amount)),
        ]
        if command_id_final != command_id:
            payloads.append(CommandSucceeded(command_id=command_id_final, command_type="SyncRefund"))
        self._append(command_id_final, payloads, kind=kind, actor_id=actor)
        sub.status = "canceled"

    def set_auto_renew(self, sub: Sub, enabled: bool) -> None:
        command_id = self.history.new_id()
        self._append(command_id, [
            AutoRenewChanged(subscription_id=sub.subscription_id, enabled=enabled, customer=self.customer),
            CommandSucceeded(command_id=command_id, command_type="SetAutoRenew", outcome=CommandOutcome(subscription_id=sub.subscription_id)),
        ])

    def extend(self, sub: Sub, days: int = 7) -> None:
        command_id = self.history.new_id()
        sub.period_end = (sub.period_end or self.clock.now) + timedelta(days=days)
        self._append(command_id, [
            SubscriptionAdjusted(subscription_id=sub.subscription_id, days=days, period_end=sub.period_end, reason="outage compensation"),
            CommandSucceeded(command_id=command_id, command_type="ExtendSubscription", outcome=CommandOutcome(subscription_id=sub.subscription_id)),
        ], kind="admin", actor_id="ops")

    def announce_price(self, sub: Sub) -> None:
        """The scheduler tells the subscriber: renewals from the one after next cost 50 more."""
        assert sub.period_end is not None
        change_id = self.history.new_id()
        command_id = derived_id("price-notice", sub.subscription_id, change_id)
        first = sub.period_end + timedelta(days=sub.period_days)
        new_price = Money.from_minor(sub.price.minor + 5000, sub.price.currency)
        self._append(command_id, [
            PriceChangeAnnounced(subscription_id=sub.subscription_id, plan_id=sub.plan_id, change_id=change_id, old_price=sub.price,
                                 new_price=new_price, effective_at=sub.period_end, first_renewal_at=first, customer=self.customer),
            CommandSucceeded(command_id=command_id, command_type="AnnouncePriceChange", outcome=CommandOutcome(subscription_id=sub.subscription_id)),
        ], kind="system", actor_id="scheduler")
        sub.upcoming = (first, new_price)

    def renew(self, sub: Sub, success: bool = True, *, final: bool = False) -> None:
        assert sub.period_end is not None
        if sub.upcoming is not None and sub.period_end >= sub.upcoming[0]:
            sub.price, sub.upcoming = sub.upcoming[1], None
        sub.attempt += 1
        command_id = derived_id("renewal", sub.subscription_id, sub.period_end.isoformat(), sub.attempt)
        payment_id = derived_id("payment", command_id)
        new_end = sub.period_end + timedelta(days=sub.period_days)
        meta_kind, actor = "system", "scheduler"
        self._append(command_id, [
            SubscriptionExpiringSoon(subscription_id=sub.subscription_id, period_end=sub.period_end, auto_renew=True, customer=self.customer),
            RenewalStarted(subscription_id=sub.subscription_id, payment_id=payment_id, plan_id=sub.plan_id, plan_name=sub.plan_name,
                           amount=sub.price, period_start=sub.period_end, period_end=new_end, attempt=sub.attempt,
                           payment_method_id="pm-1", idempotence_key=str(derived_id("yookassa", payment_id, "create")),
                           customer=self.customer),
        ], kind=meta_kind, actor_id=actor)
        provider_id = str(self.history.new_id())
        if success:
            paid_at = self.clock.tick()
            self._append(command_id, [
                PaymentSucceeded(payment_id=payment_id, subscription_id=sub.subscription_id, provider_payment_id=provider_id,
                                 amount=sub.price, paid_at=paid_at, purpose="renewal", customer=self.customer),
                SubscriptionRenewed(subscription_id=sub.subscription_id, payment_id=payment_id, period_start=sub.period_end,
                                    period_end=new_end, amount=sub.price, customer=self.customer),
                CommandSucceeded(command_id=command_id, command_type="RenewSubscription",
                                 outcome=CommandOutcome(subscription_id=sub.subscription_id, payment_id=payment_id)),
            ], kind=meta_kind, actor_id=actor)
            sub.period_end, sub.status, sub.attempt = new_end, "active", 0
            sub.paid_payment_id, sub.provider_payment_id = payment_id, provider_id
        else:
            self._append(command_id, [
                PaymentFailed(payment_id=payment_id, subscription_id=sub.subscription_id, provider_payment_id=provider_id,
                              amount=sub.price, reason="insufficient_funds", purpose="renewal", customer=self.customer),
                RenewalFailed(subscription_id=sub.subscription_id, payment_id=payment_id, attempt=sub.attempt, reason="insufficient_funds",
                              next_retry_at=None if final else sub.period_end + timedelta(days=sub.attempt),
                              access_until=sub.period_end + timedelta(days=5), final=final, customer=self.customer),
                CommandSucceeded(command_id=command_id, command_type="RenewSubscription",
                                 outcome=CommandOutcome(subscription_id=sub.subscription_id, payment_id=payment_id,
                                                        message="renewal declined")),
            ], kind=meta_kind, actor_id=actor)
            sub.status = "past_due"

    def upgrade(self, sub: Sub, plan: PlanInfo, credit: Money) -> None:
        """A plan upgrade by the saved card (docs/decisions/0119): price less credit, a new period now."""
        command_id = self.history.new_id()
        payment_id = derived_id("payment", command_id)
        charge = Money.from_minor(plan.price.minor - credit.minor, plan.price.currency)
        start = self.clock.tick()
        self._append(command_id, [
            UpgradeStarted(subscription_id=sub.subscription_id, payment_id=payment_id, from_plan_id=sub.plan_id,
                           from_plan_name=sub.plan_name, replaces_period_start=start, plan_id=plan.plan_id, plan_name=plan.name,
                           price=plan.price, period_days=plan.period_days, amount=charge, credit=credit, credit_days_used=3,
                           credit_days_in_period=sub.period_days, payment_method_id="pm-1",
                           idempotence_key=str(derived_id("yookassa", payment_id, "create")), customer=self.customer),
        ])
        provider_id = str(self.history.new_id())
        end = start + timedelta(days=plan.period_days)
        self._append(command_id, [
            PaymentCreated(payment_id=payment_id, subscription_id=sub.subscription_id, provider_payment_id=provider_id,
                           amount=charge, status="succeeded", purpose="upgrade"),
            PaymentSucceeded(payment_id=payment_id, subscription_id=sub.subscription_id, provider_payment_id=provider_id,
                             amount=charge, paid_at=start, purpose="upgrade", customer=self.customer),
            PlanSwitched(subscription_id=sub.subscription_id, from_plan_id=sub.plan_id, from_plan_name=sub.plan_name,
                         plan_id=plan.plan_id, plan_name=plan.name, price=plan.price, period_days=plan.period_days,
                         period_start=start, period_end=end, payment_id=payment_id, amount_charged=charge, credit=credit,
                         customer=self.customer),
            CommandSucceeded(command_id=command_id, command_type="SwitchPlan",
                             outcome=CommandOutcome(subscription_id=sub.subscription_id, payment_id=payment_id, plan_id=plan.plan_id)),
        ])
        sub.plan_id, sub.plan_name, sub.price, sub.period_days, sub.period_end = plan.plan_id, plan.name, plan.price, plan.period_days, end
        sub.paid_payment_id, sub.provider_payment_id = payment_id, provider_id

    def schedule_switch(self, sub: Sub, plan: PlanInfo, *, withdraw: bool = False) -> None:
        """A downgrade for the period end, or its withdrawal."""
        assert sub.period_end is not None
        command_id = self.history.new_id()
        payload: object = PlanSwitchScheduled(
            subscription_id=sub.subscription_id, from_plan_name=sub.plan_name, plan_id=plan.plan_id, plan_name=plan.name,
            price=plan.price, period_days=plan.period_days, effective_at=sub.period_end, customer=self.customer,
        ) if not withdraw else PlanSwitchWithdrawn(subscription_id=sub.subscription_id, plan_id=plan.plan_id, plan_name=plan.name)
        self._append(command_id, [payload, CommandSucceeded(command_id=command_id, command_type="SwitchPlan",
                                                            outcome=CommandOutcome(subscription_id=sub.subscription_id))])


    def pay_now(self, sub: Sub, outcome: str = "success") -> None:
        """A past-due customer pays now on a payment page (outcome: success | decline | pending)."""
        assert sub.period_end is not None and sub.status == "past_due"
        command_id = self.history.new_id()
        payment_id = derived_id("payment", command_id)
        provider_id = str(self.history.new_id())
        new_end = sub.period_end + timedelta(days=sub.period_days)
        url = f"http://127.0.0.1:8010/checkout/{provider_id}"
        self._append(command_id, [
            RecoveryStarted(subscription_id=sub.subscription_id, payment_id=payment_id, plan_id=sub.plan_id, plan_name=sub.plan_name,
                            amount=sub.price, period_start=sub.period_end, period_end=new_end, customer=self.customer,
                            idempotence_key=str(derived_id("yookassa", payment_id, "create"))),
            PaymentCreated(payment_id=payment_id, subscription_id=sub.subscription_id, provider_payment_id=provider_id,
                           amount=sub.price, status="pending", confirmation_url=url, purpose="recovery"),
            CommandSucceeded(command_id=command_id, command_type="PayOverdueSubscription",
                             outcome=CommandOutcome(subscription_id=sub.subscription_id, payment_id=payment_id, confirmation_url=url)),
        ])
        if outcome == "pending":
            return
        sync_id = self.history.new_id()
        if outcome == "success":
            self._append(sync_id, [
                PaymentSucceeded(payment_id=payment_id, subscription_id=sub.subscription_id, provider_payment_id=provider_id,
                                 amount=sub.price, paid_at=self.clock.tick(), purpose="recovery", customer=self.customer,
                                 payment_method=PaymentMethod(id=f"pm-{provider_id}", title="Bank card *1111")),
                SubscriptionRenewed(subscription_id=sub.subscription_id, payment_id=payment_id, period_start=sub.period_end,
                                    period_end=new_end, amount=sub.price, customer=self.customer, purpose="recovery"),
                CommandSucceeded(command_id=sync_id, command_type="SyncPayment", outcome=CommandOutcome(payment_id=payment_id)),
            ], kind="provider", actor_id="yookassa")
            sub.period_end, sub.status, sub.attempt = new_end, "active", 0
            sub.paid_payment_id, sub.provider_payment_id = payment_id, provider_id
        else:
            self._append(sync_id, [
                PaymentFailed(payment_id=payment_id, subscription_id=sub.subscription_id, provider_payment_id=provider_id,
                              amount=sub.price, reason="card_expired", purpose="recovery", customer=self.customer),
                CommandSucceeded(command_id=sync_id, command_type="SyncPayment", outcome=CommandOutcome(payment_id=payment_id)),
            ], kind="provider", actor_id="yookassa")

    def renew_3ds(self, sub: Sub, confirmed: bool = True) -> None:
        """A renewal the bank wants confirmed (3-D Secure): the link, then confirmed or expired."""
        assert sub.period_end is not None
        sub.attempt += 1
        command_id = derived_id("renewal", sub.subscription_id, sub.period_end.isoformat(), sub.attempt)
        payment_id = derived_id("payment", command_id)
        new_end = sub.period_end + timedelta(days=sub.period_days)
        provider_id = str(self.history.new_id())
        url = f"http://127.0.0.1:8010/checkout/{provider_id}"
        self._append(command_id, [
            RenewalStarted(subscription_id=sub.subscription_id, payment_id=payment_id, plan_id=sub.plan_id, plan_name=sub.plan_name,
                           amount=sub.price, period_start=sub.period_end, period_end=new_end, attempt=sub.attempt,
                           payment_method_id="pm-1", idempotence_key=str(derived_id("yookassa", payment_id, "create")),
                           customer=self.customer),
            PaymentCreated(payment_id=payment_id, subscription_id=sub.subscription_id, provider_payment_id=provider_id,
                           amount=sub.price, status="pending", confirmation_url=url, purpose="renewal"),
            RenewalConfirmationRequired(subscription_id=sub.subscription_id, payment_id=payment_id, amount=sub.price,
                                        confirmation_url=url, customer=self.customer),
            CommandSucceeded(command_id=command_id, command_type="RenewSubscription",
                             outcome=CommandOutcome(subscription_id=sub.subscription_id, payment_id=payment_id)),
        ], kind="system", actor_id="scheduler")
        sync_id = self.history.new_id()
        if confirmed:
            self._append(sync_id, [
                PaymentSucceeded(payment_id=payment_id, subscription_id=sub.subscription_id, provider_payment_id=provider_id,
                                 amount=sub.price, paid_at=self.clock.tick(), purpose="renewal", customer=self.customer),
                SubscriptionRenewed(subscription_id=sub.subscription_id, payment_id=payment_id, period_start=sub.period_end,
                                    period_end=new_end, amount=sub.price, customer=self.customer),
                CommandSucceeded(command_id=sync_id, command_type="SyncPayment", outcome=CommandOutcome(payment_id=payment_id)),
            ], kind="provider", actor_id="yookassa")
            sub.period_end, sub.status, sub.attempt = new_end, "active", 0
            sub.paid_payment_id, sub.provider_payment_id = payment_id, provider_id
        else:
            self._append(sync_id, [
                PaymentFailed(payment_id=payment_id, subscription_id=sub.subscription_id, provider_payment_id=provider_id,
                              amount=sub.price, reason="expired_on_confirmation", purpose="renewal", customer=self.customer),
                RenewalFailed(subscription_id=sub.subscription_id, payment_id=payment_id, attempt=sub.attempt,
                              reason="expired_on_confirmation", next_retry_at=sub.period_end + timedelta(days=1),
                              access_until=sub.period_end + timedelta(days=1), customer=self.customer),
                CommandSucceeded(command_id=sync_id, command_type="SyncPayment", outcome=CommandOutcome(payment_id=payment_id)),
            ], kind="system", actor_id="janitor")
            sub.status = "past_due"

    def expire(self, sub: Sub) -> None:
        command_id = self.history.new_id()
        self._append(command_id, [
            SubscriptionExpired(subscription_id=sub.subscription_id, expired_at=self.clock.tick(), reason="period ended", customer=self.customer),
            CommandSucceeded(command_id=command_id, command_type="ExpireSubscription", outcome=CommandOutcome(subscription_id=sub.subscription_id)),
        ], kind="system", actor_id="scheduler")
        sub.status = "expired"


PLANS = [
    PlanInfo("basic", "Basic", Money.from_minor(29900), 30),
    PlanInfo("premium", "Premium", Money.from_minor(149000), 30),
    PlanInfo("annual", "Annual", Money.from_minor(1299000), 365),
]


def random_account(history: History, clock: Clock, rng: random.Random, plans: Sequence[PlanInfo] = PLANS) -> AccountScenario:
    """One account living a random but valid life: purchases, renewals, cancels, grants, rejections."""
    account = AccountScenario(history, clock, f"u-{rng.getrandbits(48):012x}", locale=rng.choice(["ru", "en"]))
    for _ in range(rng.randint(1, 3)):
        plan = rng.choice(list(plans))
        roll = rng.random()
        if roll < 0.08:
            account.reject_purchase(plan.plan_id)
            continue
        if roll < 0.12:
            sub = account.grant(plan)
        elif roll < 0.2:
            sub = account.trial(plan, success=roll < 0.18)
        else:
            outcome = rng.choices(
                ["success", "decline", "abandon", "unknown_then_success", "unknown_then_failed", "pending"],
                weights=[70, 8, 5, 6, 3, 8],
            )[0]
            sub = account.purchase(plan, outcome, auto_renew=rng.random() < 0.8, promo=rng.random() < 0.15)
        if sub.status != "active":
            continue
        for _ in range(rng.randint(0, 3)):
            action = rng.random()
            if sub.status == "past_due" and action < 0.2:
                account.pay_now(sub, rng.choice(["success", "success", "decline", "pending"]))
            elif action < 0.3:
                account.renew(sub, success=rng.random() < 0.8)
            elif action < 0.35:
                account.renew_3ds(sub, confirmed=rng.random() < 0.6)
            elif action < 0.5:
                account.set_auto_renew(sub, rng.random() < 0.5)
            elif action < 0.55:
                account.extend(sub, rng.randint(1, 30))
            elif action < 0.6:
                account.replace_card(sub)
            elif action < 0.63:
                account.announce_price(sub)
            elif action < 0.75:
                account.cancel(sub, "refund_now", rng.choice(["success", "success", "failed", "unknown_then_success"]),
                               admin=rng.random() < 0.2)
                break
            elif action < 0.85:
                account.cancel(sub, "at_period_end")
                if rng.random() < 0.5:
                    account.expire(sub)
                break
            elif sub.status == "past_due":
                account.renew(sub, success=False, final=True)
                account.expire(sub)
                break
            elif action > 0.93:
                dearer = [p for p in plans if p.price.minor > sub.price.minor]
                if dearer:
                    account.upgrade(sub, dearer[0], Money.from_minor(sub.price.minor // 2, sub.price.currency))
                else:
                    cheaper = min(plans, key=lambda p: p.price.minor)
                    account.schedule_switch(sub, cheaper)
                    if action > 0.97:
                        account.schedule_switch(sub, cheaper, withdraw=True)
        clock.tick(rng.randint(1, 3600))
    return account


# ---------------------------------------------------------------------- plumbing for projector tests


async def append_history(
    store: "EventStore", history: History, versions: dict[str, int] | None = None, *, concurrency: int = 8
) -> list["RecordedEvent"]:
    """Append every append of `history` (streams concurrently, each in its own order, with the right
    expected versions); returns the stored events in log order."""
    import asyncio

    versions = versions if versions is not None else {}
    by_stream: dict[str, list[Append]] = {}
    for append in history.appends:
        by_stream.setdefault(append.stream_id, []).append(append)
    positions: list[int] = []
    streams = list(by_stream)

    async def worker() -> None:
        while streams:
            stream = streams.pop()
            for append in by_stream[stream]:
                expected = versions.get(stream, 0)
                positions.extend(await store.append(stream, expected, append.events))
                versions[stream] = expected + len(append.events)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    if not positions:
        return []
    first = min(positions)
    recorded = await store.read_all(after_position=first - 1, limit=max(positions) - first + 1)
    wanted = set(positions)
    return [r for r in recorded if r.position in wanted]


async def publish(settings: "Settings", topic: str, events: Sequence["RecordedEvent"]) -> None:
    """What the relay does: each stored event to `topic`, keyed by stream, with its headers, in the given order."""
    from infra.kafka import make_producer

    producer = await make_producer(settings)
    try:
        futures = [
            await producer.send(topic, value=e.to_wire(), key=e.stream_id.encode(), headers=e.kafka_headers()) for e in events
        ]
        for future in futures:
            await future
    finally:
        await producer.stop()


async def read_models(database_url: str, schema: str = "read") -> dict[str, dict[str, dict[str, object]]]:
    """Every read-model row, `{table: {key: row-as-JSON}}`, to compare whole read models."""
    import asyncpg
    import orjson

    from infra.settings import plain_url
    from projector.domain.projections import TABLES

    conn = await asyncpg.connect(plain_url(database_url), server_settings={"timezone": "UTC"})
    try:
        snapshot: dict[str, dict[str, dict[str, object]]] = {}
        for name, spec in TABLES.items():
            rows = await conn.fetch(f'SELECT {spec.key}::text, to_jsonb(t)::text FROM "{schema}".{name} t')
            snapshot[name] = {key: orjson.loads(body) for key, body in rows}
        return snapshot
    finally:
        await conn.close()


async def projected_versions(database_url: str) -> dict[str, int]:
    import asyncpg

    from infra.settings import plain_url

    conn = await asyncpg.connect(plain_url(database_url))
    try:
        return {s: v for s, v in await conn.fetch("SELECT stream_id, version FROM projector.stream_positions WHERE version > 0")}
    finally:
        await conn.close()


async def stored_versions(database_url: str) -> dict[str, int]:
    import asyncpg

    from infra.settings import plain_url

    conn = await asyncpg.connect(plain_url(database_url))
    try:
        return {s: v for s, v in await conn.fetch("SELECT stream_id, max(stream_version) FROM eventstore.events GROUP BY 1")}
    finally:
        await conn.close()


@asynccontextmanager
async def running_projector(settings: "Settings", topic: str, group: str, *, batch_max: int = 40,
                            **options: object) -> AsyncIterator["ProjectorConsumer"]:
    """An in-process projector (the real ConsumerLoop) consuming `topic` into `settings`' database."""
    import asyncio

    from infra.db import create_engine
    from eventstore.store import EventStore
    from projector.bootstrap import create_pool
    from projector.config import ProjectorSettings
    from projector.entrypoints.consumer import ProjectorConsumer
    from projector.service import Projector

    projector_settings = ProjectorSettings(
        **{**settings.model_dump(), "events_topic": topic, "projector_group_id": group, "projector_batch_max": batch_max,
           "events_dlq_topic": f"{topic}.dlq"}
    )
    pool = await create_pool(projector_settings)
    engine = create_engine(projector_settings, pool_size=2)
    loop = ProjectorConsumer(projector_settings, Projector(pool, EventStore(engine)), **options)  # type: ignore[arg-type]
    task = asyncio.create_task(loop.run())
    try:
        await loop.wait_started()
        yield loop
    finally:
        loop.stop()
        await asyncio.wait_for(task, 30)
        await pool.close()
        await engine.dispose()
