"""Which event becomes which email — the one place that decides, so each fact is emailed once.

The processor appends PaymentSucceeded and SubscriptionActivated together for a purchase, and
PaymentSucceeded/PaymentFailed next to SubscriptionRenewed/RenewalFailed for a renewal. Emailing on
both of a pair would tell the user the same money movement twice, so exactly one event of each
pair triggers the email (docs/decisions/0071):

| email kind             | triggered by                                   | not by                       |
|------------------------|------------------------------------------------|------------------------------|
| purchase_succeeded     | SubscriptionActivated with a payment (plan, period, amount) | PaymentSucceeded(purchase) |
| payment_failed         | PaymentFailed(purpose=purchase)                | —                            |
| refund_succeeded       | RefundSucceeded                                | —                            |
| refund_failed          | RefundFailed                                   | —                            |
| subscription_canceled  | SubscriptionCanceled (every mode; duplicate_payment explains the refund of a second charge) | — |
| auto_renew_off         | AutoRenewChanged(enabled=false)                | AutoRenewChanged(enabled=true) |
| renewal_succeeded      | SubscriptionRenewed                            | PaymentSucceeded(renewal)    |
| recovery_succeeded     | SubscriptionRenewed(purpose=recovery): paid now | PaymentSucceeded(recovery)  |
| renewal_confirmation   | RenewalConfirmationRequired (the 3-D Secure link, once) | PaymentCreated       |
| renewal_failed         | RenewalFailed (what happens next and when)     | PaymentFailed(renewal), PaymentFailed(recovery): the customer saw it on the page |
| expiring_soon          | SubscriptionExpiringSoon (a trial's: the first charge and its date) | —       |
| subscription_expired   | SubscriptionExpired                            | —                            |
| trial_started          | SubscriptionActivated with `trial` (the first charge's date and price) | PaymentSucceeded(card_check) |
| card_replaced          | PaymentMethodReplaced (the check is refunded at once) | RefundSucceeded of a card check |
| price_change           | PriceChangeAnnounced (new price, from which renewal; auto-renew off declines it) | PlanPriceChangeScheduled |
| plan_upgraded          | PlanSwitched (charged amount, credit, new period) | PaymentSucceeded(upgrade) |
| plan_switch_scheduled  | PlanSwitchScheduled (the new plan and its date) | —                           |

A downgrade taking effect is the renewal's email (SubscriptionRenewed with `plan_id` says which plan
the renewal moved to). A declined upgrade changes nothing and is not emailed (the customer saw it).

A grant (SubscriptionActivated with `granted`) moves no money and is not emailed. A card check's
refund is part of the email of what the check was for, not an email of its own; a declined check is
seen on the payment page (docs/decisions/0118). An event without
a `customer` cannot be emailed (there is nobody to write to): it is skipped with a log line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from schemas import Envelope
from schemas.events import (
    AutoRenewChanged,
    CheckoutStarted,
    PaymentFailed,
    PaymentMethodReplaced,
    PaymentSucceeded,
    PlanSwitched,
    PlanSwitchScheduled,
    PriceChangeAnnounced,
    RefundFailed,
    RefundRequested,
    RefundSucceeded,
    RenewalConfirmationRequired,
    RenewalFailed,
    SubscriptionActivated,
    SubscriptionCanceled,
    SubscriptionExpired,
    SubscriptionExpiringSoon,
    SubscriptionRenewed,
)

from notifier.domain.reasons import expiry_reason, payment_reason, refund_failure_reason

# Event types that are never emailed and carry no facts for a later email — most of the topic
# (command outcomes, payments created, PaymentSucceeded, which is never the trigger). The notifier
# drops them by the record's `type` header without parsing them; any other type, including one
# added later, is read. A unit test checks that no type inspected below is in this set.
EVENT_TYPES_SKIPPED = frozenset({
    "CommandSucceeded", "CommandRejected", "CommandFailed", "PlanCreated", "PlanArchived", "RenewalStarted", "RecoveryStarted",
    "PaymentCreated", "PaymentSucceeded", "PaymentStateUnknown", "RefundCreated", "RefundStateUnknown",
    "SubscriptionAdjusted", "CardCheckStarted", "ReceiptRegistrationChanged", "PlanPriceChangeScheduled", "PromoCodeCreated",
    "PromoCodeDeactivated", "PromoCodeRedeemed", "PromoCodeReleased", "UpgradeStarted", "PlanSwitchWithdrawn",
})

EMAIL_KINDS = (
    "purchase_succeeded",
    "payment_failed",
    "refund_succeeded",
    "refund_failed",
    "subscription_canceled",
    "auto_renew_off",
    "renewal_succeeded",
    "recovery_succeeded",
    "renewal_confirmation",
    "renewal_failed",
    "expiring_soon",
    "subscription_expired",
    "plan_upgraded",
    "plan_switch_scheduled",
    "trial_started",
    "card_replaced",
    "price_change",
)


@dataclass(frozen=True)
class Facts:
    """What the notifier remembers from earlier events of a stream (plan names, refund days)."""

    plan_name: str | None = None
    period_days: int | None = None
    days_used: int | None = None
    days_in_period: int | None = None
    card_check: bool = False
    """The refund gives a card check's money back: told in the check's own email, not again."""


@dataclass(frozen=True)
class EmailPlan:
    """An email to send for one event: who, which template, in which language, with what values."""

    kind: str
    event_id: UUID
    user_id: str | None
    to: str
    locale: str
    context: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Skip:
    """The event needs no email; `reason` goes to the log."""

    reason: str


@dataclass(frozen=True)
class Remember:
    """A fact to keep for later emails of the same stream (keyed `subscription:<id>` / `refund:<id>`)."""

    key: str
    facts: dict[str, Any]


def facts_key_for(envelope: Envelope) -> str | None:
    """The memory key whose facts the email of this event uses (None: it needs none)."""
    data = envelope.data
    if isinstance(data, (RefundSucceeded, RefundFailed)):
        return f"refund:{data.refund_id}"
    subscription_id = getattr(data, "subscription_id", None)
    return f"subscription:{subscription_id}" if subscription_id is not None else None


def facts_to_remember(envelope: Envelope) -> list[Remember]:
    """Facts an event carries that later emails need but later events do not repeat."""
    data = envelope.data
    if isinstance(data, (CheckoutStarted, SubscriptionActivated)):
        return [Remember(f"subscription:{data.subscription_id}", {"plan_name": data.plan_name, "period_days": getattr(data, "period_days", None)})]
    if isinstance(data, PlanSwitched):
        return [Remember(f"subscription:{data.subscription_id}", {"plan_name": data.plan_name, "period_days": data.period_days})]
    if isinstance(data, SubscriptionRenewed) and data.plan_name:
        days = max((data.period_end - data.period_start).days, 1)
        return [Remember(f"subscription:{data.subscription_id}", {"plan_name": data.plan_name, "period_days": days})]
    if isinstance(data, RefundRequested) and data.purpose == "card_check":
        return [Remember(f"refund:{data.refund_id}", {"card_check": True})]
    if isinstance(data, RefundRequested) and data.days_used is not None:
        facts = {"days_used": data.days_used, "days_in_period": data.days_in_period}
        return [Remember(f"refund:{data.refund_id}", facts)]
    return []


def plan_email(envelope: Envelope, facts: Facts | None = None) -> EmailPlan | Skip:
    """Decide the email for one event (pure). `facts` are what earlier events told us."""
    facts = facts or Facts()
    data = envelope.data
    kind, extra = _kind_and_values(data, facts)
    if kind is None:
        return Skip(extra.get("why", f"{envelope.type} is not emailed"))
    customer = getattr(data, "customer", None)
    if customer is None:
        return Skip(f"{envelope.type} carries no customer: nobody to email")
    locale = customer.locale if customer.locale in ("ru", "en") else "ru"
    context: dict[str, Any] = {
        "event": data,
        "event_type": envelope.type,
        "occurred_at": envelope.occurred_at,
        "plan_name": facts.plan_name,
        **extra,
    }
    for name, value in list(context.items()):
        if callable(value):  # sentences that depend on the language
            context[name] = value(locale)
    return EmailPlan(
        kind=kind,
        event_id=envelope.id,
        user_id=envelope.user_id,
        to=customer.email,
        locale=locale,
        context=context,
    )


def _kind_and_values(data: object, facts: Facts) -> tuple[str | None, dict[str, Any]]:
    if isinstance(data, SubscriptionActivated):
        if data.trial:
            return "trial_started", {"plan_name": data.plan_name}
        if data.granted or data.payment_id is None:
            return None, {"why": "a granted subscription moved no money"}
        return "purchase_succeeded", {"plan_name": data.plan_name}
    if isinstance(data, PaymentSucceeded):
        why = {
            "purchase": "purchases are emailed on SubscriptionActivated",
            "upgrade": "upgrades are emailed on PlanSwitched",
            "card_check": "a card check is emailed with what it was for",
        }.get(data.purpose, "renewals and pay-now are emailed on SubscriptionRenewed")
        return None, {"why": why}
    if isinstance(data, PaymentMethodReplaced):
        return "card_replaced", {}
    if isinstance(data, PaymentFailed):
        if data.purpose == "upgrade":
            return None, {"why": "a declined upgrade changes nothing; the customer saw the decline"}
        if data.purpose == "card_check":
            return None, {"why": "a declined card check is seen on the payment page; nothing changed"}
        if data.purpose == "recovery":
            return None, {"why": "a declined pay-now was shown on the payment page; dunning goes on and says so"}
        if data.purpose != "purchase":
            return None, {"why": "renewal declines are emailed on RenewalFailed"}
        return "payment_failed", {"reason_text": lambda loc: payment_reason(data.reason, loc)}
    if isinstance(data, RefundSucceeded):
        if facts.card_check:
            return None, {"why": "a card check's refund is told in the check's own email"}
        days_used = data.days_used if data.days_used is not None else facts.days_used
        return "refund_succeeded", {"days_used": days_used, "days_in_period": facts.days_in_period}
    if isinstance(data, RefundFailed):
        return "refund_failed", {
            "days_used": facts.days_used,
            "days_in_period": facts.days_in_period,
            "reason_text": lambda loc: refund_failure_reason(data.reason, loc),
        }
    if isinstance(data, SubscriptionCanceled):
        return "subscription_canceled", {}
    if isinstance(data, AutoRenewChanged):
        if data.enabled:
            return None, {"why": "turning auto-renewal on is not emailed"}
        return "auto_renew_off", {}
    if isinstance(data, SubscriptionRenewed):
        if data.purpose == "recovery":
            return "recovery_succeeded", {}
        return "renewal_succeeded", {"plan_name": data.plan_name} if data.plan_name else {}
    if isinstance(data, PlanSwitched):
        return "plan_upgraded", {"plan_name": data.plan_name}
    if isinstance(data, PlanSwitchScheduled):
        return "plan_switch_scheduled", {"plan_name": data.plan_name}
    if isinstance(data, RenewalConfirmationRequired):
        return "renewal_confirmation", {}
    if isinstance(data, RenewalFailed):
        return "renewal_failed", {"reason_text": lambda loc: payment_reason(data.reason, loc)}
    if isinstance(data, SubscriptionExpiringSoon):
        return "expiring_soon", {}
    if isinstance(data, SubscriptionExpired):
        return "subscription_expired", {"reason_text": lambda loc: expiry_reason(data.reason, loc)}
    if isinstance(data, PriceChangeAnnounced):
        return "price_change", {}
    return None, {}
