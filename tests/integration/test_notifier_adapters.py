"""The notifier's adapters against the real things: the email record in PostgreSQL, Mailgun's
sandbox over HTTP (faults included)."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from infra.db import create_pool
from notifier.adapters.email_log import EmailLog, NewEmail
from notifier.adapters.mailgun import (
    MailgunClient,
    OutgoingEmail,
    PermanentMailgunError,
    TransientMailgunError,
    message_id_for,
)


# ---------------------------------------------------------------- PostgreSQL: notifier.emails


@pytest.fixture(scope="module")
async def email_log(fresh_database):  # type: ignore[no-untyped-def]
    settings = fresh_database(migrate=True, prefix="notifier")
    pool = await create_pool(settings.database_url, size=4, application_name="tests-notifier")
    yield EmailLog(pool)
    await pool.close()


def _new_email(event_id: uuid.UUID | None = None) -> NewEmail:
    event_id = event_id or uuid.uuid4()
    return NewEmail(
        event_id=event_id,
        event_type="SubscriptionRenewed",
        kind="renewal_succeeded",
        user_id="user-1",
        recipient=f"{event_id.hex[:8]}@example.com",
        locale="ru",
        message_id=message_id_for(event_id, "mg.billing.local"),
        message={"to": "x@example.com", "subject": "s", "text": "t", "html": "<p>h</p>", "message_id": "<m>", "tag": "k", "variables": {}},
        event=b'{"id": "raw"}',
        event_key=b"account-user-1",
        source="billing.events/0/42",
    )


async def test_sending_is_recorded_once_per_event(email_log: EmailLog) -> None:
    email = _new_email()
    claim = await email_log.create_sending(email, lease_s=30)
    assert claim is not None and claim.claims == 1 and claim.message["subject"] == "s"
    assert await email_log.create_sending(email, lease_s=30) is None  # a redelivery inserts nothing
    record = await email_log.get(email.event_id)
    assert record is not None and record.status == "sending" and not record.lease_expired
    assert await email_log.claim_stale(email.event_id, lease_s=30) is None  # live lease: not taken over
    assert await email_log.mark_sent(claim, "mailgun-id-1", attempts=1)
    record = await email_log.get(email.event_id)
    assert record is not None and (record.status, record.provider_id, record.attempts) == ("sent", "mailgun-id-1", 1)
    assert await email_log.mark_parked(claim, "late", 1.0, 1) is False  # settled rows stay settled


async def test_a_crashed_senders_row_is_taken_over_after_its_lease(email_log: EmailLog) -> None:
    email = _new_email()
    crashed = await email_log.create_sending(email, lease_s=0.2)
    assert crashed is not None
    await asyncio.sleep(0.3)  # let the lease run out (database time)
    record = await email_log.get(email.event_id)
    assert record is not None and record.lease_expired
    taken = await email_log.claim_stale(email.event_id, lease_s=30)
    assert taken is not None and taken.token != crashed.token and taken.claims == 2
    assert taken.message_id == crashed.message_id  # the same Message-Id goes out again
    assert await email_log.mark_sent(crashed, "too-late", 1) is False  # the old claim is void
    assert await email_log.mark_sent(taken, "mg-2", 1)


async def test_parked_rows_are_claimed_when_due_by_one_claimer(email_log: EmailLog) -> None:
    email = _new_email()
    claim = await email_log.create_sending(email, lease_s=30)
    assert claim is not None
    assert await email_log.mark_parked(claim, "Mailgun answered 500", delay_s=3600, attempts=2)
    assert (await email_log.get(email.event_id)).status == "parked"  # type: ignore[union-attr]
    assert await email_log.make_parked_due() >= 1
    claims = await asyncio.gather(*(email_log.claim_next_due(lease_s=30) for _ in range(5)))
    mine = [c for c in claims if c is not None and c.event_id == email.event_id]
    assert len(mine) == 1 and mine[0].attempts == 2
    assert await email_log.mark_dead(mine[0], "gave up", 1)
    assert (await email_log.get(email.event_id)).status == "dead"  # type: ignore[union-attr]


async def test_parked_without_trying_is_due_at_once(email_log: EmailLog) -> None:
    email = _new_email()
    assert await email_log.create_parked(email, "Mailgun is down")
    assert not await email_log.create_parked(email, "again")
    deadline = time.monotonic() + 5
    while True:  # other tests' due rows may come first; drain until ours
        claim = await email_log.claim_next_due(lease_s=30)
        assert claim is not None, "parked row never became due"
        await email_log.mark_sent(claim, None, 1)
        if claim.event_id == email.event_id:
            break
        assert time.monotonic() < deadline


async def test_facts_merge(email_log: EmailLog) -> None:
    key = f"subscription:{uuid.uuid4()}"
    await email_log.remember(key, {"plan_name": "Месяц", "period_days": 30})
    await email_log.remember(key, {"plan_name": "Месяц", "days_used": None})
    await email_log.remember(key, {"days_used": 3})
    assert await email_log.recall(key) == {"plan_name": "Месяц", "period_days": 30, "days_used": 3}
    assert await email_log.recall("subscription:nothing") == {}


# ---------------------------------------------------------------- Mailgun sandbox


def _email(to: str | None = None, **kw: object) -> OutgoingEmail:
    event_id = uuid.uuid4()
    values = {
        "to": to or f"{event_id.hex[:10]}@example.com",
        "subject": "Оплата прошла: 1\u00a0490,00\u00a0₽",
        "text": "Здравствуйте!\n",
        "html": "<p>Здравствуйте!</p>",
        "message_id": message_id_for(event_id, "mg.billing.local"),
        "tag": "purchase_succeeded",
        "variables": {"event_id": str(event_id), "user_id": "user-42"},
        **kw,
    }
    return OutgoingEmail(**values)  # type: ignore[arg-type]


@pytest.fixture
async def mailgun(mailgun_sandbox):  # type: ignore[no-untyped-def]
    client = MailgunClient(
        api_url=mailgun_sandbox.api_url,
        domain=mailgun_sandbox.domain,
        api_key=mailgun_sandbox.api_key,
        sender="Billing <billing@mg.billing.local>",
        timeout_s=0.5,
        backoff_initial_s=0.05,
        backoff_max_s=0.2,
    )
    yield client
    await client.aclose()


async def test_send_stores_every_field(mailgun, mailgun_sandbox) -> None:  # type: ignore[no-untyped-def]
    email = _email()
    delivery = await mailgun.send(email, budget_s=2)
    assert delivery.attempts == 1 and delivery.provider_id == email.message_id
    [stored] = await mailgun_sandbox.amessages(to=email.to)
    assert stored["subject"] == email.subject and stored["text"] == email.text and stored["html"] == email.html
    assert stored["message_id"] == email.message_id
    assert stored["tags"] == ["purchase_succeeded"]
    assert stored["variables"] == {"event_id": email.variables["event_id"], "user_id": "user-42"}


async def test_500s_are_retried_until_mailgun_answers(mailgun, mailgun_sandbox) -> None:  # type: ignore[no-untyped-def]
    email = _email()
    await mailgun_sandbox.aadd_fault(endpoint="POST /v3/*/messages", mode="error_500", count=2, metadata={"to": email.to})
    delivery = await mailgun.send(email, budget_s=5)
    assert delivery.attempts == 3
    assert len(await mailgun_sandbox.amessages(to=email.to)) == 1


async def test_429_waits_for_retry_after(mailgun, mailgun_sandbox) -> None:  # type: ignore[no-untyped-def]
    email = _email()
    await mailgun_sandbox.aadd_fault(endpoint="POST /v3/*/messages", mode="429", count=1, retry_after_ms=1000, metadata={"to": email.to})
    started = time.monotonic()
    delivery = await mailgun.send(email, budget_s=5)
    assert delivery.attempts == 2
    assert time.monotonic() - started >= 0.2  # Retry-After (1 s) is capped by backoff_max_s=0.2 here


async def test_timeouts_are_transient_and_bounded_by_the_budget(mailgun, mailgun_sandbox) -> None:  # type: ignore[no-untyped-def]
    email = _email()
    rule = await mailgun_sandbox.aadd_fault(endpoint="POST /v3/*/messages", mode="timeout", hold_ms=3000, metadata={"to": email.to})
    started = time.monotonic()
    try:
        with pytest.raises(TransientMailgunError, match="timeout") as raised:
            await mailgun.send(email, budget_s=1.0)
    finally:
        await mailgun_sandbox.aremove_fault(rule)
    elapsed = time.monotonic() - started
    assert elapsed < 1.0 + 0.5 + 0.3  # budget + one attempt's timeout + slack
    assert raised.value.attempts >= 2  # type: ignore[attr-defined]
    assert await mailgun_sandbox.amessages(to=email.to) == []


async def test_a_dropped_connection_is_transient(mailgun, mailgun_sandbox) -> None:  # type: ignore[no-untyped-def]
    email = _email()
    await mailgun_sandbox.aadd_fault(endpoint="POST /v3/*/messages", mode="drop_before_apply", count=1, metadata={"to": email.to})
    delivery = await mailgun.send(email, budget_s=3)
    assert delivery.attempts == 2
    assert len(await mailgun_sandbox.amessages(to=email.to)) == 1


async def test_other_4xx_are_permanent_and_not_retried(mailgun_sandbox) -> None:  # type: ignore[no-untyped-def]
    wrong_key = MailgunClient(
        api_url=mailgun_sandbox.api_url, domain=mailgun_sandbox.domain, api_key="key-wrong",
        sender="Billing <billing@mg.billing.local>", timeout_s=2,
    )
    try:
        with pytest.raises(PermanentMailgunError) as raised:
            await wrong_key.send(_email(), budget_s=5)
        assert raised.value.status == 401 and raised.value.attempts == 1  # type: ignore[attr-defined]
    finally:
        await wrong_key.aclose()
    client = MailgunClient(
        api_url=mailgun_sandbox.api_url, domain=mailgun_sandbox.domain, api_key=mailgun_sandbox.api_key,
        sender="Billing <billing@mg.billing.local>", timeout_s=2,
    )
    try:
        with pytest.raises(PermanentMailgunError) as raised:
            await client.send(_email(to="not-an-address"), budget_s=5)
        assert raised.value.status == 400 and "not a valid address" in str(raised.value)
    finally:
        await client.aclose()
