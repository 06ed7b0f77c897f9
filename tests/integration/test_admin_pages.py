"""The admin's pages through Django's test client against the real PostgreSQL.

Rows are inserted into the read models (as the projector would) and events appended to the real
event store; every page must render them — money as money, links between subscription, payments,
refunds and account, the timeline newest first — and nobody may change a row or act without the
operators' permission.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from infra.db import create_engine
from eventstore.store import EventStore
from schemas import (
    Actor,
    CommandRejected,
    Customer,
    Metadata,
    Money,
    SubscriptionActivated,
    SubscriptionAdjusted,
    account_stream,
    new_envelope,
)

NBSP = "\u00a0"
RUB_1490 = f"1{NBSP}490,00{NBSP}₽"


def body(response: Any) -> str:
    return response.content.decode()


async def get(site: Any, client: Any, url: str, **params: Any) -> Any:
    return await site.run(client.get, url, params or None)


@pytest.fixture
async def seeded(admin_site: Any) -> dict[str, Any]:
    """One account with a plan, a subscription, a payment, a refund and a command."""
    user_id = f"user-{uuid.uuid4().hex[:12]}"
    plan = await admin_site.insert("plan", price_minor=149000)
    account = await admin_site.insert("account", user_id=user_id, total_paid_minor=149000, total_refunded_minor=50000)
    sub = await admin_site.insert(
        "subscription", user_id=user_id, plan_id=plan["plan_id"], plan_name=plan["name"],
        amount_refunded_minor=50000,
    )
    payment = await admin_site.insert("payment", subscription_id=sub["subscription_id"], user_id=user_id)
    refund = await admin_site.insert(
        "refund", subscription_id=sub["subscription_id"], payment_id=payment["payment_id"], user_id=user_id
    )
    command = await admin_site.insert("command", user_id=user_id, reason="subscription is not active",
                                      status="rejected", code="not_active", actor_id="alice")
    return {"user_id": user_id, "plan": plan, "account": account, "sub": sub, "payment": payment,
            "refund": refund, "command": command}


@pytest.fixture
async def operator_client(admin_site: Any, operator_user: Any) -> Any:
    return await admin_site.run(admin_site.client, operator_user)


@pytest.fixture
async def viewer_client(admin_site: Any, viewer_user: Any) -> Any:
    return await admin_site.run(admin_site.client, viewer_user)


async def test_every_page_renders_its_data_with_money_and_links(admin_site, seeded, operator_client) -> None:
    s = seeded
    sub_id, pay_id, ref_id = s["sub"]["subscription_id"], s["payment"]["payment_id"], s["refund"]["refund_id"]
    c = operator_client

    index = await get(admin_site, c, "/admin/")
    assert index.status_code == 200
    for name in ("Subscriptions", "Payments", "Refunds", "Accounts", "Plans", "Command statuses", "Event log"):
        assert name in body(index)

    pages = {  # changelist → (query, what must be on it)
        "/admin/billing/subscription/": ({"user_id": s["user_id"]}, RUB_1490),
        "/admin/billing/payment/": ({"q": s["user_id"]}, RUB_1490),
        "/admin/billing/refund/": ({"q": s["user_id"]}, f"500,00{NBSP}₽"),
        "/admin/billing/account/": ({"q": s["user_id"]}, RUB_1490),
        "/admin/billing/command/": ({"q": s["user_id"]}, "operator: alice"),
        "/admin/billing/plan/": ({"q": s["plan"]["plan_id"]}, RUB_1490),
    }
    for url, (params, expected) in pages.items():
        response = await get(admin_site, c, url, **params)
        assert response.status_code == 200, url
        assert expected in body(response), url
    commands = body(await get(admin_site, c, "/admin/billing/command/", q=s["user_id"]))
    assert "subscription is not active" in commands and "operator: alice" in commands

    sub_page = await get(admin_site, c, f"/admin/billing/subscription/{sub_id}/change/")
    html = body(sub_page)
    assert sub_page.status_code == 200
    assert RUB_1490 in html  # price and paid
    assert f"500,00{NBSP}₽" in html  # refunded
    assert f"990,00{NBSP}₽" in html  # refundable = paid − refunded
    assert f"/admin/billing/payment/{pay_id}/change/" in html
    assert f"/admin/billing/refund/{ref_id}/change/" in html
    assert f"/admin/billing/account/{s['user_id']}/change/" in html
    assert f"/admin/billing/account/{s['user_id']}/timeline/" in html
    assert s["payment"]["provider_payment_id"] in html

    pay_page = body(await get(admin_site, c, f"/admin/billing/payment/{pay_id}/change/"))
    assert f"/admin/billing/subscription/{sub_id}/change/" in pay_page
    assert f"/admin/billing/refund/{ref_id}/change/" in pay_page
    assert RUB_1490 in pay_page

    ref_page = body(await get(admin_site, c, f"/admin/billing/refund/{ref_id}/change/"))
    assert f"/admin/billing/subscription/{sub_id}/change/" in ref_page
    assert f"/admin/billing/payment/{pay_id}/change/" in ref_page
    assert f"500,00{NBSP}₽" in ref_page

    acc_page = body(await get(admin_site, c, f"/admin/billing/account/{s['user_id']}/change/"))
    assert f"/admin/billing/subscription/{sub_id}/change/" in acc_page
    assert f"/admin/billing/payment/{pay_id}/change/" in acc_page
    assert f"/admin/billing/refund/{ref_id}/change/" in acc_page
    assert "subscription is not active" in acc_page  # recent commands

    plan_page = body(await get(admin_site, c, f"/admin/billing/plan/{s['plan']['plan_id']}/change/"))
    assert RUB_1490 in plan_page and s["plan"]["name"] in plan_page

    cmd_page = body(await get(admin_site, c, f"/admin/billing/command/{s['command']['command_id']}/change/"))
    assert "subscription is not active" in cmd_page and "not_active" in cmd_page


async def test_subscription_search_by_user_email_ids_and_provider_payment_id(admin_site, seeded, operator_client) -> None:
    s = seeded
    other = await admin_site.insert("subscription")
    sub_id = str(s["sub"]["subscription_id"])
    terms = [s["user_id"], s["sub"]["email"].upper(), sub_id, str(s["payment"]["payment_id"]),
             s["payment"]["provider_payment_id"]]
    for term in terms:
        html = body(await get(admin_site, operator_client, "/admin/billing/subscription/", q=term))
        assert f"/admin/billing/subscription/{sub_id}/change/" in html, term
        assert str(other["subscription_id"]) not in html, term
    html = body(await get(admin_site, operator_client, "/admin/billing/subscription/", q=f"nobody-{uuid.uuid4()}"))
    assert f"/admin/billing/subscription/{sub_id}/change/" not in html

    # payments by provider id, refunds by provider refund id, accounts by email, commands by operator
    html = body(await get(admin_site, operator_client, "/admin/billing/payment/", q=s["payment"]["provider_payment_id"]))
    assert f"/admin/billing/payment/{s['payment']['payment_id']}/change/" in html
    html = body(await get(admin_site, operator_client, "/admin/billing/refund/", q=s["refund"]["provider_refund_id"]))
    assert f"/admin/billing/refund/{s['refund']['refund_id']}/change/" in html
    html = body(await get(admin_site, operator_client, "/admin/billing/account/", q=s["account"]["email"]))
    assert f"/admin/billing/account/{s['user_id']}/change/" in html
    html = body(await get(admin_site, operator_client, "/admin/billing/command/", q=str(s["command"]["command_id"])))
    assert f"/admin/billing/command/{s['command']['command_id']}/change/" in html


async def test_subscription_filters_status_plan_auto_renew_and_dates(admin_site, operator_client) -> None:
    user_id = f"user-{uuid.uuid4().hex[:12]}"
    plan = await admin_site.insert("plan")
    now = datetime.now(timezone.utc)
    active = await admin_site.insert("subscription", user_id=user_id, plan_id=plan["plan_id"], plan_name=plan["name"],
                                     period_end=now + timedelta(days=200))
    expired = await admin_site.insert("subscription", user_id=user_id, status="expired", auto_renew=False,
                                      period_end=now - timedelta(days=400))

    async def listed(**params: Any) -> set[str]:
        response = await get(admin_site, operator_client, "/admin/billing/subscription/", q=user_id, **params)
        assert response.status_code == 200, params
        found = set(re.findall(r"/admin/billing/subscription/([0-9a-f-]{36})/change/", body(response)))
        return found & {str(active["subscription_id"]), str(expired["subscription_id"])}

    a, e = str(active["subscription_id"]), str(expired["subscription_id"])
    assert await listed() == {a, e}
    assert await listed(status="active") == {a}
    assert await listed(status="expired") == {e}
    assert await listed(plan_id=plan["plan_id"]) == {a}
    assert await listed(auto_renew__exact="0") == {e}
    assert await listed(auto_renew__exact="1") == {a}
    since = (now + timedelta(days=100)).isoformat()  # aware, as the filter's own links are
    assert await listed(period_end__gte=since) == {a}
    until = (now - timedelta(days=300)).isoformat()
    assert await listed(period_end__lt=until) == {e}
    # the filter sidebar offers the plan by name
    html = body(await get(admin_site, operator_client, "/admin/billing/subscription/"))
    assert plan["name"] in html


async def test_account_timeline_lists_every_event_newest_first(admin_site, operator_client) -> None:
    user_id = f"user-{uuid.uuid4().hex[:12]}"
    stream = account_stream(user_id)
    sub_id = uuid.uuid4()
    now = datetime.now(timezone.utc)
    customer = Customer(email=f"{user_id}@example.com", locale="ru")
    activated = new_envelope(
        SubscriptionActivated(subscription_id=sub_id, plan_id="basic", plan_name="Basic", period_start=now,
                              period_end=now + timedelta(days=30), amount_paid=Money(amount="1490.00"),
                              auto_renew=True, customer=customer),
        stream_id=stream,
        metadata=Metadata(correlation_id="c1", actor=Actor(kind="provider", id="yookassa")),
    )
    adjusted = new_envelope(
        SubscriptionAdjusted(subscription_id=sub_id, days=7, period_end=now + timedelta(days=37),
                             reason="outage compensation"),
        stream_id=stream,
        metadata=Metadata(correlation_id="c2", actor=Actor(kind="admin", id="alice")),
    )
    rejected = new_envelope(
        CommandRejected(command_id=uuid.uuid4(), command_type="AdminRefund", code="too_much",
                        reason="more than is refundable"),
        stream_id=stream,
        metadata=Metadata(correlation_id="c3", actor=Actor(kind="admin", id="bob")),
    )
    engine = create_engine(admin_site.settings, pool_size=1, application_name="test-admin")
    try:
        await EventStore(engine).append(stream, 0, [activated, adjusted, rejected])
    finally:
        await engine.dispose()

    response = await get(admin_site, operator_client, f"/admin/billing/account/{user_id}/timeline/")
    assert response.status_code == 200
    html = body(response)
    order = [html.index(f'data-type="{t}"') for t in ("CommandRejected", "SubscriptionAdjusted", "SubscriptionActivated")]
    assert order == sorted(order), "newest first"
    assert "operator: alice" in html and "operator: bob" in html and "provider: yookassa" in html
    assert "outage compensation" in html and "more than is refundable" in html
    assert "&quot;days&quot;: 7" in html  # the payload, pretty-printed JSON
    assert str(sub_id) in html

    # the event log page lists the same events, searchable by user id
    html = body(await get(admin_site, operator_client, "/admin/billing/storedevent/", q=user_id))
    assert "SubscriptionAdjusted" in html and "outage compensation" in html


async def test_login_required_everywhere(admin_site, seeded) -> None:
    anonymous = await admin_site.run(admin_site.client)
    s = seeded
    urls = [
        "/", "/admin/", "/admin/billing/subscription/", f"/admin/billing/subscription/{s['sub']['subscription_id']}/change/",
        f"/admin/billing/subscription/{s['sub']['subscription_id']}/extend/", "/admin/billing/subscription/grant/",
        f"/admin/billing/account/{s['user_id']}/timeline/", "/admin/billing/plan/create/",
        f"/admin/billing/command/status/{uuid.uuid4()}/", "/admin/billing/storedevent/",
    ]
    for url in urls:
        response = await get(admin_site, anonymous, url)
        assert response.status_code == 302, url
        assert "/admin/login/" in response["Location"], url
    health = await get(admin_site, anonymous, "/healthz")
    assert health.status_code == 200 and health.json() == {"status": "ok"}

    # the real login form works, and then pages open
    password = f"pw-{uuid.uuid4().hex}"
    user = await admin_site.run(admin_site.make_user, "billing-viewers", password=password)
    login = await admin_site.run(anonymous.post, "/admin/login/?next=/admin/",
                                 {"username": user.username, "password": password})
    assert login.status_code == 302 and login["Location"] == "/admin/"
    assert (await get(admin_site, anonymous, "/admin/billing/subscription/")).status_code == 200


async def test_read_models_cannot_be_changed_even_by_a_superuser(admin_site, seeded) -> None:
    superuser = await admin_site.run(admin_site.make_user, None, superuser=True)
    client = await admin_site.run(admin_site.client, superuser)
    sub_id = seeded["sub"]["subscription_id"]
    changelist = body(await get(admin_site, client, "/admin/billing/subscription/"))
    assert "/admin/billing/subscription/add/" not in changelist
    assert (await get(admin_site, client, "/admin/billing/subscription/add/")).status_code == 403
    change = await admin_site.run(client.post, f"/admin/billing/subscription/{sub_id}/change/", {"status": "canceled"})
    assert change.status_code == 403
    delete = await admin_site.run(client.post, f"/admin/billing/subscription/{sub_id}/delete/", {"post": "yes"})
    assert delete.status_code == 403


async def test_viewers_see_no_buttons_and_cannot_act(admin_site, seeded, viewer_client, operator_client) -> None:
    sub_id = seeded["sub"]["subscription_id"]
    plan_id = seeded["plan"]["plan_id"]
    page = body(await get(admin_site, viewer_client, f"/admin/billing/subscription/{sub_id}/change/"))
    assert "act-extend" not in page and "act-refund" not in page
    assert "act-grant" not in body(await get(admin_site, viewer_client, "/admin/billing/subscription/"))
    assert "act-create-plan" not in body(await get(admin_site, viewer_client, "/admin/billing/plan/"))

    action_urls = [
        f"/admin/billing/subscription/{sub_id}/extend/", f"/admin/billing/subscription/{sub_id}/cancel/",
        f"/admin/billing/subscription/{sub_id}/refund/", f"/admin/billing/subscription/{sub_id}/auto-renew/",
        "/admin/billing/subscription/grant/", "/admin/billing/plan/create/", f"/admin/billing/plan/{plan_id}/archive/",
    ]
    for url in action_urls:
        assert (await get(admin_site, viewer_client, url)).status_code == 403, url
        posted = await admin_site.run(viewer_client.post, url, {"reason": "x", "days": "3",
                                                                "idempotency_key": str(uuid.uuid4())})
        assert posted.status_code == 403, url

    page = body(await get(admin_site, operator_client, f"/admin/billing/subscription/{sub_id}/change/"))
    for button in ("act-extend", "act-cancel", "act-refund", "act-autorenew"):
        assert button in page
    for url in action_urls:
        assert (await get(admin_site, operator_client, url)).status_code == 200, url


async def test_refund_form_shows_refundable_and_refuses_more(admin_site, seeded, operator_client) -> None:
    sub_id = seeded["sub"]["subscription_id"]
    form_page = await get(admin_site, operator_client, f"/admin/billing/subscription/{sub_id}/refund/")
    html = body(form_page)
    assert f"At most 990,00{NBSP}₽ (paid − already refunded)" in html
    key = form_page.context["form"]["idempotency_key"].value()
    uuid.UUID(str(key))
    too_much = await admin_site.run(operator_client.post, f"/admin/billing/subscription/{sub_id}/refund/",
                                    {"amount": "990.01", "reason": "goodwill", "idempotency_key": str(key)})
    assert too_much.status_code == 200
    assert f"At most 990,00{NBSP}₽ can be refunded." in body(too_much)
    no_reason = await admin_site.run(operator_client.post, f"/admin/billing/subscription/{sub_id}/extend/",
                                     {"days": "5", "reason": "  ", "idempotency_key": str(key)})
    assert "This field is required." in body(no_reason) or "Say why" in body(no_reason)


@pytest.mark.parametrize("amount", ["1e30", "9" * 30])  # 30 nines: the field holds at most 32 characters
async def test_refund_form_shows_an_error_for_an_absurd_amount(admin_site, seeded, operator_client, amount) -> None:
    """An exponent or 30 nines used to be a 500 page; the operator must see the form again with the reason."""
    sub_id = seeded["sub"]["subscription_id"]
    url = f"/admin/billing/subscription/{sub_id}/refund/"
    key = (await get(admin_site, operator_client, url)).context["form"]["idempotency_key"].value()
    response = await admin_site.run(operator_client.post, url,
                                    {"amount": amount, "reason": "goodwill", "idempotency_key": str(key)})
    assert response.status_code == 200
    assert "amount is too large" in body(response)


async def test_csrf_is_enforced_on_actions(admin_site, seeded, operator_user) -> None:
    client = await admin_site.run(admin_site.client, operator_user, enforce_csrf_checks=True)
    sub_id = seeded["sub"]["subscription_id"]
    response = await admin_site.run(client.post, f"/admin/billing/subscription/{sub_id}/extend/",
                                    {"days": "5", "reason": "test", "idempotency_key": str(uuid.uuid4())})
    assert response.status_code == 403
    assert b"CSRF" in response.content


async def test_payments_show_recovery_and_a_renewal_awaiting_3ds(admin_site, seeded, operator_client) -> None:
    sub, user_id = seeded["sub"], seeded["user_id"]
    recovery = await admin_site.insert("payment", subscription_id=sub["subscription_id"], user_id=user_id, purpose="recovery")
    waiting = await admin_site.insert("payment", subscription_id=sub["subscription_id"], user_id=user_id, purpose="renewal",
                                      status="pending", paid_at=None, confirmation_url="http://127.0.0.1:8010/checkout/x")
    page = body(await get(admin_site, operator_client, f"/admin/billing/payment/{waiting['payment_id']}/change/"))
    assert "awaiting 3-D Secure" in page and "http://127.0.0.1:8010/checkout/x" in page
    listing = body(await get(admin_site, operator_client, "/admin/billing/payment/", purpose="recovery"))
    assert str(recovery["payment_id"])[:8] in listing and str(waiting["payment_id"])[:8] not in listing
    detail = body(await get(admin_site, operator_client, f"/admin/billing/subscription/{sub['subscription_id']}/change/"))
    assert "recovery" in detail and "awaiting 3-D Secure" in detail


async def test_promo_codes_list_uses_and_remaining_and_act_only_for_operators(admin_site, seeded, operator_client, viewer_client) -> None:
    code = await admin_site.insert("promo_code", plan_ids='["basic", "yearly"]')
    flat = await admin_site.insert("promo_code", percent_off=None, amount_off_minor=10000, currency="RUB", max_redemptions=None,
                                   active=False, deactivated_reason="leaked")
    listing = body(await get(admin_site, operator_client, "/admin/billing/promocode/"))
    assert code["code"] in listing and flat["code"] in listing and "act-create-promo-code" in listing
    assert "20 %" in listing and f"100,00{NBSP}₽" in listing and "no limit" in listing and "basic, yearly" in listing
    page = body(await get(admin_site, operator_client, f"/admin/billing/promocode/{code['code']}/change/"))
    assert '<div class="readonly">58</div>' in page  # 100 − 42 uses held
    assert "act-deactivate" in page
    assert "act-deactivate" not in body(await get(admin_site, operator_client, f"/admin/billing/promocode/{flat['code']}/change/"))
    assert "act-create-promo-code" not in body(await get(admin_site, viewer_client, "/admin/billing/promocode/"))
    for url in ("/admin/billing/promocode/create/", f"/admin/billing/promocode/{code['code']}/deactivate/"):
        assert (await get(admin_site, viewer_client, url)).status_code == 403, url
        assert (await get(admin_site, operator_client, url)).status_code == 200, url

    user_id = f"user-{uuid.uuid4().hex[:12]}"
    sub = await admin_site.insert("subscription", user_id=user_id, plan_id=seeded["plan"]["plan_id"], plan_name="Basic",
                                  promo_code=code["code"], discount_minor=29800, promo_periods_left=2)
    page = body(await get(admin_site, operator_client, f"/admin/billing/subscription/{sub['subscription_id']}/change/"))
    assert code["code"] in page and f"298,00{NBSP}₽ off the latest charge, 2 discounted period(s) left" in page
    filtered = body(await get(admin_site, operator_client, "/admin/billing/subscription/", promo_code=code["code"]))
    assert str(sub["subscription_id"])[:8] in filtered


async def test_promo_code_form_refuses_both_or_neither_discount(admin_site, operator_client) -> None:
    url = "/admin/billing/promocode/create/"
    base = {"code": "spring", "currency": "RUB", "periods": "1", "expires_at": "2030-01-01 00:00", "reason": "x",
            "idempotency_key": str(uuid.uuid4())}
    for extra in ({}, {"percent_off": "10", "amount_off": "5.00"}):
        response = await admin_site.run(operator_client.post, url, {**base, **extra})
        assert response.status_code == 200 and "Give either a percent off or an amount off." in body(response)


RECEIPT = {"email": "anna@example.com", "tax_system_code": 2, "items": [{
    "description": "Plan X", "quantity": "1.00", "amount": {"amount": "1490.00", "currency": "RUB"}, "vat_code": 11,
    "payment_subject": "service", "payment_mode": "full_prepayment"}]}


async def test_payment_and_refund_pages_show_the_receipt_sent_and_its_registration(admin_site, operator_client) -> None:
    user_id = f"user-{uuid.uuid4().hex[:12]}"
    payment = await admin_site.insert("payment", user_id=user_id, receipt=RECEIPT, receipt_registration="succeeded")
    refund = await admin_site.insert("refund", user_id=user_id, payment_id=payment["payment_id"],
                                     receipt={**RECEIPT, "items": [{**RECEIPT["items"][0], "amount": {"amount": "500.00", "currency": "RUB"}}]},
                                     receipt_registration="pending")
    legacy = await admin_site.insert("payment", user_id=user_id)
    pay_page = body(await get(admin_site, operator_client, f"/admin/billing/payment/{payment['payment_id']}/change/"))
    for expected in ("Receipt (54-FZ)", "11 — VAT 22%", "full_prepayment", "2 — simplified, income (УСН)", "anna@example.com",
                     "Receipt registration", ">succeeded<"):
        assert expected in pay_page, expected
    ref_page = body(await get(admin_site, operator_client, f"/admin/billing/refund/{refund['refund_id']}/change/"))
    assert f"500,00{NBSP}₽" in ref_page and "11 — VAT 22%" in ref_page and ">pending<" in ref_page
    old = body(await get(admin_site, operator_client, f"/admin/billing/payment/{legacy['payment_id']}/change/"))
    assert "not recorded (sent before receipts were" in old
    listed = body(await get(admin_site, operator_client, "/admin/billing/payment/", receipt_registration="succeeded", q=user_id))
    assert str(payment["payment_id"])[:8] in listed and str(legacy["payment_id"])[:8] not in listed


async def test_revenue_page_sums_accounts_filters_and_downloads_csv(admin_site, operator_client, viewer_client) -> None:
    plan = f"rev-{uuid.uuid4().hex[:8]}"
    await admin_site.insert("plan", plan_id=plan)
    await admin_site.insert("revenue", plan_id=plan, month="2031-01", new_subscribers=1, active_delta=1, mrr_delta_minor=29900,
                            payments=1, revenue_minor=29900)
    await admin_site.insert("revenue", plan_id=plan, month="2031-01", new_subscribers=1, active_delta=1, mrr_delta_minor=29900,
                            payments=1, revenue_minor=29900, refunds=1, refunded_minor=14950, churned=1)  # counts only
    await admin_site.insert("revenue", plan_id=plan, month="2031-03", renewals_failed=2, renewals_recovered=1, renewed=1,
                            payments=1, revenue_minor=29900)
    index = body(await get(admin_site, operator_client, "/admin/"))
    assert "Revenue" in index and "/admin/billing/revenuemonth/" in index
    page = await get(admin_site, viewer_client, "/admin/billing/revenuemonth/", plan=plan)
    html = body(page)
    assert page.status_code == 200
    feb = re.search(rf'data-month="2031-02" data-plan="{plan}">(.*?)</tr>', html, re.S)
    assert feb is not None and f"598,00{NBSP}₽" in feb.group(1)  # two subscribers' MRR carries over a quiet month
    mar = re.search(rf'data-month="2031-03" data-plan="{plan}">(.*?)</tr>', html, re.S)
    assert mar is not None and "50.0 %" in mar.group(1)  # one of two failed renewals recovered
    assert "25.0 %" in html  # January's refund share
    narrowed = body(await get(admin_site, operator_client, "/admin/billing/revenuemonth/", plan=plan, **{"from": "2031-03", "to": "2031-03"}))
    assert 'data-month="2031-03"' in narrowed and 'data-month="2031-01"' not in narrowed
    bad = body(await get(admin_site, operator_client, "/admin/billing/revenuemonth/", plan=plan, **{"from": "March"}))
    assert "is not a month (YYYY-MM)" in bad
    csv = await get(admin_site, operator_client, "/admin/billing/revenuemonth/", plan=plan, format="csv")
    assert csv["Content-Type"].startswith("text/csv") and f'filename="revenue-{plan}.csv"' in csv["Content-Disposition"]
    lines = csv.content.decode().splitlines()
    assert lines[0].startswith("month,plan_id,currency,mrr,")
    assert lines[1:] == [
        f"2031-01,{plan},RUB,598.00,2,2,1,0,2,598.00,1,149.50,0.2500,0,0,",
        f"2031-02,{plan},RUB,598.00,2,0,0,0,0,0.00,0,0.00,,0,0,",
        f"2031-03,{plan},RUB,598.00,2,0,0,1,1,299.00,0,0.00,0.0000,2,1,0.5000",
    ]
async def test_plan_page_shows_scheduled_prices_and_the_subscription_its_announced_price(admin_site, operator_client) -> None:
    """Price changes (docs/decisions/0120): the plan's scheduled prices, a subscriber's announced one, the action's button."""
    effective = datetime(2027, 2, 1, 9, 0, tzinfo=timezone.utc)
    changes = f'[{{"change_id": "{uuid.uuid4()}", "price_minor": 179000, "effective_at": "{effective.isoformat()}", "grandfather": true}}]'
    plan = await admin_site.insert("plan", price_changes=changes)
    page = body(await get(admin_site, operator_client, f"/admin/billing/plan/{plan['plan_id']}/change/"))
    assert f"1{NBSP}790,00{NBSP}₽ from 2027-02-01 12:00 MSK" in page and "existing subscribers keep their price" in page
    assert "act-price-change" in page
    form = body(await get(admin_site, operator_client, f"/admin/billing/plan/{plan['plan_id']}/price-change/"))
    assert "effective_at" in form and "grandfather" in form

    user_id = f"user-{uuid.uuid4().hex[:12]}"
    sub = await admin_site.insert("subscription", user_id=user_id, plan_id=plan["plan_id"], plan_name=plan["name"],
                                  upcoming_price_minor=179000, upcoming_price_at=effective)
    page = body(await get(admin_site, operator_client, f"/admin/billing/subscription/{sub['subscription_id']}/change/"))
    assert f"1{NBSP}790,00{NBSP}₽ from the renewal on 2027-02-01 12:00 MSK" in page
