"""Price changes in the pure domain: the plan's price at a time, the notice-date arithmetic, the
renewal price, and the deciders that schedule and announce a change (docs/decisions/0120)."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import schemas as s
from payment_processor.domain import AccountState, Context, apply, apply_plan, build_plan, decide, decide_plan, to_envelopes
from payment_processor.domain.pricing import first_renewal_at_new_price, renewal_price
from payment_processor.domain.state import PriceStep, Subscription

T0 = datetime(2027, 1, 1, tzinfo=timezone.utc)
DAY = timedelta(days=1)


def _meta(cid: uuid.UUID, kind: str = "admin") -> s.Metadata:
    return s.Metadata(correlation_id=str(cid), command_id=cid, actor=s.Actor(kind=kind, id="op"))  # type: ignore[arg-type]


def _plan(price: str = "299.00", *changes: tuple[str, datetime, bool]):
    stream = s.plan_stream("monthly")
    cid = s.derived_id("t", "plan")
    events = [s.new_envelope(s.PlanCreated(plan_id="monthly", name="Monthly", price=s.Money(amount=price), period_days=30),
                             stream_id=stream, metadata=_meta(cid))]
    for i, (new, at, grandfather) in enumerate(changes):
        change_id = s.derived_id("t", "change", i)
        payload = s.PlanPriceChangeScheduled(plan_id="monthly", change_id=change_id, price=s.Money(amount=new), effective_at=at, grandfather=grandfather)
        events.append(s.new_envelope(payload, stream_id=stream, metadata=_meta(change_id)))
    return build_plan(stream, events)


def _schedule(plan, price: str, at: datetime, now: datetime = T0, grandfather: bool = False):
    cid = uuid.uuid4()
    payload = s.SchedulePriceChange(plan_id="monthly", price=s.Money(amount=price), effective_at=at, grandfather=grandfather, reason="costs")
    command = s.new_envelope(payload, stream_id=s.plan_stream("monthly"), metadata=_meta(cid), id=cid)
    return command, decide_plan(plan, command, Context(now=now))


def _code(decision) -> str | None:
    rejected = [e.payload for e in decision.events if isinstance(e.payload, s.CommandRejected)]
    return rejected[0].code if rejected else None


# --------------------------------------------------------------------------- the plan's price at a time


def test_price_at_follows_the_changes_in_effect() -> None:
    plan = _plan("299.00", ("349.00", T0 + 10 * DAY, False), ("399.00", T0 + 40 * DAY, True))
    assert plan.price_at(T0).amount == s.Money(amount="299.00").amount
    assert plan.price_at(T0 + 10 * DAY - timedelta(microseconds=1)) == s.Money(amount="299.00")
    assert plan.price_at(T0 + 10 * DAY) == s.Money(amount="349.00")  # on the effective instant: the new price
    assert plan.price_at(T0 + 39 * DAY) == s.Money(amount="349.00")
    assert plan.price_at(T0 + 400 * DAY) == s.Money(amount="399.00")


def test_a_purchase_on_or_after_the_effective_date_pays_the_new_price() -> None:
    plan = _plan("299.00", ("349.00", T0 + 10 * DAY, False))
    for now, expected in ((T0 + 9 * DAY, "299.00"), (T0 + 10 * DAY, "349.00")):
        state = AccountState(stream_id=s.account_stream("u1"))
        cid = uuid.uuid4()
        payload = s.PurchaseSubscription(subscription_id=uuid.uuid4(), plan_id="monthly", customer=s.Customer(email="a@b.cd"))
        command = s.new_envelope(payload, stream_id=state.stream_id, metadata=_meta(cid, "user"), id=cid)
        decision = decide(state, command, Context(now=now, plan=plan))
        assert decision.events[0].payload.amount == s.Money(amount=expected)  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- scheduling: what is refused


def test_scheduling_refuses_bad_input_with_a_code() -> None:
    plan = _plan("299.00")
    assert _code(_schedule(plan, "349.00", T0)[1]) == "effective_date_not_in_future"
    assert _code(_schedule(plan, "349.00", T0 - DAY)[1]) == "effective_date_not_in_future"
    assert _code(_schedule(plan, "299.00", T0 + DAY)[1]) == "same_price"
    assert _code(_schedule(plan, "0.00", T0 + DAY)[1]) == "invalid_price"
    assert _code(_schedule(AccountlessPlan(), "349.00", T0 + DAY)[1]) == "plan_not_found"
    archived = _plan("299.00")
    cid = uuid.uuid4()
    apply_plan(archived, s.new_envelope(s.PlanArchived(plan_id="monthly"), stream_id=archived.stream_id, metadata=_meta(cid)))
    assert _code(_schedule(archived, "349.00", T0 + DAY)[1]) == "plan_archived"
    later = _plan("299.00", ("349.00", T0 + 10 * DAY, False))
    assert _code(_schedule(later, "399.00", T0 + 5 * DAY)[1]) == "change_already_scheduled_later"
    assert _code(_schedule(later, "349.00", T0 + 20 * DAY)[1]) == "same_price"  # the price then, not the created one


def AccountlessPlan():  # noqa: N802 - reads like a type in the test above
    return build_plan(s.plan_stream("monthly"), [])


def test_scheduling_a_change_records_it_under_the_command_id() -> None:
    plan = _plan("299.00")
    command, decision = _schedule(plan, "349.00", T0 + 10 * DAY, grandfather=True)
    for envelope in to_envelopes(plan, command, decision.events, T0):
        apply_plan(plan, envelope)
    assert [(c.change_id, c.price, c.grandfather) for c in plan.price_changes] == [(command.id, s.Money(amount="349.00"), True)]


# --------------------------------------------------------------------------- the notice-date arithmetic


def test_first_renewal_is_the_first_period_start_after_the_effective_date() -> None:
    end = T0 + 5 * DAY
    # told long ahead: the first renewal at/after the effective date
    assert first_renewal_at_new_price(end, 30, T0 + 60 * DAY, T0, 30) == end + 60 * DAY
    # effective before the current period ends, but the notice comes too late for that renewal
    assert first_renewal_at_new_price(end, 30, T0 + DAY, T0, 30) == end + 30 * DAY
    # exactly N days: allowed (at least N days)
    assert first_renewal_at_new_price(end, 30, T0 + DAY, end - 30 * DAY, 30) == end
    # one second less than N days: one period later
    assert first_renewal_at_new_price(end, 30, T0 + DAY, end - 30 * DAY + timedelta(seconds=1), 30) == end + 30 * DAY
    # an effective date on a period start is that period
    assert first_renewal_at_new_price(end, 7, end + 14 * DAY, T0, 0) == end + 14 * DAY
    # late notice never charges sooner than N days after it, whatever the periods
    for days in (1, 7, 30, 365):
        for notice in (T0, T0 + 3 * DAY, T0 + 40 * DAY):
            first = first_renewal_at_new_price(end, days, T0 + 2 * DAY, notice, 30)
            assert first >= notice + 30 * DAY and first >= T0 + 2 * DAY
            assert (first - end) % timedelta(days=days) == timedelta(0)
            assert first - timedelta(days=days) < max(notice + 30 * DAY, T0 + 2 * DAY) or first == end


def _sub(*steps: PriceStep) -> Subscription:
    return Subscription(
        subscription_id=uuid.uuid4(), plan_id="monthly", plan_name="Monthly", period_days=30, price=s.Money(amount="299.00"),
        status="active", auto_renew=True, origin_command_id=None, period_end=T0, price_steps=list(steps),
    )


def test_renewal_price_is_the_newest_announced_price_in_effect() -> None:
    a = PriceStep(T0 + 30 * DAY, s.Money(amount="349.00"), T0 + 10 * DAY, uuid.uuid4())
    b = PriceStep(T0 + 90 * DAY, s.Money(amount="399.00"), T0 + 80 * DAY, uuid.uuid4())
    sub = _sub(b, a)  # the order they were announced in does not matter
    assert renewal_price(sub, T0) == s.Money(amount="299.00")
    assert renewal_price(sub, T0 + 30 * DAY) == s.Money(amount="349.00")
    assert renewal_price(sub, T0 + 89 * DAY) == s.Money(amount="349.00")
    assert renewal_price(sub, T0 + 90 * DAY) == s.Money(amount="399.00")


# --------------------------------------------------------------------------- announcing to a subscriber


def _live_account(now: datetime) -> tuple[AccountState, uuid.UUID]:
    state = AccountState(stream_id=s.account_stream("u1"))
    sub_id = uuid.uuid4()
    cid = uuid.uuid4()
    activated = s.SubscriptionActivated(
        subscription_id=sub_id, plan_id="monthly", plan_name="Monthly", period_start=now - 25 * DAY, period_end=now + 5 * DAY,
        amount_paid=s.Money(amount="299.00"), auto_renew=True, payment_id=uuid.uuid4(), customer=s.Customer(email="a@b.cd"),
    )
    apply(state, s.new_envelope(activated, stream_id=state.stream_id, metadata=_meta(cid, "user")))
    state.subscriptions[sub_id].payment_method_id = "pm"
    return state, sub_id


def _announce(state: AccountState, sub_id: uuid.UUID, plan, change_id: uuid.UUID, now: datetime, days: int = 30):
    cid = s.derived_id("price-notice", sub_id, change_id)
    command = s.new_envelope(s.AnnouncePriceChange(subscription_id=sub_id, plan_id="monthly", change_id=change_id),
                             stream_id=state.stream_id, metadata=_meta(cid, "system"), id=cid)
    decision = decide(state, command, Context(now=now, plan=plan, price_change_notice_days=days))
    for envelope in to_envelopes(state, command, decision.events, now):
        apply(state, envelope)
    return [e.payload for e in decision.events]


def test_a_late_notice_moves_the_new_price_one_period_later_and_the_renewal_charges_it() -> None:
    plan = _plan("299.00", ("349.00", T0 + DAY, False))
    state, sub_id = _live_account(T0)
    events = _announce(state, sub_id, plan, plan.price_changes[0].change_id, T0)
    announced = events[0]
    assert isinstance(announced, s.PriceChangeAnnounced)
    assert (announced.old_price, announced.new_price) == (s.Money(amount="299.00"), s.Money(amount="349.00"))
    assert announced.first_renewal_at == T0 + 35 * DAY  # the renewal in 5 days is too soon: the one after
    sub = state.subscriptions[sub_id]
    assert renewal_price(sub, sub.period_end) == s.Money(amount="299.00")
    assert renewal_price(sub, sub.period_end + 30 * DAY) == s.Money(amount="349.00")
    # told again (the scheduler repeating itself, or a new command id): nothing new
    again = _announce(state, sub_id, plan, plan.price_changes[0].change_id, T0 + DAY)
    assert not any(isinstance(e, s.PriceChangeAnnounced) for e in again)


def test_grandfathered_and_same_price_subscribers_are_not_told() -> None:
    plan = _plan("299.00", ("349.00", T0 + DAY, True))
    state, sub_id = _live_account(T0)
    assert not any(isinstance(e, s.PriceChangeAnnounced) for e in _announce(state, sub_id, plan, plan.price_changes[0].change_id, T0))
    assert state.subscriptions[sub_id].price_steps == []
    back = _plan("299.00", ("349.00", T0 + DAY, False), ("299.00", T0 + 2 * DAY, False))
    state, sub_id = _live_account(T0)
    # the first change is announced; the second brings the price back, from a later renewal
    first = _announce(state, sub_id, back, back.price_changes[0].change_id, T0)[0]
    second = _announce(state, sub_id, back, back.price_changes[1].change_id, T0)[0]
    assert first.first_renewal_at == second.first_renewal_at == T0 + 35 * DAY  # type: ignore[union-attr]
    assert renewal_price(state.subscriptions[sub_id], T0 + 35 * DAY) == s.Money(amount="299.00")
