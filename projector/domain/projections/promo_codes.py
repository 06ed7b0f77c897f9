"""`read.promo_codes`: each promo code's terms, whether it is active, and its uses — from the code's
own stream (PromoCodeCreated/Deactivated, and the uses purchases hold and release on it).

`redemptions` counts the uses held now (what the usage limit counts); `released` the uses given back
by checkouts that failed or were abandoned; `remaining` is left to the readers (limit − redemptions).
"""

from __future__ import annotations

import orjson

from projector.domain.events import ProjectedEvent, currency, minor, ts
from projector.domain.projections.base import BIGINT, BOOLEAN, INTEGER, JSONB, TEXT, TIMESTAMPTZ, TableSpec
from projector.domain.state import State

TABLE = TableSpec(
    "promo_codes",
    "code",
    (
        ("code", TEXT), ("percent_off", INTEGER), ("amount_off_minor", BIGINT), ("currency", TEXT),
        ("periods", INTEGER), ("expires_at", TIMESTAMPTZ), ("max_redemptions", INTEGER), ("plan_ids", JSONB),
        ("active", BOOLEAN), ("deactivated_reason", TEXT), ("redemptions", INTEGER), ("released", INTEGER),
        ("created_at", TIMESTAMPTZ), ("updated_at", TIMESTAMPTZ),
    ),
)
T = TABLE.name


def _created(state: State, ev: ProjectedEvent) -> None:
    d = ev.data
    row = state.get(T, d["code"]) or {"code": d["code"], "redemptions": 0, "released": 0, "created_at": ev.occurred_at}
    amount_off = d.get("amount_off")
    row.update(
        percent_off=d.get("percent_off"),
        amount_off_minor=minor(amount_off) if amount_off else None,
        currency=currency(amount_off) if amount_off else None,
        periods=d["periods"],
        expires_at=ts(d["expires_at"]),
        max_redemptions=d.get("max_redemptions"),
        plan_ids=orjson.dumps(d["plan_ids"]).decode() if d.get("plan_ids") is not None else None,
        active=True,
        deactivated_reason=None,
        updated_at=ev.occurred_at,
    )
    state.put(T, d["code"], row)


def _change(state: State, ev: ProjectedEvent, **changes: object) -> None:
    row = state.get(T, ev.data["code"])
    if row is None:
        return  # a code never created: nothing to show (the processor never writes one)
    for name, value in changes.items():
        row[name] = row[name] + value if name in ("redemptions", "released") else value  # type: ignore[operator]
    row["updated_at"] = ev.occurred_at
    state.put(T, row["code"], row)


def _deactivated(state: State, ev: ProjectedEvent) -> None:
    _change(state, ev, active=False, deactivated_reason=ev.data["reason"])


def _redeemed(state: State, ev: ProjectedEvent) -> None:
    _change(state, ev, redemptions=1)


def _released(state: State, ev: ProjectedEvent) -> None:
    _change(state, ev, redemptions=-1, released=1)


HANDLERS = {
    "PromoCodeCreated": _created,
    "PromoCodeDeactivated": _deactivated,
    "PromoCodeRedeemed": _redeemed,
    "PromoCodeReleased": _released,
}
