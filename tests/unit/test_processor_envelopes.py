"""The envelopes the processor appends are exactly the validated envelopes of the contract (and
survive the wire), and the envelope cache only ever answers with what it was given for that id."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest

import schemas as s
from payment_processor.domain import AccountState, Emit, to_envelopes
from payment_processor.adapters.journal import EnvelopeCache


def _command(user: str) -> s.Envelope:
    cid = uuid.uuid4()
    payload = s.SetAutoRenew(subscription_id=uuid.uuid4(), enabled=False)
    meta = s.Metadata(correlation_id=f"corr-{cid}", command_id=cid, actor=s.Actor(kind="user", id=user))
    return s.new_envelope(payload, stream_id=s.account_stream(user), metadata=meta, id=cid)


def test_assembled_envelopes_equal_validated_ones_and_survive_the_wire() -> None:
    command = _command("u1")
    other = uuid.uuid4()
    emits = [
        Emit(s.AutoRenewChanged(subscription_id=uuid.uuid4(), enabled=False, reason="asked"), command.id),
        Emit(s.CommandSucceeded(command_id=command.id, command_type="SetAutoRenew", outcome=s.CommandOutcome()), command.id),
        Emit(s.CommandSucceeded(command_id=other, command_type="PurchaseSubscription", outcome=s.CommandOutcome()), other),
    ]
    state = AccountState(stream_id=command.stream_id, events_per_command={command.id: 2})
    now = datetime(2026, 3, 1, 15, 0, tzinfo=timezone(timedelta(hours=3)))
    built = to_envelopes(state, command, emits, now)
    for envelope, emit, index in zip(built, emits, (2, 3, 0), strict=True):
        expected = s.new_envelope(
            emit.payload,
            stream_id=command.stream_id,
            metadata=s.Metadata(
                correlation_id=command.metadata.correlation_id,
                causation_id=str(command.id) if emit.command_id == command.id else str(command.id),
                command_id=emit.command_id,
                actor=command.metadata.actor,
            ),
            id=s.derived_id("event", emit.command_id, index),
            occurred_at=now,
        )
        assert envelope == expected
        assert envelope.occurred_at.utcoffset() == timedelta(0)
        assert s.parse_envelope(envelope.to_json()) == envelope


def test_a_naive_timestamp_is_refused() -> None:
    command = _command("u2")
    emit = Emit(s.AutoRenewChanged(subscription_id=uuid.uuid4(), enabled=True, reason=None), command.id)
    with pytest.raises(ValueError):
        to_envelopes(AccountState(stream_id=command.stream_id), command, [emit], datetime(2026, 3, 1))


def test_the_cache_keeps_the_most_recently_used_and_answers_by_id() -> None:
    command = _command("u3")
    emits = [Emit(s.AutoRenewChanged(subscription_id=uuid.uuid4(), enabled=True, reason=str(i)), command.id) for i in range(4)]
    envelopes = to_envelopes(AccountState(stream_id=command.stream_id), command, emits, datetime.now(timezone.utc))
    cache = EnvelopeCache(size=3)
    cache.put(envelopes[:3])
    assert cache.get(envelopes[0].id) is envelopes[0]  # now the most recent
    cache.put(envelopes[3:])
    assert cache.get(envelopes[1].id) is None  # the least recently used went out
    assert [cache.get(e.id) for e in (envelopes[0], envelopes[2], envelopes[3])] == [envelopes[0], envelopes[2], envelopes[3]]
    assert cache.get(uuid.uuid4()) is None
