"""The projections, one module per read-model table, applied in this order to every event.

`subscriptions` runs before `payments`, `refunds` and `accounts`, which read its rows (a
payment whose creation answer was lost takes the subscription's price; the account counts its
subscriptions; `revenue` reads the subscription's plan). Each module exposes `TABLE` (and
`MORE_TABLES` when it keeps more than one) and `HANDLERS` (event type → handler); `apply_event`
runs them through one dispatch table.
"""

from __future__ import annotations

from collections.abc import Callable

from projector.domain.events import EVENT_VERSIONS, ProjectedEvent
from projector.domain.projections import accounts, commands, payments, plans, promo_codes, refunds, revenue, subscriptions
from projector.domain.projections.base import TableSpec
from projector.domain.state import State

PROJECTIONS = (plans, promo_codes, subscriptions, payments, refunds, commands, accounts, revenue)
TABLES: dict[str, TableSpec] = {t.name: t for p in PROJECTIONS for t in (p.TABLE, *getattr(p, "MORE_TABLES", ()))}
TABLE_NAMES: tuple[str, ...] = tuple(TABLES)

# event type → the handlers of every projection that cares, in projection order
DISPATCH: dict[str, tuple[Callable[[State, ProjectedEvent], None], ...]] = {
    name: tuple(p.HANDLERS[name] for p in PROJECTIONS if name in p.HANDLERS) for name in EVENT_VERSIONS
}


def new_state() -> State:
    return State(TABLE_NAMES)


def apply_event(state: State, ev: ProjectedEvent, _dispatch: dict = DISPATCH) -> None:
    """Apply one event to every read model (the only entry point the live and replay paths use)."""
    for handler in _dispatch[ev.type]:
        handler(state, ev)
