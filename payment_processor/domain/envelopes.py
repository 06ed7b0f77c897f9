"""Decided events → envelopes with deterministic ids, and the open provider operations they imply.

Event ids are `derived_id("event", command_id, index)`, the index counting that command's events
in the stream, so a step retried after a crash produces the very same ids (and the unique event id
in the store is one more guard against appending a step twice).

The envelopes are assembled with `model_construct`: every part was validated already (the payload
when the domain built it, the actor and correlation id with the command), so validating the whole
envelope again per event only cost CPU (docs/decisions/0048). The one value that is not a model,
the timestamp, is checked and normalised to UTC here as the schema would.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Literal
from uuid import UUID

from schemas import (
    CheckoutStarted,
    Envelope,
    Metadata,
    PaymentFailed,
    PaymentSucceeded,
    RefundFailed,
    RefundRequested,
    RefundSucceeded,
    RenewalStarted,
    derived_id,
)
from payment_processor.domain.decide import Emit, command_id_of
from payment_processor.domain.state import AccountState, PlanState


def to_envelopes(state: AccountState | PlanState, command: Envelope, emits: list[Emit], now: datetime) -> list[Envelope]:
    """Wrap decided payloads: ids from (command, index), metadata from the command in hand."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("timestamp must carry a timezone")
    occurred_at = now.astimezone(timezone.utc)
    seen: dict[UUID, int] = {}
    envelopes = []
    own_id = command_id_of(command)
    causation = str(command.id)
    correlation_id, actor = command.metadata.correlation_id, command.metadata.actor
    for emit in emits:
        index = state.events_per_command.get(emit.command_id, 0) + seen.get(emit.command_id, 0)
        seen[emit.command_id] = seen.get(emit.command_id, 0) + 1
        metadata = Metadata.model_construct(
            correlation_id=correlation_id,
            causation_id=causation if emit.command_id == own_id else str(own_id),
            command_id=emit.command_id,
            actor=actor,
        )
        payload = emit.payload
        envelopes.append(
            Envelope.model_construct(
                id=derived_id("event", emit.command_id, index),
                type=payload.type_name(),
                schema_version=payload.schema_version,
                occurred_at=occurred_at,
                stream_id=state.stream_id,
                data=payload,
                metadata=metadata,
            )
        )
    return envelopes


@dataclass(frozen=True, slots=True)
class OperationChange:
    """Open or close a provider operation the janitor must follow up."""

    action: Literal["open", "close"]
    kind: Literal["payment", "refund"]
    operation_id: UUID


def operation_changes(emits: list[Emit]) -> list[OperationChange]:
    """Intents open an operation; a final provider answer closes it."""
    changes: list[OperationChange] = []
    for emit in emits:
        p = emit.payload
        if isinstance(p, (CheckoutStarted, RenewalStarted)):
            changes.append(OperationChange("open", "payment", p.payment_id))
        elif isinstance(p, RefundRequested):
            changes.append(OperationChange("open", "refund", p.refund_id))
        elif isinstance(p, (PaymentSucceeded, PaymentFailed)):
            changes.append(OperationChange("close", "payment", p.payment_id))
        elif isinstance(p, (RefundSucceeded, RefundFailed)):
            changes.append(OperationChange("close", "refund", p.refund_id))
    return changes
