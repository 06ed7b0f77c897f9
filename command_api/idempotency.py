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

import orjson
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine


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


_INSERT = text(
    """
    INSERT INTO api.idempotency_keys
        (scope, key, request_hash, method, path, command_id, command_type, state, owner, locked_at, expires_at)
    VALUES (:scope, :key, :hash, :method, :path, :command_id, :command_type, 'in_flight', :owner,
            clock_timestamp(), clock_timestamp() + make_interval(secs => :ttl))
    ON CONFLICT (scope, key) DO NOTHING
    RETURNING owner
    """
)

_SELECT = text(
    """
    SELECT request_hash, path, state, owner, response_status, response_body, response_headers,
           EXTRACT(EPOCH FROM (clock_timestamp() - locked_at)) AS locked_for_s
    FROM api.idempotency_keys WHERE scope = :scope AND key = :key
    """
)

_TAKE_OVER = text(
    """
    UPDATE api.idempotency_keys
    SET owner = :new_owner, locked_at = clock_timestamp(),
        expires_at = greatest(expires_at, clock_timestamp() + make_interval(secs => :ttl))
    WHERE scope = :scope AND key = :key AND state = 'in_flight' AND owner IS NOT DISTINCT FROM :old_owner
    RETURNING owner
    """
)


class IdempotencyStore:
    """Claims, completes and releases Idempotency-Keys."""

    def __init__(self, engine: AsyncEngine, *, ttl_s: float, stale_after_s: float) -> None:
        self.engine = engine
        self.ttl_s = ttl_s
        self.stale_after_s = stale_after_s

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
        # Two rounds at most: a row deleted (forgotten) between our INSERT and SELECT is simply retried.
        for _ in range(3):
            async with self.engine.begin() as conn:
                inserted = (
                    await conn.execute(
                        _INSERT,
                        {
                            "scope": scope,
                            "key": key,
                            "hash": hash,
                            "method": method,
                            "path": path,
                            "command_id": command_id,
                            "command_type": command_type,
                            "owner": owner,
                            "ttl": self.ttl_s,
                        },
                    )
                ).first()
                if inserted is not None:
                    return Claimed(owner)
                row = (await conn.execute(_SELECT, {"scope": scope, "key": key})).mappings().first()
                if row is None:
                    continue
                if row["request_hash"] != hash:
                    return Mismatch(row["path"])
                if row["state"] == "completed":
                    return Replay(row["response_status"], row["response_body"], dict(row["response_headers"] or {}))
                released = row["owner"] is None
                if released or (row["locked_for_s"] is not None and float(row["locked_for_s"]) >= self.stale_after_s):
                    taken = (
                        await conn.execute(
                            _TAKE_OVER,
                            {"scope": scope, "key": key, "new_owner": owner, "old_owner": row["owner"], "ttl": self.ttl_s},
                        )
                    ).first()
                    if taken is not None:
                        return Claimed(owner, recovered=True)
                    continue  # someone else took it over first: look again
                remaining = max(1, int(self.stale_after_s - float(row["locked_for_s"] or 0)))
                return InFlight(retry_after_s=min(remaining, 5))
        return InFlight(retry_after_s=1)

    async def mark_accepted(self, *, scope: str, key: str, owner: uuid.UUID) -> None:
        """Kafka acknowledged the command: `GET /v1/commands/{id}` may now say `accepted`."""
        async with self.engine.begin() as conn:
            await conn.execute(
                text(
                    "UPDATE api.idempotency_keys SET accepted_at = coalesce(accepted_at, clock_timestamp()) "
                    "WHERE scope = :scope AND key = :key AND owner = :owner"
                ),
                {"scope": scope, "key": key, "owner": owner},
            )

    async def complete(
        self, *, scope: str, key: str, owner: uuid.UUID, status: int, body: Any, headers: dict[str, str]
    ) -> bool:
        """Store the first response; False when another request took the key over meanwhile."""
        async with self.engine.begin() as conn:
            done = (
                await conn.execute(
                    text(
                        """
                        UPDATE api.idempotency_keys
                        SET state = 'completed', owner = NULL, locked_at = NULL,
                            accepted_at = coalesce(accepted_at, clock_timestamp()),
                            response_status = :status, response_body = :body, response_headers = :headers,
                            completed_at = clock_timestamp()
                        WHERE scope = :scope AND key = :key AND owner = :owner AND state = 'in_flight'
                        RETURNING 1
                        """
                    ),
                    {
                        "scope": scope,
                        "key": key,
                        "owner": owner,
                        "status": status,
                        "body": orjson.dumps(body).decode(),
                        "headers": orjson.dumps(headers).decode(),
                    },
                )
            ).first()
        return done is not None

    async def release(self, *, scope: str, key: str, owner: uuid.UUID) -> None:
        """The publish failed or timed out (outcome unknown): let the next retry claim the key at once."""
        async with self.engine.begin() as conn:
            await conn.execute(
                text(
                    "UPDATE api.idempotency_keys SET owner = NULL, locked_at = NULL "
                    "WHERE scope = :scope AND key = :key AND owner = :owner AND state = 'in_flight'"
                ),
                {"scope": scope, "key": key, "owner": owner},
            )

    async def forget(self, *, scope: str, key: str, owner: uuid.UUID) -> None:
        """Nothing was published (a check failed first): the key is free again, as if never sent."""
        async with self.engine.begin() as conn:
            await conn.execute(
                text(
                    "DELETE FROM api.idempotency_keys "
                    "WHERE scope = :scope AND key = :key AND owner = :owner AND state = 'in_flight' "
                    "AND accepted_at IS NULL"
                ),
                {"scope": scope, "key": key, "owner": owner},
            )

    async def accepted_command(self, command_id: uuid.UUID, scope: str | None) -> str | None:
        """The command type if this API accepted `command_id` (for `scope`, or anyone's when None)."""
        sql = (
            "SELECT command_type FROM api.idempotency_keys WHERE command_id = :id "
            "AND (accepted_at IS NOT NULL OR state = 'completed')"
        )
        params: dict[str, Any] = {"id": command_id}
        if scope is not None:
            sql += " AND scope = :scope"
            params["scope"] = scope
        async with self.engine.connect() as conn:
            return (await conn.execute(text(sql), params)).scalar()

    async def purge_expired(self, limit: int = 1000) -> int:
        """Delete completed keys past their retention (at least 24 h)."""
        async with self.engine.begin() as conn:
            result = await conn.execute(
                text(
                    """
                    DELETE FROM api.idempotency_keys WHERE ctid = ANY(ARRAY(
                        SELECT ctid FROM api.idempotency_keys
                        WHERE expires_at < clock_timestamp() AND state = 'completed' LIMIT :limit))
                    """
                ),
                {"limit": limit},
            )
        return result.rowcount or 0
