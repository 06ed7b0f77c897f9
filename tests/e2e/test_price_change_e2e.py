"""A plan's price change end to end (docs/decisions/0120): real processor (with its scheduler),
relay and notifier, real Kafka, PostgreSQL and sandboxes; business time moves instead of anyone
waiting. The change is announced by email, the renewal inside the notice period keeps the old
price, the next one charges the new price, and a purchase after the effective date pays it."""

from __future__ import annotations

from datetime import timedelta

import pytest

import schemas as s
from tests.e2e.test_renewal_e2e import DAY, Stack, command, full, stack  # noqa: F401  (fixtures)

pytestmark = pytest.mark.slow


async def test_a_scheduled_price_is_announced_by_email_and_the_following_renewal_charges_it(full: Stack) -> None:  # noqa: F811
    plan_id = await full.create_plan()  # 299.00 every 30 days
    sub = await full.subscribe(plan_id)
    effective = full.now() + DAY
    change = command(
        s.SchedulePriceChange(plan_id=plan_id, price=s.Money(amount="349.00"), effective_at=effective, reason="content costs"),
        s.plan_stream(plan_id), actor=s.Actor(kind="admin", id="op"),
    )
    await full.send(change)
    assert isinstance(await full.wait_terminal(change.stream_id, change.id), s.CommandSucceeded)

    # The scheduler tells the subscriber; 30 days' notice makes the renewal in 30 days too soon: the one after.
    [announced] = await full.wait_events(sub.stream, "PriceChangeAnnounced")
    notice = announced.data
    assert isinstance(notice, s.PriceChangeAnnounced)
    assert announced.metadata.command_id == s.derived_id("price-notice", sub.subscription_id, change.id)
    assert (notice.old_price, notice.new_price) == (s.Money(amount="299.00"), s.Money(amount="349.00"))
    assert notice.first_renewal_at == sub.period_end + 30 * DAY
    await full.emails(sub, "purchase_succeeded", "price_change")
    [mail] = [m for m in await full.mailgun.amessages(to=sub.email) if m["tags"] == ["price_change"]]
    assert "349.00" in mail["text"] and "turn auto-renewal off" in mail["text"]
    assert notice.first_renewal_at.strftime("%B") in mail["text"] or notice.first_renewal_at.strftime("%b") in mail["text"]

    # The first renewal keeps the old price ...
    await full.move_to(sub.period_end - timedelta(hours=12))
    [first] = await full.wait_events(sub.stream, "SubscriptionRenewed")
    assert first.data.amount == s.Money(amount="299.00")  # type: ignore[attr-defined]
    # ... a purchase after the effective date pays the new one ...
    newcomer = await full.subscribe(plan_id)
    [checkout] = await full.events(newcomer.stream, "CheckoutStarted")
    assert checkout.data.amount == s.Money(amount="349.00")  # type: ignore[attr-defined]
    # ... and the renewal the notice named charges the new price, once.
    await full.move_to(notice.first_renewal_at - timedelta(hours=12))
    renewed = await full.wait_events(sub.stream, "SubscriptionRenewed", 2)
    assert renewed[1].data.period_start == notice.first_renewal_at  # type: ignore[attr-defined]
    assert renewed[1].data.amount == s.Money(amount="349.00")  # type: ignore[attr-defined]
    payments = await full.yookassa.apayments({"subscription_id": str(sub.subscription_id), "purpose": "renewal"})
    assert sorted((p["amount"]["value"], p["status"]) for p in payments) == [("299.00", "succeeded"), ("349.00", "succeeded")]
    assert len(await full.events(sub.stream, "PriceChangeAnnounced")) == 1  # the scheduler never repeats a notice
