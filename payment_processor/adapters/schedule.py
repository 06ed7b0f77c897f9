"""`processor.schedule`: the facts the scheduler needs about each paid subscription.

Why a table of the processor's own: the scheduler must find "which subscriptions are due" without
folding every account stream each tick and without reading the projector's read models (services
never depend on each other's tables). So the handler writes one row per subscription — status,
period end, whether it renews, the dunning facts — in the SAME transaction as the events that
change them (`schedule_rows` → `record_rows`). The row is computed from the account state AFTER
the append, by the same `apply` the aggregate uses, so it can never disagree with the stream; and
every write carries the stream version it was computed from, so an older writer (a `rebuild`
running next to the processor) never overwrites a newer row.

The scheduler reads the rows (`lock_due`, SKIP LOCKED so several instances share them) and marks
what it published (`mark_sent`). Which action is due is decided in one SQL expression, so a due
row can never hide behind a thousand rows that are merely close to their end.
"""

from __future__ import annotations

import copy
import functools
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, is_dataclass
from datetime import datetime
from typing import Any, Literal

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from eventstore.asyncpg_store import ONLY_IF_APPENDED

from payment_processor.domain import AccountState, PlanState, apply, build_account
from payment_processor.domain.state import Subscription
from schemas import (
    AutoRenewChanged,
    Envelope,
    PaymentMethodReplaced,
    PaymentSucceeded,
    RenewalFailed,
    SubscriptionActivated,
    SubscriptionAdjusted,
    SubscriptionCanceled,
    SubscriptionExpired,
    SubscriptionExpiringSoon,
    SubscriptionRenewed,
    PlanPriceChangeScheduled,
    account_user_id,
)

SCHEDULE_EVENTS = (
    SubscriptionActivated,
    SubscriptionRenewed,
    RenewalFailed,
    SubscriptionCanceled,
    AutoRenewChanged,
    SubscriptionExpired,
    SubscriptionExpiringSoon,
    SubscriptionAdjusted,
    PaymentSucceeded,  # may save the card a renewal charges
    PaymentMethodReplaced,
)
"""Events that can change a row; an append without one of them leaves the table alone."""

Action = Literal["renew", "retry", "expire", "remind"]


@dataclass(frozen=True, slots=True)
class ScheduleRow:
    """One subscription as the scheduler sees it (written by the processor)."""

    subscription_id: uuid.UUID
    stream_id: str
    user_id: str
    status: str
    period_end: datetime
    auto_renew: bool
    has_saved_method: bool
    cancel_at_period_end: bool
    renewal_attempts: int
    next_retry_at: datetime | None
    dunning_over: bool
    reminded_for: datetime | None
    stream_version: int
    trial: bool = False
    """A free trial: charged at its end (not `renewal_lead` before) and reminded before that."""
    plan_id: str | None = None
    """The plan it renews on: the scheduler announces that plan's price changes to it."""

    @property
    def renews(self) -> bool:
        """Will the scheduler try to charge the next period?"""
        return self.auto_renew and self.has_saved_method and not self.cancel_at_period_end


def row_of(state: AccountState, sub: Subscription) -> ScheduleRow | None:
    """The row for `sub` at `state.version`; None while it never had a period (pending, failed)."""
    if sub.period_end is None:
        return None
    return ScheduleRow(
        subscription_id=sub.subscription_id,
        stream_id=state.stream_id,
        user_id=state.user_id,
        status=sub.status,
        period_end=sub.period_end,
        auto_renew=sub.auto_renew,
        has_saved_method=bool(sub.payment_method_id),
        cancel_at_period_end=sub.cancel_at_period_end,
        renewal_attempts=sub.renewal_attempt,
        next_retry_at=sub.next_retry_at,
        dunning_over=sub.dunning_over,
        reminded_for=sub.reminded_for,
        stream_version=state.version,
        trial=sub.trial,
        plan_id=sub.plan_id,
    )


def schedule_rows(state: AccountState | PlanState, envelopes: Sequence[Envelope]) -> list[ScheduleRow]:
    """Rows to write for an append of `envelopes` onto `state` (the state BEFORE the append).

    Pure. The state is copied, not changed: the caller applies the envelopes itself once the
    append committed.
    """
    if not isinstance(state, AccountState):
        return []
    touched = {e.data.subscription_id for e in envelopes if isinstance(e.data, SCHEDULE_EVENTS)}  # type: ignore[attr-defined]
    if not touched:
        return []
    after = _clone(state)
    for envelope in envelopes:
        apply(after, envelope)
    rows = []
    for subscription_id in sorted(touched):
        sub = after.subscriptions.get(subscription_id)
        row = row_of(after, sub) if sub is not None else None
        if row is not None:
            rows.append(row)
    return rows


def _clone(state: AccountState) -> AccountState:
    """A copy `apply` may change without touching `state`: a deep copy costs ~0.5 ms per account
    (the pydantic intents), this one a few microseconds. It copies every dataclass held in the
    state's dicts and every list/dict/set one level down; the pydantic models inside are shared,
    which is safe because appliers replace them and never change them in place."""

    def shallow(obj: Any) -> Any:
        new = copy.copy(obj)
        for name in _field_names(type(obj)):
            value = getattr(obj, name)
            if isinstance(value, (list, dict, set)):
                setattr(new, name, copy.copy(value))
        return new

    new = copy.copy(state)
    for name in _field_names(AccountState):
        value = getattr(state, name)
        if isinstance(value, dict):
            setattr(new, name, {k: shallow(v) if is_dataclass(v) else v for k, v in value.items()})
        elif isinstance(value, (list, set)):
            setattr(new, name, copy.copy(value))
    return new


@functools.cache
def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls))


# --------------------------------------------------------------------------- writing (the processor)

_COLUMNS = tuple(f.name for f in fields(ScheduleRow))
"""The table's columns are the row's fields: both statements below are built from them, so they cannot drift."""

# A newer stream version always wins; an older writer (a `rebuild` next to the processor) never
# overwrites a newer row.
_ON_CONFLICT = "ON CONFLICT (subscription_id) DO UPDATE SET\n" + ",\n".join(
    f"    {c} = EXCLUDED.{c}" for c in (*_COLUMNS[3:], "updated_at")
) + "\nWHERE s.stream_version <= EXCLUDED.stream_version"

_UPSERT = text(
    f"INSERT INTO processor.schedule AS s ({', '.join(_COLUMNS)}, updated_at)\n"
    f"VALUES ({', '.join(':' + c for c in _COLUMNS)}, :now)\n{_ON_CONFLICT}"
)

SIDE_WRITE_SQL = (
    f"INSERT INTO processor.schedule AS s ({', '.join(_COLUMNS)}, updated_at)\n"
    f"SELECT {', '.join('r.' + c for c in _COLUMNS)}, :now\n"
    "FROM jsonb_populate_recordset(NULL::processor.schedule, CAST(:rows AS jsonb)) AS r\n"
    f"WHERE {ONLY_IF_APPENDED}\n{_ON_CONFLICT}"
)
"""The same upsert for many rows (`:rows`, a JSON array of rows), written by the processor's
append in the same statement and only if the append did (`asyncpg_store.SideWrite`)."""


async def record_rows(conn: AsyncConnection, rows: Sequence[ScheduleRow], now: datetime) -> None:
    """Write rows inside the caller's transaction (the append's, for the processor)."""
    if rows:
        await conn.execute(_UPSERT, [{**asdict(row), "now": now} for row in rows])


async def rebuild(engine: AsyncEngine, *, batch: int = 200) -> int:
    """Fold every account stream and write its rows: fills the table for subscriptions that
    existed before it did. Safe next to a running processor (version-guarded); returns rows written."""
    from eventstore.store import EventStore

    store = EventStore(engine)
    async with engine.connect() as conn:
        streams = [r[0] for r in await conn.execute(text("SELECT DISTINCT stream_id FROM eventstore.events WHERE stream_id LIKE 'account-%'"))]
    written = 0
    async with engine.begin() as conn:
        for (stream_id,) in list(await conn.execute(text("SELECT DISTINCT stream_id FROM eventstore.events WHERE stream_id LIKE 'plan-%'"))):
            events = [r.envelope() for r in await store.read_stream(stream_id)]
            await record_price_changes(conn, events, await conn.scalar(text("SELECT now()")))
    for start in range(0, len(streams), batch):
        rows: list[ScheduleRow] = []
        for stream_id in streams[start : start + batch]:
            if account_user_id(stream_id) is None:
                continue
            state = build_account(stream_id, [r.envelope() for r in await store.read_stream(stream_id)])
            rows += [row for sub in state.subscriptions.values() if (row := row_of(state, sub)) is not None]
        async with engine.begin() as conn:
            now = await conn.scalar(text("SELECT now()"))
            await record_rows(conn, rows, now)
        written += len(rows)
    return written


async def read_rows(conn: AsyncConnection, stream_id: str | None = None) -> list[dict[str, object]]:
    """Every row (of one stream), as dicts: for tests and the operator's eye."""
    sql = "SELECT * FROM processor.schedule"
    params: dict[str, object] = {}
    if stream_id is not None:
        sql += " WHERE stream_id = :s"
        params["s"] = stream_id
    return [dict(r._mapping) for r in await conn.execute(text(sql + " ORDER BY period_end"), params)]


# --------------------------------------------------------------------------- reading (the scheduler)


@dataclass(frozen=True, slots=True)
class DueAction:
    """One thing the scheduler must ask the processor to do now."""

    action: Action
    subscription_id: uuid.UUID
    stream_id: str
    user_id: str
    period_end: datetime
    attempt: int
    """The renewal attempt to make (1 = the first charge of the next period); 0 for expiry/reminders."""
    round: int
    """1, or n when an expiry/reminder published n-1 times is still due (see docs/decisions/0091)."""
    status: str
    auto_renew: bool
    has_saved_method: bool
    cancel_at_period_end: bool
    dunning_over: bool


# The whole policy in one expression (docs/decisions/0090, 0091):
# - a subscription that renews (auto-renew on, a saved card, not canceled at period end, dunning
#   not over) is charged RENEWAL_LEAD before its end (attempt 1), and during dunning at its next
#   retry (attempt n+1) — it is never expired by time alone;
# - one that does not renew, or whose last renewal attempt failed, expires at its period end;
# - before that, one "expiring soon" reminder per period, EXPIRY_REMINDER_LEAD before the end;
# - a free trial that renews is charged at its end, not RENEWAL_LEAD before, and is reminded
#   EXPIRY_REMINDER_LEAD before its end like one that does not renew (docs/decisions/0118).
# A row whose due action was already published is skipped (the sent_* marks), except that an
# expiry or reminder still due `resend` after publishing goes out again in a new round.
_DUE = text(
    """
    SELECT s.subscription_id, s.stream_id, s.user_id, s.period_end, d.action, a.attempt,
           CASE WHEN (s.sent_action, s.sent_period_end, s.sent_attempt) IS NOT DISTINCT FROM (d.action, s.period_end, a.attempt)
                THEN s.sent_round + 1 ELSE 1 END AS round,
           s.status, s.auto_renew, s.has_saved_method, s.cancel_at_period_end, s.dunning_over
    FROM processor.schedule AS s
    CROSS JOIN LATERAL (
        SELECT CASE
            WHEN s.auto_renew AND s.has_saved_method AND NOT s.cancel_at_period_end AND NOT s.dunning_over THEN
                CASE
                    WHEN s.status = 'active' AND s.period_end <= :renew_by AND (NOT s.trial OR s.period_end <= :now) THEN 'renew'
                    WHEN s.status = 'past_due' AND s.next_retry_at <= :now THEN 'retry'
                    WHEN s.trial AND s.status = 'active' AND s.period_end <= :remind_by
                         AND s.reminded_for IS DISTINCT FROM s.period_end THEN 'remind'
                END
            WHEN s.period_end <= :now THEN 'expire'
            WHEN s.status = 'active' AND s.period_end <= :remind_by AND s.reminded_for IS DISTINCT FROM s.period_end THEN 'remind'
        END AS action
    ) AS d
    CROSS JOIN LATERAL (
        SELECT CASE WHEN d.action IN ('renew', 'retry') THEN s.renewal_attempts + 1 ELSE 0 END AS attempt
    ) AS a
    WHERE s.status IN ('active', 'past_due')
      AND (s.period_end <= :horizon OR (s.status = 'past_due' AND s.next_retry_at <= :now))
      AND d.action IS NOT NULL
      AND (
          (s.sent_action, s.sent_period_end, s.sent_attempt) IS DISTINCT FROM (d.action, s.period_end, a.attempt)
          OR (d.action IN ('expire', 'remind') AND s.sent_at <= :resend_before)
      )
    ORDER BY s.period_end
    LIMIT :limit
    FOR UPDATE OF s SKIP LOCKED
    """
)

_SENT = text(
    """
    UPDATE processor.schedule AS s
    SET sent_action = c.action, sent_period_end = c.period_end, sent_attempt = c.attempt, sent_round = c.round, sent_at = :now
    FROM unnest(CAST(:ids AS uuid[]), CAST(:actions AS text[]), CAST(:ends AS timestamptz[]), CAST(:attempts AS integer[]),
                CAST(:rounds AS integer[])) AS c(id, action, period_end, attempt, round)
    WHERE s.subscription_id = c.id
    """
)


async def lock_due(
    conn: AsyncConnection,
    now: datetime,
    *,
    renew_by: datetime,
    remind_by: datetime,
    resend_before: datetime,
    limit: int,
) -> list[DueAction]:
    """Due actions, their rows locked for this transaction (another scheduler skips them)."""
    params = {
        "now": now,
        "renew_by": renew_by,
        "remind_by": remind_by,
        "horizon": max(renew_by, remind_by, now),
        "resend_before": resend_before,
        "limit": limit,
    }
    return [DueAction(**row._mapping) for row in await conn.execute(_DUE, params)]


async def mark_sent(conn: AsyncConnection, sent: Sequence[DueAction], now: datetime) -> None:
    """Remember what was published, inside the transaction that locked the rows."""
    if sent:
        await conn.execute(
            _SENT,
            {
                "ids": [d.subscription_id for d in sent],
                "actions": [d.action for d in sent],
                "ends": [d.period_end for d in sent],
                "attempts": [d.attempt for d in sent],
                "rounds": [d.round for d in sent],
                "now": now,
            },
        )


# --------------------------------------------------------------------------- price-change notices (docs/decisions/0120)

_PRICE_CHANGE_COLUMNS = ("change_id", "plan_id", "price_minor", "currency", "effective_at", "grandfather", "recorded_at")
_PRICE_CHANGE_INSERT = (
    f"INSERT INTO processor.price_changes ({', '.join(_PRICE_CHANGE_COLUMNS)})\n"
    f"SELECT {', '.join('r.' + c for c in _PRICE_CHANGE_COLUMNS)}\n"
    "FROM jsonb_populate_recordset(NULL::processor.price_changes, CAST(:rows AS jsonb)) AS r\n"
    "{gate}ON CONFLICT (change_id) DO NOTHING"
)
PRICE_CHANGE_SIDE_WRITE_SQL = _PRICE_CHANGE_INSERT.format(gate=f"WHERE {ONLY_IF_APPENDED}\n")
"""`processor.price_changes` rows for the PlanPriceChangeScheduled of a plan append, written with it."""


def price_change_rows(envelopes: Sequence[Envelope], now: datetime) -> list[dict[str, Any]]:
    """The scheduler's row for each price change in `envelopes` (JSON-ready)."""
    rows = []
    for envelope in envelopes:
        d = envelope.data
        if isinstance(d, PlanPriceChangeScheduled):
            rows.append({
                "change_id": str(d.change_id), "plan_id": d.plan_id, "price_minor": d.price.minor, "currency": d.price.currency,
                "effective_at": d.effective_at.isoformat(), "grandfather": d.grandfather, "recorded_at": now.isoformat(),
            })
    return rows


async def record_price_changes(conn: AsyncConnection, envelopes: Sequence[Envelope], now: datetime) -> None:
    """The same rows outside an append (`rebuild`); existing rows are kept."""
    rows = price_change_rows(envelopes, now)
    if rows:
        await conn.execute(text(_PRICE_CHANGE_INSERT.format(gate="")), {"rows": orjson.dumps(rows).decode()})


@dataclass(frozen=True, slots=True)
class DueNotice:
    """A live subscription on a plan whose (not grandfathered) price change it was not told about yet."""

    subscription_id: uuid.UUID
    stream_id: str
    user_id: str
    plan_id: str
    change_id: uuid.UUID


# Every live subscription on the plan, for every change that is not grandfathered, once: the
# decider itself skips subscribers already paying the price or already told (a repeat is harmless:
# the command id is derived from the pair), and `processor.price_notices` keeps it from being
# published every tick.
_DUE_NOTICES = text(
    """
    SELECT s.subscription_id, s.stream_id, s.user_id, s.plan_id, c.change_id
    FROM processor.price_changes AS c
    JOIN processor.schedule AS s ON s.plan_id = c.plan_id AND s.status IN ('active', 'past_due')
    WHERE NOT c.grandfather
      AND NOT EXISTS (SELECT 1 FROM processor.price_notices AS n WHERE n.subscription_id = s.subscription_id AND n.change_id = c.change_id)
    ORDER BY c.effective_at, s.period_end
    LIMIT :limit
    FOR UPDATE OF s SKIP LOCKED
    """
)

_NOTICES_SENT = text(
    """
    INSERT INTO processor.price_notices (subscription_id, change_id, sent_at)
    SELECT n.subscription_id, n.change_id, CAST(:now AS timestamptz)
    FROM unnest(CAST(:ids AS uuid[]), CAST(:changes AS uuid[])) AS n(subscription_id, change_id)
    ON CONFLICT DO NOTHING
    """
)


async def lock_due_notices(conn: AsyncConnection, *, limit: int) -> list[DueNotice]:
    """Price-change notices to publish, their schedule rows locked for this transaction."""
    return [DueNotice(**row._mapping) for row in await conn.execute(_DUE_NOTICES, {"limit": limit})]


async def mark_notices_sent(conn: AsyncConnection, sent: Sequence[DueNotice], now: datetime) -> None:
    if sent:
        await conn.execute(
            _NOTICES_SENT, {"ids": [n.subscription_id for n in sent], "changes": [n.change_id for n in sent], "now": now}
        )
