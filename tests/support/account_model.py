"""A model-based check of the account aggregate: every actor, every provider answer, any order.

Hypothesis drives one billing account through the pure domain exactly as the processor does
(`decide` → append → provider step → `resolve` → append …), with a fake YooKassa that keeps its own
books (payments, refunds, idempotence keys that it forgets after 24 hours) and answers each call
with success, a decline, pending, a lost answer (before or after acting), a 5xx or a 401 — the
errors go through the gateway's own `classify_error`, so the mapping is the product's. The rules
are every command a user, an operator, the scheduler, the janitor and a notification can send,
plus the customer on the payment page, the provider settling on its own, a worker crashing before
or after a provider call (the command is redelivered), duplicate deliveries and time passing.

After every step the invariants below hold; `settle()` (a rule, and at the end of every run) makes
the world calm — every notification delivered, every page abandoned, every crashed command
redelivered, the janitor asking about everything open — and then checks that every command ended
and that our books agree with YooKassa's.

Invariants (the two promises, made checkable):
* the account state equals the fold of its events (after a JSON round trip at the end of a run);
* refunded + reserved ≤ paid for every payment, in our books and in YooKassa's; nothing ever asks
  YooKassa for more than is left, nor reuses an idempotence key with another body;
* at most one kept charge per subscription period: two charges of one subscription started for
  the same period (the count of periods paid when they started) are never both kept — "kept"
  means YooKassa took the money and we never asked for it back in full;
* no kept renewal charge whose decline (auto-renew off, cancel, expiry) came after it started and
  before we heard of its success, with no re-enable in between;
* plan switches (docs/decisions/0119): an upgrade charges the new price less the credit, where the
  credit is `rules.refunds.refund_amount` of what was actually paid for the current period
  (recomputed here from the log alone); the new period's payments add up to what paid it; refunds
  of a carried credit never exceed it; refunded + reserved ≤ paid per subscription too; at most one
  live subscription per product (upgrades count as a new period for "one kept charge per period");
* a kept recovery charge (the customer paying a past-due subscription now) renewed exactly one
  period at the renewal's amount, and no renewal was charged while the customer's own payment was
  open (docs/decisions/0117);
* a payment or refund ends as failed only when YooKassa declined or refused it (a 401 is ours to
  fix, a given-up create is flagged `outcome_unknown`);
* once the provider has settled: every command has a terminal event, nothing is left open, every
  refund made in YooKassa's dashboard is recorded (by its notification or a reconciliation run),
  and what we refunded of each payment equals what YooKassa refunded of it;
* card checks (docs/decisions/0118): every check we heard succeed was asked back in full at once
  (never kept), a trial is never charged before its end, and every renewal charges the card saved
  last for its subscription (a replacement's newest card).
* price changes (docs/decisions/0120): a purchase pays the plan's price at its time; a renewal
  charges the checkout price or a price announced to that subscriber (PriceChangeAnnounced) at
  least NOTICE_DAYS before that renewal's period start — never a price never announced, never a
  price announced too late; a grandfathered change is never announced, so never paid.
* promo codes (docs/decisions/0121): every charge equals the arithmetic — the plan's price less the
  code's discount (percent rounded down, at least 1 ₽ charged) while the code's periods remain, the
  full price after — and YooKassa was asked for exactly that; a code is never held beyond its limit
  nor twice by one user; a checkout that certainly failed releases its use, one that paid keeps it.
  (One account here: the cross-account limit is `tests/integration/test_promo_limit_race.py`.)
* the processor's own tables (docs/decisions/0129), kept here exactly as the handler writes them
  with each append and the only thing the janitor and the scheduler read: the operations table
  holds exactly the payments and refunds without a final answer (or with a receipt registering),
  and every subscription with a period has its schedule row as the account says it is.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from yookassa.domain.exceptions import BadRequestError, InternalServerError, NotFoundError, UnauthorizedError

import schemas as s
from payment_processor.domain import (
    AccountState,
    Context,
    CreatePayment,
    CreateRefund,
    Decision,
    FindPayment,
    PlanState,
    ProviderOutcome,
    ProviderPayment,
    ProviderRefund,
    ProviderStep,
    PromoState,
    account_emits,
    operation_changes,
    apply,
    apply_promo,
    build_account,
    build_promo,
    build_plan,
    apply_plan,
    decide,
    promo_envelopes,
    decide_plan,
    resolve,
    to_envelopes,
)
from rules.discounts import discount_minor
from payment_processor.adapters.gateway import classify_error
from payment_processor.domain.provider import ReceiptSettings
from payment_processor.entrypoints.janitor import sync_command
from payment_processor.adapters.operations import OpenOperation, net_changes
from payment_processor.adapters.journal import schedule_rows_after
from payment_processor.adapters.schedule import DueAction, DueNotice, ScheduleRow, row_of
from payment_processor.entrypoints.scheduler import command_for, notice_command_for
from payment_processor.domain.reconcile import Window, compare, our_objects, with_command_ids

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=timezone.utc)
USER = "model-user"
STREAM = s.account_stream(USER)
CUSTOMER = s.Customer(email="model@example.com", locale="ru")
KEY_MEMORY = timedelta(hours=24)  # how long YooKassa remembers an Idempotence-Key
RENEWAL_LEAD = timedelta(days=1)
NOTICE_DAYS = 10
"""The price-change notice period here (30 days in production): shorter, so runs reach the renewals it moves."""
OPEN = frozenset({"requested", "pending", "unknown"})

FAULTS = ("ok", "ok", "ok", "lost_before", "lost_after", "5xx", "401")
"""How one provider call goes: answered, lost before or after YooKassa acted, a 500, a 401."""


def _plan(plan_id: str, price: str, days: int, trial_days: int = 0, vat_code: int | None = None) -> PlanState:
    stream = s.plan_stream(plan_id)
    meta = s.Metadata(correlation_id="model", actor=s.Actor(kind="admin", id="op"), command_id=s.derived_id("model-plan", plan_id))
    created = s.PlanCreated(plan_id=plan_id, name=plan_id.title(), price=s.Money(amount=price), period_days=days, trial_days=trial_days,
                            vat_code=vat_code)
    return build_plan(stream, [s.new_envelope(created, stream_id=stream, metadata=meta)])


PLANS = {
    "monthly": _plan("monthly", "299.00", 30, vat_code=4),
    "weekly": _plan("weekly", "99.00", 7),
    "trial": _plan("trial", "199.00", 30, trial_days=3),
    "yearly": _plan("yearly", "2990.00", 365),
}
"""One product: a dearer plan is an upgrade (weekly → trial → monthly → yearly), a cheaper one a downgrade."""
RECEIPTS = ReceiptSettings(vat_code=1, payment_subject="service", payment_mode="full_prepayment", tax_system_code=2)
"""The processor's receipt defaults in the model: the weekly and trial plans take them, the monthly one says VAT 20 %."""

PROMO_TERMS = {
    "SPRING": {"percent_off": 33, "periods": 2, "max_redemptions": 2},
    "FLAT": {"amount_off": s.Money(amount="250.00"), "periods": 1, "max_redemptions": 5, "plan_ids": ["monthly", "weekly"]},
    "WEEKLY": {"percent_off": 50, "periods": 3, "plan_ids": ["weekly"]},
}
"""Codes the model's customer may type (and "NOPE", which does not exist): a 33 % code for two periods
with two uses, an amount larger than the weekly price (capped at 1 ₽ charged), a plan-restricted one."""


def _promo(code: str, terms: dict[str, Any]) -> list[s.Envelope]:
    stream = s.promo_stream(code)
    meta = s.Metadata(correlation_id="model", actor=s.Actor(kind="admin", id="op"), command_id=s.derived_id("model-promo", code))
    created = s.PromoCodeCreated(code=code, expires_at=T0 + timedelta(days=400), **terms)
    return [s.new_envelope(created, stream_id=stream, metadata=meta)]


# --------------------------------------------------------------------------- the fake YooKassa


@dataclass
class YkPayment:
    id: str
    amount_minor: int
    metadata: dict[str, str]
    renewal: bool
    save_method: bool
    status: str = "pending"
    captured_at: datetime | None = None
    cancellation_reason: str | None = None
    created_at: datetime | None = None
    receipt: dict[str, Any] | None = None
    receipt_registration: str | None = None
    three_ds: bool = False
    """A saved-card charge the bank wants the customer to confirm on a payment page (3-D Secure)."""

    @property
    def has_page(self) -> bool:
        return not self.renewal or self.three_ds


@dataclass
class YkRefund:
    id: str
    payment_id: str
    amount_minor: int
    status: str = "pending"
    created_at: datetime | None = None
    dashboard: bool = False
    """Made by an operator in YooKassa's dashboard: no key or request of ours names it."""
    receipt_registration: str | None = None


@dataclass
class FakeYooKassa:
    """YooKassa's own books, with its idempotence: a key replays its object for 24 hours, then is forgotten."""

    payments: dict[str, YkPayment] = field(default_factory=dict)
    refunds: dict[str, YkRefund] = field(default_factory=dict)
    keys: dict[str, tuple[str, datetime, Any]] = field(default_factory=dict)
    refused_keys: set[str] = field(default_factory=set)
    notifications: list[tuple[str, str, str]] = field(default_factory=list)
    """(kind, YooKassa id, event) not yet delivered; a delivered one may stay for a duplicate."""
    violations: list[str] = field(default_factory=list)
    forced_result: str | None = None
    """How every new renewal charge comes out, whatever was drawn (to start from a declined renewal)."""
    recorded_by_shop: Any = lambda refund_id, key: True
    """Whether the shop had recorded this refund when it decided the request under `key`: a
    dashboard refund it had not heard of takes money it could not know was gone, so asking for
    more than is left then is no fault of its own (YooKassa refuses; the refund fails)."""
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))

    def _new_id(self, kind: int) -> str:
        return f"{kind:08x}-0000-5000-8000-{next(self._ids):012d}"

    def call(self, step: ProviderStep, fault: str, now: datetime, result: str) -> ProviderOutcome:
        """One HTTP call; `result` is how a new renewal charge or refund comes out (succeeded/canceled/pending)."""
        if fault == "401":
            return classify_error(UnauthorizedError({"type": "error", "code": "invalid_credentials", "description": "Wrong key"}))
        if fault == "lost_before":
            try:
                raise ConnectionRefusedError("connection refused")
            except ConnectionRefusedError:
                try:
                    None.status_code  # type: ignore[attr-defined]  # the SDK's way of saying "no response"
                except AttributeError as exc:
                    return classify_error(exc)
        try:
            outcome = self._act(step, now, self.forced_result or result)
        except (BadRequestError, NotFoundError) as exc:
            return classify_error(exc)
        if fault == "lost_after":
            return classify_error(TimeoutError("read timed out"))
        if fault == "5xx":
            return classify_error(InternalServerError({"type": "error", "code": "internal_server_error"}))
        return outcome

    def _act(self, step: ProviderStep, now: datetime, result: str) -> ProviderOutcome:
        if isinstance(step, (CreatePayment, CreateRefund)):
            known = self.keys.get(step.idempotence_key)
            if known is not None and now - known[1] < KEY_MEMORY:
                if known[2] != step.body:
                    self.violations.append(f"idempotence key {step.idempotence_key} reused with another body")
                    raise BadRequestError({"type": "error", "code": "invalid_request", "description": "key reused"})
                return self.view(known[0])
        if isinstance(step, CreatePayment):
            body = step.body
            renewal = "payment_method_id" in body
            receipt = body.get("receipt")
            if receipt is not None:  # 54-FZ: the receipt's items add up to what is charged (YooKassa refuses otherwise)
                items = sum(s.Money(amount=i["amount"]["value"]).minor for i in receipt["items"])
                if items != s.Money(amount=body["amount"]["value"]).minor:
                    self.violations.append(f"receipt of {items} for a charge of {body['amount']['value']}")
            payment = YkPayment(
                id=self._new_id(0x2F9D7A1C),
                amount_minor=s.Money(amount=body["amount"]["value"]).minor,
                metadata=dict(body["metadata"]),
                renewal=renewal,
                save_method=bool(body.get("save_payment_method")),
                created_at=now,
                receipt=body.get("receipt"),
            )
            self._check_receipt(body, payment.amount_minor, None)
            payment.receipt_registration = "pending" if payment.receipt else None
            self.payments[payment.id] = payment
            self.keys[step.idempotence_key] = (payment.id, now, body)
            if renewal and result == "3ds":
                payment.three_ds = True
            elif renewal and result != "pending":
                self.settle_payment(payment, result, now)
            return self.view(payment.id)
        if isinstance(step, CreateRefund):
            body = step.body
            payment = self.payments.get(body["payment_id"])
            amount = s.Money(amount=body["amount"]["value"]).minor
            if payment is None or payment.status != "succeeded":
                self.refused_keys.add(step.idempotence_key)
                raise BadRequestError({"type": "error", "code": "invalid_request", "description": "payment not refundable"})
            taken = sum(r.amount_minor for r in self.refunds.values() if r.payment_id == payment.id and r.status != "canceled")
            if taken + amount > payment.amount_minor:
                unheard = sum(
                    r.amount_minor
                    for r in self.refunds.values()
                    if r.payment_id == payment.id and r.dashboard and r.status != "canceled" and not self.recorded_by_shop(r.id, step.idempotence_key)
                )
                if taken - unheard + amount > payment.amount_minor:
                    self.violations.append(f"asked to refund {amount} of {payment.id} with {payment.amount_minor - taken} left")
                self.refused_keys.add(step.idempotence_key)
                raise BadRequestError({"type": "error", "code": "invalid_request", "description": "amount too large"})
            self._check_receipt(body, amount, payment.receipt)
            refund = YkRefund(
                id=self._new_id(0x3A8E0000), payment_id=payment.id, amount_minor=amount, created_at=now,
                receipt_registration="pending" if body.get("receipt") else None,
            )
            self.refunds[refund.id] = refund
            self.keys[step.idempotence_key] = (refund.id, now, body)
            if result not in ("pending", "3ds"):
                self.settle_refund(refund, "succeeded" if result == "succeeded" else "canceled")
            return self.view(refund.id)
        object_id = step.provider_payment_id if isinstance(step, FindPayment) else step.provider_refund_id
        if object_id not in self.payments and object_id not in self.refunds:
            raise NotFoundError({"type": "error", "code": "not_found", "description": "no such object"})
        settled = self.refunds.get(object_id) or self.payments[object_id]
        if settled.status == "succeeded" and settled.receipt_registration == "pending":
            settled.receipt_registration = "succeeded"  # registered by the time we ask again
        return self.view(object_id)

    def _check_receipt(self, body: dict[str, Any], amount_minor: int, paid_with: dict[str, Any] | None) -> None:
        """54-FZ: a receipt adds up to the amount; a refund's says what its payment's said."""
        receipt = body.get("receipt")
        if receipt is None:
            if "payment_method_id" not in body and "payment_id" not in body:
                self.violations.append("a purchase without a receipt")
            return
        total = sum(s.Money(amount=i["amount"]["value"]).minor for i in receipt["items"])
        if total != amount_minor:
            self.violations.append(f"receipt items add up to {total}, not {amount_minor}")
        if paid_with is not None:
            keys = ("vat_code", "payment_subject", "payment_mode")
            if [receipt["items"][0][k] for k in keys] != [paid_with["items"][0][k] for k in keys] or receipt.get(
                "tax_system_code"
            ) != paid_with.get("tax_system_code"):
                self.violations.append(f"refund receipt {receipt} differs from its payment's {paid_with}")

    def view(self, object_id: str) -> ProviderOutcome:
        if object_id in self.refunds:
            r = self.refunds[object_id]
            return ProviderRefund(
                id=r.id, status=r.status, amount=s.Money.from_minor(r.amount_minor, "RUB"), payment_id=r.payment_id,
                receipt_registration=r.receipt_registration, created_at=r.created_at,
            )
        p = self.payments[object_id]
        saved = p.status == "succeeded" and (p.renewal or p.save_method)
        return ProviderPayment(
            id=p.id,
            status=p.status,
            amount=s.Money.from_minor(p.amount_minor, "RUB"),
            confirmation_url=f"https://yookassa.test/pay/{p.id}" if p.has_page else None,
            captured_at=p.captured_at,
            cancellation_reason=p.cancellation_reason,
            cancellation_party="payment_network" if p.cancellation_reason else None,
            payment_method_id=f"pm-{p.id}" if saved else None,
            payment_method_saved=saved,
            payment_method_title="Bank card *4444" if saved else None,
            metadata=dict(p.metadata),
            created_at=p.created_at,
            receipt_registration=p.receipt_registration,
        )

    def settle_payment(self, payment: YkPayment, status: str, now: datetime) -> None:
        payment.status = status
        if status == "succeeded":
            payment.captured_at = now
        else:
            payment.cancellation_reason = "insufficient_funds" if not payment.has_page else "expired_on_confirmation"
        self.notifications.append(("payment", payment.id, f"payment.{status}"))

    def settle_refund(self, refund: YkRefund, status: str) -> None:
        refund.status = status
        self.notifications.append(("refund", refund.id, f"refund.{status}"))

    def dashboard_refund(self, payment: YkPayment, amount_minor: int, now: datetime, *, notify: bool) -> YkRefund:
        """An operator refunds in the dashboard: succeeded at once; its notification may be lost."""
        refund = YkRefund(
            id=self._new_id(0x3A8ED000), payment_id=payment.id, amount_minor=amount_minor, status="succeeded", created_at=now, dashboard=True
        )
        self.refunds[refund.id] = refund
        if notify:
            self.notifications.append(("refund", refund.id, "refund.succeeded"))
        return refund

    def succeeded_refunds_minor(self, payment_id: str) -> int:
        return sum(r.amount_minor for r in self.refunds.values() if r.payment_id == payment_id and r.status == "succeeded")

    def refunded_minor(self, payment_id: str) -> int:
        return sum(r.amount_minor for r in self.refunds.values() if r.payment_id == payment_id and r.status != "canceled")


# --------------------------------------------------------------------------- invariants over the log


def list_price(intent: s.CheckoutStarted | s.RenewalStarted | s.RecoveryStarted) -> s.Money:
    """The price a charge started from: before a promo code's discount (`charge_arithmetic` checks that)."""
    return intent.promo.list_price if intent.promo is not None else intent.amount


def price_change_violations(log: list[s.Envelope], plans: dict[str, PlanState]) -> list[str]:
    """What a purchase and a renewal charged against what the plan and the notices allow."""
    problems = []
    checkout: dict[Any, s.Money] = {}
    notices: dict[Any, list[tuple[datetime, s.PriceChangeAnnounced]]] = {}
    plan_of: dict[Any, str] = {}
    scheduled: dict[Any, s.PlanSwitchScheduled] = {}
    for e in log:
        d = e.data
        # Plan switches (decision 0119): a switch prices the new plan as it costs at that moment; an
        # upgrade's plan or a downgrade's renewal is the subscription's new "checkout" price.
        if isinstance(d, (s.UpgradeStarted, s.PlanSwitchScheduled)) or isinstance(d, s.PlanSwitched) and d.payment_id is None:
            expected = plans[d.plan_id].price_at(e.occurred_at)
            if d.price != expected:
                problems.append(f"switch of {d.subscription_id} to {d.plan_id} at {e.occurred_at} priced {d.price}, the plan cost {expected}")
        if isinstance(d, s.PlanSwitchScheduled):
            scheduled[d.subscription_id] = d
        elif isinstance(d, s.PlanSwitchWithdrawn):
            scheduled.pop(d.subscription_id, None)
        elif isinstance(d, s.PlanSwitched):
            plan_of[d.subscription_id], checkout[d.subscription_id] = d.plan_id, d.price
            notices.pop(d.subscription_id, None)
            scheduled.pop(d.subscription_id, None)
        elif isinstance(d, s.SubscriptionRenewed) and d.plan_id and d.plan_id != plan_of.get(d.subscription_id):
            switch = scheduled.pop(d.subscription_id, None)
            plan_of[d.subscription_id] = d.plan_id
            checkout[d.subscription_id] = switch.price if switch is not None else list_price(d)  # type: ignore[arg-type]
            notices.pop(d.subscription_id, None)
        elif isinstance(d, s.SubscriptionRenewed):
            scheduled.pop(d.subscription_id, None)
        if isinstance(d, (s.CheckoutStarted, s.SubscriptionActivated)):
            plan_of.setdefault(d.subscription_id, d.plan_id)
        if isinstance(d, (s.RenewalStarted, s.RecoveryStarted)) and (switch := scheduled.get(d.subscription_id)) is not None:
            # A scheduled downgrade is the next period's terms, however that period is paid: the
            # automatic renewal, a dunning retry or the customer paying it now (0117, 0119).
            if d.plan_id != switch.plan_id or list_price(d) != switch.price:
                problems.append(f"{type(d).__name__} {d.payment_id} charged {d.plan_id} at {list_price(d)} while a switch to "
                                f"{switch.plan_id} at {switch.price} was scheduled")
            continue
        if isinstance(d, s.RenewalStarted) and d.plan_id != plan_of.get(d.subscription_id, d.plan_id):
            switch = scheduled.get(d.subscription_id)
            if switch is None or switch.plan_id != d.plan_id or list_price(d) != switch.price:
                problems.append(f"renewal {d.payment_id} to {d.plan_id} priced {list_price(d)}; the scheduled switch said {switch}")
            continue
        if isinstance(d, s.SubscriptionActivated) and d.trial and d.next_charge is not None:
            checkout[d.subscription_id] = d.next_charge  # a trial: its first charge's price, fixed when it started
        elif isinstance(d, s.CheckoutStarted):
            checkout[d.subscription_id] = list_price(d)
            expected = plans[d.plan_id].price_at(e.occurred_at)
            if list_price(d) != expected:
                problems.append(f"purchase {d.payment_id} at {e.occurred_at} priced {list_price(d)}, the plan cost {expected}")
        elif isinstance(d, s.PriceChangeAnnounced):
            change = plans[d.plan_id].change(d.change_id)
            if change is None or change.grandfather:
                problems.append(f"{d.subscription_id} was told of a change that is grandfathered or unknown: {d.change_id}")
            if d.first_renewal_at < e.occurred_at + timedelta(days=NOTICE_DAYS) or (change and d.first_renewal_at < change.effective_at):
                problems.append(f"{d.subscription_id}: notice at {e.occurred_at} names a renewal on {d.first_renewal_at}")
            notices.setdefault(d.subscription_id, []).append((e.occurred_at, d))
        elif isinstance(d, (s.RenewalStarted, s.RecoveryStarted)):  # paying now charges what the renewal would
            allowed = [checkout.get(d.subscription_id)] + [
                n.new_price for at, n in notices.get(d.subscription_id, [])
                if n.first_renewal_at <= d.period_start and at + timedelta(days=NOTICE_DAYS) <= d.period_start
            ]
            if list_price(d) not in allowed:
                problems.append(f"renewal {d.payment_id} from {d.period_start} priced {list_price(d)}; allowed {allowed}")
    return problems


def period_double_charges(log: list[s.Envelope], yk: FakeYooKassa) -> list[str]:
    """Pairs of kept charges of one subscription started for the same period (see the module doc)."""
    periods_paid: dict[Any, int] = {}
    started_for: dict[Any, tuple[Any, int]] = {}
    asked_back: dict[Any, int] = {}
    amount: dict[Any, int] = {}
    for event in log:
        d = event.data
        if isinstance(d, (s.CheckoutStarted, s.RenewalStarted, s.RecoveryStarted, s.UpgradeStarted)):
            started_for[d.payment_id] = (d.subscription_id, periods_paid.get(d.subscription_id, 0))
            amount[d.payment_id] = d.amount.minor
        elif isinstance(d, s.SubscriptionActivated) and d.payment_id is not None or isinstance(d, (s.SubscriptionRenewed, s.PlanSwitched)):
            periods_paid[d.subscription_id] = periods_paid.get(d.subscription_id, 0) + 1
        elif isinstance(d, s.RefundRequested):
            asked_back[d.payment_id] = asked_back.get(d.payment_id, 0) + d.amount.minor
    kept: dict[tuple[Any, int], list[Any]] = {}
    for p in yk.payments.values():
        ours = p.metadata.get("payment_id")
        match = next((pid for pid in started_for if str(pid) == ours), None)
        if p.status != "succeeded" or match is None:
            continue
        if asked_back.get(match, 0) >= amount[match]:
            continue
        kept.setdefault(started_for[match], []).append(match)
    return [f"subscription {k[0]} period {k[1]} kept {len(v)} charges: {v}" for k, v in kept.items() if len(v) > 1]


def charge_arithmetic(log: list[s.Envelope], yk: FakeYooKassa) -> list[str]:
    """Every charge is the plan's price less the code's discount while its periods remain (the first
    period included), the full price after; and YooKassa was asked for exactly our amount."""
    terms: dict[Any, dict[str, Any]] = {}
    discounted_paid: dict[Any, int] = {}
    renewal_promo: dict[Any, bool] = {}
    problems = []

    def expected(sub_id: Any, list_minor: int) -> int:
        t = terms.get(sub_id)
        if t is None or discounted_paid.get(sub_id, 0) >= t["periods"]:
            return list_minor
        off = discount_minor(list_minor, percent_off=t.get("percent_off"), amount_off_minor=t["amount_off"].minor if t.get("amount_off") else None)
        return list_minor - off

    for event in log:
        d = event.data
        # The list price a charge started from is `price_change_violations`' to check; here: the discount.
        if isinstance(d, s.CheckoutStarted):
            price = list_price(d)
            if d.promo is not None:
                terms[d.subscription_id] = PROMO_TERMS[d.promo.code]
                if d.promo.periods_left != PROMO_TERMS[d.promo.code]["periods"] - 1:
                    problems.append(f"checkout {d.payment_id} recorded {d.promo}")
            if d.amount.minor != expected(d.subscription_id, price.minor):
                problems.append(f"checkout {d.payment_id} charged {d.amount}, expected {expected(d.subscription_id, price.minor)}")
        elif isinstance(d, (s.RenewalStarted, s.RecoveryStarted)):
            price = list_price(d)
            renewal_promo[d.payment_id] = d.promo is not None
            if d.amount.minor != expected(d.subscription_id, price.minor):
                problems.append(f"renewal {d.payment_id} charged {d.amount}, expected {expected(d.subscription_id, price.minor)}")
        elif isinstance(d, s.SubscriptionActivated) and d.payment_id is not None and d.subscription_id in terms:
            discounted_paid[d.subscription_id] = discounted_paid.get(d.subscription_id, 0) + 1
        elif isinstance(d, s.SubscriptionRenewed) and renewal_promo.get(d.payment_id):
            discounted_paid[d.subscription_id] = discounted_paid.get(d.subscription_id, 0) + 1
    amounts = {str(e.data.payment_id): e.data.amount.minor for e in log if isinstance(e.data, (s.CheckoutStarted, s.RenewalStarted, s.RecoveryStarted))}
    for theirs in yk.payments.values():
        ours = amounts.get(theirs.metadata.get("payment_id", ""))
        if ours is not None and ours != theirs.amount_minor:
            problems.append(f"YooKassa charged {theirs.amount_minor} for our {ours}")
    return problems


def charges_after_decline(log: list[s.Envelope]) -> list[str]:
    """Renewal charges kept although the customer declined between their start and their success."""
    asked_back: dict[Any, int] = {}
    for event in log:
        if isinstance(event.data, s.RefundRequested):
            asked_back[event.data.payment_id] = asked_back.get(event.data.payment_id, 0) + event.data.amount.minor
    subscription_of: dict[Any, Any] = {}
    declined: dict[Any, bool] = {}
    """Renewal charges not yet heard of as succeeded → whether the customer's last word since was "no"."""
    problems = []
    for event in log:
        d = event.data
        if isinstance(d, s.RenewalStarted):
            subscription_of[d.payment_id], declined[d.payment_id] = d.subscription_id, False
        elif isinstance(d, (s.AutoRenewChanged, s.SubscriptionCanceled, s.SubscriptionExpired)):
            says_no = not (isinstance(d, s.AutoRenewChanged) and d.enabled)
            for pid in declined:
                if subscription_of[pid] == d.subscription_id:
                    declined[pid] = says_no
        elif isinstance(d, s.PaymentSucceeded) and d.payment_id in declined:
            if declined.pop(d.payment_id) and asked_back.get(d.payment_id, 0) < d.amount.minor:
                problems.append(f"renewal payment {d.payment_id} kept after the customer declined it")
    return problems


def recovery_problems(log: list[s.Envelope], yk: FakeYooKassa) -> list[str]:
    """Kept recovery charges (we heard of their success) that did not renew exactly their one period at the renewal's amount, and
    renewal charges started while the customer's own payment of the period was open (0117)."""
    intents: dict[Any, s.RecoveryStarted] = {}
    renewed_by: dict[Any, list[s.SubscriptionRenewed]] = {}
    asked_back: dict[Any, int] = {}
    open_recovery: dict[Any, set[Any]] = {}
    heard: set[Any] = set()
    problems = []
    for event in log:
        d = event.data
        if isinstance(d, s.RecoveryStarted):
            intents[d.payment_id] = d
            open_recovery.setdefault(d.subscription_id, set()).add(d.payment_id)
            if d.period_end - d.period_start != timedelta(days=PLANS[d.plan_id].period_days):
                problems.append(f"recovery {d.payment_id} pays a period of {d.period_end - d.period_start}")
        elif isinstance(d, (s.PaymentSucceeded, s.PaymentFailed)):
            for pending in open_recovery.values():
                pending.discard(d.payment_id)
            if isinstance(d, s.PaymentSucceeded):
                heard.add(d.payment_id)
        elif isinstance(d, s.RenewalStarted) and open_recovery.get(d.subscription_id):
            problems.append(f"renewal {d.payment_id} charged while recovery {open_recovery[d.subscription_id]} was open")
        elif isinstance(d, s.SubscriptionRenewed):
            renewed_by.setdefault(d.payment_id, []).append(d)
        elif isinstance(d, s.RefundRequested):
            asked_back[d.payment_id] = asked_back.get(d.payment_id, 0) + d.amount.minor
    for p in yk.payments.values():
        match = next((pid for pid in intents if str(pid) == p.metadata.get("payment_id")), None)
        if match is None or match not in heard or p.status != "succeeded" or asked_back.get(match, 0) >= p.amount_minor:
            continue  # not taken, not heard of yet (settled at the latest by `settle`), or given back
        intent, renewals = intents[match], renewed_by.get(match, [])
        if len(renewals) != 1 or renewals[0].period_end - renewals[0].period_start != intent.period_end - intent.period_start:
            problems.append(f"kept recovery {match} renewed {[(r.period_start, r.period_end) for r in renewals]}")
    return problems


def failures_not_declined(log: list[s.Envelope], yk: FakeYooKassa) -> list[str]:
    """Payments and refunds that ended failed although YooKassa neither declined nor refused them."""
    keys: dict[Any, str] = {}
    provider_id: dict[Any, str] = {}
    for event in log:
        d = event.data
        if isinstance(d, (s.CheckoutStarted, s.RenewalStarted, s.CardCheckStarted, s.RecoveryStarted, s.UpgradeStarted)):
            keys[d.payment_id] = d.idempotence_key
        elif isinstance(d, s.RefundRequested):
            keys[d.refund_id] = d.idempotence_key
        elif isinstance(d, s.PaymentCreated):
            provider_id[d.payment_id] = d.provider_payment_id
        elif isinstance(d, s.RefundCreated):
            provider_id[d.refund_id] = d.provider_refund_id
    problems = []
    for event in log:
        d = event.data
        if isinstance(d, s.PaymentFailed) and not d.outcome_unknown:
            theirs = yk.payments.get(d.provider_payment_id or provider_id.get(d.payment_id, ""))
            if not (theirs is not None and theirs.status == "canceled") and keys.get(d.payment_id) not in yk.refused_keys:
                problems.append(f"payment {d.payment_id} failed ({d.reason}) though YooKassa did not decline it")
        elif isinstance(d, s.RefundFailed) and not d.outcome_unknown:
            theirs_r = yk.refunds.get(provider_id.get(d.refund_id, ""))
            made = yk.refunds.get(yk.keys.get(keys.get(d.refund_id, ""), ("",))[0])
            if d.reason.startswith("never_made:") and (made is None or made.status == "canceled"):
                continue  # released after a dashboard refund left no room for it: YooKassa never made it
            if not (theirs_r is not None and theirs_r.status == "canceled") and keys.get(d.refund_id) not in yk.refused_keys:
                problems.append(f"refund {d.refund_id} failed ({d.reason}) though YooKassa did not decline it")
    return problems


@dataclass
class _Period:
    """The current period of a subscription as the log tells it: what paid it, from when."""

    start: datetime
    days: int
    funding: dict[Any, tuple[int, int]]
    """payment id → (kopecks of it that paid this period, its refunded + reserved when the period began)"""


def switch_arithmetic(log: list[s.Envelope]) -> list[str]:
    """Every upgrade charged the new price less the credit, where the credit is the prorated refund
    (`rules.refunds.refund_amount`) of what was actually paid for the current period, computed here
    from the log alone; and refunds of a carried credit never exceed it (no value refunded twice)."""
    from rules.refunds import refund_amount

    paid: dict[Any, int] = {}
    asked: dict[Any, int] = {}
    refunds: dict[Any, tuple[Any, int, str | None]] = {}
    periods: dict[Any, _Period] = {}
    carried_since: dict[Any, tuple[int, int]] = {}
    """payment id → (credit carried from it by the latest switch, its non-operator refunds then)"""
    not_by_operator: dict[Any, int] = {}
    problems: list[str] = []

    def credit_now(sub_id: Any, at: datetime) -> tuple[int, list[tuple[Any, int]]]:
        period = periods.get(sub_id)
        if period is None:
            return 0, []
        live = {pid: f for pid, f in period.funding.items() if pid in paid}
        taken = {pid: min(max(asked.get(pid, 0) - base, 0), cap) for pid, (cap, base) in live.items()}
        total = refund_amount(sum(cap for cap, _ in live.values()), period.start, period.days, at, sum(taken.values())).amount_minor
        left, parts = total, []
        for pid, (cap, _) in live.items():
            share = min(left, cap - taken[pid], paid[pid] - asked.get(pid, 0))
            if share > 0:
                parts.append((pid, share))
                left -= share
        return total - left, parts

    for event in log:
        d = event.data
        if isinstance(d, s.PaymentSucceeded):
            paid[d.payment_id] = d.amount.minor
        elif isinstance(d, s.RefundRequested):
            asked[d.payment_id] = asked.get(d.payment_id, 0) + d.amount.minor
            refunds[d.refund_id] = (d.payment_id, d.amount.minor, d.command_type)
            if d.command_type != "AdminRefund":
                not_by_operator[d.payment_id] = not_by_operator.get(d.payment_id, 0) + d.amount.minor
        elif isinstance(d, s.RefundSucceeded) and d.dashboard and d.refund_id not in refunds:
            # refunded in YooKassa's dashboard (no request of ours): an operator's, as an admin refund
            asked[d.payment_id] = asked.get(d.payment_id, 0) + d.amount.minor
            refunds[d.refund_id] = (d.payment_id, d.amount.minor, "AdminRefund")
        elif isinstance(d, s.RefundFailed) and not d.outcome_unknown and d.refund_id in refunds:
            pid, amount, ctype = refunds[d.refund_id]
            asked[pid] -= amount
            if ctype != "AdminRefund":
                not_by_operator[pid] -= amount
        elif isinstance(d, s.SubscriptionActivated):
            if d.payment_id is not None:
                funding = {d.payment_id: (d.amount_paid.minor, asked.get(d.payment_id, 0))}
                periods[d.subscription_id] = _Period(d.period_start, max((d.period_end - d.period_start).days, 1), funding)
            else:
                periods.pop(d.subscription_id, None)
        elif isinstance(d, s.SubscriptionRenewed):
            # the period the charge paid is the one it renewed: from the period end current when it
            # succeeded, later than its intent's start if an operator extended meanwhile (0117)
            days = max((d.period_end - d.period_start).days, 1)
            periods[d.subscription_id] = _Period(d.period_start, days, {d.payment_id: (d.amount.minor, asked.get(d.payment_id, 0))})
        elif isinstance(d, (s.UpgradeStarted, s.PlanSwitched)):
            price = d.price.minor
            if isinstance(d, s.UpgradeStarted) or d.payment_id is None:  # the decision: check its arithmetic
                credit, parts = credit_now(d.subscription_id, event.occurred_at)
                credit = min(credit, price)
                charged = d.amount.minor if isinstance(d, s.UpgradeStarted) else d.amount_charged.minor
                if d.credit.minor != credit or charged != price - credit:
                    problems.append(f"upgrade of {d.subscription_id}: charged {charged} with credit {d.credit.minor}; expected credit {credit}")
            if isinstance(d, s.PlanSwitched):
                funding = {d.payment_id: (d.amount_charged.minor, 0)} if d.payment_id is not None else {}
                for part in d.credit_from:
                    funding[part.payment_id] = (part.amount.minor, asked.get(part.payment_id, 0))
                    carried_since[part.payment_id] = (part.amount.minor, not_by_operator.get(part.payment_id, 0))
                if d.amount_charged.minor + d.credit.minor != sum(cap for cap, _ in funding.values()):
                    problems.append(f"switch of {d.subscription_id}: the new period's payments do not add up to what was paid for it")
                periods[d.subscription_id] = _Period(d.period_start, d.period_days, funding)
    for pid, (carried, before) in carried_since.items():
        if not_by_operator.get(pid, 0) - before > carried:
            problems.append(f"payment {pid}: {not_by_operator[pid] - before} refunded from a carried credit of {carried}")
    return problems


def card_check_problems(log: list[s.Envelope]) -> list[str]:
    """Checks kept, trials charged before their end, renewals not on the newest card (decision 0118)."""
    problems = []
    checks: dict[Any, int] = {}
    asked_back: dict[Any, int] = {}
    succeeded: set[Any] = set()
    trial_end: dict[Any, datetime] = {}
    card: dict[Any, str] = {}
    for event in log:
        d = event.data
        if isinstance(d, s.CardCheckStarted):
            checks[d.payment_id] = d.amount.minor
        elif isinstance(d, s.RefundRequested):
            asked_back[d.payment_id] = asked_back.get(d.payment_id, 0) + d.amount.minor
        elif isinstance(d, s.PaymentSucceeded):
            if d.payment_id in checks:
                succeeded.add(d.payment_id)
            if d.payment_method is not None:
                card[d.subscription_id] = d.payment_method.id
        elif isinstance(d, s.PaymentMethodReplaced):
            card[d.subscription_id] = d.payment_method.id
        elif isinstance(d, s.SubscriptionActivated):
            if d.trial:
                trial_end[d.subscription_id] = d.period_end
            else:
                trial_end.pop(d.subscription_id, None)
        elif isinstance(d, s.SubscriptionAdjusted) and d.subscription_id in trial_end:
            trial_end[d.subscription_id] = d.period_end
        elif isinstance(d, (s.SubscriptionRenewed, s.PlanSwitched)):  # a paid period: no longer a trial
            trial_end.pop(d.subscription_id, None)
        elif isinstance(d, (s.RenewalStarted, s.CheckoutStarted)):
            end = trial_end.get(d.subscription_id)
            if end is not None and event.occurred_at < end:
                problems.append(f"trial {d.subscription_id} charged at {event.occurred_at}, before its end {end}")
            if isinstance(d, s.RenewalStarted) and d.payment_method_id != card.get(d.subscription_id):
                problems.append(f"renewal {d.payment_id} charges {d.payment_method_id}, not the newest card {card.get(d.subscription_id)}")
    for payment_id in succeeded:
        if asked_back.get(payment_id, 0) < checks[payment_id]:
            problems.append(f"card check {payment_id} succeeded and was not refunded in full")
    return problems


# --------------------------------------------------------------------------- the machine


class AccountMachine(RuleBasedStateMachine):
    """One billing account, every actor; see the module docstring for the invariants."""

    examples = 0
    steps = 0

    def __init__(self) -> None:
        super().__init__()
        type(self).examples += 1
        self.now = T0
        self.state = AccountState(stream_id=STREAM)
        self.log: list[s.Envelope] = []
        self.yk = FakeYooKassa()
        self.known_at_intent: dict[str, frozenset[str]] = {}
        self.yk.recorded_by_shop = lambda refund_id, key: refund_id in self.known_at_intent.get(key, self._dashboard_refunds_recorded())
        self.sent: dict[Any, s.Envelope] = {}
        self.crashed: list[s.Envelope] = []
        self.checks: dict[Any, int] = {}
        # `processor.open_operations` as the handler writes it: opened and closed by
        # `operation_changes` of each append (the janitor follows only what is in it)
        self.open_ops: dict[Any, tuple[str, datetime]] = {}
        # `processor.schedule` as the handler writes it: the rows of the subscriptions an append's
        # schedule events touch (`journal.schedule_rows_after`); the scheduler reads nothing else
        self.schedule_table: dict[Any, ScheduleRow] = {}
        self.counter = itertools.count(1)
        self.promo_logs: dict[str, list[s.Envelope]] = {code: _promo(code, terms) for code, terms in PROMO_TERMS.items()}
        self.promos: dict[str, PromoState] = {code: build_promo(s.promo_stream(code), log) for code, log in self.promo_logs.items()}
        self.plans = copy.deepcopy(PLANS)  # this run's catalogue: an operator may schedule prices in it
        self.notices_sent: set[tuple[Any, Any]] = set()

    # ------------------------------------------------------------------ driving the domain

    def _ctx(self, plan_id: str | None = None, code: str | None = None) -> Context:
        return Context(
            now=self.now,
            plan=self.plans.get(plan_id) if plan_id else None,
            promo=self.promos.get(code) if code else None,
            default_return_url="https://shop.test/return",
            receipts=RECEIPTS,
            price_change_notice_days=NOTICE_DAYS,
        )

    def _append(self, command: s.Envelope, decision: Decision) -> None:
        """As the handler: the code streams' events (unless already there) with the account's, together."""
        for stream, envelopes in promo_envelopes(decision.events, command, self.now).items():
            code = stream[len("promo-"):]
            have = {e.id for e in self.promo_logs[code]}
            for envelope in envelopes:
                if envelope.id not in have:
                    apply_promo(self.promos[code], envelope)
                    self.promo_logs[code].append(envelope)
        emits = account_emits(decision.events)
        if emits:  # as the handler's side writes, which go in only with appended events
            opened, closed = net_changes(operation_changes(emits))
            for op_id in closed:
                self.open_ops.pop(op_id, None)
            for op_id, kind in opened.items():
                self.open_ops.setdefault(op_id, (kind, self.now))
        appended = to_envelopes(self.state, command, emits, self.now)
        for envelope in appended:
            if isinstance(envelope.data, s.RefundRequested):
                self.known_at_intent.setdefault(envelope.data.idempotence_key, self._dashboard_refunds_recorded())
            apply(self.state, envelope)
            self.log.append(envelope)
        for row in schedule_rows_after(self.state, appended):
            self.schedule_table[row.subscription_id] = row

    def _dashboard_refunds_recorded(self) -> frozenset[str]:
        return frozenset(r.provider_refund_id for r in self.state.refunds.values() if r.dashboard and r.provider_refund_id)

    def _command(self, payload: s.Command, actor: str, command_id: Any = None) -> s.Envelope:
        cid = command_id or s.derived_id("model-command", next(self.counter))
        meta = s.Metadata(correlation_id=f"model-{cid}", command_id=cid, actor=s.Actor(kind=actor, id=USER))  # type: ignore[arg-type]
        return s.new_envelope(payload, stream_id=STREAM, metadata=meta, id=cid, occurred_at=self.now)

    def handle(self, command: s.Envelope, data: Any = None) -> None:
        """What the processor does with one delivery; `data` draws faults and crashes (None: calm)."""
        type(self).steps += 1
        self.sent.setdefault(command.metadata.command_id, command)
        plan_id = getattr(command.data, "plan_id", None)
        decision = decide(self.state, command, self._ctx(plan_id, getattr(command.data, "promo_code", None)))
        if decision.already_handled:
            return
        self._append(command, decision)
        while decision.step is not None:
            step = decision.step
            if data is not None and data.draw(st.integers(0, 19), label="crash before the call") == 0:
                self.crashed.append(command)
                return
            fault = data.draw(st.sampled_from(FAULTS), label="fault") if data is not None else "ok"
            result = data.draw(st.sampled_from(("succeeded", "canceled", "pending", "3ds")), label="result") if data is not None else "succeeded"
            outcome = self.yk.call(step, fault, self.now, result)
            if data is not None and data.draw(st.integers(0, 19), label="crash after the call") == 0:
                self.crashed.append(command)
                return
            decision = resolve(self.state, command, step, outcome, self._ctx())
            if decision.retry_later:  # the consumer retries the command (bounded, then dead-letter)
                self.crashed.append(command)
                return
            self._append(command, decision)

    def _send(self, payload: s.Command, data: Any, actor: str = "user") -> None:
        self.handle(self._command(payload, actor), data)

    def _subscription(self, index: int) -> Any:
        subs = sorted(self.state.subscriptions)
        return subs[index % len(subs)]

    def has_subscriptions(self) -> bool:
        return bool(self.state.subscriptions)

    # ------------------------------------------------------------------ the user and the operator

    @initialize(
        plan=st.sampled_from(sorted(PLANS)), code=st.sampled_from((None, None, "SPRING", "FLAT", "WEEKLY")), overdue=st.booleans()
    )
    def a_paying_customer(self, plan: str, code: str | None, overdue: bool) -> None:
        """Most runs are about what happens to a live, renewing subscription: start from one (often
        bought with a promo code, so its renewals cross from discounted to full price) — half of the
        time one whose first renewal was just declined (past due: pay now, dunning)."""
        sub_id = s.derived_id("model-subscription", next(self.counter))
        purchase = s.PurchaseSubscription(subscription_id=sub_id, plan_id=plan, customer=CUSTOMER, auto_renew=True, promo_code=code)
        self._send(purchase, None)
        for page in self._pending_pages():
            self.yk.settle_payment(page, "succeeded", self.now)
        if self.yk.notifications:  # none when the code was refused (WEEKLY on the monthly plan)
            self._notify(self.yk.notifications.pop(), None)
        sub = self.state.subscriptions.get(sub_id)
        if overdue and sub is not None and sub.status == "active" and sub.period_end is not None:
            self.now = sub.period_end - (timedelta(0) if sub.trial else RENEWAL_LEAD)  # a trial is charged at its end
            self.yk.forced_result = "canceled"
            self.scheduler_tick(None)
            self.yk.forced_result = None
            self.yk.notifications.clear()
            assert self.state.subscriptions[sub_id].status == "past_due"

    @rule(plan=st.sampled_from(sorted(PLANS)), auto_renew=st.booleans(), data=st.data())
    def purchase(self, plan: str, auto_renew: bool, data: Any) -> None:
        sub_id = s.derived_id("model-subscription", next(self.counter))
        self._send(s.PurchaseSubscription(subscription_id=sub_id, plan_id=plan, customer=CUSTOMER, auto_renew=auto_renew), data)

    @rule(plan=st.sampled_from(sorted(PLANS)), code=st.sampled_from(sorted(PROMO_TERMS) + ["NOPE"]), data=st.data())
    def purchase_with_code(self, plan: str, code: str, data: Any) -> None:
        sub_id = s.derived_id("model-subscription", next(self.counter))
        self._send(s.PurchaseSubscription(subscription_id=sub_id, plan_id=plan, customer=CUSTOMER, promo_code=code), data)

    @precondition(has_subscriptions)
    @rule(index=st.integers(0, 7), mode=st.sampled_from(("refund_now", "at_period_end")), data=st.data())
    def cancel(self, index: int, mode: str, data: Any) -> None:
        self._send(s.CancelSubscription(subscription_id=self._subscription(index), mode=mode), data)  # type: ignore[arg-type]

    @precondition(has_subscriptions)
    @rule(index=st.integers(0, 7), enabled=st.booleans(), data=st.data())
    def auto_renew(self, index: int, enabled: bool, data: Any) -> None:
        self._send(s.SetAutoRenew(subscription_id=self._subscription(index), enabled=enabled), data)

    @precondition(has_subscriptions)
    @rule(index=st.integers(0, 7), data=st.data())
    def replace_card(self, index: int, data: Any) -> None:
        """The customer saves another card for renewals (a card check on the payment page)."""
        self._send(s.ReplacePaymentMethod(subscription_id=self._subscription(index)), data)

    @precondition(has_subscriptions)
    @rule(index=st.integers(0, 7), days=st.sampled_from((1, 3, 30)), data=st.data())
    def extend(self, index: int, days: int, data: Any) -> None:
        self._send(s.ExtendSubscription(subscription_id=self._subscription(index), days=days, reason="goodwill"), data, actor="admin")

    @rule(plan=st.sampled_from(sorted(PLANS)), data=st.data())
    def grant(self, plan: str, data: Any) -> None:
        sub_id = s.derived_id("model-subscription", next(self.counter))
        self._send(s.GrantSubscription(subscription_id=sub_id, plan_id=plan, reason="gift", customer=CUSTOMER), data, actor="admin")

    @precondition(has_subscriptions)
    @rule(index=st.integers(0, 7), amount=st.sampled_from(("1.00", "50.00", "99.00", "299.00", "500.00")), data=st.data())
    def admin_refund(self, index: int, amount: str, data: Any) -> None:
        payload = s.AdminRefund(subscription_id=self._subscription(index), amount=s.Money(amount=amount), reason="operator")
        self._send(payload, data, actor="admin")

    @precondition(has_subscriptions)
    @rule(index=st.integers(0, 7), refund=st.booleans(), data=st.data())
    def admin_cancel(self, index: int, refund: bool, data: Any) -> None:
        payload = s.AdminCancelSubscription(subscription_id=self._subscription(index), refund=refund, reason="operator")
        self._send(payload, data, actor="admin")

    @precondition(has_subscriptions)
    @rule(index=st.integers(0, 7), plan=st.sampled_from(sorted(PLANS)), wait=st.booleans(), data=st.data())
    def switch(self, index: int, plan: str, wait: bool, data: Any) -> None:
        """Upgrade (by the saved card, or on a page the customer pays, declines or abandons), downgrade at
        the period end, or switch back to the current plan (withdrawing a scheduled downgrade); `wait`
        then goes to the period end, where a scheduled downgrade takes effect with the renewal."""
        live = sorted(sub_id for sub_id, sub in self.state.subscriptions.items() if sub.status == "active")
        sub_id = live[index % len(live)] if live and index < 6 else self._subscription(index)
        self._send(s.SwitchPlan(subscription_id=sub_id, plan_id=plan), data)
        if wait:
            self.to_the_next_period_end(timedelta(hours=-23), data)

    def has_past_due(self) -> bool:
        return any(sub.status == "past_due" for sub in self.state.subscriptions.values())

    @precondition(has_past_due)
    @rule(index=st.integers(0, 7), then=st.sampled_from(("pay", "pay", "decline", "abandon", "later")), data=st.data())
    def pay_now(self, index: int, then: str, data: Any) -> None:
        """A past-due customer pays now on a payment page (usually one that is past due, sometimes
        any, which must be refused), then pays, declines or abandons it at once, or later (then
        `customer_on_payment_page` does it)."""
        overdue = sorted(sub.subscription_id for sub in self.state.subscriptions.values() if sub.status == "past_due")
        target = overdue[index % len(overdue)] if overdue and index % 4 else self._subscription(index)
        self._send(s.PayOverdueSubscription(subscription_id=target), data)
        pages = [p for p in self._pending_pages() if p.metadata.get("purpose") == "recovery" and p.metadata.get("subscription_id") == str(target)]
        if pages and then != "later":
            self.yk.settle_payment(pages[-1], "succeeded" if then == "pay" else "canceled", self.now)

    @rule(
        plan=st.sampled_from(sorted(PLANS)),
        price=st.sampled_from(("349.00", "199.00", "99.00", "299.00")),
        days=st.sampled_from((1, 10, 45)),
        grandfather=st.booleans(),
        tick=st.booleans(),
        data=st.data(),
    )
    def schedule_price_change(self, plan: str, price: str, days: int, grandfather: bool, tick: bool, data: Any) -> None:
        """An operator schedules a new price (refused when it is the same or out of order); the
        scheduler usually announces it within seconds."""
        state = self.plans[plan]
        cid = s.derived_id("model-price", next(self.counter))
        payload = s.SchedulePriceChange(
            plan_id=plan, price=s.Money(amount=price), effective_at=self.now + timedelta(days=days), grandfather=grandfather, reason="costs"
        )
        meta = s.Metadata(correlation_id=f"model-{cid}", command_id=cid, actor=s.Actor(kind="admin", id="op"))
        command = s.new_envelope(payload, stream_id=state.stream_id, metadata=meta, id=cid, occurred_at=self.now)
        decision = decide_plan(state, command, Context(now=self.now))
        for envelope in to_envelopes(state, command, decision.events, self.now):
            apply_plan(state, envelope)
        if tick:
            self.scheduler_tick(data)

    @precondition(lambda self: bool(self.sent))
    @rule(index=st.integers(0, 63), data=st.data())
    def deliver_again(self, index: int, data: Any) -> None:
        """Kafka delivers any earlier command once more (a rebalance, a retry)."""
        commands = list(self.sent.values())
        self.handle(commands[index % len(commands)], data)

    @precondition(lambda self: bool(self.crashed))
    @rule(data=st.data())
    def redeliver_crashed(self, data: Any) -> None:
        """The worker died mid-command; its offset was not committed, so the command comes again."""
        self.handle(self.crashed.pop(0), data)

    # ------------------------------------------------------------------ the customer and YooKassa

    def _pending_pages(self) -> list[YkPayment]:
        return [p for p in self.yk.payments.values() if p.status == "pending" and p.has_page]

    @precondition(lambda self: bool(self._pending_pages()))
    @rule(index=st.integers(0, 7), choice=st.sampled_from(("succeeded", "succeeded", "canceled")))
    def customer_on_payment_page(self, index: int, choice: str) -> None:
        """Pay, decline (a card refused) or abandon (the page expires) a checkout."""
        pages = self._pending_pages()
        self.yk.settle_payment(pages[index % len(pages)], choice, self.now)

    def _pending_at_provider(self) -> list[YkPayment | YkRefund]:
        renewals: list[YkPayment | YkRefund] = [p for p in self.yk.payments.values() if p.status == "pending" and not p.has_page]
        return renewals + [r for r in self.yk.refunds.values() if r.status == "pending"]

    @precondition(lambda self: bool(self._pending_at_provider()))
    @rule(index=st.integers(0, 7), succeeded=st.booleans())
    def provider_settles(self, index: int, succeeded: bool) -> None:
        items = self._pending_at_provider()
        item = items[index % len(items)]
        if isinstance(item, YkPayment):
            self.yk.settle_payment(item, "succeeded" if succeeded else "canceled", self.now)
        else:
            self.yk.settle_refund(item, "succeeded" if succeeded else "canceled")

    def _refundable_at_provider(self) -> list[YkPayment]:
        return [p for p in self.yk.payments.values() if p.status == "succeeded" and self.yk.refunded_minor(p.id) < p.amount_minor]

    @precondition(lambda self: bool(self._refundable_at_provider()))
    @rule(index=st.integers(0, 7), share=st.sampled_from(("all", "half", "one")), notify=st.booleans())
    def dashboard_refund(self, index: int, share: str, notify: bool) -> None:
        """An operator refunds in YooKassa's dashboard; its notification may be lost (`notify` false)."""
        payments = self._refundable_at_provider()
        payment = payments[index % len(payments)]
        left = payment.amount_minor - self.yk.refunded_minor(payment.id)
        amount = {"all": left, "half": max(left // 2, 1), "one": 100 if left >= 100 else left}[share]
        self.yk.dashboard_refund(payment, amount, self.now, notify=notify)

    @rule(data=st.data())
    def reconcile(self, data: Any) -> None:
        """A reconciliation run: YooKassa's lists against our event log; each fact goes as its command."""
        window = Window(T0 - timedelta(days=1), self.now + timedelta(seconds=1))
        payments = [self.yk.view(p) for p in self.yk.payments]
        refunds = [self.yk.view(r) for r in self.yk.refunds]
        found = compare(window, payments, refunds, our_objects(STREAM, self.log))  # type: ignore[arg-type]
        for d in with_command_ids(found, lambda cid: cid in self.state.terminal):
            if d.fact is not None and d.command_id is not None and d.stream_id == STREAM:
                self.handle(self._command(d.fact, "provider", command_id=d.command_id), data)

    @precondition(lambda self: bool(self.yk.notifications))
    @rule(index=st.integers(0, 15), keep=st.booleans(), data=st.data())
    def notification(self, index: int, keep: bool, data: Any) -> None:
        """YooKassa notifies, late, out of order, and maybe more than once (`keep` = again later)."""
        notice = self.yk.notifications[index % len(self.yk.notifications)]
        if not keep:
            self.yk.notifications.remove(notice)
        self._notify(notice, data)

    def _notify(self, notice: tuple[str, str, str], data: Any) -> None:
        kind, object_id, event = notice
        status = event.split(".", 1)[1]
        cid = s.derived_id("command", "yookassa", object_id, event, status)
        if kind == "payment":
            ours = self.state.payment_by_provider_id(object_id)
            payload: s.Command = s.SyncPayment(payment_id=ours.payment_id if ours else None, provider_payment_id=object_id, hint_status=status)
        else:
            mine = self.state.refund_by_provider_id(object_id)
            payload = s.SyncRefund(refund_id=mine.refund_id if mine else None, provider_refund_id=object_id, hint_status=status)
        self.handle(self._command(payload, "provider", command_id=cid), data)

    # ------------------------------------------------------------------ the scheduler, the janitor, time

    @rule(hours=st.sampled_from((1, 6, 23, 25, 24 * 3, 24 * 8, 24 * 29)), tick=st.booleans(), data=st.data())
    def time_passes(self, hours: int, tick: bool, data: Any) -> None:
        """Business time moves; the scheduler (every few seconds in production) usually notices."""
        self.now += timedelta(hours=hours)
        if tick:
            self.scheduler_tick(data)

    @precondition(has_subscriptions)
    @rule(after=st.sampled_from((timedelta(hours=-23), timedelta(hours=1), timedelta(days=1, hours=1))), data=st.data())
    def to_the_next_period_end(self, after: timedelta, data: Any) -> None:
        """Jump to around the nearest period end or dunning retry still ahead, and let the scheduler act."""
        ahead = [t for sub in self.state.subscriptions.values() for t in (sub.period_end, sub.next_retry_at) if t is not None and t > self.now]
        if ahead:
            self.now = max(self.now, min(ahead) + after)
        self.scheduler_tick(data)

    @precondition(lambda self: any(sub.price_steps for sub in self.state.subscriptions.values()))
    @rule(after=st.sampled_from((timedelta(hours=-25), timedelta(hours=-23), timedelta(hours=1))), data=st.data())
    def to_the_first_renewal_at_a_new_price(self, after: timedelta, data: Any) -> None:
        """Jump to around the nearest renewal a notice named, and let the scheduler act."""
        ahead = [step.starts_at for sub in self.state.subscriptions.values() for step in sub.price_steps if step.starts_at > self.now]
        if ahead:
            self.now = max(self.now, min(ahead) + after)
        self.scheduler_tick(data)

    @rule(data=st.data())
    def scheduler_tick(self, data: Any) -> None:
        """What `processor.schedule` finds due now becomes commands (ids derived as the scheduler does)."""
        for due in self._due():
            self.handle(command_for(due, self.now), data)
        for notice in self._due_notices():
            self.notices_sent.add((notice.subscription_id, notice.change_id))
            self.handle(notice_command_for(notice, self.now), data)

    def _due_notices(self) -> list[DueNotice]:
        """`processor.price_notices`' due pairs: live rows × the plan's changes, once. The SQL also leaves
        grandfathered changes out; here they go too, so the decider alone must keep them unannounced."""
        due = []
        for row in list(self.schedule_table.values()):
            if row.status not in ("active", "past_due") or row.plan_id not in self.plans:
                continue
            for change in self.plans[row.plan_id].price_changes:
                if (row.subscription_id, change.change_id) not in self.notices_sent:
                    due.append(DueNotice(row.subscription_id, row.stream_id, row.user_id, row.plan_id, change.change_id))
        return due

    def _due(self) -> list[DueAction]:
        """`processor.schedule`'s due actions, as its SQL decides them (docs/decisions/0090)."""
        actions = []
        for row in list(self.schedule_table.values()):
            if row.status not in ("active", "past_due"):
                continue
            action = None
            if row.auto_renew and row.has_saved_method and not row.cancel_at_period_end and not row.dunning_over:
                if row.status == "active" and row.period_end <= self.now + (timedelta(0) if row.trial else RENEWAL_LEAD):
                    action = "renew"
                elif row.status == "past_due" and row.next_retry_at is not None and row.next_retry_at <= self.now:
                    action = "retry"
            elif row.period_end <= self.now:
                action = "expire"
            if action is None:
                continue
            actions.append(
                DueAction(
                    action=action,  # type: ignore[arg-type]
                    subscription_id=row.subscription_id,
                    stream_id=row.stream_id,
                    user_id=row.user_id,
                    period_end=row.period_end,
                    attempt=row.renewal_attempts + 1 if action in ("renew", "retry") else 0,
                    round=1,
                    status=row.status,
                    auto_renew=row.auto_renew,
                    has_saved_method=row.has_saved_method,
                    cancel_at_period_end=row.cancel_at_period_end,
                    dunning_over=row.dunning_over,
                )
            )
        return actions

    @rule(data=st.data())
    def janitor_tick(self, data: Any) -> None:
        for command in self._open_operations():
            self.handle(command, data)

    def _open_operations(self) -> list[s.Envelope]:
        commands = []
        # What the processor's operations table holds (the janitor reads nothing else).
        for op_id, (kind, opened) in sorted(self.open_ops.items(), key=lambda item: (item[1][1], str(item[0]))):
            checks = self.checks.get(op_id, 0)
            self.checks[op_id] = checks + 1
            commands.append(sync_command(OpenOperation(op_id, kind, STREAM, opened, checks), self.now))
        return commands

    # ------------------------------------------------------------------ the calm after the storm

    @rule()
    def settle(self) -> None:
        """No more faults: everything that can end, ends; then every command has ended."""
        for _ in range(12):
            before = (len(self.log), len(self.yk.notifications), len(self.crashed))
            for page in self._pending_pages():
                self.yk.settle_payment(page, "canceled", self.now)
            for item in self._pending_at_provider():
                if isinstance(item, YkPayment):
                    self.yk.settle_payment(item, "succeeded", self.now)
                else:
                    self.yk.settle_refund(item, "succeeded")
            while self.crashed:
                self.handle(self.crashed.pop(0))
            while self.yk.notifications:
                self._notify(self.yk.notifications.pop(0), None)
            for command in self._open_operations():
                self.handle(command)
            self.reconcile(None)
            if (len(self.log), len(self.yk.notifications), len(self.crashed)) == before:
                break
        unended = [f"{c.type} {cid}" for cid, c in self.sent.items() if cid not in self.state.terminal]
        assert not unended, f"commands without a terminal event after the provider settled: {unended}"
        still_open = [p.payment_id for p in self.state.payments.values() if p.status in OPEN]
        still_open += [r.refund_id for r in self.state.refunds.values() if r.status in OPEN]
        assert not still_open, f"operations still open after the provider settled: {still_open}"
        registering = [p.payment_id for p in self.state.payments.values() if p.receipt_registration == "pending"]
        registering += [r.refund_id for r in self.state.refunds.values() if r.receipt_registration == "pending"]
        assert not registering, f"receipts still registering after the provider settled: {registering}"
        for p in self.state.payments.values():
            theirs = self.yk.payments.get(p.provider_payment_id or "")
            if theirs is not None and p.status == "succeeded":
                assert p.receipt_registration == theirs.receipt_registration, f"payment {p.payment_id}: receipt registration differs"
        for p in self.state.payments.values():
            theirs = self.yk.payments.get(p.provider_payment_id or "")
            if theirs is not None and not p.outcome_unknown:
                assert theirs.status == p.status, f"payment {p.payment_id}: ours {p.status}, YooKassa's {theirs.status}"
        for theirs in self.yk.payments.values():
            ours = self.state.payments.get(_uuid(theirs.metadata.get("payment_id")))
            if ours is not None:
                assert ours.provider_payment_id == theirs.id, f"YooKassa's payment {theirs.id} was never matched to ours"
        for theirs_r in self.yk.refunds.values():
            if theirs_r.dashboard:
                assert self.state.refund_by_provider_id(theirs_r.id) is not None, f"dashboard refund {theirs_r.id} never recorded"
        for p in self.state.payments.values():
            given_up = any(r.outcome_unknown for r in self.state.refunds.values() if r.payment_id == p.payment_id)
            if p.provider_payment_id in self.yk.payments and not given_up:
                theirs_minor = self.yk.succeeded_refunds_minor(p.provider_payment_id)
                assert p.refunded_minor == theirs_minor, f"payment {p.payment_id}: we refunded {p.refunded_minor}, YooKassa {theirs_minor}"

        for code, promo in self.promos.items():
            for redemption in promo.redemptions.values():
                p = self.state.payments[redemption.payment_id]
                if p.status == "canceled" and not p.outcome_unknown:
                    assert redemption.released, f"{code}: the failed checkout {p.payment_id} still holds a use"
                if p.status == "succeeded":
                    assert not redemption.released, f"{code}: the paid checkout {p.payment_id} released its use"

    def teardown(self) -> None:
        if self.log:
            self.settle()
            roundtrip = [s.Envelope.model_validate_json(e.model_dump_json()) for e in self.log]
            assert build_account(STREAM, roundtrip) == self.state, "the state is not the fold of its (serialised) events"

    # ------------------------------------------------------------------ invariants

    @invariant()
    def state_is_the_fold_of_its_events(self) -> None:
        assert build_account(STREAM, self.log) == self.state

    @invariant()
    def the_scheduler_sees_every_subscription_as_it_is(self) -> None:
        """The schedule table holds every subscription with a period as the account says it is
        (its status, period end, renewal terms, card, dunning, plan): a change no schedule event
        carries would leave the scheduler renewing, retrying or expiring on stale terms."""
        for sub in self.state.subscriptions.values():
            expected = row_of(self.state, sub)
            got = self.schedule_table.get(sub.subscription_id)
            if expected is None:
                assert got is None, f"subscription {sub.subscription_id} has no period but a schedule row"
                continue
            assert got is not None, f"subscription {sub.subscription_id} ({sub.status}) is not in the schedule"
            assert dataclasses.replace(got, stream_version=0) == dataclasses.replace(expected, stream_version=0), (
                f"schedule row of {sub.subscription_id} is stale: {got} vs {expected}")

    @invariant()
    def the_janitor_follows_every_unanswered_operation(self) -> None:
        """Every payment or refund without a final answer is in the operations table, and nothing
        else is: an intent the table misses is never asked about again (its command never ends)."""
        unanswered = {p.payment_id for p in self.state.payments.values()
                      if p.status in OPEN or (p.status == "succeeded" and p.receipt_registration == "pending")}
        unanswered |= {r.refund_id for r in self.state.refunds.values()
                       if r.status in OPEN or (r.status == "succeeded" and r.receipt_registration == "pending")}
        assert set(self.open_ops) == unanswered, (
            f"operations table {sorted(map(str, self.open_ops))} but unanswered {sorted(map(str, unanswered))}")

    @invariant()
    def never_more_refunded_than_paid(self) -> None:
        assert not self.yk.violations, self.yk.violations
        for p in self.state.payments.values():
            assert p.refunded_minor + p.reserved_minor <= p.amount.minor, f"payment {p.payment_id} over-refunded"
        for theirs in self.yk.payments.values():
            assert self.yk.refunded_minor(theirs.id) <= theirs.amount_minor

    @invariant()
    def at_most_one_kept_charge_per_period(self) -> None:
        assert not (problems := period_double_charges(self.log, self.yk)), problems

    @invariant()
    def no_kept_charge_after_its_decline(self) -> None:
        assert not (problems := charges_after_decline(self.log)), problems

    @invariant()
    def refunded_never_more_than_paid_per_subscription(self) -> None:
        for sub in self.state.subscriptions.values():
            payments = [self.state.payments[p] for p in sub.payment_ids if p in self.state.payments]
            paid = sum(p.amount.minor for p in payments if p.status == "succeeded")
            assert sum(p.refunded_minor + p.reserved_minor for p in payments) <= paid, f"subscription {sub.subscription_id} over-refunded"

    @invariant()
    def switches_follow_the_refund_arithmetic(self) -> None:
        assert not (problems := switch_arithmetic(self.log)), problems

    @invariant()
    def one_live_subscription_per_product(self) -> None:
        live = [sub.product for sub in self.state.subscriptions.values() if sub.status in ("active", "past_due")]
        assert len(live) == len(set(live)), f"two live subscriptions of one product: {live}"

    @invariant()
    def a_kept_recovery_renews_one_period(self) -> None:
        assert not (problems := recovery_problems(self.log, self.yk)), problems

    @invariant()
    def every_charge_equals_the_arithmetic(self) -> None:
        assert not (problems := charge_arithmetic(self.log, self.yk)), problems

    @invariant()
    def codes_within_their_limits(self) -> None:
        for code, promo in self.promos.items():
            assert promo == build_promo(s.promo_stream(code), self.promo_logs[code])
            limit = PROMO_TERMS[code].get("max_redemptions")
            assert limit is None or promo.held <= limit, f"{code} held {promo.held} times, limit {limit}"
            held_by_user = [r for r in promo.redemptions.values() if not r.released and r.user_id == USER]
            assert len(held_by_user) <= 1, f"{code} held {len(held_by_user)} times by one user"
            ours = {p.payment_id for p in self.state.payments.values() if isinstance(p.intent, s.CheckoutStarted) and p.intent.promo
                    and p.intent.promo.code == code}
            assert set(promo.redemptions) == ours, f"{code}: uses {set(promo.redemptions)} vs discounted checkouts {ours}"

    @invariant()
    def failed_only_when_declined(self) -> None:
        assert not (problems := failures_not_declined(self.log, self.yk)), problems

    @invariant()
    def card_checks_never_kept_trials_never_early_renewals_on_the_newest_card(self) -> None:
        assert not (problems := card_check_problems(self.log)), problems

    @invariant()
    def prices_only_as_announced(self) -> None:
        assert not (problems := price_change_violations(self.log, self.plans)), problems


def _uuid(value: str | None) -> Any:
    try:
        return uuid.UUID(value) if value else None
    except ValueError:
        return None
