"""Decided events → envelopes with deterministic ids, and the open provider operations they imply.

Event ids are `derived_id("event", command_id, index)`, the index counting that command's events
in the stream, so a step retried after a crash produces the very same ids (and the unique event id
in the store is one more guard against appending a step twice).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal
from uuid import UUID

from schemas import (
    CardCheckStarted,
    CheckoutStarted,
    Envelope,
    Metadata,
    PaymentFailed,
    PaymentSucceeded,
    ReceiptRegistrationChanged,
    RecoveryStarted,
    RefundFailed,
    RefundRequested,
    RefundSucceeded,
    RenewalStarted,
    UpgradeStarted,
    derived_id,
    new_envelope,
)
from payment_processor.domain.decision import Emit, command_id_of
from payment_processor.domain.state import AccountState, PlanState


def to_envelopes(state: AccountState | PlanState, command: Envelope, emits: list[Emit], now: datetime) -> list[Envelope]:
    """Wrap decided payloads: ids from (command, index), metadata from the command in hand."""
    seen: dict[UUID, int] = {}
    envelopes = []
    causation = str(command.id)
    for emit in emits:
        index = state.events_per_command.get(emit.command_id, 0) + seen.get(emit.command_id, 0)
        seen[emit.command_id] = seen.get(emit.command_id, 0) + 1
        metadata = Metadata(
            correlation_id=command.metadata.correlation_id,
            causation_id=causation if emit.command_id == command_id_of(command) else str(command_id_of(command)),
            command_id=emit.command_id,
            actor=command.metadata.actor,
        )
        envelopes.append(
            new_envelope(
                emit.payload,
                stream_id=state.stream_id,
                metadata=metadata,
                id=derived_id("event", emit.command_id, index),
                occurred_at=now,
            )
        )
    return envelopes


PAYMENT_INTENTS = (CheckoutStarted, RenewalStarted, CardCheckStarted, RecoveryStarted, UpgradeStarted)


@dataclass(frozen=True, slots=True)
class OperationChange:
    """Open or close a provider operation the janitor must follow up."""

    action: Literal["open", "close"]
    kind: Literal["payment", "refund"]
    operation_id: UUID


def operation_changes(emits: list[Emit]) -> list[OperationChange]:
    """Intents open an operation; a final provider answer closes it.

    Every event that asks YooKassa for a payment (it carries an idempotence key) is an intent here:
    one missing is never asked about again when its answer is lost."""
    changes: list[OperationChange] = []
    for emit in emits:
        p = emit.payload
        if isinstance(p, PAYMENT_INTENTS):
            changes.append(OperationChange("open", "payment", p.payment_id))
        elif isinstance(p, RefundRequested):
            changes.append(OperationChange("open", "refund", p.refund_id))
        elif isinstance(p, (PaymentSucceeded, RefundSucceeded)) and p.receipt_registration == "pending":
            pass  # settled, but its receipt is still being registered: the janitor keeps asking
        elif isinstance(p, (PaymentSucceeded, PaymentFailed)):
            changes.append(OperationChange("close", "payment", p.payment_id))
        elif isinstance(p, (RefundSucceeded, RefundFailed)):
            changes.append(OperationChange("close", "refund", p.refund_id))
        elif isinstance(p, ReceiptRegistrationChanged) and p.status != "pending":
            if p.refund_id is not None:
                changes.append(OperationChange("close", "refund", p.refund_id))
            elif p.payment_id is not None:
                changes.append(OperationChange("close", "payment", p.payment_id))
    return changes
