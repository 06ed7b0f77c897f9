"""`read.plans`: the catalogue, from the plan streams (PlanCreated, PlanArchived, PlanPriceChangeScheduled).

`price_minor` is the price the plan was created with; `price_changes` lists every scheduled price
(`[{"change_id", "price_minor", "effective_at", "grandfather"}]`, by effective date), so a reader
tells the price at any time (the projector never looks at the clock): the newest change in effect,
else `price_minor`.
"""

from __future__ import annotations

import orjson

from projector.domain.events import ProjectedEvent, currency, minor, ts
from projector.domain.projections.base import BIGINT, BOOLEAN, INTEGER, JSONB, TEXT, TIMESTAMPTZ, TableSpec
from projector.domain.state import State

TABLE = TableSpec(
    "plans",
    "plan_id",
    (
        ("plan_id", TEXT), ("name", TEXT), ("price_minor", BIGINT), ("currency", TEXT),
        ("period_days", INTEGER), ("description", TEXT), ("archived", BOOLEAN),
        ("created_at", TIMESTAMPTZ), ("updated_at", TIMESTAMPTZ), ("trial_days", INTEGER),
        ("vat_code", INTEGER), ("payment_subject", TEXT), ("payment_mode", TEXT), ("price_changes", JSONB),
    ),
)
T = TABLE.name


def _plan_created(state: State, ev: ProjectedEvent) -> None:
    d = ev.data
    row = state.get(T, d["plan_id"])
    if row is None:
        row = {"plan_id": d["plan_id"], "archived": False, "created_at": ev.occurred_at, "price_changes": "[]"}
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


def _price_change_scheduled(state: State, ev: ProjectedEvent) -> None:
    d = ev.data
    row = state.get(T, d["plan_id"])
    if row is None:
        return  # the processor refuses a change to a plan never created
    changes = [c for c in orjson.loads(row.get("price_changes") or "[]") if c["change_id"] != d["change_id"]]
    changes.append({
        "change_id": d["change_id"],
        "price_minor": minor(d["price"]),
        "effective_at": ts(d["effective_at"]).isoformat(),
        "grandfather": bool(d.get("grandfather", False)),
    })
    changes.sort(key=lambda c: c["effective_at"])
    row["price_changes"] = orjson.dumps(changes, option=orjson.OPT_SORT_KEYS).decode()
    row["updated_at"] = ev.occurred_at
    state.put(T, row["plan_id"], row)


HANDLERS = {"PlanCreated": _plan_created, "PlanArchived": _plan_archived, "PlanPriceChangeScheduled": _price_change_scheduled}
