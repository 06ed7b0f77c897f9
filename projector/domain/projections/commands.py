"""`read.commands`: how each command ended, for `GET /v1/commands/{id}` and the admin.

Statuses (contracts): `processing` once an intent event of the command is in the log
(CheckoutStarted, RenewalStarted, RecoveryStarted, RefundRequested, PaymentStateUnknown, RefundStateUnknown, keyed
by `metadata.command_id`); then exactly one terminal event keyed by its payload's `command_id`:
CommandSucceeded → `succeeded` with the outcome, CommandRejected → `rejected` with code and
reason, CommandFailed → `failed` with reason. An intent arriving after the terminal event never
moves a command back to `processing`. (`accepted` is the API's own, for commands not yet here.)

Intent events do not name the command type; until the terminal event names it, the type is the
command that normally records that intent (see `_INTENT_COMMAND_TYPES`).
"""

from __future__ import annotations

import orjson

from projector.domain.events import ProjectedEvent
from projector.domain.projections.base import JSONB, TEXT, TIMESTAMPTZ, UUID, TableSpec
from projector.domain.state import FOREIGN, Row, State

TABLE = TableSpec(
    "commands",
    "command_id",
    (
        ("command_id", UUID), ("user_id", TEXT), ("command_type", TEXT), ("status", TEXT), ("code", TEXT),
        ("reason", TEXT), ("outcome", JSONB), ("actor_kind", TEXT), ("actor_id", TEXT),
        ("created_at", TIMESTAMPTZ), ("updated_at", TIMESTAMPTZ),
    ),
)
T = TABLE.name

TERMINAL = frozenset({"succeeded", "rejected", "failed"})
EMPTY_OUTCOME = "{}"
OUTCOME_FIELDS = ("subscription_id", "payment_id", "refund_id", "plan_id", "confirmation_url", "refund_amount", "message")
_OUTCOME_KEYS = frozenset(OUTCOME_FIELDS)


def _intent_command_type(ev: ProjectedEvent) -> str:
    """The command that normally records this intent (the terminal event later names the real one)."""
    kind = ev.actor_kind
    if ev.type == "CheckoutStarted":
        return "PurchaseSubscription"
    if ev.type == "RenewalStarted":
        return "RenewSubscription"
    if ev.type == "UpgradeStarted":
        return "SwitchPlan"
    if ev.type == "RecoveryStarted":
        return "PayOverdueSubscription"
    if ev.type == "PaymentStateUnknown":
        if ev.data.get("purpose") == "renewal":
            return "RenewSubscription"
        if ev.data.get("purpose") == "upgrade":
            return "SwitchPlan"
        if ev.data.get("purpose") == "recovery" and kind in (None, "user"):
            return "PayOverdueSubscription"
        return "PurchaseSubscription" if kind in (None, "user") else "SyncPayment"
    if ev.type == "RefundRequested":
        return {"user": "CancelSubscription", "admin": "AdminRefund"}.get(kind or "user", "SyncPayment")
    # RefundStateUnknown
    return {"user": "CancelSubscription", "admin": "AdminRefund"}.get(kind or "user", "SyncRefund")


def _new(ev: ProjectedEvent, command_id: str, command_type: str) -> Row:
    return {
        "command_id": command_id,
        "user_id": ev.user_id,
        "command_type": command_type,
        "status": "processing",
        "code": None,
        "reason": None,
        "outcome": EMPTY_OUTCOME,
        "actor_kind": ev.actor_kind,
        "actor_id": ev.actor_id,
        "created_at": ev.occurred_at,
        "updated_at": ev.occurred_at,
    }


def _intent(state: State, ev: ProjectedEvent) -> None:
    command_id = ev.command_id
    if command_id is None:
        return
    row = state.claim(T, command_id, ev.user_id)
    if row is FOREIGN:
        return
    if row is None:
        row = _new(ev, command_id, _intent_command_type(ev))
    elif row["status"] in TERMINAL:
        return
    row["updated_at"] = ev.occurred_at
    state.put(T, command_id, row)


def _terminal(state: State, ev: ProjectedEvent, status: str, **fields: object) -> None:
    d = ev.data
    command_id = d["command_id"]
    row = state.claim(T, command_id, ev.user_id)
    if row is FOREIGN:
        return
    if row is None:
        row = _new(ev, command_id, d["command_type"])
    elif row["actor_kind"] is None:
        row["actor_kind"], row["actor_id"] = ev.actor_kind, ev.actor_id
    row.update(command_type=d["command_type"], status=status, code=None, reason=None, outcome=EMPTY_OUTCOME)
    row.update(fields)
    row["updated_at"] = ev.occurred_at
    state.put(T, command_id, row)


def _succeeded(state: State, ev: ProjectedEvent) -> None:
    outcome = ev.data.get("outcome") or {}
    if outcome.keys() != _OUTCOME_KEYS:
        outcome = {name: outcome.get(name) for name in OUTCOME_FIELDS}  # every key, always
    _terminal(state, ev, "succeeded", outcome=orjson.dumps(outcome, option=orjson.OPT_SORT_KEYS).decode())


def _rejected(state: State, ev: ProjectedEvent) -> None:
    _terminal(state, ev, "rejected", code=ev.data["code"], reason=ev.data["reason"])


def _failed(state: State, ev: ProjectedEvent) -> None:
    _terminal(state, ev, "failed", reason=ev.data["reason"])


INTENT_EVENTS = (
    "CheckoutStarted", "RenewalStarted", "RecoveryStarted", "UpgradeStarted", "RefundRequested", "PaymentStateUnknown", "RefundStateUnknown",
)

HANDLERS = {
    **{name: _intent for name in INTENT_EVENTS},
    "CommandSucceeded": _succeeded,
    "CommandRejected": _rejected,
    "CommandFailed": _failed,
}
