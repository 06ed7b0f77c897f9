"""Operator actions end to end: admin form → real command API process → Kafka `billing.commands`.

The admin runs in-process (Django's test client); the command API is the real `python -m
command_api` on the same fresh database, publishing to a topic of its own. Each action must
reach Kafka as the right command envelope with actor {kind: admin, id: <operator>} and the
operator's reason; a double submit must be one command; the operator must see a rejection's
reason, a command's end on the status page, and "outcome unknown" (with the same key kept) when
the API cannot be reached. Read-model rows are inserted as the projector would write them.
"""

from __future__ import annotations

import asyncio
import os
import re
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime, timezone
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from schemas import Envelope, account_stream, parse_envelope, plan_stream, promo_stream
from tests.fixtures.admin import ADMIN_JWT_SECRET
from tests.support.processes import ManagedProcess, free_port

pytestmark = pytest.mark.slow
TOPIC_PARTITIONS = 3


@pytest.fixture(scope="module")
async def commands_topic(settings, kafka_admin) -> str:
    from infra.kafka import ensure_topics

    name = f"test.admin.commands.{uuid.uuid4().hex[:10]}"
    await ensure_topics(settings, {name: TOPIC_PARTITIONS}, admin=kafka_admin)
    return name


@pytest.fixture(scope="module")
def command_api(admin_site, settings, commands_topic) -> Iterator[str]:
    """The real command API on the admin's database; the admin's API URL points at it."""
    port = free_port()
    process = ManagedProcess(
        "command-api-for-admin",
        "command_api",
        env={
            "ENVIRONMENT": "test",
            "DATABASE_URL": admin_site.settings.database_url,
            "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
            "COMMANDS_TOPIC": commands_topic,
            "API_HOST": "127.0.0.1",
            "API_PORT": str(port),
            "JWT_SECRET": ADMIN_JWT_SECRET,
        },
        ready_url=f"http://127.0.0.1:{port}/healthz",
        ready_timeout=60,
    )
    process.start_and_wait()
    url = f"http://127.0.0.1:{port}"
    yield url
    process.terminate()


@pytest.fixture
async def admin_api(admin_site, command_api) -> AsyncIterator[Callable[..., Any]]:
    """`await admin_api(wait_s=0)` points the in-process admin at the real API; restored afterwards."""

    def apply(values: dict[str, Any]) -> dict[str, Any]:
        from django.conf import settings as dj

        previous = {name: getattr(dj, name) for name in values}
        for name, value in values.items():
            setattr(dj, name, value)
        return previous

    saved: list[dict[str, Any]] = []

    async def configure(*, wait_s: int = 0, url: str | None = None) -> None:
        saved.append(await admin_site.run(apply, {"BILLING_COMMAND_API_URL": url or command_api,
                                                  "BILLING_COMMAND_WAIT_S": wait_s}))

    yield configure
    for previous in reversed(saved):
        await admin_site.run(apply, previous)


async def read_commands(settings, topic: str, predicate: Callable[[Envelope], bool], *, timeout: float = 20.0,
                        expect: int = 1) -> list[Envelope]:
    """Every envelope on `topic` matching `predicate`, waiting (with a deadline) until `expect` arrived."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_servers, enable_auto_commit=False,
                                request_timeout_ms=15000)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(TOPIC_PARTITIONS)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        end = await consumer.end_offsets(partitions)
        found: list[Envelope] = []
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                for record in records:
                    envelope = parse_envelope(record.value)
                    if predicate(envelope):
                        found.append(envelope)
            caught_up = all([await consumer.position(tp) >= end[tp] for tp in partitions])
            if len(found) >= expect and caught_up:
                return found
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"{len(found)} matching commands on {topic} within {timeout}s, expected {expect}")
            if caught_up:
                end = await consumer.end_offsets(partitions)
    finally:
        await consumer.stop()


def form_key(response: Any) -> str:
    match = re.search(r'name="idempotency_key" value="([0-9a-f-]{36})"', response.content.decode())
    assert match, "the form carries an idempotency key"
    return match.group(1)


def shown_command_id(response: Any) -> str:
    match = re.search(r'<code id="command-id">([0-9a-f-]{36})</code>', response.content.decode())
    assert match, response.content.decode()[:3000]
    return match.group(1)


async def submit(site: Any, client: Any, url: str, data: dict[str, Any], key: str | None = None) -> Any:
    """GET the form (for its key), then POST it; returns (response, key)."""
    if key is None:
        form = await site.run(client.get, url)
        assert form.status_code == 200, url
        key = form_key(form)
    response = await site.run(client.post, url, {**data, "idempotency_key": key})
    assert response.status_code == 200, (url, response.status_code)
    return response, key


@pytest.fixture
async def operator(admin_site, operator_user) -> tuple[Any, Any]:
    return operator_user, await admin_site.run(admin_site.client, operator_user)


async def test_extend_publishes_one_command_with_operator_and_reason_even_on_double_submit(
    admin_site, settings, commands_topic, admin_api, operator
) -> None:
    await admin_api(wait_s=0)
    user, client = operator
    sub = await admin_site.insert("subscription")
    url = f"/admin/billing/subscription/{sub['subscription_id']}/extend/"
    reason = f"outage compensation {uuid.uuid4().hex[:6]}"

    first, key = await submit(admin_site, client, url, {"days": "30", "reason": reason})
    html = first.content.decode()
    assert "Still processing" in html and 'id="command-status-link"' in html
    command_id = shown_command_id(first)
    second, _ = await submit(admin_site, client, url, {"days": "30", "reason": reason}, key=key)
    assert shown_command_id(second) == command_id, "the same key is the same command"

    [envelope] = await read_commands(settings, commands_topic, lambda e: str(e.id) == command_id)
    assert envelope.type == "ExtendSubscription"
    assert envelope.stream_id == account_stream(sub["user_id"])
    assert envelope.metadata.actor.kind == "admin" and envelope.metadata.actor.id == user.username
    assert str(envelope.metadata.command_id) == command_id
    data = envelope.data.model_dump(mode="json")
    assert data == {"subscription_id": str(sub["subscription_id"]), "days": 30, "reason": reason}


ACTIONS = {
    "cancel-with-refund": ("cancel", {"refund": "1"}, "AdminCancelSubscription", {"refund": True}),
    "cancel-without-refund": ("cancel", {"refund": "0"}, "AdminCancelSubscription", {"refund": False}),
    "refund": ("refund", {"amount": "123,45"}, "AdminRefund", {"amount": {"amount": "123.45", "currency": "RUB"}}),
    "auto-renew-off": ("auto-renew", {"enabled": "0"}, "SetAutoRenew", {"enabled": False}),
    "auto-renew-on": ("auto-renew", {"enabled": "1"}, "SetAutoRenew", {"enabled": True}),
}


@pytest.mark.parametrize("action", list(ACTIONS))
async def test_subscription_actions_publish_the_right_command(
    action, admin_site, settings, commands_topic, admin_api, operator
) -> None:
    await admin_api(wait_s=0)
    user, client = operator
    path, form, command_type, expected = ACTIONS[action]
    sub = await admin_site.insert("subscription")
    reason = f"{action} because {uuid.uuid4().hex[:6]}"
    response, _ = await submit(admin_site, client, f"/admin/billing/subscription/{sub['subscription_id']}/{path}/",
                               {**form, "reason": reason})
    command_id = shown_command_id(response)
    [envelope] = await read_commands(settings, commands_topic, lambda e: str(e.id) == command_id)
    assert envelope.type == command_type
    assert envelope.stream_id == account_stream(sub["user_id"])
    assert (envelope.metadata.actor.kind, envelope.metadata.actor.id) == ("admin", user.username)
    data = envelope.data.model_dump(mode="json")
    assert data["reason"] == reason and data["subscription_id"] == str(sub["subscription_id"])
    for name, value in expected.items():
        assert data[name] == value, name


async def test_grant_create_and_archive_plan_publish_commands(
    admin_site, settings, commands_topic, admin_api, operator
) -> None:
    await admin_api(wait_s=0)
    user, client = operator
    plan = await admin_site.insert("plan")
    user_id = f"user-{uuid.uuid4().hex[:12]}"

    grant, _ = await submit(admin_site, client, "/admin/billing/subscription/grant/", {
        "user_id": user_id, "email": f"{user_id}@example.com", "locale": "en", "plan_id": plan["plan_id"],
        "days": "14", "reason": "beta tester"})
    new_plan_id = f"p-{uuid.uuid4().hex[:10]}"
    create, _ = await submit(admin_site, client, "/admin/billing/plan/create/", {
        "plan_id": new_plan_id, "name": "Yearly", "price": "2 990,00", "currency": "RUB", "period_days": "365",
        "description": "all films", "reason": "launch", "vat_code": "11", "payment_mode": "full_prepayment"})
    archive, _ = await submit(admin_site, client, f"/admin/billing/plan/{plan['plan_id']}/archive/",
                              {"reason": "replaced by yearly"})
    ids = {shown_command_id(grant): "grant", shown_command_id(create): "create", shown_command_id(archive): "archive"}

    envelopes = await read_commands(settings, commands_topic, lambda e: str(e.id) in ids, expect=3)
    by_kind = {ids[str(e.id)]: e for e in envelopes}
    assert len(by_kind) == 3
    for envelope in envelopes:
        assert (envelope.metadata.actor.kind, envelope.metadata.actor.id) == ("admin", user.username)

    g = by_kind["grant"]
    assert g.type == "GrantSubscription" and g.stream_id == account_stream(user_id)
    assert g.data.plan_id == plan["plan_id"] and g.data.days == 14 and g.data.reason == "beta tester"
    assert g.data.customer.email == f"{user_id}@example.com" and g.data.customer.locale == "en"

    c = by_kind["create"]
    assert c.type == "CreatePlan" and c.stream_id == plan_stream(new_plan_id)
    assert c.data.model_dump(mode="json") == {
        "plan_id": new_plan_id, "name": "Yearly", "price": {"amount": "2990.00", "currency": "RUB"},
        "period_days": 365, "description": "all films", "reason": "launch", "trial_days": 0, "vat_code": 11,
        "payment_subject": None, "payment_mode": "full_prepayment", "product": "cinema"}

    a = by_kind["archive"]
    assert a.type == "ArchivePlan" and a.stream_id == plan_stream(plan["plan_id"])
    assert a.data.reason == "replaced by yearly"


async def test_create_and_deactivate_promo_code_publish_commands(
    admin_site, settings, commands_topic, admin_api, operator
) -> None:
    await admin_api(wait_s=0)
    user, client = operator
    code = f"P{uuid.uuid4().hex[:9].upper()}"
    create, _ = await submit(admin_site, client, "/admin/billing/promocode/create/", {
        "code": code.lower(), "percent_off": "15", "currency": "RUB", "periods": "2", "expires_at": "2030-01-01 00:00",
        "max_redemptions": "500", "plan_ids": "basic, yearly", "reason": "spring campaign"})
    existing = await admin_site.insert("promo_code")
    deactivate, _ = await submit(admin_site, client, f"/admin/billing/promocode/{existing['code']}/deactivate/", {"reason": "leaked"})
    ids = {shown_command_id(create): "create", shown_command_id(deactivate): "deactivate"}
    envelopes = await read_commands(settings, commands_topic, lambda e: str(e.id) in ids, expect=2)
    by_kind = {ids[str(e.id)]: e for e in envelopes}
    c, d = by_kind["create"], by_kind["deactivate"]
    assert c.type == "CreatePromoCode" and c.stream_id == promo_stream(code)
    assert (c.data.code, c.data.percent_off, c.data.amount_off, c.data.periods, c.data.max_redemptions, c.data.plan_ids) == (
        code, 15, None, 2, 500, ["basic", "yearly"])
    assert c.data.reason == "spring campaign" and c.metadata.actor.kind == "admin" and c.metadata.actor.id == user.username
    assert d.type == "DeactivatePromoCode" and d.stream_id == promo_stream(existing["code"]) and d.data.reason == "leaked"


async def test_a_rejected_command_shows_its_reason(admin_site, settings, commands_topic, admin_api, operator) -> None:
    """The API waits (Prefer: wait) for the outcome; the read model says rejected; the operator sees why."""
    await admin_api(wait_s=10)
    user, client = operator
    sub = await admin_site.insert("subscription", status="expired")
    url = f"/admin/billing/subscription/{sub['subscription_id']}/extend/"
    form = await admin_site.run(client.get, url)
    key = form_key(form)
    posting = asyncio.ensure_future(
        admin_site.run(client.post, url, {"days": "5", "reason": "goodwill", "idempotency_key": key})
    )
    # While the API holds the request, the command reaches Kafka; its rejection lands in the read
    # model the way the projector would write the processor's CommandRejected.
    [envelope] = await read_commands(settings, commands_topic,
                                     lambda e: e.stream_id == account_stream(sub["user_id"]))
    reason = "the subscription has expired; grant a new one instead"
    await admin_site.insert("command", command_id=envelope.id, user_id=sub["user_id"],
                            command_type="ExtendSubscription", status="rejected", code="not_active", reason=reason,
                            actor_kind="admin", actor_id=user.username)
    response = await posting
    html = response.content.decode()
    assert 'data-status="rejected"' in html
    assert f'<span id="command-reason">{reason}</span>' in html
    assert shown_command_id(response) == str(envelope.id)


async def test_status_page_follows_a_processing_command_until_it_ends(
    admin_site, settings, commands_topic, admin_api, operator
) -> None:
    await admin_api(wait_s=0)
    user, client = operator
    sub = await admin_site.insert("subscription")
    response, _ = await submit(admin_site, client, f"/admin/billing/subscription/{sub['subscription_id']}/extend/",
                               {"days": "3", "reason": "support ticket 42"})
    command_id = shown_command_id(response)
    status_url = f"/admin/billing/command/status/{command_id}/"
    assert status_url in response.content.decode()

    pending = (await admin_site.run(client.get, status_url)).content.decode()
    assert 'http-equiv="refresh"' in pending and "Still processing" in pending

    now = datetime.now(timezone.utc)
    await admin_site.insert("command", command_id=uuid.UUID(command_id), user_id=sub["user_id"],
                            command_type="ExtendSubscription", status="succeeded",
                            outcome={"subscription_id": str(sub["subscription_id"]), "message": "extended by 3 days"},
                            actor_kind="admin", actor_id=user.username, created_at=now, updated_at=now)
    done = (await admin_site.run(client.get, status_url)).content.decode()
    assert 'data-status="succeeded"' in done and "extended by 3 days" in done
    assert 'http-equiv="refresh"' not in done


async def test_unreachable_api_shows_unknown_outcome_and_keeps_the_key(admin_site, admin_api, operator) -> None:
    await admin_api(wait_s=0, url=f"http://127.0.0.1:{free_port()}")  # nobody listens there
    _, client = operator
    sub = await admin_site.insert("subscription")
    response, key = await submit(admin_site, client, f"/admin/billing/subscription/{sub['subscription_id']}/extend/",
                                 {"days": "3", "reason": "try"})
    html = response.content.decode()
    assert 'data-status="unknown"' in html and "submitting the same form again is safe" in html
    assert form_key(response) == key, "a resubmit must carry the same key"


@pytest.mark.parametrize("name", ["анна", "anna+ops"])
async def test_an_operator_named_in_cyrillic_or_with_plus_acts_as_themself(
    name, admin_site, settings, commands_topic, admin_api, monkeypatch
) -> None:
    """Such usernames used to crash the admin (a header is latin-1) or get a 422 on every action."""
    await admin_api(wait_s=0)
    monkeypatch.setenv("TEST_OPERATOR_PASSWORD", f"long-and-random-{uuid.uuid4().hex}")

    def create() -> Any:
        from django.contrib.auth.models import User
        from django.core.management import call_command

        call_command("create_operator", name, "--password-env", "TEST_OPERATOR_PASSWORD", stdout=open(os.devnull, "w"))
        return User.objects.get(username=name)

    user = await admin_site.run(create)
    client = await admin_site.run(admin_site.client, user)
    sub = await admin_site.insert("subscription")
    response, _ = await submit(admin_site, client, f"/admin/billing/subscription/{sub['subscription_id']}/extend/",
                               {"days": "7", "reason": "goodwill"})
    command_id = shown_command_id(response)
    [envelope] = await read_commands(settings, commands_topic, lambda e: str(e.id) == command_id)
    assert (envelope.metadata.actor.kind, envelope.metadata.actor.id) == ("admin", name)
    # the status page asks the API about the command as this operator too
    status = (await admin_site.run(client.get, f"/admin/billing/command/status/{command_id}/")).content.decode()
    assert "Still processing" in status and "could not be reached" not in status


async def test_scheduling_a_price_change_publishes_the_command(admin_site, settings, commands_topic, admin_api, operator) -> None:
    """The plan page's "Schedule a new price" form becomes one SchedulePriceChange (docs/decisions/0120)."""
    await admin_api(wait_s=0)
    user, client = operator
    plan = await admin_site.insert("plan", price_minor=29900)
    response, _ = await submit(admin_site, client, f"/admin/billing/plan/{plan['plan_id']}/price-change/", {
        "price": "349,00", "effective_at": "2030-02-01 00:00", "grandfather": "on", "reason": "costs went up"})
    command_id = shown_command_id(response)
    [envelope] = await read_commands(settings, commands_topic, lambda e: str(e.id) == command_id)
    assert envelope.type == "SchedulePriceChange" and envelope.stream_id == plan_stream(plan["plan_id"])
    assert (envelope.metadata.actor.kind, envelope.metadata.actor.id) == ("admin", user.username)
    assert envelope.data.model_dump(mode="json") == {
        "plan_id": plan["plan_id"], "price": {"amount": "349.00", "currency": "RUB"},
        "effective_at": "2030-01-31T21:00:00Z", "grandfather": True, "reason": "costs went up"}  # the admin's zone is Moscow
