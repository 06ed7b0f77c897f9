"""Card checks end to end (docs/decisions/0118): real processes, Kafka, PostgreSQL and sandboxes.

A trial: the card check on the sandbox's page saves the card and is refunded at once, the trial
is free, reminded before its end, and its first paid period is charged to that card at its end —
not a day early like an ordinary renewal. A card replacement: the next renewal charges the new
card (the old one would decline). Set-up and time travel as in `test_renewal_e2e`.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import pytest

import schemas as s
from sandbox.yookassa import cards
from tests.e2e.test_renewal_e2e import DAY, Stack, Sub, command, full, stack  # noqa: F401  (fixtures)
from tests.support.wait import wait_until

pytestmark = pytest.mark.slow


async def check_refunded_in_full(st: Stack, provider_payment_id: str) -> None:
    """The check's money went back: one succeeded refund of the whole amount, at the sandbox."""

    async def refunded() -> list[dict[str, Any]] | None:
        found = await st.yookassa.arefunds(payment_id=provider_payment_id)
        return found if found and all(r["status"] == "succeeded" for r in found) else None

    found = await wait_until(refunded, timeout=30, interval=0.1, message=f"the check {provider_payment_id} is refunded")
    payment = await st.yookassa.apayment(provider_payment_id)
    assert sum(float(r["amount"]["value"]) for r in found) == float(payment["amount"]["value"]) == 1.0


async def test_a_trial_is_free_then_its_first_period_is_charged_at_its_end_to_the_checked_card(full: Stack) -> None:  # noqa: F811
    plan_id = f"t{uuid.uuid4().hex[:12]}"
    create = command(
        s.CreatePlan(plan_id=plan_id, name="Trial plan", price=s.Money(amount="299.00"), period_days=30, trial_days=7),
        s.plan_stream(plan_id), actor=s.Actor(kind="admin", id="op"),
    )
    await full.send(create)
    assert isinstance(await full.wait_terminal(create.stream_id, create.id), s.CommandSucceeded)

    user = f"user-{uuid.uuid4().hex[:10]}"
    email = f"{user}@example.com"
    buy = command(
        s.PurchaseSubscription(subscription_id=uuid.uuid4(), plan_id=plan_id, customer=s.Customer(email=email, locale="en")),
        s.account_stream(user),
    )
    await full.send(buy)
    done = await full.wait_terminal(buy.stream_id, buy.id)
    assert isinstance(done, s.CommandSucceeded) and done.outcome.confirmation_url, done
    check_id = full.yookassa.payment_id_from_url(done.outcome.confirmation_url)
    paid = await full.yookassa.apay(check_id, cards.SUCCESS)
    assert paid["status"] == "succeeded" and paid["amount"]["value"] == "1.00" and paid["payment_method"]["saved"]
    [activated] = await full.wait_events(buy.stream_id, "SubscriptionActivated")
    trial = activated.data
    assert isinstance(trial, s.SubscriptionActivated) and trial.trial and trial.amount_paid.minor == 0 and trial.auto_renew
    assert trial.period_end - trial.period_start == 7 * DAY
    await check_refunded_in_full(full, check_id)
    sub = Sub(user, email, buy.data.subscription_id, trial.period_end, paid["payment_method"]["id"])  # type: ignore[attr-defined]
    await full.emails(sub, "trial_started")
    [mail] = [m for m in await full.mailgun.amessages(to=email) if m["tags"] == ["trial_started"]]
    assert "299.00" in mail["text"]  # the price of the first charge, and its date
    assert (await full.schedule_row(sub))["trial"] is True

    # Inside the ordinary renewal lead: a trial is reminded, not charged.
    await full.move_to(sub.period_end - timedelta(hours=12))
    [soon] = await full.wait_events(sub.stream, "SubscriptionExpiringSoon")
    assert soon.data.trial and soon.data.next_charge == s.Money(amount="299.00")  # type: ignore[attr-defined]
    await full.emails(sub, "expiring_soon")
    await asyncio.sleep(1.5)  # several scheduler ticks
    assert await full.events(sub.stream, "RenewalStarted") == []

    await full.move_to(sub.period_end + timedelta(minutes=1))
    [renewed] = await full.wait_events(sub.stream, "SubscriptionRenewed")
    assert (renewed.data.period_start, renewed.data.period_end) == (sub.period_end, sub.period_end + 30 * DAY)  # type: ignore[attr-defined]
    [started] = await full.events(sub.stream, "RenewalStarted")
    assert started.data.payment_method_id == sub.method_id and started.data.amount == s.Money(amount="299.00")  # type: ignore[attr-defined]
    assert await full.renewal_charges(sub) == {"succeeded": 1}
    await full.emails(sub, "trial_started", "expiring_soon", "renewal_succeeded")
    tags = [t for m in await full.mailgun.amessages(to=email) for t in m["tags"]]
    assert "refund_succeeded" not in tags  # the check's return is told in the trial email
    assert (await full.schedule_row(sub))["trial"] is False


async def test_after_a_card_replacement_the_renewal_charges_the_new_card(full: Stack) -> None:  # noqa: F811
    sub = await full.subscribe(await full.create_plan())
    replace = command(s.ReplacePaymentMethod(subscription_id=sub.subscription_id), sub.stream)
    await full.send(replace)
    done = await full.wait_terminal(sub.stream, replace.id)
    assert isinstance(done, s.CommandSucceeded) and done.outcome.confirmation_url, done
    check_id = full.yookassa.payment_id_from_url(done.outcome.confirmation_url)
    paid = await full.yookassa.apay(check_id, cards.SUCCESS_VISA)
    new_method = paid["payment_method"]["id"]
    assert paid["payment_method"]["saved"] and new_method != sub.method_id
    [replaced] = await full.wait_events(sub.stream, "PaymentMethodReplaced")
    assert replaced.data.payment_method.id == new_method  # type: ignore[attr-defined]
    await check_refunded_in_full(full, check_id)
    await full.emails(sub, "purchase_succeeded", "card_replaced")
    [before] = await full.events(sub.stream, "SubscriptionActivated")

    await full.yookassa.aset_method_behaviour(sub.method_id, "insufficient_funds")  # the old card would decline
    await full.move_to(sub.period_end - timedelta(hours=12))
    [renewed] = await full.wait_events(sub.stream, "SubscriptionRenewed")
    [started] = await full.events(sub.stream, "RenewalStarted")
    assert started.data.payment_method_id == new_method  # type: ignore[attr-defined]
    assert renewed.data.period_start == before.data.period_end  # type: ignore[attr-defined]  # the check never moved the period
    assert await full.renewal_charges(sub) == {"succeeded": 1}
