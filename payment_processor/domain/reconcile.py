"""Reconciliation: YooKassa's payments and refunds of a window against what we recorded. Pure.

Money can move without us hearing: an operator refunds in YooKassa's dashboard, a notification
is lost, a create's answer never came (docs/decisions/0104). A run lists what YooKassa created in
a window (the gateway follows its cursors), folds the account streams that touched payments in
that window (`our_objects`), and `compare` classifies every difference:

* `unknown_to_us` — YooKassa has it, we never recorded its id;
* `unknown_to_provider` — we recorded an id YooKassa's list does not have;
* `status_differs` / `amount_differs` — both have it, and disagree.

A difference that is a *fact we can record* carries the command that records it — a SyncRefund
for a dashboard refund of one of our payments, a SyncPayment for a payment whose metadata names
ours (the late-answer path) or one whose final status we never heard (a lost notification).
The processor handles them like every command: it re-reads YooKassa and appends what is true,
and its state makes a second recording impossible; the command ids are derived from the object,
its status at YooKassa and the attempt (`with_command_ids`), so a rerun publishes the same ids.
The rest waits for an operator.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Literal
from uuid import UUID

from schemas import (
    Envelope,
    Money,
    SyncPayment,
    SyncRefund,
    account_stream,
    derived_id,
)

from payment_processor.domain.provider import ProviderPayment, ProviderRefund
from payment_processor.domain.state import FINAL_PAYMENT, build_account

DifferenceKind = Literal["unknown_to_us", "unknown_to_provider", "status_differs", "amount_differs"]
ObjectType = Literal["payment", "refund"]
DIFFERENCE_KINDS: tuple[str, ...] = ("unknown_to_us", "unknown_to_provider", "status_differs", "amount_differs")

PROVIDER_PENDING = frozenset({"pending", "waiting_for_capture"})
OUR_OPEN = frozenset({"requested", "pending", "unknown"})
DEFAULT_MARGIN = timedelta(days=2)
"""How far around the window both sides are read, so an object created just before the window
and recorded just inside it (or a late answer) is matched, not reported twice."""


@dataclass(frozen=True, slots=True)
class OurObject:
    """A payment or refund as our event store has it, with the YooKassa id we recorded."""

    object_type: ObjectType
    provider_id: str
    our_id: UUID
    user_id: str
    status: str
    amount: Money
    known_since: datetime
    """When we first recorded YooKassa's id (the event's business time)."""
    outcome_unknown: bool = False
    provider_payment_id: str | None = None
    """For a refund: YooKassa's id of the refunded payment."""
    refund_in_flight: bool = False
    """For a payment: a refund of ours on it has no YooKassa id yet (it may be one YooKassa lists)."""


@dataclass(frozen=True, slots=True)
class Difference:
    kind: DifferenceKind
    object_type: ObjectType
    provider_id: str
    detail: str
    our_id: UUID | None = None
    user_id: str | None = None
    our_status: str | None = None
    provider_status: str | None = None
    our_amount: Money | None = None
    provider_amount: Money | None = None
    fact: SyncPayment | SyncRefund | None = None
    """The command that records what YooKassa says (None: an operator must look)."""
    command_id: UUID | None = None
    """Set by `with_command_ids`: derived from the object, its status at YooKassa and the attempt."""

    @property
    def stream_id(self) -> str | None:
        return account_stream(self.user_id) if self.user_id else None


@dataclass(frozen=True, slots=True)
class Window:
    since: datetime
    until: datetime

    def __contains__(self, at: object) -> bool:
        return isinstance(at, datetime) and self.since <= at < self.until


def our_objects(stream_id: str, events: Iterable[Envelope], *, recorded_at: Mapping[UUID, datetime] | None = None) -> list[OurObject]:
    """The payments and refunds of one account stream that carry a YooKassa id (folded, so the
    status is the aggregate's own), each with the time we first recorded that id: the store's
    wall-clock `recorded_at` of the event when given (YooKassa's `created_at` is wall-clock time;
    business time may be shifted), else the event's business time."""
    recorded_at = recorded_at or {}
    events = list(events)
    state = build_account(stream_id, events)
    first_seen: dict[tuple[str, str], datetime] = {}
    for envelope in events:
        data = envelope.data
        for object_type, attr in (("payment", "provider_payment_id"), ("refund", "provider_refund_id")):
            value = getattr(data, attr, None)
            # RefundRequested names the refunded payment's id: that is not when we learned it.
            if value and (object_type == "refund" or hasattr(data, "payment_id") and not hasattr(data, "refund_id")):
                first_seen.setdefault((object_type, value), recorded_at.get(envelope.id, envelope.occurred_at))
    found: list[OurObject] = []
    for p in state.payments.values():
        if p.provider_payment_id:
            found.append(
                OurObject(
                    "payment", p.provider_payment_id, p.payment_id, state.user_id, p.status, p.amount,
                    first_seen.get(("payment", p.provider_payment_id), p.requested_at), outcome_unknown=p.outcome_unknown,
                    refund_in_flight=any(
                        r.payment_id == p.payment_id and r.provider_refund_id is None and r.status not in FINAL_PAYMENT
                        for r in state.refunds.values()
                    ),
                )
            )
    for r in state.refunds.values():
        if r.provider_refund_id:
            found.append(
                OurObject(
                    "refund", r.provider_refund_id, r.refund_id, state.user_id, r.status, r.amount,
                    first_seen.get(("refund", r.provider_refund_id), r.requested_at),
                    outcome_unknown=r.outcome_unknown, provider_payment_id=r.provider_payment_id or None,
                )
            )
    return found


def compare(
    window: Window,
    payments: Iterable[ProviderPayment],
    refunds: Iterable[ProviderRefund],
    ours: Iterable[OurObject],
) -> list[Difference]:
    """Every difference between YooKassa's objects and ours, for objects of `window`.

    YooKassa's side is classified when it was created in the window; ours when we first recorded
    its id in the window. Both sides may hold more (read with a margin): extra objects only serve
    to match, so an object near the window's edge is never reported as missing.
    """
    by_id = {(o.object_type, o.provider_id): o for o in ours}
    theirs_ids: set[tuple[str, str]] = set()
    differences: list[Difference] = []
    for p in payments:
        theirs_ids.add(("payment", p.id))
        if p.created_at is None or p.created_at in window:
            differences += _payment_differences(p, by_id.get(("payment", p.id)))
    for r in refunds:
        theirs_ids.add(("refund", r.id))
        if r.created_at is None or r.created_at in window:
            differences += _refund_differences(r, by_id.get(("refund", r.id)), by_id)
    for o in by_id.values():
        if o.known_since in window and (o.object_type, o.provider_id) not in theirs_ids:
            differences.append(
                Difference(
                    "unknown_to_provider", o.object_type, o.provider_id,
                    f"We recorded YooKassa's {o.object_type} {o.provider_id} ({o.status}, {o.amount}); YooKassa's list has no such {o.object_type}.",
                    our_id=o.our_id, user_id=o.user_id, our_status=o.status, our_amount=o.amount,
                )
            )
    return differences


ATTEMPTS_LOOKED_AHEAD = 8


def fact_command_ids(d: Difference) -> list[UUID]:
    """The ids a difference's fact may be sent under, first attempt first (see `with_command_ids`)."""
    return [
        derived_id("reconcile", d.object_type, d.provider_id, d.provider_status or "", attempt) for attempt in range(ATTEMPTS_LOOKED_AHEAD)
    ]


def with_command_ids(differences: Iterable[Difference], handled: Callable[[UUID], bool]) -> list[Difference]:
    """Give each fact the first of its ids that no command ended under yet.

    Deterministic: a rerun (or a second processor) before the command ended sends the same id,
    which the processor handles once. A command that ended without recording it (the processor
    found a refund of ours in flight on that payment, a race) does not stop the next run from
    asking again under the next id. A fact that was recorded is no difference any more, so it is
    never sent again; and were it sent, the account's state records nothing twice.
    """
    out = []
    for d in differences:
        if d.fact is None:
            out.append(d)
            continue
        ids = fact_command_ids(d)
        chosen = next((cid for cid in ids if not handled(cid)), None)
        if chosen is None:  # asked that often already: an operator looks
            out.append(replace(d, fact=None, detail=d.detail + " It was sent for recording too often; an operator must look."))
        else:
            out.append(replace(d, command_id=chosen))
    return out


def _payment_differences(p: ProviderPayment, o: OurObject | None) -> list[Difference]:
    if o is None:
        named = p.our_payment_id
        user_id = (p.metadata or {}).get("user_id")
        if named and user_id and _is_uuid(named):
            # Ours by its metadata, its answer never recorded: the late-answer path (0104) settles it.
            fact = SyncPayment(provider_payment_id=p.id, hint_status=p.status)
            detail = f"YooKassa's payment {p.id} ({p.status}, {p.amount}) names our payment {named}, whose answer we never recorded."
            return [
                Difference(
                    "unknown_to_us", "payment", p.id, detail, our_id=UUID(named), user_id=user_id, provider_status=p.status,
                    provider_amount=p.amount, fact=fact,
                )
            ]
        detail = f"YooKassa's payment {p.id} ({p.status}, {p.amount}) names none of ours."
        return [Difference("unknown_to_us", "payment", p.id, detail, provider_status=p.status, provider_amount=p.amount)]
    found: list[Difference] = []
    if not _same_status(o.status, p.status):
        settled_there = p.status in FINAL_PAYMENT and (o.status in OUR_OPEN or o.outcome_unknown)
        fact = SyncPayment(payment_id=o.our_id, provider_payment_id=p.id, hint_status=p.status) if settled_there else None
        detail = (
            f"YooKassa's payment {p.id} is {p.status}, ours is {o.status}"
            + (": its final answer never reached us." if fact else ".")
        )
        found.append(
            Difference(
                "status_differs", "payment", p.id, detail, our_id=o.our_id, user_id=o.user_id, our_status=o.status,
                provider_status=p.status, our_amount=o.amount, provider_amount=p.amount, fact=fact,
            )
        )
    if p.amount is not None and p.amount != o.amount:
        found.append(
            Difference(
                "amount_differs", "payment", p.id, f"YooKassa's payment {p.id} is {p.amount}, ours {o.amount}.",
                our_id=o.our_id, user_id=o.user_id, our_status=o.status, provider_status=p.status,
                our_amount=o.amount, provider_amount=p.amount,
            )
        )
    return found


def _refund_differences(r: ProviderRefund, o: OurObject | None, by_id: dict[tuple[str, str], OurObject]) -> list[Difference]:
    if o is None:
        if r.status == "canceled":
            return []  # YooKassa refused it: no money moved, nothing to reconcile
        payment = by_id.get(("payment", r.payment_id or ""))
        if payment is None:
            detail = f"YooKassa's refund {r.id} ({r.status}, {r.amount}) is of payment {r.payment_id}, which is none of ours."
            return [Difference("unknown_to_us", "refund", r.id, detail, provider_status=r.status, provider_amount=r.amount)]
        recordable = r.status == "succeeded" and not payment.refund_in_flight
        fact = SyncRefund(provider_refund_id=r.id, hint_status=r.status) if recordable else None
        if r.status != "succeeded":
            why = "; it is recorded once it succeeds."
        elif payment.refund_in_flight:
            why = "; a refund of ours on the payment has no YooKassa id yet and may be this one: reconcile again once ours settled."
        else:
            why = ": a refund made in YooKassa's dashboard."
        detail = f"YooKassa's refund {r.id} ({r.status}, {r.amount}) of our payment {payment.our_id} was never asked by us" + why
        return [
            Difference(
                "unknown_to_us", "refund", r.id, detail, user_id=payment.user_id, provider_status=r.status,
                provider_amount=r.amount, fact=fact,
            )
        ]
    found: list[Difference] = []
    if not _same_status(o.status, r.status):
        settled_there = r.status in FINAL_PAYMENT and (o.status in OUR_OPEN or o.outcome_unknown)
        fact = SyncRefund(refund_id=o.our_id, provider_refund_id=r.id, hint_status=r.status) if settled_there else None
        detail = f"YooKassa's refund {r.id} is {r.status}, ours is {o.status}" + (": its final answer never reached us." if fact else ".")
        found.append(
            Difference(
                "status_differs", "refund", r.id, detail, our_id=o.our_id, user_id=o.user_id, our_status=o.status,
                provider_status=r.status, our_amount=o.amount, provider_amount=r.amount, fact=fact,
            )
        )
    if r.amount is not None and r.amount != o.amount:
        found.append(
            Difference(
                "amount_differs", "refund", r.id, f"YooKassa's refund {r.id} is {r.amount}, ours {o.amount}.",
                our_id=o.our_id, user_id=o.user_id, our_status=o.status, provider_status=r.status,
                our_amount=o.amount, provider_amount=r.amount,
            )
        )
    return found


def _same_status(ours: str, theirs: str) -> bool:
    """Ours and YooKassa's status say the same (still open on both sides counts as the same)."""
    if ours == theirs:
        return True
    return ours in OUR_OPEN and theirs in PROVIDER_PENDING


def _is_uuid(value: str) -> bool:
    try:
        UUID(value)
    except ValueError:
        return False
    return True
