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

Times here are PostgreSQL's real clock, never the shiftable business clock.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson
from pydantic import BaseModel

from eventstore import db


@dataclass(frozen=True, slots=True)
class Claimed:
    """This request owns the key and must do the work, then `complete` or `release` it."""

    owner: uuid.UUID
    recovered: bool = False


@dataclass(frozen=True, slots=True)
class Replay:
    status: int
    body: Any
    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class Mismatch:
    """The key was first used with another request (different body, path or method)."""

    path: str


@dataclass(frozen=True, slots=True)
class InFlight:
    """Another request with this key is still being handled."""

    retry_after_s: int


ClaimResult = Claimed | Replay | Mismatch | InFlight


def request_hash(method: str, path: str, body: BaseModel | None) -> str:
    """A hash of what the request asks for: method, path and the *validated* body.

    Hashing the parsed model (defaults filled in, keys sorted) means whitespace, key order or an
    explicitly sent default do not make a different request; any change of meaning does.
    """
    canonical = orjson.dumps(body.model_dump(mode="json") if body is not None else None, option=orjson.OPT_SORT_KEYS)
    digest = hashlib.sha256()
    for part in (method.upper().encode(), path.encode(), canonical):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


_INSERT = """
    INSERT INTO api.idempotency_keys
        (scope, key, request_hash, method, path, command_id, command_type, state, owner, locked_at, expires_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, 'in_flight', $8, clock_timestamp(), clock_timestamp() + make_interval(secs => $9))
    ON CONFLICT DO NOTHING
    RETURNING owner
"""
# No conflict target on purpose: with `ON CONFLICT (scope, key)` two concurrent first requests with
# one key can collide on the unique command_id index instead (same key → same derived id), which
# PostgreSQL then reports as an error rather than "do nothing". Any conflict means the same key.

_SELECT = """
    SELECT request_hash, path, state, owner, response_status, response_body, response_headers,
           EXTRACT(EPOCH FROM (clock_timestamp() - locked_at))::float8 AS locked_for_s
    FROM api.idempotency_keys WHERE scope = $1 AND key = $2
"""

_TAKE_OVER = """
    UPDATE api.idempotency_keys
    SET owner = $3, locked_at = clock_timestamp(),
        expires_at = greatest(expires_at, clock_timestamp() + make_interval(secs => $5))
    WHERE scope = $1 AND key = $2 AND state = 'in_flight' AND owner IS NOT DISTINCT FROM $4
    RETURNING owner
"""

_COMPLETE = """
    UPDATE api.idempotency_keys
    SET state = 'completed', owner = NULL, locked_at = NULL,
        accepted_at = coalesce(accepted_at, clock_timestamp()),
        response_status = $4, response_body = $5, response_headers = $6, completed_at = clock_timestamp()
    WHERE scope = $1 AND key = $2 AND owner = $3 AND state = 'in_flight'
    RETURNING 1
"""


async def create_pool(database_url: str, *, size: int, application_name: str = "command_api") -> asyncpg.Pool:
    """The asyncpg pool of the request path (plain asyncpg: a fraction of an ORM's CPU per query)."""
    return await db.create_pool(database_url, size=size, application_name=application_name)


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
        owner = uuid.uuid4()
        async with self.pool.acquire(timeout=self.acquire_timeout_s) as conn:
            # A few rounds at most: a row forgotten or taken over between two statements is looked at again.
            for _ in range(3):
                inserted = await conn.fetchval(
                    _INSERT, scope, key, hash, method, path, command_id, command_type, owner, self.ttl_s
                )
                if inserted is not None:
                    return Claimed(owner)
                row = await conn.fetchrow(_SELECT, scope, key)
                if row is None:
                    continue
                if row["request_hash"] != hash:
                    return Mismatch(row["path"])
                if row["state"] == "completed":
                    return Replay(row["response_status"], row["response_body"], dict(row["response_headers"] or {}))
                locked_for = row["locked_for_s"]
                if row["owner"] is None or (locked_for is not None and locked_for >= self.stale_after_s):
                    taken = await conn.fetchval(_TAKE_OVER, scope, key, owner, row["owner"], self.ttl_s)
                    if taken is not None:
                        return Claimed(owner, recovered=True)
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

    async def purge_expired(self, limit: int = 1000) -> int:
        """Delete completed keys past their retention (at least 24 h)."""
        status = await self._execute(
            """
            DELETE FROM api.idempotency_keys WHERE ctid = ANY(ARRAY(
                SELECT ctid FROM api.idempotency_keys
                WHERE expires_at < clock_timestamp() AND state = 'completed' LIMIT $1))
            """,
            limit,
        )
        return int(status.rsplit(" ", 1)[-1]) if status.startswith("DELETE") else 0
