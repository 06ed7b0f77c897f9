"""YooKassa notifications through the real API app: trust, parsing, routing, de-duplication."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest

from command_api.entrypoints.app import create_app
from tests.fixtures.command_api import api_settings_for, new_user, published_commands

WEBHOOK = "/v1/webhooks/yookassa"
YOOKASSA_ADDRESS = "185.71.76.5"  # inside YooKassa's published 185.71.76.0/27


def notification(event: str = "payment.succeeded", *, object_id: str | None = None, status: str = "succeeded",
                 user_id: str | None = None, **extra: object) -> dict:
    obj: dict = {"id": object_id or str(uuid.uuid4()), "status": status, "paid": status == "succeeded",
                 "amount": {"value": "299.00", "currency": "RUB"}, "created_at": "2026-11-26T10:00:00.000Z", **extra}
    if user_id is not None:
        obj["metadata"] = {"user_id": user_id}
    return {"type": "notification", "event": event, "object": obj}


def _about(object_id: str):  # type: ignore[no-untyped-def]
    return lambda e: object_id in (e["data"].get("provider_payment_id"), e["data"].get("provider_refund_id"))


async def test_a_payment_notification_becomes_one_sync_payment(api, settings):
    user = new_user()
    body = notification(user_id=user)
    object_id = body["object"]["id"]
    async with api.client_from(YOOKASSA_ADDRESS) as yookassa:
        first = await yookassa.post(WEBHOOK, json=body)
        duplicate = await yookassa.post(WEBHOOK, json=body)
    assert first.status_code == duplicate.status_code == 200
    assert first.json()["status"] == "accepted"
    expected_id = first.json()["command_id"]
    assert duplicate.json()["command_id"] == expected_id

    records = await published_commands(settings, api.topic, _about(object_id), timeout=3)
    assert [r[1]["id"] for r in records] == [expected_id]  # the duplicate is the same command, not sent again
    key, envelope, _ = records[0]
    assert key == user.encode() and envelope["stream_id"] == f"account-{user}"
    assert envelope["type"] == "SyncPayment"
    assert envelope["metadata"]["actor"] == {"kind": "provider", "id": "yookassa"}
    assert envelope["data"] == {"payment_id": None, "provider_payment_id": object_id, "hint_status": "succeeded"}


async def test_another_status_of_the_same_payment_is_another_command(api):
    body = notification(user_id=new_user(), status="waiting_for_capture", event="payment.waiting_for_capture")
    async with api.client_from(YOOKASSA_ADDRESS) as yookassa:
        waiting = (await yookassa.post(WEBHOOK, json=body)).json()["command_id"]
        body["event"], body["object"]["status"] = "payment.canceled", "canceled"
        canceled = (await yookassa.post(WEBHOOK, json=body)).json()["command_id"]
    assert waiting != canceled


async def test_routing_prefers_our_own_records_over_the_body(api, seed, settings):
    """A body naming another user does not move the sync to that user's account."""
    owner, plan = new_user(), await seed.plan()
    sub = await seed.subscription(owner, plan)
    provider_id = str(uuid.uuid4())
    payment = await seed.payment(sub, status="pending", provider_payment_id=provider_id)
    async with api.client_from(YOOKASSA_ADDRESS) as yookassa:
        response = await yookassa.post(WEBHOOK, json=notification(object_id=provider_id, user_id="somebody-else"))
    assert response.status_code == 200
    [(key, envelope, _)] = await published_commands(settings, api.topic, _about(provider_id))
    assert key == owner.encode() and envelope["data"]["payment_id"] == str(payment["payment_id"])


async def test_a_refund_notification_is_routed_through_its_payment(api, seed, settings):
    owner, plan = new_user(), await seed.plan()
    sub = await seed.subscription(owner, plan)
    payment_provider_id = str(uuid.uuid4())
    await seed.payment(sub, provider_payment_id=payment_provider_id)
    refund_provider_id = str(uuid.uuid4())
    body = {"type": "notification", "event": "refund.succeeded",
            "object": {"id": refund_provider_id, "payment_id": payment_provider_id, "status": "succeeded",
                       "amount": {"value": "100.00", "currency": "RUB"}, "created_at": "2026-11-26T10:00:00.000Z"}}
    async with api.client_from(YOOKASSA_ADDRESS) as yookassa:
        response = await yookassa.post(WEBHOOK, json=body)
    assert response.status_code == 200 and response.json()["status"] == "accepted"
    [(key, envelope, _)] = await published_commands(settings, api.topic, _about(refund_provider_id))
    assert key == owner.encode() and envelope["type"] == "SyncRefund"
    assert envelope["data"]["provider_refund_id"] == refund_provider_id


async def test_an_unknown_payment_without_metadata_is_acknowledged_and_ignored(api, settings):
    body = notification()  # no metadata, and we never saw this payment
    async with api.client_from(YOOKASSA_ADDRESS) as yookassa:
        response = await yookassa.post(WEBHOOK, json=body)
    assert response.status_code == 200 and response.json() == {"status": "ignored", "command_id": None}
    assert not await published_commands(settings, api.topic, _about(body["object"]["id"]), expect=0)


async def test_events_we_do_not_handle_are_acknowledged(api):
    body = {"type": "notification", "event": "payout.succeeded", "object": {"id": "po-1", "status": "succeeded"}}
    async with api.client_from(YOOKASSA_ADDRESS) as yookassa:
        response = await yookassa.post(WEBHOOK, json=body)
    assert response.status_code == 200 and response.json()["status"] == "ignored"


async def test_an_untrusted_sender_gets_403_and_nothing_happens(api, settings):
    body = notification(user_id=new_user())
    async with api.client_from("203.0.113.7") as stranger:
        response = await stranger.post(WEBHOOK, json=body)
        # X-Forwarded-For is not believed from a peer that is not a configured proxy
        spoofed = await stranger.post(WEBHOOK, json=body, headers={"X-Forwarded-For": YOOKASSA_ADDRESS})
    for r in (response, spoofed):
        assert r.status_code == 403
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["type"].endswith("/untrusted-sender")
    assert not await published_commands(settings, api.topic, _about(body["object"]["id"]), expect=0)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"{not json",
        b"[]",
        b'{"type": "notification"}',
        b'{"type": "refund", "event": "payment.succeeded", "object": {"id": "x"}}',
        b'{"type": "notification", "event": "payment.succeeded", "object": {}}',
        b'{"type": "notification", "event": "payment.succeeded", "object": "text"}',
        b'{"type": "notification", "event": "payment.succeeded", "object": {"id": "../../etc", "status": "succeeded"}}',
        b'{"type": "notification", "event": "payment.succeeded", "object": {"id": 5, "status": [1], "amount": "zz"}}',
        b'{"type": "notification", "event": 7, "object": {"id": "x"}}',
        b'{"type": "notification", "event": "payment.succeeded", "object": {"id": "2d4b8a1c-000f-5000-9000-1a2b3c4d5e6f", "status": "succeeded", "metadata": {"user_id": "a b\\u0000"}}}',
        b'{"type": "notification", "event": "payment.succeeded", "object": {"id": "2d4b8a1c-000f-5000-9000-1a2b3c4d5e6f", "status": "SUCCEEDED!"}}',
        b"x" * 60_000,  # larger bodies never get here: the API answers 413 (test_api_edge.py)
    ],
)
async def test_a_bad_body_is_400_and_changes_nothing(api, settings, raw):
    async with api.client_from(YOOKASSA_ADDRESS) as yookassa:
        response = await yookassa.post(WEBHOOK, content=raw, headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["type"].endswith("/bad-notification")


async def test_forwarded_for_is_believed_only_from_trusted_proxies(settings, engine, api_topic):
    proxied = api_settings_for(settings, api_topic, api_trusted_proxies="10.0.0.0/8")
    app = create_app(proxied)
    body = notification(user_id=new_user())
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, client=("10.1.2.3", 5000)), base_url="http://api.test"
        ) as proxy:
            # the proxy says the original sender is YooKassa (the last hop before our proxies)
            ok = await proxy.post(WEBHOOK, json=body, headers={"X-Forwarded-For": f"198.51.100.1, {YOOKASSA_ADDRESS}"})
            assert ok.status_code == 200
            # a client-supplied first hop cannot hide an untrusted last hop
            bad = await proxy.post(WEBHOOK, json=body, headers={"X-Forwarded-For": f"{YOOKASSA_ADDRESS}, 198.51.100.1"})
            assert bad.status_code == 403
            # and without the header the proxy itself is judged (it is not YooKassa)
            assert (await proxy.post(WEBHOOK, json=body)).status_code == 403


async def test_a_forged_first_forwarded_for_line_does_not_hide_the_hop_our_proxy_appended(settings, engine, api_topic):
    """A proxy that appends its own X-Forwarded-For line: every line counts, the last hop is judged."""
    proxied = api_settings_for(settings, api_topic, api_trusted_proxies="10.0.0.0/8")
    app = create_app(proxied)
    body = notification(user_id=new_user())
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, client=("10.1.2.3", 5000)), base_url="http://api.test"
        ) as proxy:
            # the client sent the first line itself; our proxy appended the address it really saw
            forged = await proxy.post(WEBHOOK, json=body, headers=[
                ("X-Forwarded-For", YOOKASSA_ADDRESS), ("X-Forwarded-For", "198.51.100.1"),
            ])
            assert forged.status_code == 403, forged.text
            assert forged.json()["type"].endswith("/untrusted-sender")
            # YooKassa behind the same proxy: the appended line is YooKassa's address
            honest = await proxy.post(WEBHOOK, json=body, headers=[
                ("X-Forwarded-For", "198.51.100.1"), ("X-Forwarded-For", YOOKASSA_ADDRESS),
            ])
            assert honest.status_code == 200, honest.text
    assert not await published_commands(settings, api_topic, lambda e: False, expect=0, timeout=0.5)


@pytest.mark.parametrize(
    ("hops", "lines", "expected"),
    [
        # one proxy: the last entry is what it saw
        (1, [YOOKASSA_ADDRESS], 200),
        (1, [YOOKASSA_ADDRESS, "198.51.100.1"], 403),
        (1, ["198.51.100.1", YOOKASSA_ADDRESS], 200),
        # two proxies: the last entry is the outer proxy, the one before it the sender
        (2, [f"{YOOKASSA_ADDRESS}, 198.51.100.1", "10.9.9.9"], 403),
        (2, ["198.51.100.1", f"{YOOKASSA_ADDRESS}, 10.9.9.9"], 200),
        # a chain shorter than the configured proxies cannot say who sent it
        (2, [YOOKASSA_ADDRESS], 403),
        (1, [], 403),
    ],
)
async def test_a_configured_number_of_proxy_hops_is_skipped_and_no_more(settings, engine, api_topic, hops, lines, expected):
    proxied = api_settings_for(settings, api_topic, api_trusted_proxy_hops=hops)
    app = create_app(proxied)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, client=("10.1.2.3", 5000)), base_url="http://api.test"
        ) as proxy:
            response = await proxy.post(
                WEBHOOK, json=notification(user_id=new_user()), headers=[("X-Forwarded-For", line) for line in lines]
            )
    assert response.status_code == expected, response.text


async def test_without_a_configured_proxy_forwarded_for_is_ignored(api):
    """The session app has no proxy configured: the socket peer is judged, whatever the header says."""
    body = notification(user_id=new_user())
    async with api.client_from(YOOKASSA_ADDRESS) as yookassa:
        ok = await yookassa.post(WEBHOOK, json=body, headers=[("X-Forwarded-For", "198.51.100.1")] * 2)
    async with api.client_from("198.51.100.1") as stranger:
        refused = await stranger.post(WEBHOOK, json=body, headers=[("X-Forwarded-For", YOOKASSA_ADDRESS)] * 2)
    assert ok.status_code == 200 and refused.status_code == 403


async def test_a_flood_of_notifications_about_one_payment_makes_a_bounded_number_of_commands(api, settings):
    """100 notifications about one payment (repeats, concurrent repeats, made-up statuses) → at most
    one command per event and time window, published once: the processor is not made to end
    (and log) a hundred commands, nor to re-read the payment a hundred times."""
    user = new_user()
    object_id = str(uuid.uuid4())
    bodies = [notification(object_id=object_id, user_id=user) for _ in range(40)]
    bodies += [notification(object_id=object_id, user_id=user, status="forged_" + "".join(chr(97 + int(d)) for d in f"{i:02d}"))
               for i in range(60)]
    async with api.client_from(YOOKASSA_ADDRESS) as yookassa:
        sequential = [await yookassa.post(WEBHOOK, json=b) for b in bodies[:50]]
        concurrent = await asyncio.gather(*(yookassa.post(WEBHOOK, json=b) for b in bodies[50:]))
    responses = sequential + list(concurrent)
    assert all(r.status_code == 200 and r.json()["status"] == "accepted" for r in responses)
    command_ids = {r.json()["command_id"] for r in responses}
    assert len(command_ids) <= 2  # one, or two when the run straddles the edge of a time window

    records = await published_commands(settings, api.topic, _about(object_id), expect=len(command_ids), timeout=3)
    assert {r[1]["id"] for r in records} == command_ids
    assert len(records) <= 2  # repeats of a published command are not published again
