"""`read.plans`: the catalogue, from the plan streams (PlanCreated, PlanArchived)."""

from __future__ import annotations

from projector.domain.events import ProjectedEvent, currency, minor
from projector.domain.projections.base import BIGINT, BOOLEAN, INTEGER, TEXT, TIMESTAMPTZ, TableSpec
from projector.domain.state import State

TABLE = TableSpec(
    "plans",
    "plan_id",
    (
        ("plan_id", TEXT), ("name", TEXT), ("price_minor", BIGINT), ("currency", TEXT),
        ("period_days", INTEGER), ("description", TEXT), ("archived", BOOLEAN),
        ("created_at", TIMESTAMPTZ), ("updated_at", TIMESTAMPTZ), ("trial_days", INTEGER),
        ("vat_code", INTEGER), ("payment_subject", TEXT), ("payment_mode", TEXT),
    ),
)
T = TABLE.name


def _plan_created(state: State, ev: ProjectedEvent) -> None:
    d = ev.data
    row = state.get(T, d["plan_id"])
    if row is None:
        row = {"plan_id": d["plan_id"], "archived": False, "created_at": ev.occurred_at}
    row.update(
        name=d["name"],
        price_minor=minor(d["price"]),
        currency=currency(d["price"]),
        period_days=d["period_days"],
        description=d.get("description") or "",
        trial_days=int(d.get("trial_days") or 0),
        updated_at=ev.occurred_at,
        vat_code=d.get("vat_code"),  # unset on plans created before receipt settings: the processor's defaults
        payment_subject=d.get("payment_subject"),
        payment_mode=d.get("payment_mode"),
    )
    state.put(T, d["plan_id"], row)


def _plan_archived(state: State, ev: ProjectedEvent) -> None:
    row = state.get(T, ev.data["plan_id"])
    if row is None:
        return  # archiving a plan never created: nothing to show (the processor rejects it anyway)
    row["archived"] = True
    row["updated_at"] = ev.occurred_at
    state.put(T, row["plan_id"], row)


HANDLERS = {"PlanCreated": _plan_created, "PlanArchived": _plan_archived}
