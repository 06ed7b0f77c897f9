"""Plan switching end to end (docs/decisions/0119): real processor (with its scheduler), relay and
notifier, real Kafka and PostgreSQL, the YooKassa and Mailgun sandboxes over HTTP.

A monthly subscriber upgrades to yearly ten days in: the saved card is charged the yearly price
less the credit for the unused days (the refund arithmetic of `rules/refunds.py`), and a yearly
period starts at once. Then they switch down to monthly: nothing is charged until the renewal at
the end of the yearly period, which charges the monthly price and moves the subscription to it.
The stack and its helpers are the renewal e2e's (`tests/e2e/test_renewal_e2e.py`).
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

import schemas as s
from rules.refunds import refund_amount
from tests.e2e.test_renewal_e2e import DAY, Stack, command, full, stack  # noqa: F401  (fixtures)

pytestmark = pytest.mark.slow


async def _plan(st: Stack, name: str, price: str, days: int, product: str) -> str:
    plan_id = f"{name}-{uuid.uuid4().hex[:8]}"
    cmd = command(
        s.CreatePlan(plan_id=plan_id, name=name.title(), price=s.Money(amount=price), period_days=days, product=product),
        s.plan_stream(plan_id), actor=s.Actor(kind="admin", id="op"),
    )
    await st.send(cmd)
    assert isinstance(await st.wait_terminal(cmd.stream_id, cmd.id), s.CommandSucceeded)
    return plan_id


async def test_an_upgrade_by_the_saved_card_now_and_a_downgrade_at_the_renewal(full: Stack) -> None:  # noqa: F811
    product = f"cinema-{uuid.uuid4().hex[:6]}"
    monthly = await _plan(full, "monthly", "299.00", 30, product)
    yearly = await _plan(full, "yearly", "2990.00", 365, product)
    sub = await full.subscribe(monthly)
    [activated] = await full.events(sub.stream, "SubscriptionActivated")
    await full.emails(sub, "purchase_succeeded")

    # a second subscription of the same product is refused, pointing at switching
    again = command(s.PurchaseSubscription(subscription_id=uuid.uuid4(), plan_id=yearly, customer=s.Customer(email=sub.email)), sub.stream)
    await full.send(again)
    refused = await full.wait_terminal(sub.stream, again.id)
    assert isinstance(refused, s.CommandRejected) and refused.code == "already_subscribed" and "switch" in refused.reason

    # ten days in: upgrade to yearly, charged at once by the saved card
    await full.move_to(full.now() + 10 * DAY)
    upgrade = command(s.SwitchPlan(subscription_id=sub.subscription_id, plan_id=yearly), sub.stream)
    await full.send(upgrade)
    done = await full.wait_terminal(sub.stream, upgrade.id)
    assert isinstance(done, s.CommandSucceeded) and done.outcome.confirmation_url is None, done
    [started] = await full.events(sub.stream, "UpgradeStarted")
    credit = refund_amount(29900, activated.data.period_start, 30, started.occurred_at).amount_minor  # type: ignore[attr-defined]
    assert credit > 0 and started.data.credit.minor == credit  # type: ignore[attr-defined]
    assert started.data.amount.minor == 299000 - credit and started.data.payment_method_id == sub.method_id  # type: ignore[attr-defined]
    [switched] = await full.wait_events(sub.stream, "PlanSwitched")
    data = switched.data
    assert isinstance(data, s.PlanSwitched) and data.plan_id == yearly and data.credit.minor == credit
    assert data.period_end - data.period_start == 365 * DAY
    [charge] = await full.yookassa.apayments({"subscription_id": str(sub.subscription_id), "purpose": "upgrade"})
    assert charge["status"] == "succeeded" and charge["amount"]["value"] == f"{(299000 - credit) / 100:.2f}"
    assert await full.charges(sub) == 2  # the purchase and the upgrade, nothing else
    await full.emails(sub, "plan_upgraded")
    [mail] = [m for m in await full.mailgun.amessages(to=sub.email) if m["tags"] == ["plan_upgraded"]]
    assert f"{credit / 100:,.2f}" in mail["text"] and f"{(299000 - credit) / 100:,.2f}" in mail["text"], mail["text"]

    # then down to monthly: scheduled for the end of the yearly period, nothing charged now
    down = command(s.SwitchPlan(subscription_id=sub.subscription_id, plan_id=monthly), sub.stream)
    await full.send(down)
    assert isinstance(await full.wait_terminal(sub.stream, down.id), s.CommandSucceeded)
    [scheduled] = await full.events(sub.stream, "PlanSwitchScheduled")
    assert scheduled.data.effective_at == data.period_end  # type: ignore[attr-defined]
    await full.emails(sub, "plan_upgraded", "plan_switch_scheduled")
    assert await full.charges(sub) == 2

    # the renewal at the end of the yearly period charges monthly and moves the subscription to it
    await full.move_to(data.period_end - timedelta(hours=12))
    [renewed] = await full.wait_events(sub.stream, "SubscriptionRenewed", timeout=60)
    r = renewed.data
    assert isinstance(r, s.SubscriptionRenewed)
    assert (r.plan_id, r.amount, r.period_start, r.period_end) == (monthly, s.Money(amount="299.00"), data.period_end, data.period_end + 30 * DAY)
    assert await full.renewal_charges(sub) == {"succeeded": 1}
    [renewal] = await full.yookassa.apayments({"subscription_id": str(sub.subscription_id), "purpose": "renewal"})
    assert renewal["amount"]["value"] == "299.00"
    await full.emails(sub, "purchase_succeeded", "plan_upgraded", "plan_switch_scheduled", "renewal_succeeded")
    [renewal_mail] = [m for m in await full.mailgun.amessages(to=sub.email) if m["tags"] == ["renewal_succeeded"]]
    assert "moved from Yearly to Monthly" in renewal_mail["text"]
    row = await full.schedule_row(sub)
    assert (row["status"], row["period_end"]) == ("active", data.period_end + 30 * DAY)
