"""`read.refunds`: every refund, from the recorded intent to YooKassa's final answer.

Statuses (contracts): `requested` (intent recorded before YooKassa is called), `pending`,
`succeeded`, `canceled` (YooKassa refused; `reason` then says why), `unknown` (answer lost; the
janitor asks again). `reason` is otherwise why the refund was made; a refund made in YooKassa's
dashboard (RefundSucceeded.dashboard, docs/decisions/0122) starts at `succeeded` with that reason. A terminal status is never
replaced by "unknown" or "pending" arriving after it.
"""

from __future__ import annotations

from projector.domain.events import ProjectedEvent, currency, minor
from projector.domain.projections.base import BIGINT, INTEGER, JSONB, TEXT, TIMESTAMPTZ, UUID, TableSpec
from projector.domain.projections.payments import receipt_json
from projector.domain.state import FOREIGN, Row, State

TABLE = TableSpec(
    "refunds",
    "refund_id",
    (
        ("refund_id", UUID), ("subscription_id", UUID), ("payment_id", UUID), ("user_id", TEXT),
        ("provider_refund_id", TEXT), ("status", TEXT), ("amount_minor", BIGINT), ("currency", TEXT),
        ("days_used", INTEGER), ("reason", TEXT), ("created_at", TIMESTAMPTZ), ("updated_at", TIMESTAMPTZ),
        ("receipt", JSONB), ("receipt_registration", TEXT),
    ),
)
T = TABLE.name

TERMINAL = frozenset({"succeeded", "canceled"})
DASHBOARD_REASON = "made in YooKassa's dashboard"


def _new(ev: ProjectedEvent, payment_id: str, amount: dict) -> Row:
    d = ev.data
    return {
        "refund_id": d["refund_id"],
        "subscription_id": d["subscription_id"],
        "payment_id": payment_id,
        "user_id": ev.user_id,
        "provider_refund_id": None,
        "status": "requested",
        "amount_minor": minor(amount),
        "currency": currency(amount),
        "days_used": d.get("days_used"),
        "reason": d.get("reason"),
        "created_at": ev.occurred_at,
        "updated_at": ev.occurred_at,
        "receipt": receipt_json(d),
        "receipt_registration": None,
    }


def _row(state: State, ev: ProjectedEvent) -> Row | None:
    if ev.user_id is None:
        return None
    return state.owned(T, ev.data["refund_id"], ev.user_id)


def _save(state: State, ev: ProjectedEvent, row: Row) -> None:
    row["updated_at"] = ev.occurred_at
    state.put(T, row["refund_id"], row)


def _requested(state: State, ev: ProjectedEvent) -> None:
    if ev.user_id is None:
        return
    d = ev.data
    row = state.claim(T, d["refund_id"], ev.user_id)
    if row is FOREIGN:
        return
    if row is None:
        row = _new(ev, d["payment_id"], d["amount"])
    _save(state, ev, row)


def _created(state: State, ev: ProjectedEvent) -> None:
    row = _row(state, ev)
    if row is None:
        return  # RefundRequested always comes first on the stream; nothing to attach this to
    row["provider_refund_id"] = ev.data["provider_refund_id"]
    if row["status"] not in TERMINAL:
        row["status"] = "pending"
    _save(state, ev, row)


def _succeeded(state: State, ev: ProjectedEvent) -> None:
    if ev.user_id is None:
        return
    d = ev.data
    row = state.claim(T, d["refund_id"], ev.user_id)
    if row is FOREIGN:
        return
    if row is None:
        row = _new(ev, d["payment_id"], d["amount"])
    row["provider_refund_id"] = d["provider_refund_id"]
    row["status"] = "succeeded"
    row["amount_minor"] = minor(d["amount"])
    row["currency"] = currency(d["amount"])
    if d.get("days_used") is not None:
        row["days_used"] = d["days_used"]
    if d.get("dashboard") and row["reason"] is None:
        row["reason"] = DASHBOARD_REASON  # no RefundRequested came first: say where it came from
    row["receipt_registration"] = d.get("receipt_registration")
    _save(state, ev, row)


def _failed(state: State, ev: ProjectedEvent) -> None:
    row = _row(state, ev)
    if row is None:
        sub = state.owned("subscriptions", ev.data["subscription_id"], ev.user_id) if ev.user_id else None
        if sub is None or sub["last_payment_id"] is None:
            return
        row = _new(ev, sub["last_payment_id"], ev.data["amount"])
    row["status"] = "canceled"
    row["reason"] = ev.data["reason"]
    _save(state, ev, row)


def _state_unknown(state: State, ev: ProjectedEvent) -> None:
    row = _row(state, ev)
    if row is None:
        return
    if ev.data.get("provider_refund_id"):
        row["provider_refund_id"] = ev.data["provider_refund_id"]
    if row["status"] not in TERMINAL:
        row["status"] = "unknown"
    _save(state, ev, row)


def _receipt_registration(state: State, ev: ProjectedEvent) -> None:
    if not ev.data.get("refund_id"):
        return
    row = _row(state, ev)
    if row is not None:
        row["receipt_registration"] = ev.data["status"]
        _save(state, ev, row)


HANDLERS = {
    "RefundRequested": _requested,
    "RefundCreated": _created,
    "RefundSucceeded": _succeeded,
    "RefundFailed": _failed,
    "RefundStateUnknown": _state_unknown,
    "ReceiptRegistrationChanged": _receipt_registration,
}
