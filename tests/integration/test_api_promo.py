"""Promo codes through the command API, against the real app, Kafka and PostgreSQL (read models seeded):
purchase with a code, the problems a code can cause (with their statuses), the preview, and the
operator's endpoints (docs/decisions/0121)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from schemas import derived_id
from tests.fixtures.command_api import new_user, published_commands


def _problem(response, status: int) -> dict:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    return response.json()


async def _code(seed, *, code: str | None = None, **row: Any) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    now = datetime.now(timezone.utc)
    values = {
        "code": code or f"T{uuid.uuid4().hex[:10].upper()}", "percent_off": 20, "amount_off_minor": None, "currency": None,
        "periods": 2, "expires_at": now + timedelta(days=5), "max_redemptions": 10, "plan_ids": None, "active": True,
        "deactivated_reason": None, "redemptions": 3, "released": 1, "created_at": now, "updated_at": now,
    }
    values.update(row)
    return await seed._insert("promo_codes", values)


async def test_purchase_with_a_code_publishes_it_upper_cased(api, seed, settings) -> None:
    user, plan, code = new_user(), await seed.plan(), await _code(seed)
    response = await api.client.post("/v1/subscriptions", json={"plan_id": plan["plan_id"], "promo_code": code["code"].lower()},
                                      headers=api.command(user, email="anna@example.com"))
    assert response.status_code == 202, response.text
    (record,) = await published_commands(settings, api.topic, lambda e: e["id"] == response.json()["command_id"])
    assert record[1]["data"]["promo_code"] == code["code"]


async def test_an_unknown_code_is_a_fast_404_and_nothing_is_published(api, seed, settings) -> None:
    user, plan = new_user(), await seed.plan()
    response = await api.client.post("/v1/subscriptions", json={"plan_id": plan["plan_id"], "promo_code": "NOSUCHCODE"},
                                      headers=api.command(user, email="anna@example.com"))
    problem = _problem(response, 404)
    assert problem["code"] == "promo_code_not_found" and problem["type"].endswith("/promo-code-not-found")
    assert not await published_commands(settings, api.topic, lambda e: e["stream_id"] == f"account-{user}", expect=0)
    _problem(await api.client.post("/v1/subscriptions", json={"plan_id": plan["plan_id"], "promo_code": "bad code!"},
                                   headers=api.command(user, email="anna@example.com")), 422)


@pytest.mark.parametrize(
    ("code", "status"),
    [("promo_code_exhausted", 409), ("promo_code_expired", 409), ("promo_code_already_used", 409),
     ("promo_code_not_applicable", 422), ("promo_code_not_found", 404)],
)
async def test_the_processors_promo_rejections_answer_their_status(api, seed, code: str, status: int) -> None:
    user, plan, promo = new_user(), await seed.plan(), await _code(seed)
    headers = {**api.command(user, email="anna@example.com"), "Prefer": "respond-async, wait=2"}
    command_id = derived_id("command", user, headers["Idempotency-Key"])

    async def reject() -> None:
        await asyncio.sleep(0.2)
        await seed.command(command_id, user, status="rejected", command_type="PurchaseSubscription", code=code, reason="no")

    task = asyncio.create_task(reject())
    response = await api.client.post("/v1/subscriptions", json={"plan_id": plan["plan_id"], "promo_code": promo["code"]}, headers=headers)
    await task
    problem = _problem(response, status)
    assert problem["code"] == code and problem["command_status"] == "rejected"


async def test_preview_prices_the_first_period(api, seed) -> None:
    user = new_user()
    plan = await seed.plan(price_minor=29999)
    ok = await _code(seed, percent_off=33)
    body = (await api.client.get(f"/v1/promo-codes/{ok['code'].lower()}", params={"plan_id": plan["plan_id"]}, headers=api.auth(user))).json()
    assert body["applicable"] and body["problem"] is None
    assert (body["list_price"]["amount"], body["discount"]["amount"], body["price"]["amount"]) == ("299.99", "98.99", "201.00")
    exhausted = await _code(seed, max_redemptions=3)
    only_other = await _code(seed, plan_ids='["premium"]')
    expired = await _code(seed, active=False, deactivated_reason="leaked")
    for row, problem in ((exhausted, "promo_code_exhausted"), (only_other, "promo_code_not_applicable"), (expired, "promo_code_expired")):
        got = (await api.client.get(f"/v1/promo-codes/{row['code']}", params={"plan_id": plan["plan_id"]}, headers=api.auth(user))).json()
        assert (got["applicable"], got["problem"], got["price"]) == (False, problem, None)
    _problem(await api.client.get("/v1/promo-codes/NOSUCHCODE", headers=api.auth(user)), 404)


async def test_operator_creates_lists_and_deactivates_codes(api, seed, settings) -> None:
    op = f"op-{uuid.uuid4().hex[:6]}"
    code = f"N{uuid.uuid4().hex[:8].upper()}"
    body = {"code": code.lower(), "percent_off": 15, "periods": 3, "expires_at": "2030-01-01T00:00:00Z", "max_redemptions": 100,
            "plan_ids": ["standard-monthly"], "reason": "campaign"}
    response = await api.client.post("/v1/admin/promo-codes", json=body, headers=api.command(op, role="operator"))
    assert response.status_code == 202, response.text
    (record,) = await published_commands(settings, api.topic, lambda e: e["id"] == response.json()["command_id"])
    key, envelope, _ = record
    assert key == code.encode() and envelope["stream_id"] == f"promo-{code}" and envelope["type"] == "CreatePromoCode"
    assert envelope["data"]["code"] == code and envelope["data"]["periods"] == 3 and envelope["metadata"]["actor"]["kind"] == "admin"

    both = {**body, "amount_off": {"amount": "10.00", "currency": "RUB"}}
    _problem(await api.client.post("/v1/admin/promo-codes", json=both, headers=api.command(op, role="operator")), 422)
    _problem(await api.client.post("/v1/admin/promo-codes", json={**body, "percent_off": 100}, headers=api.command(op, role="operator")), 422)
    _problem(await api.client.post("/v1/admin/promo-codes/NOSUCHCODE/deactivate", json={"reason": "x"},
                                   headers=api.command(op, role="operator")), 404)
    _problem(await api.client.post("/v1/admin/promo-codes", json=body, headers=api.command(new_user())), 403)

    seeded = await _code(seed)
    listed = (await api.client.get("/v1/admin/promo-codes", headers=api.auth(op, role="operator"))).json()["items"]
    mine = next(i for i in listed if i["code"] == seeded["code"])
    assert (mine["redemptions"], mine["released"], mine["remaining"], mine["percent_off"]) == (3, 1, 7, 20)
    response = await api.client.post(f"/v1/admin/promo-codes/{seeded['code']}/deactivate", json={"reason": "leaked"},
                                     headers=api.command(op, role="operator"))
    assert response.status_code == 202
    (record,) = await published_commands(settings, api.topic, lambda e: e["id"] == response.json()["command_id"])
    assert record[1]["type"] == "DeactivatePromoCode" and record[1]["stream_id"] == f"promo-{seeded['code']}"
