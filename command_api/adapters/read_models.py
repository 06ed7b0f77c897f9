"""Read-only queries over the projector's read models (schema `read`).

The API never writes these tables; it reads them to answer GETs, for fast pre-checks (the plan
exists, the subscription is yours) and to route operator commands to the right account. Every
user-facing query is scoped to the caller's user id, so another user's rows look like missing ones.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import Any

import asyncpg
import orjson

from eventstore.sql import bind

Row = Mapping[str, Any]

TERMINAL_STATUSES = ("succeeded", "rejected", "failed")
"""A command's statuses once it has ended (`read.commands.status`)."""
class ReadModels:
    """The API's queries, on the plain asyncpg pool of the request path.

    Each is one autocommitted statement on a prepared-statement-cached connection: reads are most
    of the API's traffic (and all of its long-polling), and an ORM round trip costs several times
    the CPU of the query itself.
    """

    def __init__(self, pool: asyncpg.Pool, *, plan_cache_s: float = 2.0) -> None:
        self.pool = pool
        self.plan_cache_s = plan_cache_s
        self._plans_on_sale: dict[str, tuple[Row, float]] = {}

    async def _all(self, sql: str, params: dict[str, Any]) -> list[Row]:
        statement, args = bind(sql, params)
        return await self.pool.fetch(statement, *args)

    async def _one(self, sql: str, params: dict[str, Any]) -> Row | None:
        statement, args = bind(sql, params)
        return await self.pool.fetchrow(statement, *args)

    # plans ---------------------------------------------------------------------------------

    async def plans(self, *, include_archived: bool = False) -> list[Row]:
        return await self._all(
            "SELECT * FROM read.plans WHERE (:all OR NOT archived) ORDER BY price_minor, plan_id",
            {"all": include_archived},
        )

    async def plan(self, plan_id: str) -> Row | None:
        return await self._one("SELECT * FROM read.plans WHERE plan_id = :p", {"p": plan_id})

    async def plan_on_sale(self, plan_id: str) -> Row | None:
        """The plan if it is on sale; a positive answer is reused for `plan_cache_s`.

        This is the purchase's fast pre-check, not the decision (the processor re-checks), so a
        plan archived a second ago may still pass here and be rejected there. A missing or
        archived plan is never cached: the moment it goes on sale, it can be bought.
        """
        now = time.monotonic()
        hit = self._plans_on_sale.get(plan_id)
        if hit is not None and hit[1] > now:
            return hit[0]
        row = await self.plan(plan_id)
        if row is None or row["archived"]:
            self._plans_on_sale.pop(plan_id, None)
            return None
        if len(self._plans_on_sale) > 10_000:
            self._plans_on_sale.clear()
        self._plans_on_sale[plan_id] = (row, now + self.plan_cache_s)
        return row

    # subscriptions -------------------------------------------------------------------------

    # promo codes -----------------------------------------------------------------------------

    async def promo_code(self, code: str) -> Row | None:
        return await self._one("SELECT * FROM read.promo_codes WHERE code = :c", {"c": code})

    async def promo_codes(self, *, limit: int, offset: int) -> list[Row]:
        return await self._all(
            "SELECT * FROM read.promo_codes ORDER BY created_at DESC, code LIMIT :limit OFFSET :offset",
            {"limit": limit, "offset": offset},
        )

    async def subscriptions(self, user_id: str, *, limit: int, offset: int, status: str | None = None) -> list[Row]:
        return await self._all(
            "SELECT * FROM read.subscriptions WHERE user_id = :u AND (CAST(:s AS TEXT) IS NULL OR status = :s) "
            "ORDER BY created_at DESC, subscription_id LIMIT :limit OFFSET :offset",
            {"u": user_id, "s": status, "limit": limit, "offset": offset},
        )

    async def subscription(self, subscription_id: uuid.UUID, user_id: str | None) -> Row | None:
        """The subscription if it exists and (when `user_id` is given) belongs to that user."""
        return await self._one(
            "SELECT * FROM read.subscriptions WHERE subscription_id = :id AND (CAST(:u AS TEXT) IS NULL OR user_id = :u)",
            {"id": subscription_id, "u": user_id},
        )

    async def subscription_detail(self, subscription_id: uuid.UUID, user_id: str, stream_id: str) -> Row | None:
        """The user's subscription with its payments and refunds (newest first, 100 each) and the
        account stream's projected version — one statement, one consistent snapshot.

        `payments` and `refunds` are lists of row dicts (timestamps as ISO strings, in UTC); the
        version says how far the projector had got when this answer was read (see long-polling).
        """
        row = await self._one(
            "SELECT s.*, "
            "(SELECT coalesce(json_agg(p ORDER BY p.created_at DESC, p.payment_id), '[]') FROM "
            " (SELECT * FROM read.payments WHERE user_id = :u AND subscription_id = :id "
            "  ORDER BY created_at DESC, payment_id LIMIT 100) p) AS payments_json, "
            "(SELECT coalesce(json_agg(r ORDER BY r.created_at DESC, r.refund_id), '[]') FROM "
            " (SELECT * FROM read.refunds WHERE user_id = :u AND subscription_id = :id "
            "  ORDER BY created_at DESC, refund_id LIMIT 100) r) AS refunds_json, "
            "coalesce((SELECT version FROM projector.stream_positions WHERE stream_id = :stream), 0) AS stream_version "
            "FROM read.subscriptions s WHERE s.subscription_id = :id AND s.user_id = :u",
            {"id": subscription_id, "u": user_id, "stream": stream_id},
        )
        if row is None:
            return None
        return {**row, "payments": orjson.loads(row["payments_json"]), "refunds": orjson.loads(row["refunds_json"])}

    # payments and refunds ------------------------------------------------------------------

    async def payments(
        self, user_id: str, *, limit: int, offset: int, subscription_id: uuid.UUID | None = None
    ) -> list[Row]:
        return await self._all(
            "SELECT * FROM read.payments WHERE user_id = :u "
            "AND (CAST(:sid AS UUID) IS NULL OR subscription_id = :sid) "
            "ORDER BY created_at DESC, payment_id LIMIT :limit OFFSET :offset",
            {"u": user_id, "sid": subscription_id, "limit": limit, "offset": offset},
        )

    async def payment(self, payment_id: uuid.UUID, user_id: str) -> Row | None:
        return await self._one(
            "SELECT * FROM read.payments WHERE payment_id = :id AND user_id = :u", {"id": payment_id, "u": user_id}
        )

    async def refunds(
        self, user_id: str, *, limit: int, offset: int, subscription_id: uuid.UUID | None = None
    ) -> list[Row]:
        return await self._all(
            "SELECT * FROM read.refunds WHERE user_id = :u "
            "AND (CAST(:sid AS UUID) IS NULL OR subscription_id = :sid) "
            "ORDER BY created_at DESC, refund_id LIMIT :limit OFFSET :offset",
            {"u": user_id, "sid": subscription_id, "limit": limit, "offset": offset},
        )

    async def refunded_on_payment(self, payment_id: uuid.UUID) -> int:
        """Minor units refunded or on their way back for one payment (canceled refunds excluded)."""
        row = await self._one(
            "SELECT coalesce(sum(amount_minor), 0) AS refunded FROM read.refunds WHERE payment_id = :p AND status <> 'canceled'",
            {"p": payment_id},
        )
        return int(row["refunded"] if row else 0)

    async def payment_by_id(self, payment_id: uuid.UUID) -> Row | None:
        return await self._one("SELECT * FROM read.payments WHERE payment_id = :id", {"id": payment_id})

    # provider lookups (webhook routing) ----------------------------------------------------

    async def payment_by_provider_id(self, provider_payment_id: str) -> Row | None:
        return await self._one(
            "SELECT payment_id, user_id FROM read.payments WHERE provider_payment_id = :p LIMIT 1",
            {"p": provider_payment_id},
        )

    async def refund_by_provider_id(self, provider_refund_id: str) -> Row | None:
        return await self._one(
            "SELECT refund_id, user_id FROM read.refunds WHERE provider_refund_id = :p LIMIT 1",
            {"p": provider_refund_id},
        )

    # projection progress -------------------------------------------------------------------

    async def stream_versions(self, stream_ids: list[str]) -> dict[str, int]:
        """How far the projector has applied each stream (absent: nothing applied yet).

        Everything the API shows about an account (subscriptions, payments, refunds) comes from
        the account's stream, so this version moving is the cheap sign that an answer may differ.
        """
        rows = await self._all(
            "SELECT stream_id, version FROM projector.stream_positions WHERE stream_id = ANY(:ids)", {"ids": stream_ids}
        )
        return {row["stream_id"]: row["version"] for row in rows}

    # commands ------------------------------------------------------------------------------

    async def command(self, command_id: uuid.UUID) -> Row | None:
        return await self._one("SELECT * FROM read.commands WHERE command_id = :id", {"id": command_id})

    async def finished_commands(self, command_ids: list[uuid.UUID]) -> list[Row]:
        """The commands among `command_ids` that reached a terminal status."""
        return await self._all(
            "SELECT * FROM read.commands WHERE command_id = ANY(:ids) AND status = ANY(:terminal)",
            {"ids": command_ids, "terminal": list(TERMINAL_STATUSES)},
        )
