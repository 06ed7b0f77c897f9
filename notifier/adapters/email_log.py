"""The at-most-once record of emails in PostgreSQL (schema `notifier`).

Every state change is one short committed statement, because the point is what survives a
crash: `sending` is COMMITTED before Mailgun is called, `sent` right after its 200. A claim
(`claim` token + `lease_until`) says who may send a row now; the lease outlives the longest
possible send (retry budget + one attempt's timeout + a margin), so a live sender never loses its
claim and a crashed sender's row is taken over only after its lease ran out — with the same
Message-Id. Times come from the database (`clock_timestamp()`), so several notifier instances
agree on leases without trusting each other's clocks. See docs/decisions/0070.

Statements run on a plain asyncpg pool (infra.db.create_pool): each is autocommitted or in
an explicit short transaction, with none of an ORM's per-statement CPU or BEGIN/ROLLBACK around
reads — the notifier handles every event of the system.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from eventstore.sql import bind

_COLUMNS = "event_id, kind, recipient, message_id, message, event, event_key, source, claim, attempts, claims, created_at, status"


@dataclass(frozen=True)
class EmailRecord:
    event_id: uuid.UUID
    status: str
    kind: str
    recipient: str
    message_id: str
    attempts: int
    claims: int
    lease_expired: bool
    last_error: str | None
    provider_id: str | None


@dataclass(frozen=True)
class Claim:
    """The right to send one row now, until the lease ends; carries what the send needs."""

    event_id: uuid.UUID
    token: uuid.UUID
    kind: str
    recipient: str
    message_id: str
    message: dict[str, Any]
    event: bytes | None
    event_key: bytes | None
    source: str | None
    attempts: int
    claims: int
    created_at: datetime


@dataclass(frozen=True)
class NewEmail:
    event_id: uuid.UUID
    event_type: str
    kind: str
    user_id: str | None
    recipient: str
    locale: str
    message_id: str
    message: dict[str, Any]
    event: bytes
    event_key: bytes | None
    source: str | None


def _claim(row: Any) -> Claim:
    return Claim(
        event_id=row["event_id"],
        token=row["claim"],
        kind=row["kind"],
        recipient=row["recipient"],
        message_id=row["message_id"],
        message=row["message"],
        event=row["event"],
        event_key=row["event_key"],
        source=row["source"],
        attempts=row["attempts"],
        claims=row["claims"],
        created_at=row["created_at"],
    )


async def _fetchrow(conn: Any, sql: str, params: dict[str, Any] | None = None) -> Any:
    statement, args = bind(sql, params or {})
    return await conn.fetchrow(statement, *args)


async def _execute(conn: Any, sql: str, params: dict[str, Any]) -> int:
    """Run a statement; the number of rows it touched."""
    statement, args = bind(sql, params)
    status = await conn.execute(statement, *args)
    return int(status.rsplit(" ", 1)[-1]) if status and status[-1].isdigit() else 0


class EmailLog:
    """Reads and moves rows of `notifier.emails`; each method is its own committed transaction."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def get(self, event_id: uuid.UUID) -> EmailRecord | None:
        row = await _fetchrow(
            self.pool,
            "SELECT event_id, status, kind, recipient, message_id, attempts, claims, last_error, provider_id, "
            "coalesce(lease_until < clock_timestamp(), true) AS lease_expired "
            "FROM notifier.emails WHERE event_id = :id",
            {"id": event_id},
        )
        return EmailRecord(**row) if row is not None else None

    async def create_sending(self, email: NewEmail, lease_s: float) -> Claim | None:
        """Insert the row as `sending` with a fresh claim; None when the event has a row already."""
        return await self._insert(email, "sending", lease_s=lease_s)

    async def create_parked(self, email: NewEmail, error: str) -> bool:
        """Insert the row as `parked`, due now (Mailgun is known to be down): the retrier sends it."""
        return await self._insert(email, "parked", error=error) is not None

    async def _insert(self, email: NewEmail, status: str, *, lease_s: float = 0.0, error: str | None = None) -> Claim | None:
        token = uuid.uuid4()
        sending = status == "sending"
        row = await _fetchrow(
            self.pool,
            "INSERT INTO notifier.emails (event_id, event_type, kind, user_id, recipient, locale, message_id, "
                        "status, message, event, event_key, source, claim, lease_until, next_attempt_at, claims, last_error) "
            "VALUES (:event_id, :event_type, :kind, :user_id, :recipient, :locale, :message_id, :status, "
            ":message, :event, :event_key, :source, :claim, "
            "CASE WHEN :sending THEN clock_timestamp() + make_interval(secs => :lease) END, "
            "CASE WHEN :sending THEN NULL ELSE clock_timestamp() END, "
            "CASE WHEN :sending THEN 1 ELSE 0 END, :error) "
            f"ON CONFLICT (event_id) DO NOTHING RETURNING {_COLUMNS}",
            {
                "event_id": email.event_id,
                "event_type": email.event_type,
                "kind": email.kind,
                "user_id": email.user_id,
                "recipient": email.recipient,
                "locale": email.locale,
                "message_id": email.message_id,
                "status": status,
                "message": email.message,
                "event": email.event,
                "event_key": email.event_key,
                "source": email.source,
                "claim": token if sending else None,
                "sending": sending,
                "lease": float(lease_s),
                "error": error,
            },
        )
        return _claim(row) if row is not None else None

    async def claim_stale(self, event_id: uuid.UUID, lease_s: float) -> Claim | None:
        """Take over a `sending` row whose sender's lease ran out (it crashed mid-send)."""
        return await self._claim_where("event_id = :id AND status = 'sending' AND lease_until < clock_timestamp()", lease_s, {"id": event_id})

    async def claim_next_due(self, lease_s: float) -> Claim | None:
        """Claim the oldest parked row that is due, or a `sending` row whose lease ran out."""
        async with self.pool.acquire() as conn, conn.transaction():
            # Two cheap index probes, then one guarded UPDATE; SKIP LOCKED keeps instances apart.
            row = await _fetchrow(
                conn,
                "SELECT event_id FROM notifier.emails WHERE status = 'parked' AND next_attempt_at <= clock_timestamp() "
                "ORDER BY next_attempt_at LIMIT 1 FOR UPDATE SKIP LOCKED",
            ) or await _fetchrow(
                conn,
                "SELECT event_id FROM notifier.emails WHERE status = 'sending' AND lease_until < clock_timestamp() "
                "ORDER BY lease_until LIMIT 1 FOR UPDATE SKIP LOCKED",
            )
            if row is None:
                return None
            return await self._claim_where_on(
                conn,
                "event_id = :id AND (status = 'parked' OR (status = 'sending' AND lease_until < clock_timestamp()))",
                lease_s,
                {"id": row["event_id"]},
            )

    async def _claim_where(self, where: str, lease_s: float, params: dict[str, Any]) -> Claim | None:
        return await self._claim_where_on(self.pool, where, lease_s, params)

    async def _claim_where_on(self, conn: Any, where: str, lease_s: float, params: dict[str, Any]) -> Claim | None:
        row = await _fetchrow(
            conn,
            "UPDATE notifier.emails SET status = 'sending', claim = :token, "
            "lease_until = clock_timestamp() + make_interval(secs => :lease), claims = claims + 1, "
            f"updated_at = clock_timestamp() WHERE {where} RETURNING {_COLUMNS}",
            {**params, "token": uuid.uuid4(), "lease": float(lease_s)},
        )
        return _claim(row) if row is not None else None

    async def mark_sent(self, claim: Claim, provider_id: str | None, attempts: int) -> bool:
        """`sent`, and the bodies dropped (only the id is needed from now on, to skip redeliveries)."""
        return await self._settle(
            claim,
            "status = 'sent', provider_id = :provider_id, sent_at = clock_timestamp(), message = NULL, event = NULL, "
            "event_key = NULL, last_error = NULL",
            attempts,
            {"provider_id": provider_id},
        )

    async def mark_parked(self, claim: Claim, error: str, delay_s: float, attempts: int) -> bool:
        return await self._settle(
            claim,
            "status = 'parked', last_error = :error, next_attempt_at = clock_timestamp() + make_interval(secs => :delay)",
            attempts,
            {"error": error[:2000], "delay": float(delay_s)},
        )

    async def mark_dead(self, claim: Claim, error: str, attempts: int) -> bool:
        return await self._settle(claim, "status = 'dead', last_error = :error, message = NULL", attempts, {"error": error[:2000]})

    async def _settle(self, claim: Claim, assignments: str, attempts: int, params: dict[str, Any]) -> bool:
        """Apply the outcome only while we still hold the claim (never overwrite another sender's)."""
        touched = await _execute(
            self.pool,
            f"UPDATE notifier.emails SET {assignments}, claim = NULL, lease_until = NULL, "
            "attempts = attempts + :attempts, updated_at = clock_timestamp() "
            "WHERE event_id = :id AND claim = :token AND status = 'sending'",
            {**params, "id": claim.event_id, "token": claim.token, "attempts": attempts},
        )
        return touched == 1

    async def make_parked_due(self) -> int:
        """Mailgun answers again: every parked email is due now instead of at its back-off time."""
        return await _execute(
            self.pool,
            "UPDATE notifier.emails SET next_attempt_at = clock_timestamp() "
            "WHERE status = 'parked' AND next_attempt_at > clock_timestamp()",
            {},
        )

    async def age_s(self, claim: Claim) -> float:
        row = await _fetchrow(
            self.pool,
            "SELECT extract(epoch FROM clock_timestamp() - created_at) AS age FROM notifier.emails WHERE event_id = :id",
            {"id": claim.event_id},
        )
        return float(row["age"] or 0.0) if row is not None else 0.0

    async def counts(self) -> dict[str, int]:
        rows = await self.pool.fetch("SELECT status, count(*) AS n FROM notifier.emails GROUP BY status")
        return {row["status"]: row["n"] for row in rows}

    # ------------------------------------------------------------------ facts

    async def remember(self, key: str, facts: dict[str, Any]) -> dict[str, Any]:
        """Merge facts for a key (idempotent: a redelivered event writes the same values); all facts now known for it."""
        values = {k: v for k, v in facts.items() if v is not None}
        if not values:
            return await self.recall(key)
        row = await _fetchrow(
            self.pool,
            "INSERT INTO notifier.facts (key, data) VALUES (:key, :data) "
            "ON CONFLICT (key) DO UPDATE SET data = notifier.facts.data || EXCLUDED.data, updated_at = clock_timestamp() "
            "RETURNING data",
            {"key": key, "data": values},
        )
        return dict(row["data"] or {})

    async def recall(self, key: str) -> dict[str, Any]:
        row = await _fetchrow(self.pool, "SELECT data FROM notifier.facts WHERE key = :key", {"key": key})
        return dict(row["data"] or {}) if row is not None else {}
