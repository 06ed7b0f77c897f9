"""Idempotency-Key with Stripe's semantics, stored in `api.idempotency_keys`.

A state-changing request first *claims* its (scope, key) row:
- no row yet → inserted `in_flight` with a fresh owner token: this request does the work;
- a row with a different request hash → the key was reused for another request (422);
- a completed row → its first response is replayed, status code included;
- an in-flight row → 409, unless its lock is older than the stale timeout (the request that
  held it crashed): then it is taken over with a compare-and-set on the owner token.

Why taking over a stale key is safe: the command id is derived from (scope, key), so whoever
publishes it publishes the *same* command, and the processor handles a command id once.

Failure before Kafka acknowledged leaves the row `in_flight` but *released* (no owner, lock in the
past): the client's retry with the same key and body claims it at once and publishes the same
command id again — the outcome of a publish that timed out is unknown, so the request hash stays
bound to the key. A check that fails before anything was published (unknown plan, not your
subscription) forgets the row, as Stripe does for requests that never started executing.

A key lives for its window (`API_IDEMPOTENCY_TTL_H`, ≥ 24 h from its claim): a request with it after
that is a *new* request. The expired row is replaced, and the replacement needs a command id the
processor has not handled (it records handled ids forever and would answer the old outcome without
doing anything). The first window's id is `derived_id("command", scope, key)`; later windows take
the first of `command_id_for(scope, key, window=1, 2, …)` that `eventstore.handled_commands` does
not hold — picked inside the claim's INSERT, so the hot path costs no extra round trip. A scheduled
purge deletes expired rows, completed or released in flight alike (decision 0107).

Times here are PostgreSQL's real clock, never the shiftable business clock.
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from command_api.domain.idempotency import WINDOW_CANDIDATES, Claimed, ClaimResult, InFlight, Mismatch, Replay, command_id_for

_INSERT = """
    INSERT INTO api.idempotency_keys
        (scope, key, request_hash, method, path, command_id, command_type, state, owner, locked_at, expires_at)
    SELECT $1, $2, $3, $4, $5, c.id, $7, 'in_flight', $8, clock_timestamp(), clock_timestamp() + make_interval(secs => $9)
    FROM unnest($6::uuid[]) WITH ORDINALITY AS c(id, n)
    WHERE NOT EXISTS (SELECT 1 FROM eventstore.handled_commands h WHERE h.command_id = c.id)
    ORDER BY c.n LIMIT 1
    ON CONFLICT DO NOTHING
    RETURNING owner, command_id
"""
# No conflict target on purpose: with `ON CONFLICT (scope, key)` two concurrent first requests with
# one key can collide on the unique command_id index instead (same key → same derived id), which
# PostgreSQL then reports as an error rather than "do nothing". Any conflict means the same key.
# The candidates are the key's window ids in order: the first one the processor has not handled
# wins, so a key reused after its window becomes a command that really runs.

_SELECT = """
    SELECT request_hash, path, state, owner, command_id, response_status, response_body, response_headers,
           EXTRACT(EPOCH FROM (clock_timestamp() - locked_at))::float8 AS locked_for_s,
           expires_at <= clock_timestamp() AS expired
    FROM api.idempotency_keys WHERE scope = $1 AND key = $2
"""

_DROP_EXPIRED = """
    DELETE FROM api.idempotency_keys
    WHERE scope = $1 AND key = $2 AND command_id = $3 AND owner IS NOT DISTINCT FROM $4
      AND expires_at <= clock_timestamp()
"""

_TAKE_OVER = """
    UPDATE api.idempotency_keys
    SET owner = $3, locked_at = clock_timestamp(),
        expires_at = greatest(expires_at, clock_timestamp() + make_interval(secs => $5))
    WHERE scope = $1 AND key = $2 AND state = 'in_flight' AND owner IS NOT DISTINCT FROM $4
    RETURNING owner, command_id
"""

_COMPLETE = """
    UPDATE api.idempotency_keys
    SET state = 'completed', owner = NULL, locked_at = NULL,
        accepted_at = coalesce(accepted_at, clock_timestamp()),
        response_status = $4, response_body = $5, response_headers = $6, completed_at = clock_timestamp()
    WHERE scope = $1 AND key = $2 AND owner = $3 AND state = 'in_flight'
    RETURNING 1
"""


class IdempotencyStore:
    """Claims, completes and releases Idempotency-Keys (each step one autocommitted statement)."""

    def __init__(self, pool: asyncpg.Pool, *, ttl_s: float, stale_after_s: float, acquire_timeout_s: float = 10.0) -> None:
        self.pool = pool
        self.ttl_s = ttl_s
        self.stale_after_s = stale_after_s
        self.acquire_timeout_s = acquire_timeout_s

    async def claim(
        self,
        *,
        scope: str,
        key: str,
        hash: str,
        method: str,
        path: str,
        command_id: uuid.UUID,
        command_type: str,
    ) -> ClaimResult:
        """Claim (scope, key); `command_id` is the key's first-window id, `command_id_for(scope, key)`.

        A row past its window is the key's *previous* life: it is dropped and the key claimed anew,
        with the first window id the processor has not handled (`Claimed.command_id`).
        """
        owner = uuid.uuid4()
        window = 0
        async with self.pool.acquire(timeout=self.acquire_timeout_s) as conn:
            # A few rounds at most: a row forgotten, expired or taken over between two statements is looked at again.
            for _ in range(5):
                candidates = [
                    command_id if w == 0 else command_id_for(scope, key, w)
                    for w in range(window, window + WINDOW_CANDIDATES)
                ]
                inserted = await conn.fetchrow(
                    _INSERT, scope, key, hash, method, path, candidates, command_type, owner, self.ttl_s
                )
                if inserted is not None:
                    return Claimed(owner, inserted["command_id"])
                row = await conn.fetchrow(_SELECT, scope, key)
                if row is None:
                    # no conflict, yet nothing inserted: every candidate was handled (or the row just went)
                    window += WINDOW_CANDIDATES
                    continue
                locked_for = row["locked_for_s"]
                stale = row["owner"] is None or (locked_for is not None and locked_for >= self.stale_after_s)
                if row["expired"] and (row["state"] == "completed" or stale):
                    # The key's window is over: this is a new request, not a retry of the old one.
                    await conn.execute(_DROP_EXPIRED, scope, key, row["command_id"], row["owner"])
                    continue
                if row["request_hash"] != hash:
                    return Mismatch(row["path"])
                if row["state"] == "completed":
                    return Replay(row["response_status"], row["response_body"], dict(row["response_headers"] or {}))
                if stale:
                    taken = await conn.fetchrow(_TAKE_OVER, scope, key, owner, row["owner"], self.ttl_s)
                    if taken is not None:
                        return Claimed(owner, taken["command_id"], recovered=True)
                    continue  # someone else took it over first: look again
                remaining = max(1, int(self.stale_after_s - float(locked_for or 0)))
                return InFlight(retry_after_s=min(remaining, 5))
        return InFlight(retry_after_s=1)

    async def _execute(self, sql: str, *args: Any) -> str:
        async with self.pool.acquire(timeout=self.acquire_timeout_s) as conn:
            return await conn.execute(sql, *args)

    async def mark_accepted(self, *, scope: str, key: str, owner: uuid.UUID) -> None:
        """Kafka acknowledged the command: `GET /v1/commands/{id}` may now say `accepted`."""
        await self._execute(
            "UPDATE api.idempotency_keys SET accepted_at = coalesce(accepted_at, clock_timestamp()) "
            "WHERE scope = $1 AND key = $2 AND owner = $3",
            scope, key, owner,
        )

    async def complete(
        self, *, scope: str, key: str, owner: uuid.UUID, status: int, body: Any, headers: dict[str, str]
    ) -> bool:
        """Store the first response; False when another request took the key over meanwhile."""
        async with self.pool.acquire(timeout=self.acquire_timeout_s) as conn:
            done = await conn.fetchval(_COMPLETE, scope, key, owner, status, body, headers)
        return done is not None

    async def release(self, *, scope: str, key: str, owner: uuid.UUID) -> None:
        """The publish failed or timed out (outcome unknown): let the next retry claim the key at once."""
        await self._execute(
            "UPDATE api.idempotency_keys SET owner = NULL, locked_at = NULL "
            "WHERE scope = $1 AND key = $2 AND owner = $3 AND state = 'in_flight'",
            scope, key, owner,
        )

    async def forget(self, *, scope: str, key: str, owner: uuid.UUID) -> None:
        """Nothing was published (a check failed first): the key is free again, as if never sent."""
        await self._execute(
            "DELETE FROM api.idempotency_keys "
            "WHERE scope = $1 AND key = $2 AND owner = $3 AND state = 'in_flight' AND accepted_at IS NULL",
            scope, key, owner,
        )

    async def accepted_command(self, command_id: uuid.UUID, scope: str | None) -> str | None:
        """The command type if this API accepted `command_id` (for `scope`, or anyone's when None)."""
        async with self.pool.acquire(timeout=self.acquire_timeout_s) as conn:
            return await conn.fetchval(
                "SELECT command_type FROM api.idempotency_keys WHERE command_id = $1 "
                "AND (accepted_at IS NOT NULL OR state = 'completed') AND ($2::text IS NULL OR scope = $2)",
                command_id, scope,
            )

    async def purge_expired(self, batch: int = 1000, max_rows: int = 200_000) -> int:
        """Delete keys past their window: completed ones and those left in flight (released or crashed).

        Only a row some request holds right now (owner set, lock younger than the stale timeout) is
        kept. Runs in batches until none is left (at most `max_rows` per call), so a busy day's keys
        never pile up behind a fixed per-round limit.
        """
        total = 0
        while total < max_rows:
            status = await self._execute(
                """
                DELETE FROM api.idempotency_keys WHERE ctid = ANY(ARRAY(
                    SELECT ctid FROM api.idempotency_keys
                    WHERE expires_at < clock_timestamp()
                      AND (state = 'completed' OR owner IS NULL
                           OR locked_at < clock_timestamp() - make_interval(secs => $2))
                    LIMIT $1))
                """,
                min(batch, max_rows - total), self.stale_after_s,
            )
            deleted = int(status.rsplit(" ", 1)[-1]) if status.startswith("DELETE") else 0
            total += deleted
            if deleted < batch:
                break
        return total
