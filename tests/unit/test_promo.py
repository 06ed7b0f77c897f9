"""Promo codes in the pure domain: the discount arithmetic, the refusals, and a code's life through a
checkout, renewals (discounted while periods remain, full after), a declined checkout (the use is
released) and a refund (computed on what was actually paid)."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest

import schemas as s
from payment_processor.domain import (
    AccountState,
    Context,
    PromoState,
    ProviderPayment,
    ProviderRefund,
    account_emits,
    apply,
    apply_promo,
    build_plan,
    build_promo,
    decide,
    decide_promo,
    promo_envelopes,
    resolve,
    to_envelopes,
)
from payment_processor.domain.promo import charged, renewal_discount
from rules.discounts import MIN_CHARGE_MINOR, discount_minor
from payment_processor.domain.provider import purchase_request

T0 = datetime(2026, 5, 1, 10, 0, tzinfo=timezone.utc)
CUSTOMER = s.Customer(email="anna@example.com", locale="ru")


# --------------------------------------------------------------------------- arithmetic


@pytest.mark.parametrize(
    ("list_minor", "percent", "amount", "expected"),
    [
        (29900, 10, None, 2990),  # 29.90 off 299.00
        (29900, 15, None, 4485),
        (29999, 33, None, 9899),  # 98.9967 → rounded DOWN to 98.99: never more off than stated
        (101, 50, None, 1),  # capped: the charge stays at 1.00
        (100, 50, None, 0),  # a price of 1.00 cannot be discounted at all
        (50, 10, None, 0),  # below the minimum: no discount (never a negative one)
        (29900, 99, None, 29601),  # 296.01 off: 2.99 charged
        (29900, None, 5000, 5000),
        (29900, None, 50000, 29800),  # more than the price: capped at price − 1.00
    ],
)
def test_discount_rounds_down_and_keeps_the_minimum_charge(list_minor: int, percent: int | None, amount: int | None, expected: int) -> None:
    got = discount_minor(list_minor, percent_off=percent, amount_off_minor=amount)
    assert got == expected
    assert list_minor - got >= min(list_minor, MIN_CHARGE_MINOR)


def test_renewal_discount_only_while_periods_remain() -> None:
    first = s.AppliedPromo(
        code="SPRING", percent_off=20, periods=3, list_price=s.Money(amount="299.00"), discount=s.Money(amount="59.80"), periods_left=2
    )
    second = renewal_discount(first, 2, s.Money(amount="349.00"))  # a new list price: the terms apply to it
    assert second is not None and second.discount == s.Money(amount="69.80") and second.periods_left == 1
    assert charged(s.Money(amount="349.00"), second) == s.Money(amount="279.20")
    assert renewal_discount(first, 0, s.Money(amount="299.00")) is None


def test_100_percent_off_is_refused_by_the_schema() -> None:
    with pytest.raises(ValueError):
        s.CreatePromoCode(code="FREE", percent_off=100, expires_at=T0, reason="x")


# --------------------------------------------------------------------------- a driver


def _meta(cid: uuid.UUID, actor: str = "admin") -> s.Metadata:
    return s.Metadata(correlation_id=f"c-{cid}", command_id=cid, actor=s.Actor(kind=actor, id="op"))  # type: ignore[arg-type]


def promo(code: str = "SPRING", **terms) -> PromoState:
    terms.setdefault("expires_at", T0 + timedelta(days=10))
    if "amount_off" not in terms:
        terms.setdefault("percent_off", 20)
    state = PromoState(stream_id=s.promo_stream(code))
    cid = uuid.uuid4()
    command = s.new_envelope(s.CreatePromoCode(code=code, reason="spring sale", **terms), stream_id=state.stream_id, metadata=_meta(cid), id=cid)
    decision = decide_promo(state, command, Context(now=T0))
    for env in to_envelopes(state, command, decision.events, T0):  # type: ignore[arg-type]
        apply_promo(state, env)
    assert state.exists, decision.events
    return state


PLAN = build_plan(
    s.plan_stream("basic"),
    [s.new_envelope(s.PlanCreated(plan_id="basic", name="Basic", price=s.Money(amount="299.00"), period_days=30),
                    stream_id=s.plan_stream("basic"), metadata=_meta(uuid.uuid4()))],
)


class World:
    """One account and one code, driven like the handler: account events on the account, the code's on the code."""

    def __init__(self, code: PromoState, user: str = "u-1") -> None:
        self.code = code
        self.stream = s.account_stream(user)
        self.state = AccountState(stream_id=self.stream)
        self.now = T0

    def run(self, payload: s.Command, *answers, plan=PLAN) -> list[s.Envelope]:
        cid = uuid.uuid4()
        command = s.new_envelope(payload, stream_id=self.stream, metadata=_meta(cid, "user"), id=cid, occurred_at=self.now)
        ctx = Context(now=self.now, plan=plan, promo=self.code)
        decision = decide(self.state, command, ctx)
        out = self._append(command, decision.events)
        for answer in answers:
            assert decision.step is not None
            decision = resolve(self.state, command, decision.step, answer, Context(now=self.now))
            out += self._append(command, decision.events)
        return out

    def _append(self, command: s.Envelope, emits) -> list[s.Envelope]:
        for envs in promo_envelopes(emits, command, self.now).values():
            for env in envs:
                apply_promo(self.code, env)
        envelopes = to_envelopes(self.state, command, account_emits(emits), self.now)
        for env in envelopes:
            apply(self.state, env)
        return envelopes


def _paid(n: int, at: datetime) -> ProviderPayment:
    return ProviderPayment(id=f"2f9d7a1c-000f-5000-8000-{n:012d}", status="succeeded", captured_at=at,
                           payment_method_id="pm-1", payment_method_saved=True, payment_method_title="card")


def _of(envelopes: list[s.Envelope], kind: type) -> list:
    return [e.data for e in envelopes if isinstance(e.data, kind)]


# --------------------------------------------------------------------------- a code's life


def test_checkout_charges_the_discount_renewals_discount_then_charge_full_and_refunds_use_what_was_paid() -> None:
    code = promo(percent_off=20, periods=2)
    world = World(code)
    sub_id = uuid.uuid4()
    out = world.run(s.PurchaseSubscription(subscription_id=sub_id, plan_id="basic", customer=CUSTOMER, promo_code="SPRING"), _paid(1, T0))
    (checkout,) = _of(out, s.CheckoutStarted)
    assert checkout.amount == s.Money(amount="239.20") and checkout.promo.discount == s.Money(amount="59.80")
    assert checkout.promo.periods_left == 1
    assert checkout.receipt is not None and checkout.receipt.items[0].amount == checkout.amount
    body = purchase_request(world.state.user_id, uuid.uuid4(), checkout)
    assert body["amount"]["value"] == "239.20" and body["receipt"]["items"][0]["amount"]["value"] == "239.20"
    assert code.held == 1 and code.used_by("u-1")
    (activated,) = _of(out, s.SubscriptionActivated)
    assert activated.amount_paid == s.Money(amount="239.20") and activated.promo == checkout.promo  # the email shows it

    charges = []
    for n in (2, 3, 4):
        sub = world.state.subscriptions[sub_id]
        world.now = sub.period_end - timedelta(hours=1)
        out = world.run(s.RenewSubscription(subscription_id=sub_id, period_end=sub.period_end), _paid(n, world.now))
        (started,) = _of(out, s.RenewalStarted)
        assert _of(out, s.SubscriptionRenewed)
        assert started.receipt is not None and started.receipt.items[0].amount == started.amount  # the receipt is what is charged
        charges.append(started.amount.amount)
    assert [str(c) for c in charges] == ["239.20", "299.00", "299.00"]  # 2 discounted periods, then the list price

    # a refund now is prorated on the 299.00 actually paid for this period
    world.now += timedelta(days=2)
    out = world.run(s.CancelSubscription(subscription_id=sub_id, mode="refund_now"), ProviderRefund(id="3a8e0000-0015-5000-9000-000000000001", status="succeeded"))
    (refund,) = _of(out, s.RefundRequested)
    assert refund.amount.minor == 29900 * (30 - refund.days_used) // 30


def test_refund_of_a_discounted_period_is_computed_on_the_discounted_amount() -> None:
    world = World(promo(amount_off=s.Money(amount="200.00")))
    sub_id = uuid.uuid4()
    world.run(s.PurchaseSubscription(subscription_id=sub_id, plan_id="basic", customer=CUSTOMER, promo_code="SPRING"), _paid(1, T0))
    world.now = T0 + timedelta(hours=1)
    out = world.run(s.CancelSubscription(subscription_id=sub_id, mode="refund_now"), ProviderRefund(id="3a8e0000-0015-5000-9000-000000000001", status="succeeded"))
    (refund,) = _of(out, s.RefundRequested)
    assert refund.amount.minor == 9900 * 29 // 30  # 99.00 paid, one day used


def test_a_declined_checkout_releases_the_use() -> None:
    code = promo(max_redemptions=1)
    world = World(code)
    declined = ProviderPayment(id="2f9d7a1c-000f-5000-8000-000000000001", status="canceled", cancellation_reason="expired_on_confirmation")
    out = world.run(s.PurchaseSubscription(subscription_id=uuid.uuid4(), plan_id="basic", customer=CUSTOMER, promo_code="SPRING"), declined)
    assert _of(out, s.PaymentFailed)
    assert code.held == 0 and not code.used_by("u-1") and len(code.redemptions) == 1
    out = world.run(s.PurchaseSubscription(subscription_id=uuid.uuid4(), plan_id="basic", customer=CUSTOMER, promo_code="SPRING"))
    assert _of(out, s.CheckoutStarted) and code.held == 1


def _rejection(world: World, code_text: str = "SPRING", plan=PLAN) -> str | None:
    out = world.run(s.PurchaseSubscription(subscription_id=uuid.uuid4(), plan_id="basic", customer=CUSTOMER, promo_code=code_text), plan=plan)
    rejected = _of(out, s.CommandRejected)
    return rejected[0].code if rejected else None


def test_refusals() -> None:
    assert _rejection(World(promo())) is None
    assert _rejection(World(promo()), "OTHER") == "promo_code_not_found"
    expired = World(promo())
    expired.now = T0 + timedelta(days=10)
    assert _rejection(expired) == "promo_code_expired"
    assert _rejection(World(promo(plan_ids=["premium"]))) == "promo_code_not_applicable"
    once = World(promo())
    once.run(s.PurchaseSubscription(subscription_id=uuid.uuid4(), plan_id="basic", customer=CUSTOMER, promo_code="SPRING"), _paid(1, T0))
    assert _rejection(once) in ("promo_code_already_used", "already_subscribed")
    code = promo(max_redemptions=1)
    World(code, "u-1").run(s.PurchaseSubscription(subscription_id=uuid.uuid4(), plan_id="basic", customer=CUSTOMER, promo_code="SPRING"))
    assert _rejection(World(code, "u-2")) == "promo_code_exhausted"


def test_already_used_by_this_user_on_another_plan() -> None:
    code = promo()
    world = World(code)
    world.run(s.PurchaseSubscription(subscription_id=uuid.uuid4(), plan_id="basic", customer=CUSTOMER, promo_code="SPRING"), _paid(1, T0))
    other = build_plan(
        s.plan_stream("basic"),
        [s.new_envelope(s.PlanCreated(plan_id="basic", name="Basic", price=s.Money(amount="299.00"), period_days=30),
                        stream_id=s.plan_stream("basic"), metadata=_meta(uuid.uuid4()))],
    )
    world.state.subscriptions.clear()  # as if the first subscription were gone: the code stays used
    assert _rejection(world, plan=other) == "promo_code_already_used"


def test_deactivated_code_is_refused_and_operator_commands() -> None:
    code = promo()
    cid = uuid.uuid4()
    command = s.new_envelope(s.DeactivatePromoCode(code="SPRING", reason="leaked"), stream_id=code.stream_id, metadata=_meta(cid), id=cid)
    decision = decide_promo(code, command, Context(now=T0))
    for env in to_envelopes(code, command, decision.events, T0):  # type: ignore[arg-type]
        apply_promo(code, env)
    assert not code.active
    assert _rejection(World(code)) == "promo_code_expired"
    again = decide_promo(code, s.new_envelope(s.DeactivatePromoCode(code="SPRING", reason="x"), stream_id=code.stream_id, metadata=_meta(uuid.uuid4())), Context(now=T0))
    assert again.events[0].payload.code == "promo_code_inactive"
    both = s.new_envelope(s.CreatePromoCode(code="BOTH", percent_off=5, amount_off=s.Money(amount="1.00"), expires_at=T0 + timedelta(days=1), reason="x"),
                          stream_id=s.promo_stream("BOTH"), metadata=_meta(uuid.uuid4()))
    assert decide_promo(build_promo(s.promo_stream("BOTH"), []), both, Context(now=T0)).events[0].payload.code == "invalid_promo_code"


def test_a_code_does_not_stack_with_a_free_trial() -> None:
    trial_plan = build_plan(
        s.plan_stream("basic"),
        [s.new_envelope(s.PlanCreated(plan_id="basic", name="Basic", price=s.Money(amount="299.00"), period_days=30, trial_days=7),
                        stream_id=s.plan_stream("basic"), metadata=_meta(uuid.uuid4()))],
    )
    code = promo()
    assert _rejection(World(code), plan=trial_plan) == "promo_code_not_applicable"
    assert code.held == 0
