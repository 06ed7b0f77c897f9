"""A promo code end to end: real processes (processor with its scheduler, relay, notifier), real Kafka,
PostgreSQL and the sandboxes. A customer buys with a code worth 20 % off the first period: YooKassa
is asked for the discounted amount (its receipt too), the purchase email shows the discount, and the
first renewal — business time moved forward — charges the full price (docs/decisions/0121)."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest

import schemas as s
from sandbox.yookassa import cards
from tests.e2e.test_renewal_e2e import Stack, Sub, command, full, stack  # noqa: F401  (the renewal tests' stack and fixtures)

pytestmark = pytest.mark.slow


async def test_a_code_discounts_the_first_period_and_the_first_renewal_charges_full_price(full: Stack) -> None:  # noqa: F811
    plan_id = await full.create_plan()  # 299.00 for 30 days
    code = f"E2E{uuid.uuid4().hex[:8].upper()}"
    create = command(s.CreatePromoCode(code=code, percent_off=20, periods=1, max_redemptions=10,
                                       expires_at=datetime.now(timezone.utc) + timedelta(days=7), reason="e2e"),
                     s.promo_stream(code), actor=s.Actor(kind="admin", id="op"))
    await full.send(create)
    assert isinstance(await full.wait_terminal(create.stream_id, create.id), s.CommandSucceeded)

    user = f"user-{uuid.uuid4().hex[:10]}"
    email = f"{user}@example.com"
    cid = uuid.uuid4()
    buy = command(s.PurchaseSubscription(subscription_id=s.derived_id("subscription", cid), plan_id=plan_id,
                                         customer=s.Customer(email=email, locale="en"), promo_code=code),
                  s.account_stream(user), command_id=cid)
    await full.send(buy)
    done = await full.wait_terminal(buy.stream_id, cid)
    assert isinstance(done, s.CommandSucceeded) and done.outcome.confirmation_url, done
    [checkout] = await full.events(buy.stream_id, "CheckoutStarted")
    assert checkout.data.amount == s.Money(amount="239.20")  # type: ignore[attr-defined]
    [redeemed] = await full.events(s.promo_stream(code), "PromoCodeRedeemed")
    assert redeemed.data.user_id == user  # type: ignore[attr-defined]

    provider_id = full.yookassa.payment_id_from_url(done.outcome.confirmation_url)
    remote = await full.yookassa.apayment(provider_id)
    assert remote["amount"]["value"] == "239.20"
    paid = await full.yookassa.apay(provider_id, cards.SUCCESS)
    assert paid["status"] == "succeeded" and paid["payment_method"]["saved"] is True
    [activated] = await full.wait_events(buy.stream_id, "SubscriptionActivated")
    period_end = activated.data.period_end  # type: ignore[attr-defined]

    await full.emails(Sub(user, email, buy.data.subscription_id, period_end, ""), "purchase_succeeded")  # type: ignore[attr-defined]
    [mail] = [m for m in await full.mailgun.amessages(to=email) if m["tags"] == ["purchase_succeeded"]]
    assert f"Promo code {code}:" in mail["text"] and "off the price of" in mail["text"]

    await full.move_to(period_end - timedelta(hours=12))  # inside the renewal lead
    [renewed] = await full.wait_events(buy.stream_id, "SubscriptionRenewed")
    [started] = await full.events(buy.stream_id, "RenewalStarted")
    assert started.data.amount == s.Money(amount="299.00") and started.data.promo is None  # type: ignore[attr-defined]
    assert renewed.data.amount == s.Money(amount="299.00")  # type: ignore[attr-defined]
    renewals = await full.yookassa.apayments({"subscription_id": str(buy.data.subscription_id), "purpose": "renewal"})  # type: ignore[attr-defined]
    assert [(p["status"], p["amount"]["value"]) for p in renewals] == [("succeeded", "299.00")]
