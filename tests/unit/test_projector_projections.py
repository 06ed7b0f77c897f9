"""Each projection, for each event it handles: pure functions of (state, event), no I/O.

Events are built with the real contracts (`schemas.new_envelope`) and go through the same
dict-level path the projector uses for Kafka messages (`ProjectedEvent.from_envelope_dict`).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson
import pytest

from projector.domain.events import PoisonEvent, ProjectedEvent, minor
from projector.domain.projections import DISPATCH, TABLES, apply_event, new_state
from projector.domain.state import State
from schemas import (
    Actor,
    AppliedPromo,
    PromoCodeCreated,
    PromoCodeDeactivated,
    PromoCodeRedeemed,
    PromoCodeReleased,
    AutoRenewChanged,
    CheckoutStarted,
    CommandFailed,
    CommandOutcome,
    CommandRejected,
    CommandSucceeded,
    Customer,
    Metadata,
    Money,
    PaymentCreated,
    PaymentFailed,
    PaymentMethod,
    PaymentStateUnknown,
    PaymentSucceeded,
    PlanArchived,
    PlanCreated,
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
    account_stream,
    new_envelope,
    plan_stream,
    promo_stream,
)
from schemas.events import EVENT_TYPES

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
PRICE = Money.from_minor(29900)
CUSTOMER = Customer(email="anna@example.com", locale="en")


class Account:
    """Feeds one account's events through `apply_event`, numbering versions and times."""

    def __init__(self, state: State | None = None, user: str | None = None) -> None:
        self.state = state or new_state()
        self.user = user or f"u-{uuid.uuid4().hex[:8]}"
        self.stream = account_stream(self.user)
        self.version = 0
        self.sub = uuid.uuid4()
        self.pay = uuid.uuid4()
        self.refund = uuid.uuid4()
        self.command = uuid.uuid4()

    def at(self, minutes: int) -> datetime:
        return T0 + timedelta(minutes=minutes)

    def apply(self, payload: Any, *, minutes: int | None = None, command_id: uuid.UUID | None = None,
              actor: tuple[str, str] | None = None, stream: str | None = None) -> ProjectedEvent:
        self.version += 1
        kind, actor_id = actor or ("user", self.user)
        env = new_envelope(
            payload, stream_id=stream or self.stream, occurred_at=self.at(self.version if minutes is None else minutes),
            metadata=Metadata(correlation_id="c", command_id=command_id or self.command, actor=Actor(kind=kind, id=actor_id)),  # type: ignore[arg-type]
        )
        # the projector sees what Kafka carries: the stored envelope as JSON
        event = ProjectedEvent.from_envelope_dict(orjson.loads(env.to_json()), version=self.version, position=self.version)
        apply_event(self.state, event)
        return event

    def row(self, table: str, key: Any) -> dict[str, Any]:
        row = self.state.get(table, str(key))
        assert row is not None, f"no {table} row {key}"
        assert set(row) == set(TABLES[table].column_names), "a projection must fill every column"
        return row

    def checkout(self, *, amount: Money = PRICE, auto_renew: bool = True) -> None:
        self.apply(CheckoutStarted(subscription_id=self.sub, payment_id=self.pay, plan_id="basic", plan_name="Basic",
                                   amount=amount, period_days=30, auto_renew=auto_renew, customer=CUSTOMER,
                                   idempotence_key="k"))

    def paid(self, *, amount: Money = PRICE, payment_id: uuid.UUID | None = None, purpose: str = "purchase") -> datetime:
        paid_at = self.at(100)
        self.apply(PaymentSucceeded(payment_id=payment_id or self.pay, subscription_id=self.sub, provider_payment_id="yk-1",
                                    amount=amount, paid_at=paid_at, customer=CUSTOMER, purpose=purpose,  # type: ignore[arg-type]
                                    payment_method=PaymentMethod(id="pm", title="Bank card *4444")))
        return paid_at

    def activate(self) -> None:
        self.apply(SubscriptionActivated(subscription_id=self.sub, plan_id="basic", plan_name="Basic", period_start=self.at(100),
                                         period_end=self.at(100) + timedelta(days=30), amount_paid=PRICE, auto_renew=True,
                                         payment_id=self.pay, payment_method_title="Bank card *4444", customer=CUSTOMER))

    def active(self) -> None:
        self.checkout()
        self.paid()
        self.activate()


# ---------------------------------------------------------------------- coverage of the contract


def test_every_event_type_is_known_to_the_dispatch_and_every_account_event_reaches_accounts() -> None:
    assert set(DISPATCH) == {e.__name__ for e in EVENT_TYPES}
    for name, handlers in DISPATCH.items():
        assert any(h.__module__.endswith("accounts") for h in handlers), name


def test_unknown_event_type_and_bad_envelope_are_poison() -> None:
    with pytest.raises(PoisonEvent, match="unknown event type"):
        ProjectedEvent.from_envelope_dict({"type": "Nope", "stream_id": "account-x", "occurred_at": T0.isoformat(),
                                           "data": {}, "metadata": {}}, version=1)
    with pytest.raises(PoisonEvent, match="not a stored event envelope"):
        ProjectedEvent.from_envelope_dict({"type": "PlanArchived"}, version=1)


@pytest.mark.parametrize(("amount", "expected"), [("299.00", 29900), ("0.01", 1), ("1490", 149000), ("12.5", 1250), ("0", 0)])
def test_minor_units(amount: str, expected: int) -> None:
    assert minor({"amount": amount, "currency": "RUB"}) == expected


# ---------------------------------------------------------------------- promo codes


def test_promo_code_uses_and_a_discounted_subscription() -> None:
    a = Account()
    code, stream = "SPRING", promo_stream("SPRING")
    a.apply(PromoCodeCreated(code=code, percent_off=20, periods=2, expires_at=a.at(9999), max_redemptions=5, plan_ids=["basic"]),
            stream=stream, minutes=1, actor=("admin", "op"))
    a.apply(PromoCodeRedeemed(code=code, user_id=a.user, subscription_id=a.sub, payment_id=a.pay), stream=stream, minutes=2)
    a.apply(PromoCodeRedeemed(code=code, user_id="other", subscription_id=uuid.uuid4(), payment_id=uuid.uuid4()), stream=stream, minutes=3)
    a.apply(PromoCodeReleased(code=code, user_id="other", subscription_id=uuid.uuid4(), payment_id=uuid.uuid4(), reason="declined"),
            stream=stream, minutes=4)
    a.apply(PromoCodeDeactivated(code=code, reason="leaked"), stream=stream, minutes=5)
    assert a.row("promo_codes", code) == {
        "code": code, "percent_off": 20, "amount_off_minor": None, "currency": None, "periods": 2, "expires_at": a.at(9999),
        "max_redemptions": 5, "plan_ids": '["basic"]', "active": False, "deactivated_reason": "leaked", "redemptions": 1,
        "released": 1, "created_at": a.at(1), "updated_at": a.at(5),
    }
    b = Account()
    promo = AppliedPromo(code=code, percent_off=20, periods=2, list_price=PRICE, discount=Money(amount="59.80"), periods_left=1)
    b.apply(CheckoutStarted(subscription_id=b.sub, payment_id=b.pay, plan_id="basic", plan_name="Basic", amount=Money(amount="239.20"),
                            period_days=30, auto_renew=True, customer=CUSTOMER, idempotence_key="k", promo=promo))
    sub, pay = b.row("subscriptions", b.sub), b.row("payments", b.pay)
    assert (sub["price_minor"], sub["promo_code"], sub["discount_minor"], sub["promo_periods_left"]) == (29900, code, 5980, 1)
    assert (pay["amount_minor"], pay["discount_minor"], pay["promo_code"]) == (23920, 5980, code)
    b.apply(SubscriptionRenewed(subscription_id=b.sub, payment_id=uuid.uuid4(), period_start=b.at(10), period_end=b.at(20), amount=PRICE))
    sub = b.row("subscriptions", b.sub)
    assert (sub["promo_code"], sub["discount_minor"], sub["promo_periods_left"]) == (code, 0, 0)


# ---------------------------------------------------------------------- plans


def test_plan_created_then_archived() -> None:
    a = Account()
    stream = plan_stream("basic")
    a.apply(PlanCreated(plan_id="basic", name="Basic", price=PRICE, period_days=30, description="d"), stream=stream, minutes=1)
    assert a.row("plans", "basic") | {} == {
        "plan_id": "basic", "name": "Basic", "price_minor": 29900, "currency": "RUB", "period_days": 30,
        "description": "d", "archived": False, "created_at": a.at(1), "updated_at": a.at(1), "trial_days": 0,
        "vat_code": None, "payment_subject": None, "payment_mode": None,  # a plan from before receipt settings
        "price_changes": "[]",
        "product": "cinema",
    }
    a.apply(PlanCreated(plan_id="basic", name="Basic+", price=Money.from_minor(39900), period_days=31), stream=stream, minutes=2)
    row = a.row("plans", "basic")
    assert (row["name"], row["price_minor"], row["period_days"], row["created_at"], row["updated_at"]) == (
        "Basic+", 39900, 31, a.at(1), a.at(2))
    a.apply(PlanArchived(plan_id="basic", reason="old"), stream=stream, minutes=3)
    assert a.row("plans", "basic")["archived"] is True
    assert a.state.get("accounts", "basic") is None and not a.state.rows["accounts"], "plan streams have no account"


def test_plan_archived_for_an_unknown_plan_changes_nothing() -> None:
    a = Account()
    a.apply(PlanArchived(plan_id="ghost"), stream=plan_stream("ghost"))
    assert a.state.get("plans", "ghost") is None


def test_plan_created_version_1_is_upcast() -> None:
    state = new_state()
    event = ProjectedEvent.from_envelope_dict({
        "id": str(uuid.uuid4()), "type": "PlanCreated", "schema_version": 1, "occurred_at": T0.isoformat(),
        "stream_id": "plan-old", "data": {"plan_id": "old", "name": "Old", "price_kopecks": 19900, "currency": "RUB",
                                          "period_days": 30},
        "metadata": {"correlation_id": "c", "actor": {"kind": "admin", "id": "ops"}},
    }, version=1)
    apply_event(state, event)
    assert state.get("plans", "old")["price_minor"] == 19900  # type: ignore[index]


# ---------------------------------------------------------------------- subscriptions


def test_checkout_creates_a_pending_subscription() -> None:
    a = Account()
    a.checkout(auto_renew=False)
    row = a.row("subscriptions", a.sub)
    assert row == {
        "subscription_id": str(a.sub), "user_id": a.user, "email": "anna@example.com", "locale": "en", "plan_id": "basic",
        "plan_name": "Basic", "status": "pending_payment", "auto_renew": False, "cancel_at_period_end": False,
        "period_start": None, "period_end": None, "price_minor": 29900, "amount_paid_minor": 0, "amount_refunded_minor": 0,
        "currency": "RUB", "payment_method_title": None, "last_payment_id": str(a.pay), "renewal_attempt": 0,
        "next_retry_at": None, "status_reason": None, "created_at": a.at(1), "updated_at": a.at(1), "canceled_at": None,
        "expired_at": None, "trial": False, "upcoming_price_minor": None, "upcoming_price_at": None, "promo_code": None,
        "discount_minor": 0, "promo_periods_left": 0, "product": "cinema", "period_paid_minor": None, "pending_plan_id": None,
        "pending_plan_name": None, "pending_price_minor": None, "pending_effective_at": None,
    }


def test_payment_created_and_succeeded_then_activated() -> None:
    a = Account()
    a.checkout()
    a.apply(PaymentCreated(payment_id=a.pay, subscription_id=a.sub, provider_payment_id="yk-1", amount=PRICE, status="pending",
                           confirmation_url="http://pay"))
    assert a.row("subscriptions", a.sub)["status"] == "pending_payment"
    a.paid()
    row = a.row("subscriptions", a.sub)
    assert (row["amount_paid_minor"], row["payment_method_title"], row["status"]) == (29900, "Bank card *4444", "pending_payment")
    a.activate()
    row = a.row("subscriptions", a.sub)
    assert (row["status"], row["period_start"], row["period_end"]) == ("active", a.at(100), a.at(100) + timedelta(days=30))
    assert row["updated_at"] == a.at(4)


@pytest.mark.parametrize(("purpose", "status"), [("purchase", "payment_failed"), ("renewal", "pending_payment")])
def test_payment_failed(purpose: str, status: str) -> None:
    a = Account()
    a.checkout()
    a.apply(PaymentFailed(payment_id=a.pay, subscription_id=a.sub, amount=PRICE, reason="insufficient_funds",
                          customer=CUSTOMER, purpose=purpose))  # type: ignore[arg-type]
    row = a.row("subscriptions", a.sub)
    assert row["status"] == status
    assert row["status_reason"] == ("insufficient_funds" if purpose == "purchase" else None)


def test_a_grant_creates_an_active_subscription_without_a_checkout() -> None:
    a = Account()
    a.apply(SubscriptionActivated(subscription_id=a.sub, plan_id="premium", plan_name="Premium", period_start=a.at(1),
                                  period_end=a.at(1) + timedelta(days=14), amount_paid=Money.from_minor(0), auto_renew=False,
                                  granted=True, reason="support gesture", customer=CUSTOMER), actor=("admin", "ops"))
    row = a.row("subscriptions", a.sub)
    assert (row["status"], row["plan_id"], row["price_minor"], row["amount_paid_minor"], row["status_reason"], row["auto_renew"]) == (
        "active", "premium", 0, 0, "support gesture", False)


def test_cancel_with_refund() -> None:
    a = Account()
    a.active()
    a.apply(RefundSucceeded(refund_id=a.refund, subscription_id=a.sub, payment_id=a.pay, provider_refund_id="r", amount=Money.from_minor(20000)))
    a.apply(SubscriptionCanceled(subscription_id=a.sub, mode="refund_now", effective_at=a.at(200), reason="too expensive"), minutes=200)
    row = a.row("subscriptions", a.sub)
    assert (row["status"], row["amount_refunded_minor"], row["auto_renew"], row["canceled_at"], row["status_reason"]) == (
        "canceled", 20000, False, a.at(200), "too expensive")


def test_cancel_at_period_end_keeps_access_until_expiry() -> None:
    a = Account()
    a.active()
    a.apply(SubscriptionCanceled(subscription_id=a.sub, mode="at_period_end", effective_at=a.at(100) + timedelta(days=30)))
    row = a.row("subscriptions", a.sub)
    assert (row["status"], row["cancel_at_period_end"], row["auto_renew"]) == ("active", True, False)
    a.apply(SubscriptionExpired(subscription_id=a.sub, expired_at=a.at(50000), reason="period ended"))
    row = a.row("subscriptions", a.sub)
    assert (row["status"], row["expired_at"], row["status_reason"]) == ("expired", a.at(50000), "period ended")


def test_auto_renew_changes() -> None:
    a = Account()
    a.active()
    a.apply(SubscriptionCanceled(subscription_id=a.sub, mode="at_period_end", effective_at=a.at(9000)))
    a.apply(AutoRenewChanged(subscription_id=a.sub, enabled=True))
    row = a.row("subscriptions", a.sub)
    assert (row["auto_renew"], row["cancel_at_period_end"]) == (True, False)
    a.apply(AutoRenewChanged(subscription_id=a.sub, enabled=False))
    assert a.row("subscriptions", a.sub)["auto_renew"] is False


def test_renewal_fails_then_succeeds() -> None:
    a = Account()
    a.active()
    end = a.at(100) + timedelta(days=30)
    renewal_payment = uuid.uuid4()
    a.apply(RenewalStarted(subscription_id=a.sub, payment_id=renewal_payment, plan_id="basic", plan_name="Basic", amount=PRICE,
                           period_start=end, period_end=end + timedelta(days=30), payment_method_id="pm", idempotence_key="k"))
    assert a.row("subscriptions", a.sub)["last_payment_id"] == str(renewal_payment)
    a.apply(RenewalFailed(subscription_id=a.sub, payment_id=renewal_payment, attempt=1, reason="insufficient_funds",
                          next_retry_at=end + timedelta(days=1)))
    row = a.row("subscriptions", a.sub)
    assert (row["status"], row["renewal_attempt"], row["next_retry_at"], row["status_reason"]) == (
        "past_due", 1, end + timedelta(days=1), "insufficient_funds")
    a.paid(payment_id=renewal_payment, purpose="renewal")
    a.apply(SubscriptionRenewed(subscription_id=a.sub, payment_id=renewal_payment, period_start=end, period_end=end + timedelta(days=30),
                                amount=PRICE))
    row = a.row("subscriptions", a.sub)
    assert (row["status"], row["period_start"], row["period_end"], row["renewal_attempt"], row["next_retry_at"]) == (
        "active", end, end + timedelta(days=30), 0, None)
    assert row["amount_paid_minor"] == 2 * 29900


def test_final_renewal_failure_has_no_next_retry() -> None:
    a = Account()
    a.active()
    a.apply(RenewalFailed(subscription_id=a.sub, attempt=3, reason="card_expired", next_retry_at=a.at(9000), final=True))
    row = a.row("subscriptions", a.sub)
    assert (row["status"], row["next_retry_at"], row["renewal_attempt"]) == ("past_due", None, 3)


def test_extension_moves_the_period_end() -> None:
    a = Account()
    a.active()
    new_end = a.at(100) + timedelta(days=37)
    a.apply(SubscriptionAdjusted(subscription_id=a.sub, days=7, period_end=new_end, reason="outage"), actor=("admin", "ops"))
    assert a.row("subscriptions", a.sub)["period_end"] == new_end


def test_events_about_another_accounts_subscription_change_nothing() -> None:
    state = new_state()
    owner, intruder = Account(state), Account(state)
    owner.active()
    intruder.sub, intruder.pay = owner.sub, owner.pay
    intruder.checkout()
    intruder.apply(SubscriptionCanceled(subscription_id=owner.sub, mode="refund_now", effective_at=T0))
    intruder.apply(PaymentFailed(payment_id=owner.pay, subscription_id=owner.sub, amount=PRICE, reason="x", customer=CUSTOMER))
    assert owner.row("subscriptions", owner.sub)["status"] == "active"
    assert owner.row("subscriptions", owner.sub)["user_id"] == owner.user
    assert owner.row("payments", owner.pay)["status"] == "succeeded"


# ---------------------------------------------------------------------- payments


def test_payment_lifecycle() -> None:
    a = Account()
    a.checkout()
    row = a.row("payments", a.pay)
    assert row == {
        "payment_id": str(a.pay), "subscription_id": str(a.sub), "user_id": a.user, "provider_payment_id": None,
        "purpose": "purchase", "status": "created", "amount_minor": 29900, "currency": "RUB", "confirmation_url": None,
        "reason": None, "paid_at": None, "created_at": a.at(1), "updated_at": a.at(1),
        "receipt": None, "receipt_registration": None, "discount_minor": 0, "promo_code": None,
    }
    a.apply(PaymentCreated(payment_id=a.pay, subscription_id=a.sub, provider_payment_id="yk-1", amount=PRICE, status="pending",
                           confirmation_url="http://pay/1"))
    row = a.row("payments", a.pay)
    assert (row["status"], row["provider_payment_id"], row["confirmation_url"]) == ("pending", "yk-1", "http://pay/1")
    paid_at = a.paid()
    row = a.row("payments", a.pay)
    assert (row["status"], row["paid_at"], row["updated_at"]) == ("succeeded", paid_at, a.at(3))


def test_payment_declined() -> None:
    a = Account()
    a.checkout()
    a.apply(PaymentFailed(payment_id=a.pay, subscription_id=a.sub, provider_payment_id="yk-2", amount=PRICE, reason="card_expired",
                          party="payment_network", customer=CUSTOMER))
    row = a.row("payments", a.pay)
    assert (row["status"], row["reason"], row["provider_payment_id"]) == ("canceled", "card_expired", "yk-2")


def test_payment_state_unknown_first_takes_the_subscription_price_and_never_overrides_a_final_status() -> None:
    a = Account()
    a.checkout(amount=Money.from_minor(149000))
    other = uuid.uuid4()
    a.apply(PaymentStateUnknown(payment_id=other, subscription_id=a.sub, detail="timeout", purpose="renewal"))
    row = a.row("payments", other)
    assert (row["status"], row["amount_minor"], row["purpose"], row["reason"]) == ("unknown", 149000, "renewal", "timeout")
    a.paid(amount=Money.from_minor(149000), payment_id=other, purpose="renewal")
    a.apply(PaymentStateUnknown(payment_id=other, subscription_id=a.sub, detail="late duplicate"))
    assert a.row("payments", other)["status"] == "succeeded"
    a.apply(PaymentCreated(payment_id=other, subscription_id=a.sub, provider_payment_id="yk-9", amount=PRICE, status="pending"))
    assert a.row("payments", other)["status"] == "succeeded"


def test_renewal_started_creates_a_renewal_payment() -> None:
    a = Account()
    a.active()
    payment = uuid.uuid4()
    a.apply(RenewalStarted(subscription_id=a.sub, payment_id=payment, plan_id="basic", plan_name="Basic", amount=PRICE,
                           period_start=a.at(9), period_end=a.at(99), payment_method_id="pm", idempotence_key="k"))
    row = a.row("payments", payment)
    assert (row["purpose"], row["status"], row["amount_minor"]) == ("renewal", "created", 29900)


def test_pay_now_shows_a_recovery_payment_and_the_subscription_active_again() -> None:
    a = Account()
    a.active()
    end = a.at(100) + timedelta(days=30)
    a.apply(RenewalFailed(subscription_id=a.sub, attempt=1, reason="insufficient_funds", next_retry_at=end + timedelta(days=1)))
    recovery = uuid.uuid4()
    a.apply(RecoveryStarted(subscription_id=a.sub, payment_id=recovery, plan_id="basic", plan_name="Basic", amount=PRICE,
                            period_start=end, period_end=end + timedelta(days=30), customer=CUSTOMER, idempotence_key="k"),
            command_id=(pay_now := uuid.uuid4()))
    assert a.row("commands", pay_now)["command_type"] == "PayOverdueSubscription"
    a.apply(PaymentCreated(payment_id=recovery, subscription_id=a.sub, provider_payment_id="yk-2", amount=PRICE, status="pending",
                           confirmation_url="http://pay/2", purpose="recovery"))
    row = a.row("payments", recovery)
    assert (row["purpose"], row["status"], row["confirmation_url"]) == ("recovery", "pending", "http://pay/2")
    a.paid(payment_id=recovery, purpose="recovery")
    a.apply(SubscriptionRenewed(subscription_id=a.sub, payment_id=recovery, period_start=end, period_end=end + timedelta(days=30),
                                amount=PRICE, purpose="recovery"))
    sub = a.row("subscriptions", a.sub)
    assert (sub["status"], sub["period_end"], sub["renewal_attempt"], sub["next_retry_at"], sub["last_payment_id"]) == (
        "active", end + timedelta(days=30), 0, None, str(recovery))
    assert a.row("payments", recovery)["status"] == "succeeded"


@pytest.mark.parametrize("confirmed", [True, False])
def test_a_renewal_awaiting_3ds_is_visible_until_it_settles(confirmed: bool) -> None:
    a = Account()
    a.active()
    end = a.at(100) + timedelta(days=30)
    payment = uuid.uuid4()
    a.apply(RenewalStarted(subscription_id=a.sub, payment_id=payment, plan_id="basic", plan_name="Basic", amount=PRICE,
                           period_start=end, period_end=end + timedelta(days=30), payment_method_id="pm", idempotence_key="k"))
    a.apply(PaymentCreated(payment_id=payment, subscription_id=a.sub, provider_payment_id="yk-2", amount=PRICE, status="pending",
                           confirmation_url="http://pay/3ds", purpose="renewal"))
    a.apply(RenewalConfirmationRequired(subscription_id=a.sub, payment_id=payment, amount=PRICE, confirmation_url="http://pay/3ds",
                                        customer=CUSTOMER))
    assert a.row("subscriptions", a.sub)["status_reason"] == "renewal_awaits_3ds"
    assert (a.row("payments", payment)["status"], a.row("payments", payment)["confirmation_url"]) == ("pending", "http://pay/3ds")
    if confirmed:
        a.paid(payment_id=payment, purpose="renewal")
        a.apply(SubscriptionRenewed(subscription_id=a.sub, payment_id=payment, period_start=end, period_end=end + timedelta(days=30),
                                    amount=PRICE))
        assert a.row("subscriptions", a.sub)["status_reason"] is None
    else:
        a.apply(PaymentFailed(payment_id=payment, subscription_id=a.sub, amount=PRICE, reason="expired_on_confirmation",
                              purpose="renewal", customer=CUSTOMER))
        assert a.row("subscriptions", a.sub)["status_reason"] == "expired_on_confirmation"


# ---------------------------------------------------------------------- refunds


def _refund_requested(a: Account, amount: int = 25000) -> None:
    a.apply(RefundRequested(refund_id=a.refund, subscription_id=a.sub, payment_id=a.pay, provider_payment_id="yk-1",
                            amount=Money.from_minor(amount), days_used=4, days_in_period=30, reason="user canceled",
                            idempotence_key="k"))


def test_refund_lifecycle() -> None:
    a = Account()
    a.active()
    _refund_requested(a)
    assert a.row("refunds", a.refund) == {
        "refund_id": str(a.refund), "subscription_id": str(a.sub), "payment_id": str(a.pay), "user_id": a.user,
        "provider_refund_id": None, "status": "requested", "amount_minor": 25000, "currency": "RUB", "days_used": 4,
        "reason": "user canceled", "created_at": a.at(4), "updated_at": a.at(4),
        "receipt": None, "receipt_registration": None,
    }
    a.apply(RefundCreated(refund_id=a.refund, subscription_id=a.sub, provider_refund_id="yr-1", status="pending"))
    assert (a.row("refunds", a.refund)["status"], a.row("refunds", a.refund)["provider_refund_id"]) == ("pending", "yr-1")
    a.apply(RefundStateUnknown(refund_id=a.refund, subscription_id=a.sub, detail="timeout"))
    assert a.row("refunds", a.refund)["status"] == "unknown"
    a.apply(RefundSucceeded(refund_id=a.refund, subscription_id=a.sub, payment_id=a.pay, provider_refund_id="yr-1",
                            amount=Money.from_minor(25000), days_used=4))
    assert a.row("refunds", a.refund)["status"] == "succeeded"
    a.apply(RefundStateUnknown(refund_id=a.refund, subscription_id=a.sub, detail="late"))
    a.apply(RefundCreated(refund_id=a.refund, subscription_id=a.sub, provider_refund_id="yr-1", status="pending"))
    assert a.row("refunds", a.refund)["status"] == "succeeded", "a final status is never overridden"


def test_refund_failed() -> None:
    a = Account()
    a.active()
    _refund_requested(a)
    a.apply(RefundFailed(refund_id=a.refund, subscription_id=a.sub, amount=Money.from_minor(25000), reason="payment too old"))
    row = a.row("refunds", a.refund)
    assert (row["status"], row["reason"]) == ("canceled", "payment too old")
    assert a.row("subscriptions", a.sub)["amount_refunded_minor"] == 0


def test_refund_events_without_a_request_attach_where_they_can() -> None:
    a = Account()
    a.active()
    a.apply(RefundCreated(refund_id=a.refund, subscription_id=a.sub, provider_refund_id="yr", status="pending"))
    a.apply(RefundStateUnknown(refund_id=a.refund, subscription_id=a.sub, detail="x"))
    assert a.state.get("refunds", str(a.refund)) is None
    a.apply(RefundFailed(refund_id=a.refund, subscription_id=a.sub, amount=Money.from_minor(100), reason="no"))
    row = a.row("refunds", a.refund)
    assert (row["status"], row["payment_id"]) == ("canceled", str(a.pay))


# ---------------------------------------------------------------------- commands


@pytest.mark.parametrize(
    ("intent", "actor", "command_type"),
    [
        ("checkout", ("user", None), "PurchaseSubscription"),
        ("renewal", ("system", "scheduler"), "RenewSubscription"),
        ("refund", ("user", None), "CancelSubscription"),
        ("refund", ("admin", "ops"), "AdminRefund"),
        ("payment_unknown", ("user", None), "PurchaseSubscription"),
        ("payment_unknown", ("system", "janitor"), "SyncPayment"),
        ("refund_unknown", ("system", "janitor"), "SyncRefund"),
    ],
)
def test_intent_events_mark_the_command_processing(intent: str, actor: tuple[str, str | None], command_type: str) -> None:
    a = Account()
    kind, actor_id = actor[0], actor[1] or a.user
    payloads = {
        "checkout": CheckoutStarted(subscription_id=a.sub, payment_id=a.pay, plan_id="basic", plan_name="Basic", amount=PRICE,
                                    period_days=30, auto_renew=True, customer=CUSTOMER, idempotence_key="k"),
        "renewal": RenewalStarted(subscription_id=a.sub, payment_id=a.pay, plan_id="basic", plan_name="Basic", amount=PRICE,
                                  period_start=T0, period_end=T0, payment_method_id="pm", idempotence_key="k"),
        "refund": RefundRequested(refund_id=a.refund, subscription_id=a.sub, payment_id=a.pay, provider_payment_id="p",
                                  amount=PRICE, idempotence_key="k"),
        "payment_unknown": PaymentStateUnknown(payment_id=a.pay, subscription_id=a.sub, detail="timeout"),
        "refund_unknown": RefundStateUnknown(refund_id=a.refund, subscription_id=a.sub, detail="timeout"),
    }
    a.apply(payloads[intent], actor=(kind, actor_id))
    assert a.row("commands", a.command) == {
        "command_id": str(a.command), "user_id": a.user, "command_type": command_type, "status": "processing", "code": None,
        "reason": None, "outcome": "{}", "actor_kind": kind, "actor_id": actor_id, "created_at": a.at(1), "updated_at": a.at(1),
    }


def test_command_succeeded_with_outcome_after_processing() -> None:
    a = Account()
    a.checkout()
    a.apply(CommandSucceeded(command_id=a.command, command_type="PurchaseSubscription",
                             outcome=CommandOutcome(subscription_id=a.sub, payment_id=a.pay, confirmation_url="http://pay",
                                                    refund_amount=Money.from_minor(100))))
    row = a.row("commands", a.command)
    assert (row["status"], row["command_type"], row["created_at"], row["updated_at"]) == ("succeeded", "PurchaseSubscription", a.at(1), a.at(2))
    assert orjson.loads(row["outcome"]) == {
        "subscription_id": str(a.sub), "payment_id": str(a.pay), "refund_id": None, "plan_id": None,
        "confirmation_url": "http://pay", "refund_amount": {"amount": "1.00", "currency": "RUB"}, "message": None,
    }
    a.apply(PaymentStateUnknown(payment_id=a.pay, subscription_id=a.sub, detail="late intent"))
    assert a.row("commands", a.command)["status"] == "succeeded", "an intent after the end never re-opens a command"


def test_command_rejected_and_failed() -> None:
    a = Account()
    rejected, failed = uuid.uuid4(), uuid.uuid4()
    a.apply(CommandRejected(command_id=rejected, command_type="PurchaseSubscription", code="plan_archived", reason="The plan is archived."),
            command_id=rejected)
    a.apply(CommandFailed(command_id=failed, command_type="CancelSubscription", reason="dead-lettered after 5 attempts"), command_id=failed)
    row = a.row("commands", rejected)
    assert (row["status"], row["code"], row["reason"], row["outcome"], row["actor_kind"]) == (
        "rejected", "plan_archived", "The plan is archived.", "{}", "user")
    row = a.row("commands", failed)
    assert (row["status"], row["code"], row["reason"], row["command_type"]) == (
        "failed", None, "dead-lettered after 5 attempts", "CancelSubscription")


def test_plan_commands_have_no_user() -> None:
    a = Account()
    a.apply(CommandSucceeded(command_id=a.command, command_type="CreatePlan", outcome=CommandOutcome(plan_id="basic")),
            stream=plan_stream("basic"), actor=("admin", "ops"))
    row = a.row("commands", a.command)
    assert (row["user_id"], row["actor_kind"], row["actor_id"]) == (None, "admin", "ops")


# ---------------------------------------------------------------------- accounts


def test_account_summary_follows_every_event() -> None:
    a = Account()
    a.active()
    row = a.row("accounts", a.user)
    assert row == {
        "user_id": a.user, "email": "anna@example.com", "locale": "en", "subscriptions_count": 1, "active_subscriptions": 1,
        "total_paid_minor": 29900, "total_refunded_minor": 0, "currency": "RUB", "last_event_at": a.at(3),
        "created_at": a.at(1), "updated_at": a.at(3),
    }
    second = Account(a.state, a.user)
    second.version = a.version
    second.checkout()
    row = a.row("accounts", a.user)
    assert (row["subscriptions_count"], row["active_subscriptions"]) == (2, 1)
    a.version = second.version
    a.apply(RefundSucceeded(refund_id=a.refund, subscription_id=a.sub, payment_id=a.pay, provider_refund_id="r",
                            amount=Money.from_minor(10000)))
    a.apply(SubscriptionCanceled(subscription_id=a.sub, mode="refund_now", effective_at=T0))
    a.apply(SubscriptionExpiringSoon(subscription_id=second.sub, period_end=T0, auto_renew=True), minutes=999)
    row = a.row("accounts", a.user)
    assert (row["active_subscriptions"], row["total_refunded_minor"], row["last_event_at"]) == (0, 10000, a.at(999))


def test_past_due_still_counts_as_access() -> None:
    a = Account()
    a.active()
    a.apply(RenewalFailed(subscription_id=a.sub, attempt=1, reason="insufficient_funds"))
    assert a.row("accounts", a.user)["active_subscriptions"] == 1
    a.apply(SubscriptionExpired(subscription_id=a.sub, expired_at=T0, reason="dunning exhausted"))
    assert a.row("accounts", a.user)["active_subscriptions"] == 0


def test_projections_are_deterministic() -> None:
    """The same events give the same rows: nothing reads the clock."""
    import random

    from tests.support.projector_scenarios import PLANS, Clock, History, plan_events, random_account

    def build() -> dict[str, Any]:
        history, clock, rng = History(id_prefix="determinism"), Clock(), random.Random(5)
        for plan in PLANS:
            plan_events(history, clock, plan)
        for _ in range(30):
            random_account(history, clock, rng)
        state = new_state()
        versions: dict[str, int] = {}
        for append in history.appends:
            for env in append.events:
                versions[env.stream_id] = versions.get(env.stream_id, 0) + 1
                apply_event(state, ProjectedEvent.from_envelope_dict(orjson.loads(env.to_json()), version=versions[env.stream_id]))
        return {t: {k: dict(r) for k, r in rows.items()} for t, rows in state.rows.items()}

    first, second = build(), build()
    assert first["subscriptions"] and first == second


# ---------------------------------------------------------------------- plan switches (docs/decisions/0119)


def test_an_upgrade_moves_the_subscription_and_its_payment_is_an_upgrade() -> None:
    import schemas as s

    a = Account()
    a.active()
    upgrade, yearly = uuid.uuid4(), Money.from_minor(299000)
    start = a.at(200)
    a.apply(s.UpgradeStarted(
        subscription_id=a.sub, payment_id=upgrade, from_plan_id="basic", from_plan_name="Basic", replaces_period_start=a.at(100),
        plan_id="yearly", plan_name="Yearly", price=yearly, period_days=365, amount=Money.from_minor(280064),
        credit=Money.from_minor(18936), credit_days_used=11, credit_days_in_period=30, payment_method_id="pm",
        idempotence_key="k2", customer=CUSTOMER,
    ))
    assert a.row("payments", upgrade)["purpose"] == "upgrade"
    assert a.row("commands", a.command)["command_type"] in ("SwitchPlan", "PurchaseSubscription")
    a.paid(amount=Money.from_minor(280064), payment_id=upgrade, purpose="upgrade")
    a.apply(s.PlanSwitched(
        subscription_id=a.sub, from_plan_id="basic", from_plan_name="Basic", plan_id="yearly", plan_name="Yearly", price=yearly,
        period_days=365, period_start=start, period_end=start + timedelta(days=365), payment_id=upgrade,
        amount_charged=Money.from_minor(280064), credit=Money.from_minor(18936), customer=CUSTOMER,
    ))
    row = a.row("subscriptions", a.sub)
    assert (row["plan_id"], row["plan_name"], row["price_minor"], row["period_paid_minor"]) == ("yearly", "Yearly", 299000, 299000)
    assert row["amount_paid_minor"] == 29900 + 280064 and row["last_payment_id"] == str(upgrade)


def test_a_downgrade_is_pending_until_the_renewal_carries_it_out() -> None:
    import schemas as s

    a = Account()
    a.active()
    end = a.at(100) + timedelta(days=30)
    a.apply(s.PlanSwitchScheduled(subscription_id=a.sub, from_plan_name="Basic", plan_id="lite", plan_name="Lite",
                                  price=Money.from_minor(9900), period_days=7, effective_at=end))
    row = a.row("subscriptions", a.sub)
    assert (row["plan_id"], row["pending_plan_id"], row["pending_plan_name"], row["pending_price_minor"], row["pending_effective_at"]) == (
        "basic", "lite", "Lite", 9900, end)
    a.apply(s.PlanSwitchWithdrawn(subscription_id=a.sub, plan_id="lite", plan_name="Lite"))
    assert a.row("subscriptions", a.sub)["pending_plan_id"] is None
    a.apply(s.PlanSwitchScheduled(subscription_id=a.sub, from_plan_name="Basic", plan_id="lite", plan_name="Lite",
                                  price=Money.from_minor(9900), period_days=7, effective_at=end))
    renewal = uuid.uuid4()
    a.apply(s.SubscriptionRenewed(subscription_id=a.sub, payment_id=renewal, period_start=end, period_end=end + timedelta(days=7),
                                  amount=Money.from_minor(9900), plan_id="lite", plan_name="Lite", previous_plan_name="Basic"))
    row = a.row("subscriptions", a.sub)
    assert (row["plan_id"], row["plan_name"], row["price_minor"], row["pending_plan_id"]) == ("lite", "Lite", 9900, None)


def test_receipts_and_their_registration_reach_payments_refunds_and_plans() -> None:
    from schemas import ReceiptRegistrationChanged
    from schemas.receipts import Receipt, ReceiptItem

    a = Account()
    a.apply(PlanCreated(plan_id="vat", name="VAT", price=PRICE, period_days=30, vat_code=11, payment_subject="service",
                        payment_mode="full_prepayment"), stream=plan_stream("vat"))
    assert (a.row("plans", "vat")["vat_code"], a.row("plans", "vat")["payment_mode"]) == (11, "full_prepayment")
    receipt = Receipt(email="anna@example.com", tax_system_code=2, items=[ReceiptItem(
        description="Basic", amount=PRICE, vat_code=11, payment_subject="service", payment_mode="full_prepayment")])
    a.apply(CheckoutStarted(subscription_id=a.sub, payment_id=a.pay, plan_id="basic", plan_name="Basic", amount=PRICE,
                            period_days=30, auto_renew=True, customer=CUSTOMER, idempotence_key="k", receipt=receipt))
    assert orjson.loads(a.row("payments", a.pay)["receipt"]) == receipt.model_dump(mode="json")
    a.apply(PaymentSucceeded(payment_id=a.pay, subscription_id=a.sub, provider_payment_id="yk-1", amount=PRICE, paid_at=a.at(9),
                             customer=CUSTOMER, receipt_registration="pending"))
    assert a.row("payments", a.pay)["receipt_registration"] == "pending"
    a.apply(ReceiptRegistrationChanged(subscription_id=a.sub, payment_id=a.pay, status="succeeded"))
    assert a.row("payments", a.pay)["receipt_registration"] == "succeeded"
    a.apply(RefundRequested(refund_id=a.refund, subscription_id=a.sub, payment_id=a.pay, provider_payment_id="yk-1", amount=PRICE,
                            idempotence_key="r", customer=CUSTOMER, receipt=receipt))
    assert orjson.loads(a.row("refunds", a.refund)["receipt"])["items"][0]["vat_code"] == 11
    a.apply(RefundSucceeded(refund_id=a.refund, subscription_id=a.sub, payment_id=a.pay, provider_refund_id="yr-1", amount=PRICE,
                            receipt_registration="pending"))
    a.apply(ReceiptRegistrationChanged(subscription_id=a.sub, refund_id=a.refund, status="canceled"))
    assert a.row("refunds", a.refund)["receipt_registration"] == "canceled"
    assert a.row("payments", a.pay)["receipt_registration"] == "succeeded"  # the refund's change is not the payment's


# ---------------------------------------------------------------------- card checks and trials (decision 0118)


def _check(a: Account, check: uuid.UUID, *, trial: bool = False) -> None:
    from schemas import CardCheckStarted, TrialTerms

    terms = TrialTerms(plan_id="basic", plan_name="Basic", price=PRICE, period_days=30, trial_days=7) if trial else None
    a.apply(CardCheckStarted(subscription_id=a.sub, payment_id=check, reason="trial" if trial else "replace_payment_method",
                             amount=Money(amount="1.00"), customer=CUSTOMER, idempotence_key="k2", trial=terms))
    a.apply(PaymentCreated(payment_id=check, subscription_id=a.sub, provider_payment_id="yk-check", amount=Money(amount="1.00"),
                           status="pending", confirmation_url="http://pay/check", purpose="card_check"))


def test_a_card_check_is_neither_paid_nor_refunded_and_never_the_last_payment() -> None:
    from schemas import PaymentMethodReplaced

    a = Account()
    a.active()
    check = uuid.uuid4()
    _check(a, check)
    a.apply(PaymentSucceeded(payment_id=check, subscription_id=a.sub, provider_payment_id="yk-check", amount=Money(amount="1.00"),
                             paid_at=a.at(300), customer=CUSTOMER, purpose="card_check",
                             payment_method=PaymentMethod(id="pm-2", title="Bank card *1111")))
    a.apply(PaymentMethodReplaced(subscription_id=a.sub, payment_id=check, payment_method=PaymentMethod(id="pm-2", title="Bank card *1111"),
                                  previous_title="Bank card *4444", customer=CUSTOMER))
    a.apply(RefundSucceeded(refund_id=a.refund, subscription_id=a.sub, payment_id=check, provider_refund_id="r", amount=Money(amount="1.00")))
    row = a.row("subscriptions", a.sub)
    assert (row["amount_paid_minor"], row["amount_refunded_minor"], row["last_payment_id"], row["payment_method_title"]) == (
        29900, 0, str(a.pay), "Bank card *1111")
    assert a.row("payments", check)["purpose"] == "card_check"
    account = a.row("accounts", a.user)
    assert (account["total_paid_minor"], account["total_refunded_minor"]) == (29900, 0)


def test_a_trial_check_starts_a_pending_subscription_that_turns_into_a_free_trial() -> None:
    a = Account()
    check = uuid.uuid4()
    _check(a, check, trial=True)
    row = a.row("subscriptions", a.sub)
    assert (row["status"], row["price_minor"], row["last_payment_id"], row["trial"]) == ("pending_payment", 29900, None, False)
    a.apply(SubscriptionActivated(subscription_id=a.sub, plan_id="basic", plan_name="Basic", period_start=a.at(10),
                                  period_end=a.at(10) + timedelta(days=7), amount_paid=Money.from_minor(0), auto_renew=True,
                                  customer=CUSTOMER, trial=True, next_charge=PRICE))
    row = a.row("subscriptions", a.sub)
    assert (row["status"], row["trial"], row["amount_paid_minor"]) == ("active", True, 0)


def test_a_declined_trial_check_fails_the_pending_trial() -> None:
    a = Account()
    check = uuid.uuid4()
    _check(a, check, trial=True)
    a.apply(PaymentFailed(payment_id=check, subscription_id=a.sub, amount=Money(amount="1.00"), reason="card_expired",
                          customer=CUSTOMER, purpose="card_check"))
    assert a.row("subscriptions", a.sub)["status"] == "payment_failed"


def test_revenue_counts_a_trial_from_its_first_charge_and_never_a_card_check() -> None:
    from rules.revenue import report
    from tests.unit.test_revenue_report import totals

    a = Account()
    check = uuid.uuid4()
    _check(a, check, trial=True)
    a.apply(PaymentSucceeded(payment_id=check, subscription_id=a.sub, provider_payment_id="yk-check", amount=Money(amount="1.00"),
                             paid_at=a.at(5), customer=CUSTOMER, purpose="card_check"))
    a.apply(RefundSucceeded(refund_id=a.refund, subscription_id=a.sub, payment_id=check, provider_refund_id="r",
                            amount=Money(amount="1.00")))
    start = a.at(10)
    a.apply(SubscriptionActivated(subscription_id=a.sub, plan_id="basic", plan_name="Basic", period_start=start,
                                  period_end=start + timedelta(days=7), amount_paid=Money.from_minor(0), auto_renew=True,
                                  customer=CUSTOMER, trial=True, next_charge=PRICE))
    lines = report(totals(a.state))
    assert all((ln.revenue_minor, ln.refunded_minor, ln.active_subscribers, ln.mrr_minor) == (0, 0, 0, 0) for ln in lines)
    renewal = uuid.uuid4()
    a.apply(PaymentSucceeded(payment_id=renewal, subscription_id=a.sub, provider_payment_id="yk-2", amount=PRICE,
                             paid_at=start + timedelta(days=7), customer=CUSTOMER, purpose="renewal"))
    a.apply(SubscriptionRenewed(subscription_id=a.sub, payment_id=renewal, period_start=start + timedelta(days=7),
                                period_end=start + timedelta(days=37), amount=PRICE, customer=CUSTOMER),
            minutes=7 * 24 * 60 + 20)
    (line,) = [ln for ln in report(totals(a.state)) if ln.plan_id == "basic"]
    assert (line.new_subscribers, line.renewed, line.active_subscribers, line.mrr_minor, line.revenue_minor) == (1, 0, 1, 29900, 29900)


def test_revenue_moves_a_switched_subscriber_and_its_mrr_to_the_new_plan() -> None:
    import schemas as s
    from rules.revenue import report
    from tests.unit.test_revenue_report import totals

    a = Account()
    a.active()  # basic: 299.00 / 30 days
    upgrade, yearly = uuid.uuid4(), Money.from_minor(365000)
    start = a.at(200)
    a.paid(amount=Money.from_minor(355000), payment_id=upgrade, purpose="upgrade")
    a.apply(s.PlanSwitched(
        subscription_id=a.sub, from_plan_id="basic", from_plan_name="Basic", plan_id="yearly", plan_name="Yearly", price=yearly,
        period_days=365, period_start=start, period_end=start + timedelta(days=365), payment_id=upgrade,
        amount_charged=Money.from_minor(355000), credit=Money.from_minor(10000), customer=CUSTOMER,
    ), minutes=200)
    lines = {ln.plan_id: ln for ln in report(totals(a.state))}
    assert (lines["basic"].active_subscribers, lines["basic"].mrr_minor) == (0, 0)
    assert lines["yearly"].active_subscribers == 1 and lines["yearly"].mrr_minor > 0
    assert lines["basic"].new_subscribers == 1 and lines["yearly"].new_subscribers == 0  # a move, not a new subscriber
