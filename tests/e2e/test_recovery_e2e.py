"""Past-due recovery and 3-D Secure on renewal end to end (docs/decisions/0117): real processes
(processor with its scheduler and janitor, relay, notifier), real Kafka, PostgreSQL and sandboxes.

The set-up is the renewal e2e's (`tests/e2e/test_renewal_e2e.py`): a fresh database whose business
time the test moves, a subscription bought and paid on the sandbox's page with a card it saves.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

import schemas as s
from sandbox.yookassa import cards
from tests.e2e.test_renewal_e2e import DAY, Stack, command, full, stack  # noqa: F401  (fixtures)

pytestmark = pytest.mark.slow
NEW_CARD = "4111111111111111"


@pytest.fixture
async def running(full: Stack) -> Stack:  # noqa: F811
    """The renewal e2e's full stack: processor (scheduler, janitor), relay and notifier running."""
    return full


async def pay_now(running: Stack, sub: object) -> s.CommandSucceeded:
    cmd = command(s.PayOverdueSubscription(subscription_id=sub.subscription_id), sub.stream)  # type: ignore[attr-defined]
    await running.send(cmd)
    ended = await running.wait_terminal(cmd.stream_id, cmd.id)
    assert isinstance(ended, s.CommandSucceeded) and ended.outcome.confirmation_url, ended
    return ended


async def test_a_past_due_subscription_paid_now_with_a_new_card_renews_and_the_next_renewal_charges_that_card(running: Stack) -> None:
    sub = await running.subscribe(await running.create_plan())
    await running.yookassa.aset_method_behaviour(sub.method_id, "insufficient_funds")
    await running.move_to(sub.period_end - timedelta(hours=12))
    [failed] = await running.wait_events(sub.stream, "RenewalFailed")
    assert (await running.schedule_row(sub))["status"] == "past_due"
    await running.emails(sub, "renewal_failed")
    [mail] = [m for m in await running.mailgun.amessages(to=sub.email) if m["tags"] == ["renewal_failed"]]
    assert "Pay now" in mail["text"]

    first = await pay_now(running, sub)
    again = await pay_now(running, sub)  # a double click / a reload: the same page, no second payment
    assert again.outcome.confirmation_url == first.outcome.confirmation_url
    assert len(await running.events(sub.stream, "RecoveryStarted")) == 1
    paid = await running.yookassa.apay(running.yookassa.payment_id_from_url(first.outcome.confirmation_url), NEW_CARD)
    assert paid["status"] == "succeeded" and paid["payment_method"]["saved"] is True
    new_method = paid["payment_method"]["id"]
    assert new_method != sub.method_id and paid["metadata"]["purpose"] == "recovery"

    [renewed] = await running.wait_events(sub.stream, "SubscriptionRenewed")
    data = renewed.data
    assert isinstance(data, s.SubscriptionRenewed) and data.purpose == "recovery"
    assert (data.period_start, data.period_end) == (sub.period_end, sub.period_end + 30 * DAY)  # from the old end
    row = await running.schedule_row(sub)
    assert (row["status"], row["renewal_attempts"], row["next_retry_at"], row["period_end"]) == ("active", 0, None, data.period_end)
    await running.emails(sub, "recovery_succeeded")
    assert failed.data.next_retry_at is not None  # type: ignore[attr-defined]

    # The old card still declines; the next renewal charges the card paid with, and succeeds.
    await running.move_to(data.period_end - timedelta(hours=12))
    renewals = await running.wait_events(sub.stream, "SubscriptionRenewed", 2)
    assert renewals[-1].data.period_start == data.period_end  # type: ignore[attr-defined]
    started = await running.events(sub.stream, "RenewalStarted")
    assert [e.data.payment_method_id for e in started] == [sub.method_id, new_method]  # type: ignore[attr-defined]
    assert await running.renewal_charges(sub) == {"canceled": 1, "succeeded": 1}
    assert await running.charges(sub) == 3  # the purchase, the recovery, the next renewal: one per period


async def test_a_renewal_needing_3ds_emails_its_link_once_and_renews_when_confirmed(running: Stack) -> None:
    sub = await running.subscribe(await running.create_plan())
    await running.yookassa.aset_method_behaviour(sub.method_id, require_3ds=True)
    await running.move_to(sub.period_end - timedelta(hours=12))

    # Left unconfirmed: the page expires, and dunning takes it from there.
    [asked] = await running.wait_events(sub.stream, "RenewalConfirmationRequired")
    url = asked.data.confirmation_url  # type: ignore[attr-defined]
    await running.emails(sub, "renewal_confirmation")
    [mail] = [m for m in await running.mailgun.amessages(to=sub.email) if m["tags"] == ["renewal_confirmation"]]
    assert url in mail["text"] and url in mail["html"]
    assert (await running.schedule_row(sub))["status"] == "active"  # waiting for the customer is not a failure
    await running.yookassa.aleave(running.yookassa.payment_id_from_url(url), expire_after_s=0)
    [failed] = await running.wait_events(sub.stream, "RenewalFailed")
    assert failed.data.reason == "expired_on_confirmation"  # type: ignore[attr-defined]
    assert (await running.schedule_row(sub))["status"] == "past_due"

    # The retry asks again; this time the customer confirms it from the email.
    await running.move_to(failed.data.next_retry_at + timedelta(minutes=1))  # type: ignore[attr-defined]
    asks = await running.wait_events(sub.stream, "RenewalConfirmationRequired", 2)
    second = asks[-1].data.confirmation_url  # type: ignore[attr-defined]
    assert second != url
    confirmed = await running.yookassa.apay(running.yookassa.payment_id_from_url(second), cards.SUCCESS)
    assert confirmed["status"] == "succeeded" and confirmed["payment_method"]["id"] == sub.method_id
    [renewed] = await running.wait_events(sub.stream, "SubscriptionRenewed")
    assert renewed.data.period_start == sub.period_end  # type: ignore[attr-defined]
    assert await running.charges(sub) == 2
    tags = await running.emails(sub, "renewal_confirmation", "renewal_confirmation", "renewal_succeeded")
    assert tags.count("renewal_confirmation") == 2  # once per charge, however often the janitor asked
    assert len(await running.events(sub.stream, "RenewalConfirmationRequired")) == 2
    assert uuid.UUID(str(renewed.data.payment_id)) == asks[-1].data.payment_id  # type: ignore[attr-defined]
