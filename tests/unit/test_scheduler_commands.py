"""The scheduler's pure parts: the schedule row an append implies, and the command for a due action.

No database, no Kafka. The account is driven through the real decide/resolve (the processor's
own table-driven harness), so a row here is exactly what the handler writes after that append.
"""

from __future__ import annotations

import copy
import uuid
from datetime import datetime, timedelta, timezone

import pytest

import schemas as s
from payment_processor.domain import PlanState
from payment_processor.adapters.schedule import DueAction, row_of, schedule_rows
from payment_processor.config import ProcessorSettings
from payment_processor.entrypoints.scheduler import SCHEDULER, command_for, expiry_reason
from tests.unit.test_processor_domain import STREAM, USER, Account, declined, paid, pending


def _renew(acc: Account, sub_id: uuid.UUID, attempt: int, *answers: object) -> list[s.Envelope]:
    end = acc.state.subscriptions[sub_id].period_end
    assert end is not None
    cid = s.derived_id("renewal", sub_id, end.isoformat(), attempt)
    return acc.run(s.RenewSubscription(subscription_id=sub_id, period_end=end, attempt=attempt), *answers, command_id=cid, actor="system")  # type: ignore[arg-type]


def _rows_for(acc: Account, action: object) -> list:  # type: ignore[type-arg]
    """Run `action(acc)` and return the rows its events imply for the state before it."""
    before = copy.deepcopy(acc.state)
    events = action(acc)  # type: ignore[operator]
    return schedule_rows(before, events)


# --------------------------------------------------------------------------- rows


def test_activation_writes_a_renewing_row_and_leaves_the_state_alone() -> None:
    acc = Account()
    before = copy.deepcopy(acc.state)
    sub_id, events = acc.purchase(paid(1, at=acc.now))
    [row] = schedule_rows(before, events)
    sub = acc.state.subscriptions[sub_id]
    assert (row.subscription_id, row.stream_id, row.user_id, row.status) == (sub_id, STREAM, USER, "active")
    assert row.period_end == sub.period_end == acc.now + timedelta(days=30)
    assert row.renews and row.has_saved_method and row.auto_renew and not row.cancel_at_period_end
    assert (row.renewal_attempts, row.next_retry_at, row.dunning_over, row.reminded_for) == (0, None, False, None)
    assert row.stream_version == acc.state.version
    assert before.version == 0 and before.subscriptions == {}  # computed on a copy


def test_rows_are_computed_on_a_copy_that_shares_nothing_the_appliers_change() -> None:
    acc = Account()
    sub_id = acc.active()
    acc.run(s.AdminRefund(subscription_id=sub_id, amount=s.Money(amount="10.00"), reason="goodwill"), actor="admin")
    before, snapshot = copy.deepcopy(acc.state), copy.deepcopy(acc.state)
    events = _renew(acc, sub_id, 1, paid(2, at=acc.now))  # appends to payment_ids, changes payments
    [row] = schedule_rows(before, events)
    assert before == snapshot  # nothing leaked into the state the handler applies the events to
    assert row.period_end == acc.state.subscriptions[sub_id].period_end != before.subscriptions[sub_id].period_end


def test_appends_that_change_nothing_the_scheduler_needs_write_no_row() -> None:
    acc = Account()
    before = copy.deepcopy(acc.state)
    _, events = acc.purchase(pending())  # CheckoutStarted, PaymentCreated, CommandSucceeded
    assert schedule_rows(before, events) == []
    assert schedule_rows(PlanState(stream_id=s.plan_stream("basic")), events) == []


def test_a_card_not_saved_means_the_row_does_not_renew() -> None:
    acc = Account()
    before = copy.deepcopy(acc.state)
    _, events = acc.purchase(paid(1, at=acc.now, saved=False))
    [row] = schedule_rows(before, events)
    assert row.auto_renew and not row.has_saved_method and not row.renews


def test_dunning_facts_follow_each_failed_attempt_until_it_is_over() -> None:
    acc = Account()
    sub_id = acc.active()
    end = acc.state.subscriptions[sub_id].period_end
    assert end is not None
    acc.now = end - timedelta(days=1)
    for attempt, retry_days in [(1, 1), (2, 3), (3, 5)]:
        [row] = _rows_for(acc, lambda a, n=attempt: _renew(a, sub_id, n, declined(10 + n)))
        assert (row.status, row.renewal_attempts, row.dunning_over) == ("past_due", attempt, False)
        assert row.next_retry_at == acc.now + timedelta(days=retry_days)
        assert row.period_end == end  # the period does not move while it is unpaid
        acc.now = row.next_retry_at
    [last] = _rows_for(acc, lambda a: _renew(a, sub_id, 4, declined(20)))
    assert (last.status, last.renewal_attempts, last.next_retry_at, last.dunning_over) == ("past_due", 4, None, True)
    assert row_of(acc.state, acc.state.subscriptions[sub_id]) == last


def test_a_retry_that_succeeds_resets_dunning_and_starts_the_period_at_the_old_end() -> None:
    acc = Account()
    sub_id = acc.active()
    end = acc.state.subscriptions[sub_id].period_end
    assert end is not None
    acc.now = end
    _renew(acc, sub_id, 1, declined(2))
    acc.now += timedelta(days=1)
    [row] = _rows_for(acc, lambda a: _renew(a, sub_id, 2, paid(3, at=a.now)))
    assert (row.status, row.renewal_attempts, row.next_retry_at, row.dunning_over) == ("active", 0, None, False)
    assert row.period_end == end + timedelta(days=30)


@pytest.mark.parametrize(
    "command, expected",
    [
        (lambda sid: s.CancelSubscription(subscription_id=sid, mode="at_period_end"), {"cancel_at_period_end": True, "auto_renew": False}),
        (lambda sid: s.SetAutoRenew(subscription_id=sid, enabled=False), {"cancel_at_period_end": False, "auto_renew": False}),
    ],
)
def test_a_subscription_that_will_not_renew(command: object, expected: dict[str, bool]) -> None:
    acc = Account()
    sub_id = acc.active()
    [row] = _rows_for(acc, lambda a: a.run(command(sub_id)))  # type: ignore[operator]
    assert {k: getattr(row, k) for k in expected} == expected and row.status == "active" and not row.renews


def test_reminder_and_expiry_rows() -> None:
    acc = Account()
    sub_id = acc.active()
    acc.run(s.SetAutoRenew(subscription_id=sub_id, enabled=False))
    end = acc.state.subscriptions[sub_id].period_end
    assert end is not None
    [reminded] = _rows_for(acc, lambda a: a.run(s.SendExpiryReminder(subscription_id=sub_id, period_end=end), actor="system"))
    assert reminded.reminded_for == end
    acc.now = end
    [expired] = _rows_for(acc, lambda a: a.run(s.ExpireSubscription(subscription_id=sub_id, period_end=end), actor="system"))
    assert (expired.status, expired.auto_renew) == ("expired", False)  # kept as a tombstone, version-guarded


# --------------------------------------------------------------------------- commands

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=timezone.utc)
END = datetime(2026, 6, 2, 10, 30, 15, 123456, tzinfo=timezone.utc)


def due(action: str, **kw: object) -> DueAction:
    fields: dict[str, object] = {
        "action": action,
        "subscription_id": uuid.UUID(int=7),
        "stream_id": STREAM,
        "user_id": USER,
        "period_end": END,
        "attempt": 1 if action in ("renew", "retry") else 0,
        "round": 1,
        "status": "active",
        "auto_renew": True,
        "has_saved_method": True,
        "cancel_at_period_end": False,
        "dunning_over": False,
    }
    fields.update(kw)
    return DueAction(**fields)  # type: ignore[arg-type]


def test_renewal_commands_carry_the_contract_id_for_subscription_period_and_attempt() -> None:
    first = command_for(due("renew"), NOW)
    retry = command_for(due("retry", attempt=3, status="past_due"), NOW + timedelta(days=4))
    assert first.id == first.metadata.command_id == s.derived_id("renewal", uuid.UUID(int=7), END.isoformat(), 1)
    assert retry.id == s.derived_id("renewal", uuid.UUID(int=7), END.isoformat(), 3)
    assert isinstance(first.data, s.RenewSubscription) and (first.data.period_end, first.data.attempt) == (END, 1)
    assert first.stream_id == STREAM and first.metadata.actor == SCHEDULER
    # another scheduler, later, computes the very same command
    assert command_for(due("renew"), NOW + timedelta(minutes=5)).id == first.id
    assert s.parse_envelope(first.to_json()).data == first.data


def test_expiry_and_reminder_ids_and_their_rounds() -> None:
    expire = command_for(due("expire", auto_renew=False), NOW)
    remind = command_for(due("remind", auto_renew=False), NOW)
    assert expire.id == s.derived_id("expiry", uuid.UUID(int=7), END.isoformat())
    assert remind.id == s.derived_id("expiry-reminder", uuid.UUID(int=7), END.isoformat())
    assert isinstance(expire.data, s.ExpireSubscription) and expire.data.reason == "auto_renew_off"
    assert isinstance(remind.data, s.SendExpiryReminder) and remind.data.period_end == END
    again = command_for(due("expire", auto_renew=False, round=2), NOW)
    assert again.id == s.derived_id("expiry", uuid.UUID(int=7), END.isoformat(), 2) != expire.id


@pytest.mark.parametrize(
    "facts, reason",
    [
        ({"dunning_over": True, "status": "past_due"}, "dunning_exhausted"),
        ({"cancel_at_period_end": True, "auto_renew": False}, "canceled_at_period_end"),
        ({"auto_renew": False}, "auto_renew_off"),
        ({"has_saved_method": False}, "no_payment_method"),
        ({}, "period_ended"),
    ],
)
def test_expiry_reasons_are_the_codes_the_notifier_explains(facts: dict[str, object], reason: str) -> None:
    from notifier.domain.reasons import EXPIRY_REASONS  # only to check the contract between the two

    assert expiry_reason(due("expire", **facts)) == reason
    assert reason in EXPIRY_REASONS


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROCESSOR_RENEWAL_LEAD_S", "3600")
    monkeypatch.setenv("PROCESSOR_EXPIRY_REMINDER_LEAD_S", "7200")
    monkeypatch.setenv("PROCESSOR_SCHEDULER_TICK_S", "0.2")
    config = ProcessorSettings()
    assert (config.renewal_lead, config.expiry_reminder_lead, config.scheduler_tick_s) == (timedelta(hours=1), timedelta(hours=2), 0.2)
    assert ProcessorSettings(_env_file=None, renewal_lead_s=0).renewal_lead == timedelta(0)  # type: ignore[call-arg]
