"""Every command API endpoint against the real app, Kafka and PostgreSQL (read models seeded)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from rules.refunds import refund_amount
from schemas import account_stream, derived_id, parse_envelope
from tests.fixtures.command_api import new_user, published_commands


def _is_problem(response, status: int) -> dict:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status and body["type"] and body["title"]
    return body


async def _one_published(api, settings, command_id: str):  # type: ignore[no-untyped-def]
    records = await published_commands(settings, api.topic, lambda e: e["id"] == command_id)
    assert len(records) == 1
    return records[0]


# ----------------------------------------------------------------------------- plans


async def test_plans_lists_plans_on_sale_only(api, seed):
    on_sale = await seed.plan(price_minor=12345)
    archived = await seed.plan(archived=True)
    response = await api.client.get("/v1/plans", headers=api.auth(new_user()))
    assert response.status_code == 200
    items = {p["plan_id"]: p for p in response.json()["items"]}
    assert archived["plan_id"] not in items
    assert items[on_sale["plan_id"]]["price"] == {"amount": "123.45", "currency": "RUB"}
    assert items[on_sale["plan_id"]]["period_days"] == 30


# ----------------------------------------------------------------------------- purchase


async def test_purchase_publishes_the_command_after_the_ack(api, seed, settings):
    user, plan = new_user(), await seed.plan()
    request_id = f"req-{uuid.uuid4().hex}"
    headers = {**api.command(user, email="anna@example.com", locale="ru"), "X-Request-ID": request_id}
    response = await api.client.post("/v1/subscriptions", json={"plan_id": plan["plan_id"], "auto_renew": False}, headers=headers)
    assert response.status_code == 202
    body = response.json()
    assert body == {
        "command_id": body["command_id"], "status": "accepted", "command_type": "PurchaseSubscription",
        "outcome": None, "code": None, "reason": None,
    }
    assert response.headers["Location"] == f"/v1/commands/{body['command_id']}"
    assert response.headers["X-Request-ID"] == request_id

    key, raw, kafka_headers = await _one_published(api, settings, body["command_id"])
    envelope = parse_envelope(raw)
    assert key == user.encode()
    assert kafka_headers["correlation_id"] == request_id.encode()
    assert envelope.type == "PurchaseSubscription" and envelope.stream_id == f"account-{user}"
    assert str(envelope.metadata.command_id) == body["command_id"]
    assert envelope.metadata.actor.kind == "user" and envelope.metadata.actor.id == user
    assert envelope.data.subscription_id == derived_id("subscription", envelope.id)
    assert envelope.data.plan_id == plan["plan_id"] and envelope.data.auto_renew is False
    assert envelope.data.customer.email == "anna@example.com" and envelope.data.customer.locale == "ru"


@pytest.mark.parametrize("archived", [False, True], ids=["unknown", "archived"])
async def test_purchase_of_a_plan_not_on_sale_is_a_fast_422(api, seed, settings, archived):
    user = new_user()
    plan_id = (await seed.plan(archived=True))["plan_id"] if archived else f"nope-{uuid.uuid4().hex[:8]}"
    response = await api.client.post("/v1/subscriptions", json={"plan_id": plan_id}, headers=api.command(user))
    assert _is_problem(response, 422)["type"].endswith("/plan-not-available")
    assert not await published_commands(settings, api.topic, lambda e: e["stream_id"] == f"account-{user}", expect=0)


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"plan_id": ""},
        {"plan_id": "UPPER"},
        {"plan_id": "a\u0000b"},
        {"plan_id": "basic", "auto_renew": "maybe"},
        {"plan_id": "basic", "extra": 1},
        ["plan_id"],
        "plan",
        {"plan_id": "x" * 65},
    ],
)
async def test_invalid_bodies_are_422_problems(api, body):
    response = await api.client.post("/v1/subscriptions", json=body, headers=api.command(new_user()))
    problem = _is_problem(response, 422)
    assert problem["type"].endswith("/validation-error") and problem["errors"]


async def test_malformed_json_and_odd_content_types_are_problems_not_500(api):
    headers = api.command(new_user())
    for content, content_type in (
        (b"{not json", "application/json"),
        (b"\xff\xfe\x00", "application/json"),
        (b'{"plan_id": "\\ud800"}', "application/json"),
        (b"plan_id=basic", "application/x-www-form-urlencoded"),
        (b"", "application/json"),
    ):
        response = await api.client.post("/v1/subscriptions", content=content, headers={**headers, "Content-Type": content_type})
        assert 400 <= response.status_code < 500, (content, response.status_code, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")


# ----------------------------------------------------------------------------- subscriptions


async def test_subscriptions_list_detail_and_pagination(api, seed):
    user, plan = new_user(), await seed.plan()
    subs = [await seed.subscription(user, plan, status=s) for s in ("active", "canceled", "expired")]
    payment = await seed.payment(subs[0])
    refund = await seed.refund(payment, 1000)
    await seed.subscription(new_user(), plan)  # someone else's

    listed = await api.client.get("/v1/subscriptions", headers=api.auth(user))
    assert listed.status_code == 200
    assert {s["subscription_id"] for s in listed.json()["items"]} == {str(s["subscription_id"]) for s in subs}
    page = await api.client.get("/v1/subscriptions?limit=2&offset=2", headers=api.auth(user))
    assert len(page.json()["items"]) == 1 and page.json()["limit"] == 2
    active = await api.client.get("/v1/subscriptions?status=active", headers=api.auth(user))
    assert [s["status"] for s in active.json()["items"]] == ["active"]
    assert (await api.client.get("/v1/subscriptions?status=bogus", headers=api.auth(user))).status_code == 422
    assert (await api.client.get("/v1/subscriptions?limit=0", headers=api.auth(user))).status_code == 422

    detail = await api.client.get(f"/v1/subscriptions/{subs[0]['subscription_id']}", headers=api.auth(user))
    assert detail.status_code == 200
    body = detail.json()
    assert body["status"] == "active" and body["price"] == {"amount": "299.00", "currency": "RUB"}
    assert [p["payment_id"] for p in body["payments"]] == [str(payment["payment_id"])]
    assert [r["refund_id"] for r in body["refunds"]] == [str(refund["refund_id"])]
    assert body["refunds"][0]["amount"] == {"amount": "10.00", "currency": "RUB"}
    # the detail's payments and refunds read exactly like the lists' (same fields, same timestamps)
    payments = (await api.client.get("/v1/payments", headers=api.auth(user))).json()["items"]
    refunds = (await api.client.get("/v1/refunds", headers=api.auth(user))).json()["items"]
    assert body["payments"] == [p for p in payments if p["payment_id"] == str(payment["payment_id"])]
    assert body["refunds"] == [r for r in refunds if r["refund_id"] == str(refund["refund_id"])]

    missing = await api.client.get(f"/v1/subscriptions/{uuid.uuid4()}", headers=api.auth(user))
    _is_problem(missing, 404)
    _is_problem(await api.client.get("/v1/subscriptions/not-a-uuid", headers=api.auth(user)), 422)


async def _project(engine, user: str, subscription_id, status: str) -> None:  # type: ignore[no-untyped-def]
    """What the projector does when an account event arrives: the row and the stream's version, together."""
    from sqlalchemy import text

    async with engine.begin() as conn:
        await conn.execute(text("UPDATE read.subscriptions SET status = :s WHERE subscription_id = :id"),
                           {"s": status, "id": subscription_id})
        await conn.execute(text(
            "INSERT INTO projector.stream_positions (stream_id, version) VALUES (:stream, 1) "
            "ON CONFLICT (stream_id) DO UPDATE SET version = projector.stream_positions.version + 1"),
            {"stream": account_stream(user)})


async def test_subscription_detail_is_conditional_and_long_polls_for_a_change(api, seed, engine):
    user, plan = new_user(), await seed.plan()
    sub = await seed.subscription(user, plan, status="pending_payment")
    path = f"/v1/subscriptions/{sub['subscription_id']}"
    first = await api.client.get(path, headers=api.auth(user))
    etag = first.headers["ETag"]
    assert first.status_code == 200 and first.json()["status"] == "pending_payment" and etag.startswith('"')

    same = await api.client.get(path, headers={**api.auth(user), "If-None-Match": etag})
    assert same.status_code == 304 and same.headers["ETag"] == etag and not same.content

    # Nothing changes: the wait ends in a 304 after about the asked time.
    loop = asyncio.get_running_loop()
    started = loop.time()
    idle = await api.client.get(path, headers={**api.auth(user), "If-None-Match": etag, "Prefer": "wait=1"})
    assert idle.status_code == 304 and idle.headers["Preference-Applied"] == "wait=1"
    assert 0.9 <= loop.time() - started < 3

    # The payment settles while the client waits: the answer comes with the change, not at the timeout.
    async def activated_soon() -> None:
        await asyncio.sleep(0.4)
        await _project(engine, user, sub["subscription_id"], "active")

    change = asyncio.create_task(activated_soon())
    started = loop.time()
    changed = await api.client.get(path, headers={**api.auth(user), "If-None-Match": etag, "Prefer": "wait=8"})
    await change
    assert changed.status_code == 200 and changed.json()["status"] == "active"
    assert changed.headers["ETag"] != etag
    assert loop.time() - started < 4

    # Another user's subscription stays a 404 however the request is phrased.
    other = await api.client.get(path, headers={**api.auth(new_user()), "If-None-Match": "*", "Prefer": "wait=1"})
    _is_problem(other, 404)


@pytest.mark.parametrize(
    ("path", "body", "command_type", "fields"),
    [
        ("cancel", {"mode": "refund_now"}, "CancelSubscription", {"mode": "refund_now"}),
        ("cancel", {"mode": "at_period_end"}, "CancelSubscription", {"mode": "at_period_end"}),
        ("auto-renew", {"enabled": False}, "SetAutoRenew", {"enabled": False}),
    ],
)
async def test_cancel_and_auto_renew_publish_commands(api, seed, settings, path, body, command_type, fields):
    user, plan = new_user(), await seed.plan()
    sub = await seed.subscription(user, plan)
    response = await api.client.post(f"/v1/subscriptions/{sub['subscription_id']}/{path}", json=body, headers=api.command(user))
    assert response.status_code == 202 and response.json()["command_type"] == command_type
    key, envelope, _ = await _one_published(api, settings, response.json()["command_id"])
    assert key == user.encode() and envelope["type"] == command_type
    assert envelope["data"]["subscription_id"] == str(sub["subscription_id"])
    assert {k: envelope["data"][k] for k in fields} == fields
    _is_problem(
        await api.client.post(f"/v1/subscriptions/{sub['subscription_id']}/cancel", json={"mode": "later"}, headers=api.command(user)),
        422,
    )


async def test_switch_publishes_a_switch_command_and_refuses_an_unknown_plan(api, seed, settings):
    user, plan, yearly = new_user(), await seed.plan(), await seed.plan(price_minor=299000, period_days=365)
    sub = await seed.subscription(user, plan)
    path = f"/v1/subscriptions/{sub['subscription_id']}/switch"
    response = await api.client.post(path, json={"plan_id": yearly["plan_id"]}, headers=api.command(user))
    assert response.status_code == 202 and response.json()["command_type"] == "SwitchPlan"
    key, envelope, _ = await _one_published(api, settings, response.json()["command_id"])
    assert key == user.encode() and envelope["type"] == "SwitchPlan"
    assert envelope["data"] == {"subscription_id": str(sub["subscription_id"]), "plan_id": yearly["plan_id"], "return_url": None}
    missing = _is_problem(await api.client.post(path, json={"plan_id": "no-such-plan"}, headers=api.command(user)), 404)
    assert missing["code"] == "plan_not_found"
    _is_problem(await api.client.post(path, json={"plan_id": yearly["plan_id"]}, headers=api.command(new_user())), 404)


async def test_card_replacement_publishes_a_command_for_a_live_subscription_and_is_a_409_otherwise(api, seed, settings):
    user, plan = new_user(), await seed.plan()
    sub = await seed.subscription(user, plan)
    response = await api.client.post(f"/v1/subscriptions/{sub['subscription_id']}/payment-method", json={}, headers=api.command(user))
    assert response.status_code == 202 and response.json()["command_type"] == "ReplacePaymentMethod"
    key, envelope, _ = await _one_published(api, settings, response.json()["command_id"])
    assert key == user.encode() and envelope["data"]["subscription_id"] == str(sub["subscription_id"])

    ended = await seed.subscription(user, plan, status="canceled")
    problem = _is_problem(
        await api.client.post(f"/v1/subscriptions/{ended['subscription_id']}/payment-method", json={}, headers=api.command(user)), 409
    )
    assert "canceled" in problem["detail"]
    _is_problem(await api.client.post(f"/v1/subscriptions/{uuid.uuid4()}/payment-method", json={}, headers=api.command(user)), 404)


async def test_refund_quote_matches_the_shared_refund_function(api, seed):
    user, plan = new_user(), await seed.plan(price_minor=29900, period_days=30)
    paid_at = datetime.now(timezone.utc) - timedelta(days=2, hours=3)
    sub = await seed.subscription(user, plan, paid_at=paid_at)
    payment = await seed.payment(sub, paid_at=paid_at)
    await seed.refund(payment, 500)
    await seed.refund(payment, 700, status="canceled")  # a canceled refund gave nothing back

    response = await api.client.get(f"/v1/subscriptions/{sub['subscription_id']}/refund-quote", headers=api.auth(user))
    assert response.status_code == 200
    quote = response.json()
    expected = refund_amount(29900, paid_at, 30, datetime.fromisoformat(quote["quoted_at"]), 500)
    assert expected.days_used == 3  # two whole days and a started third
    assert quote["days_used"] == 3 and quote["days_in_period"] == 30
    assert quote["amount"] == {"amount": f"{expected.amount_minor / 100:.2f}", "currency": "RUB"}
    assert quote["amount"]["amount"] == "269.10"  # 29900 * 27 / 30 = 26910, under the 29400 left
    assert quote["already_refunded"]["amount"] == "5.00" and quote["refundable"] is True


async def test_refund_quote_is_zero_for_subscriptions_that_cannot_be_refunded(api, seed):
    user, plan = new_user(), await seed.plan()
    pending = await seed.subscription(user, plan, status="pending_payment")
    canceled = await seed.subscription(user, plan, status="canceled")
    await seed.payment(canceled)
    for sub in (pending, canceled):
        quote = (await api.client.get(f"/v1/subscriptions/{sub['subscription_id']}/refund-quote", headers=api.auth(user))).json()
        assert quote["amount"]["amount"] == "0.00" and quote["refundable"] is False


# ----------------------------------------------------------------------------- payments, refunds


async def test_payments_and_refunds(api, seed):
    user, plan = new_user(), await seed.plan()
    sub = await seed.subscription(user, plan)
    payments = [await seed.payment(sub), await seed.payment(sub, status="canceled")]
    refund = await seed.refund(payments[0], 2990)
    listed = await api.client.get("/v1/payments", headers=api.auth(user))
    assert {p["payment_id"] for p in listed.json()["items"]} == {str(p["payment_id"]) for p in payments}
    one = await api.client.get(f"/v1/payments/{payments[1]['payment_id']}", headers=api.auth(user))
    assert one.status_code == 200 and one.json()["status"] == "canceled" and one.json()["paid_at"] is None
    _is_problem(await api.client.get(f"/v1/payments/{uuid.uuid4()}", headers=api.auth(user)), 404)
    refunds = await api.client.get("/v1/refunds", headers=api.auth(user))
    assert [r["refund_id"] for r in refunds.json()["items"]] == [str(refund["refund_id"])]
    assert refunds.json()["items"][0]["amount"]["amount"] == "29.90"


# ----------------------------------------------------------------------------- command status


@pytest.mark.parametrize(
    ("status", "extra"),
    [
        ("processing", {}),
        ("succeeded", {"outcome": {"subscription_id": str(uuid.uuid4()), "confirmation_url": "http://pay.test/x"}}),
        ("rejected", {"code": "plan_archived", "reason": "the plan is no longer on sale"}),
        ("failed", {"reason": "YooKassa kept failing"}),
    ],
)
async def test_command_status_from_the_read_model(api, seed, status, extra):
    user = new_user()
    command_id = uuid.uuid4()
    await seed.command(command_id, user, status=status, command_type="PurchaseSubscription", **extra)
    response = await api.client.get(f"/v1/commands/{command_id}", headers=api.auth(user))
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == status and body["command_type"] == "PurchaseSubscription"
    if "outcome" in extra:
        assert body["outcome"]["confirmation_url"] == "http://pay.test/x"
    assert body["reason"] == extra.get("reason") and body["code"] == extra.get("code")
    _is_problem(await api.client.get(f"/v1/commands/{command_id}", headers=api.auth(new_user())), 404)
    _is_problem(await api.client.get(f"/v1/commands/{uuid.uuid4()}", headers=api.auth(user)), 404)


async def test_prefer_wait_answers_the_outcome_when_it_arrives(api, seed):
    user, plan = new_user(), await seed.plan()
    headers = {**api.command(user), "Prefer": "wait=2"}
    command_id = derived_id("command", user, headers["Idempotency-Key"])

    async def processor_finishes() -> None:
        await asyncio.sleep(0.3)  # the "processor" answers a little after the API published
        await seed.command(command_id, user, status="processing", command_type="PurchaseSubscription")
        await asyncio.sleep(0.2)
        await seed.command(
            command_id, user, status="succeeded", command_type="PurchaseSubscription",
            outcome={"subscription_id": str(derived_id("subscription", command_id)), "confirmation_url": "http://pay.test/abc"},
        )

    finisher = asyncio.create_task(processor_finishes())
    started = asyncio.get_running_loop().time()
    response = await api.client.post("/v1/subscriptions", json={"plan_id": plan["plan_id"]}, headers=headers)
    await finisher
    assert response.status_code == 200, response.text
    assert response.json()["outcome"]["confirmation_url"] == "http://pay.test/abc"
    assert response.headers["Preference-Applied"] == "wait=2"
    assert asyncio.get_running_loop().time() - started < 1.8
    # the replay is the first response, outcome included
    replay = await api.client.post("/v1/subscriptions", json={"plan_id": plan["plan_id"]}, headers=headers)
    assert replay.status_code == 200 and replay.json() == response.json()


async def test_command_status_with_prefer_wait_answers_when_the_command_ends(api, seed):
    """One waiting GET instead of a polling loop: answered the moment the command ends; a command
    that does not end within the wait is answered with where it is then; others' are still 404."""
    user, operator = new_user(), api.auth("op-wait", role="operator")
    command_id = uuid.uuid4()
    await seed.command(command_id, user, status="processing", command_type="PurchaseSubscription")

    async def processor_finishes() -> None:
        await asyncio.sleep(0.4)
        await seed.command(command_id, user, status="succeeded", command_type="PurchaseSubscription",
                           outcome={"subscription_id": str(uuid.uuid4()), "confirmation_url": "http://pay.test/w"})

    finisher = asyncio.create_task(processor_finishes())
    loop = asyncio.get_running_loop()
    started = loop.time()
    response = await api.client.get(f"/v1/commands/{command_id}", headers={**api.auth(user), "Prefer": "wait=2"})
    waited = loop.time() - started
    await finisher
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "succeeded" and response.json()["outcome"]["confirmation_url"] == "http://pay.test/w"
    assert response.headers["Preference-Applied"] == "wait=2"
    assert 0.3 < waited < 1.8, waited  # answered when it ended, not at the end of the wait

    still = uuid.uuid4()
    await seed.command(still, user, status="processing", command_type="SetAutoRenew")
    started = loop.time()
    response = await api.client.get(f"/v1/commands/{still}", headers={**api.auth(user), "Prefer": "wait=1"})
    assert response.status_code == 200 and response.json()["status"] == "processing"
    assert loop.time() - started >= 0.9
    admin = await api.client.get(f"/v1/admin/commands/{still}", headers={**operator, "Prefer": "wait=1"})
    assert admin.status_code == 200 and admin.json()["status"] == "processing"
    _is_problem(await api.client.get(f"/v1/commands/{still}", headers={**api.auth(new_user()), "Prefer": "wait=1"}), 404)


async def test_prefer_wait_answers_a_rejection_as_a_problem_with_the_code_s_status(api, seed):
    user, plan = new_user(), await seed.plan()
    headers = {**api.command(user), "Prefer": "respond-async, wait=2"}
    command_id = derived_id("command", user, headers["Idempotency-Key"])

    async def reject() -> None:
        await asyncio.sleep(0.2)
        await seed.command(command_id, user, status="rejected", command_type="PurchaseSubscription",
                           code="already_subscribed", reason="you already have this plan")

    task = asyncio.create_task(reject())
    response = await api.client.post("/v1/subscriptions", json={"plan_id": plan["plan_id"]}, headers=headers)
    await task
    problem = _is_problem(response, 409)  # a conflict with the account's state (docs/decisions/0119)
    assert problem["type"].endswith("/command-rejected")
    assert problem["command_status"] == "rejected" and problem["code"] == "already_subscribed"
    assert problem["detail"] == "you already have this plan" and problem["command_id"] == str(command_id)


async def test_prefer_wait_times_out_into_a_202(api, seed):
    user, plan = new_user(), await seed.plan()
    started = asyncio.get_running_loop().time()
    response = await api.client.post(
        "/v1/subscriptions", json={"plan_id": plan["plan_id"]}, headers={**api.command(user), "Prefer": "wait=1"}
    )
    elapsed = asyncio.get_running_loop().time() - started
    assert response.status_code == 202 and response.json()["status"] == "accepted"
    assert 0.9 < elapsed < 2.5
    # more than the configured maximum is capped, not an error
    capped = await api.client.post(
        "/v1/subscriptions", json={"plan_id": plan["plan_id"]}, headers={**api.command(user), "Prefer": "wait=99999"}
    )
    assert capped.status_code == 202 and capped.headers["Preference-Applied"] == f"wait={api.settings.api_max_wait_s:g}"


# ----------------------------------------------------------------------------- operators


async def test_operator_commands(api, seed, settings):
    operator = f"op-{uuid.uuid4().hex[:6]}"
    user, plan = new_user(), await seed.plan()
    sub = await seed.subscription(user, plan)
    sid = sub["subscription_id"]
    new_plan_id = f"plan-{uuid.uuid4().hex[:8]}"
    cases = [
        (f"/v1/admin/subscriptions/{sid}/extend", {"days": 7, "reason": "outage"}, "ExtendSubscription", user,
         {"days": 7, "reason": "outage"}),
        ("/v1/admin/subscriptions/grant",
         {"user_id": user, "plan_id": plan["plan_id"], "days": 14, "email": "g@example.com", "reason": "promo"},
         "GrantSubscription", user, {"days": 14, "customer": {"email": "g@example.com", "locale": "ru"}}),
        (f"/v1/admin/subscriptions/{sid}/cancel", {"refund": True, "reason": "fraud"}, "AdminCancelSubscription", user,
         {"refund": True}),
        (f"/v1/admin/subscriptions/{sid}/refund", {"amount": {"amount": "100.00", "currency": "RUB"}, "reason": "goodwill"},
         "AdminRefund", user, {"amount": {"amount": "100.00", "currency": "RUB"}}),
        (f"/v1/admin/subscriptions/{sid}/auto-renew", {"enabled": False, "reason": "asked"}, "SetAutoRenew", user,
         {"enabled": False, "reason": "asked"}),
        ("/v1/admin/plans", {"plan_id": new_plan_id, "name": "Gold", "price": {"amount": "999.00", "currency": "RUB"},
                             "period_days": 365, "description": "all of it", "reason": "launch", "vat_code": 11,
                             "payment_mode": "full_prepayment"},
         "CreatePlan", new_plan_id, {"period_days": 365, "vat_code": 11, "payment_mode": "full_prepayment", "payment_subject": None}),
        (f"/v1/admin/plans/{plan['plan_id']}/archive", {"reason": "retired"}, "ArchivePlan", plan["plan_id"],
         {"plan_id": plan["plan_id"]}),
    ]
    for path, body, command_type, partition_key, fields in cases:
        response = await api.client.post(path, json=body, headers=api.command(operator, role="operator"))
        assert response.status_code == 202, (path, response.text)
        command_id = response.json()["command_id"]
        assert response.json()["command_type"] == command_type
        key, envelope, _ = await _one_published(api, settings, command_id)
        assert key == partition_key.encode(), path
        assert envelope["type"] == command_type and envelope["metadata"]["actor"] == {"kind": "admin", "id": operator}
        assert envelope["stream_id"] == (f"plan-{partition_key}" if "plans" in path else f"account-{user}")
        assert {k: envelope["data"][k] for k in fields} == fields, path
        if command_type == "GrantSubscription":
            assert envelope["data"]["subscription_id"] == str(derived_id("subscription", command_id))
        # the operator can follow it, through either status endpoint
        for status_path in (f"/v1/commands/{command_id}", f"/v1/admin/commands/{command_id}"):
            status = await api.client.get(status_path, headers=api.auth(operator, role="operator"))
            assert status.status_code == 200 and status.json()["status"] == "accepted"


async def test_operator_commands_on_unknown_things_are_404_or_422(api, seed):
    headers = {"role": "operator"}
    op = f"op-{uuid.uuid4().hex[:6]}"
    _is_problem(await api.client.post(f"/v1/admin/subscriptions/{uuid.uuid4()}/extend", json={"days": 1, "reason": "x"},
                                      headers=api.command(op, **headers)), 404)
    _is_problem(await api.client.post("/v1/admin/plans/no-such-plan-xyz/archive", json={"reason": "x"},
                                      headers=api.command(op, **headers)), 404)
    grant = await api.client.post("/v1/admin/subscriptions/grant",
                                  json={"user_id": "u1", "plan_id": "no-such-plan-xyz", "email": "a@b.co", "reason": "x"},
                                  headers=api.command(op, **headers))
    _is_problem(grant, 422)
    no_reason = await api.client.post("/v1/admin/plans/whatever/archive", json={}, headers=api.command(op, **headers))
    _is_problem(no_reason, 422)
    zero = await api.client.post("/v1/admin/plans", json={"plan_id": "zero", "name": "Z", "price": {"amount": "0.00"},
                                                          "period_days": 1, "reason": "x"}, headers=api.command(op, **headers))
    _is_problem(zero, 422)
    float_money = await api.client.post("/v1/admin/plans", json={"plan_id": "zero", "name": "Z", "price": {"amount": 1.5},
                                                                 "period_days": 1, "reason": "x"}, headers=api.command(op, **headers))
    _is_problem(float_money, 422)
    for wrong in ({"vat_code": 13}, {"vat_code": 0}, {"payment_subject": "subscription"}, {"payment_mode": "monthly"}):
        body = {"plan_id": "vat", "name": "V", "price": {"amount": "1.00"}, "period_days": 1, "reason": "x", **wrong}
        refused = await api.client.post("/v1/admin/plans", json=body, headers=api.command(op, **headers))
        _is_problem(refused, 422)
        assert next(iter(wrong)) in refused.text, refused.text


@pytest.mark.parametrize("amount", ["1e30", "9" * 40, "Infinity", "10000000000.00"])
async def test_operator_money_that_is_no_amount_is_a_422_with_the_reason(api, seed, amount):
    """An absurd amount used to raise InvalidOperation inside validation: a bare 500 and no reason."""
    user, plan = new_user(), await seed.plan()
    sid = (await seed.subscription(user, plan))["subscription_id"]
    op = f"op-{uuid.uuid4().hex[:6]}"
    for path, body in (
        (f"/v1/admin/subscriptions/{sid}/refund", {"amount": {"amount": amount, "currency": "RUB"}, "reason": "goodwill"}),
        ("/v1/admin/plans", {"plan_id": f"p-{uuid.uuid4().hex[:8]}", "name": "Z", "price": {"amount": amount},
                             "period_days": 30, "reason": "launch"}),
    ):
        response = await api.client.post(path, json=body, headers=api.command(op, role="operator"))
        problem = _is_problem(response, 422)
        assert problem["type"].endswith("/validation-error"), problem
        assert "amount" in problem["detail"] and ("too large" in problem["detail"] or "finite" in problem["detail"]), problem


async def test_admin_command_status_sees_any_command(api, seed):
    command_id = uuid.uuid4()
    await seed.command(command_id, new_user(), status="succeeded", command_type="SetAutoRenew")
    op = api.auth("op-x", role="operator")
    assert (await api.client.get(f"/v1/admin/commands/{command_id}", headers=op)).json()["status"] == "succeeded"
    _is_problem(await api.client.get(f"/v1/admin/commands/{uuid.uuid4()}", headers=op), 404)
    _is_problem(await api.client.get(f"/v1/admin/commands/{command_id}", headers=api.auth(new_user())), 403)


# ----------------------------------------------------------------------------- plumbing


async def test_unknown_routes_and_methods_are_problems(api):
    _is_problem(await api.client.get("/v1/nothing-here"), 404)
    _is_problem(await api.client.delete("/v1/plans", headers=api.auth(new_user())), 405)


async def test_health_readiness_metrics_and_request_ids(api):
    assert (await api.client.get("/healthz")).json() == {"status": "ok", "checks": {}}
    ready = await api.client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"postgres": "ok", "kafka": "ok"}
    response = await api.client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert response.headers["X-Request-ID"] == "abc-123"
    generated = await api.client.get("/healthz", headers={"X-Request-ID": "bad id with spaces"})
    assert generated.headers["X-Request-ID"] != "bad id with spaces" and len(generated.headers["X-Request-ID"]) == 32
    metrics = (await api.client.get("/metrics")).text
    assert 'api_http_requests_total{method="GET",route="/healthz",status="200"}' in metrics
    assert "api_commands_published_total" in metrics and "api_http_request_duration_seconds_bucket" in metrics


async def test_openapi_documents_every_route_with_examples(api):
    schema = (await api.client.get("/openapi.json")).json()
    operations = [(path, method, op) for path, item in schema["paths"].items() for method, op in item.items()]
    assert len(operations) == 33  # + payment-method, + price-changes, + 5 promo-code routes, + pay (pay now), + switch
    for path, method, op in operations:
        assert op.get("description"), (path, method)
        responses = op["responses"]
        assert any(
            "example" in content or "examples" in content or _schema_has_examples(schema, content.get("schema", {}))
            for r in responses.values() for content in r.get("content", {}).values()
        ), (path, method)
        if method == "post" and path.startswith("/v1/") and "webhooks" not in path:
            assert any(p["name"] == "Idempotency-Key" and p["required"] for p in op["parameters"]), path
            assert "202" in responses and "409" in responses and "422" in responses
            body_schema = op["requestBody"]["content"]["application/json"]["schema"]
            assert _schema_has_examples(schema, body_schema), path
        for status, response in responses.items():
            if status.startswith(("4", "5")) and path != "/readyz":
                assert "application/problem+json" in response["content"], (path, status)


def _schema_has_examples(schema: dict, node: dict) -> bool:
    if "$ref" in node:
        node = schema["components"]["schemas"][node["$ref"].rsplit("/", 1)[-1]]
    return bool(node.get("examples") or node.get("example"))


async def test_the_payment_return_page(api):
    response = await api.client.get("/v1/return?orderId=whatever")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assert "Thank you" in response.text


async def test_pay_now_publishes_for_a_past_due_subscription_and_refuses_otherwise(api, seed, settings):
    user, plan = new_user(), await seed.plan()
    overdue = await seed.subscription(user, plan, status="past_due")
    response = await api.client.post(f"/v1/subscriptions/{overdue['subscription_id']}/pay", json={}, headers=api.command(user))
    assert response.status_code == 202 and response.json()["command_type"] == "PayOverdueSubscription"
    key, envelope, _ = await _one_published(api, settings, response.json()["command_id"])
    assert key == user.encode() and envelope["data"]["subscription_id"] == str(overdue["subscription_id"])
    # an active one is a 409 with the code, without publishing anything
    active = await seed.subscription(user, plan)
    conflict = _is_problem(await api.client.post(f"/v1/subscriptions/{active['subscription_id']}/pay", json={}, headers=api.command(user)), 409)
    assert conflict["code"] == "not_past_due"
    # someone else's or no subscription: 404
    _is_problem(await api.client.post(f"/v1/subscriptions/{overdue['subscription_id']}/pay", json={}, headers=api.command(new_user())), 404)
    _is_problem(await api.client.post(f"/v1/subscriptions/{uuid.uuid4()}/pay", json={}, headers=api.command(user)), 404)


async def test_pay_now_rejected_by_the_processor_is_a_409_when_waited_for(api, seed):
    user, plan = new_user(), await seed.plan()
    overdue = await seed.subscription(user, plan, status="past_due")
    headers = {**api.command(user), "Prefer": "wait=2"}
    command_id = derived_id("command", user, headers["Idempotency-Key"])

    async def reject() -> None:
        await asyncio.sleep(0.2)
        await seed.command(command_id, user, status="rejected", command_type="PayOverdueSubscription",
                           code="renewal_in_progress", reason="an automatic renewal charge is in progress")

    task = asyncio.create_task(reject())
    response = await api.client.post(f"/v1/subscriptions/{overdue['subscription_id']}/pay", json={}, headers=headers)
    await task
    problem = _is_problem(response, 409)
    assert problem["code"] == "renewal_in_progress" and problem["command_status"] == "rejected"


# ----------------------------------------------------------------------------- price changes (docs/decisions/0120)


async def test_a_price_change_is_scheduled_through_the_api_and_plans_show_it(api, seed, settings):
    from sqlalchemy import text

    operator = f"op-{uuid.uuid4().hex[:6]}"
    plan = await seed.plan(price_minor=29900)
    effective = datetime.now(timezone.utc) + timedelta(days=40)
    body = {"price": {"amount": "349.00", "currency": "RUB"}, "effective_at": effective.isoformat(), "grandfather": True, "reason": "costs"}
    response = await api.client.post(f"/v1/admin/plans/{plan['plan_id']}/price-changes", json=body, headers=api.command(operator, role="operator"))
    assert response.status_code == 202, response.text
    key, envelope, _ = await _one_published(api, settings, response.json()["command_id"])
    assert key == plan["plan_id"].encode() and envelope["type"] == "SchedulePriceChange"
    assert envelope["stream_id"] == f"plan-{plan['plan_id']}" and envelope["metadata"]["actor"] == {"kind": "admin", "id": operator}
    assert (envelope["data"]["price"], envelope["data"]["grandfather"]) == ({"amount": "349.00", "currency": "RUB"}, True)

    # what the projector writes once it is scheduled: one change in effect, one ahead
    past, ahead = datetime.now(timezone.utc) - timedelta(days=1), effective
    changes = f'[{{"change_id": "{uuid.uuid4()}", "price_minor": 31900, "effective_at": "{past.isoformat()}", "grandfather": false}},' \
              f' {{"change_id": "{uuid.uuid4()}", "price_minor": 34900, "effective_at": "{ahead.isoformat()}", "grandfather": true}}]'
    async with seed.engine.begin() as conn:
        await conn.execute(text("UPDATE read.plans SET price_changes = CAST(:c AS jsonb) WHERE plan_id = :p"), {"c": changes, "p": plan["plan_id"]})
    listed = {p["plan_id"]: p for p in (await api.client.get("/v1/plans", headers=api.auth(new_user()))).json()["items"]}
    shown = listed[plan["plan_id"]]
    assert shown["price"] == {"amount": "319.00", "currency": "RUB"}  # the change in effect, not the created price
    assert shown["scheduled_change"]["price"] == {"amount": "349.00", "currency": "RUB"}
    assert shown["scheduled_change"]["grandfather"] is True
    assert datetime.fromisoformat(shown["scheduled_change"]["effective_at"].replace("Z", "+00:00")) == ahead

    # the same price then, a date not in the future, an archived or unknown plan: problem+json, nothing published
    same = {**body, "price": {"amount": "349.00", "currency": "RUB"}, "effective_at": (ahead + timedelta(days=1)).isoformat()}
    assert _is_problem(await api.client.post(f"/v1/admin/plans/{plan['plan_id']}/price-changes", json=same,
                                             headers=api.command(operator, role="operator")), 422)["type"].endswith("same-price")
    past_body = {**body, "effective_at": past.isoformat()}
    _is_problem(await api.client.post(f"/v1/admin/plans/{plan['plan_id']}/price-changes", json=past_body,
                                      headers=api.command(operator, role="operator")), 422)
    archived = await seed.plan(archived=True)
    _is_problem(await api.client.post(f"/v1/admin/plans/{archived['plan_id']}/price-changes", json=body,
                                      headers=api.command(operator, role="operator")), 422)
    _is_problem(await api.client.post("/v1/admin/plans/no-such-plan-xyz/price-changes", json=body,
                                      headers=api.command(operator, role="operator")), 404)
    naive = {**body, "effective_at": "2030-01-01T00:00:00"}
    _is_problem(await api.client.post(f"/v1/admin/plans/{plan['plan_id']}/price-changes", json=naive,
                                      headers=api.command(operator, role="operator")), 422)
    # a user is not an operator
    _is_problem(await api.client.post(f"/v1/admin/plans/{plan['plan_id']}/price-changes", json=body, headers=api.command(new_user())), 403)
