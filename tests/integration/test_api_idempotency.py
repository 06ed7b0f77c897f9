"""Idempotency-Key with Stripe's semantics, against the real API app, Kafka and PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy import text

from command_api.entrypoints.app import create_app
from command_api.domain.idempotency import command_id_for
from tests.fixtures.command_api import api_settings_for, new_user, published_commands


def _with_id(command_id: str):  # type: ignore[no-untyped-def]
    return lambda envelope: envelope["id"] == command_id


async def test_same_key_same_body_replays_first_response_and_publishes_once(api, seed, settings):
    user, plan = new_user(), await seed.plan()
    headers = api.command(user)
    first = await api.client.post("/v1/subscriptions", json={"plan_id": plan["plan_id"]}, headers=headers)
    assert first.status_code == 202
    replay = await api.client.post("/v1/subscriptions", json={"plan_id": plan["plan_id"]}, headers=headers)
    assert replay.status_code == 202
    assert replay.json() == first.json()
    assert replay.headers["Location"] == first.headers["Location"]
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers

    command_id = first.json()["command_id"]
    assert command_id == str(command_id_for(user, headers["Idempotency-Key"]))
    records = await published_commands(settings, api.topic, _with_id(command_id), expect=1)
    assert len(records) == 1


async def test_key_order_whitespace_and_explicit_defaults_do_not_change_the_request(api, seed):
    user, plan = new_user(), await seed.plan()
    headers = {**api.command(user), "Content-Type": "application/json"}
    body_a = f'{{"plan_id":"{plan["plan_id"]}"}}'
    body_b = f'{{ "auto_renew" : true ,\n "plan_id" : "{plan["plan_id"]}" }}'
    first = await api.client.post("/v1/subscriptions", content=body_a, headers=headers)
    second = await api.client.post("/v1/subscriptions", content=body_b, headers=headers)
    assert first.status_code == second.status_code == 202
    assert second.headers["Idempotent-Replayed"] == "true"
    assert first.json() == second.json()


async def test_same_key_different_body_is_422_and_publishes_nothing_new(api, seed, settings):
    user, plan_a, plan_b = new_user(), await seed.plan(), await seed.plan()
    headers = api.command(user)
    first = await api.client.post("/v1/subscriptions", json={"plan_id": plan_a["plan_id"]}, headers=headers)
    assert first.status_code == 202
    other = await api.client.post("/v1/subscriptions", json={"plan_id": plan_b["plan_id"]}, headers=headers)
    assert other.status_code == 422
    assert other.headers["content-type"].startswith("application/problem+json")
    assert other.json()["type"].endswith("/idempotency-key-reused")
    records = await published_commands(
        settings, api.topic, lambda e: e["stream_id"] == f"account-{user}", expect=1
    )
    assert [r[1]["data"]["plan_id"] for r in records] == [plan_a["plan_id"]]


async def test_same_key_on_another_endpoint_is_422(api, seed):
    user, plan = new_user(), await seed.plan()
    sub = await seed.subscription(user, plan)
    headers = api.command(user)
    first = await api.client.post(f"/v1/subscriptions/{sub['subscription_id']}/auto-renew", json={"enabled": False}, headers=headers)
    assert first.status_code == 202
    second = await api.client.post(f"/v1/subscriptions/{sub['subscription_id']}/cancel", json={"mode": "refund_now"}, headers=headers)
    assert second.status_code == 422
    assert second.json()["type"].endswith("/idempotency-key-reused")


async def test_keys_are_scoped_per_user(api, seed, settings):
    plan = await seed.plan()
    key = str(uuid.uuid4())
    alice, bob = new_user(), new_user()
    a = await api.client.post("/v1/subscriptions", json={"plan_id": plan["plan_id"]}, headers=api.command(alice, key))
    b = await api.client.post("/v1/subscriptions", json={"plan_id": plan["plan_id"]}, headers=api.command(bob, key))
    assert a.status_code == b.status_code == 202
    assert a.json()["command_id"] != b.json()["command_id"]
    assert "Idempotent-Replayed" not in b.headers


async def test_a_key_whose_request_is_in_flight_gets_409(api, seed, engine):
    user, plan = new_user(), await seed.plan()
    key = str(uuid.uuid4())
    services = api.app.state.services
    from command_api.domain.idempotency import Claimed, request_hash
    from command_api.entrypoints.models import PurchaseRequest

    body = f'{{"plan_id":"{plan["plan_id"]}"}}'.encode()
    claim = await services.idempotency.claim(
        scope=user, key=key, hash=request_hash("POST", "/v1/subscriptions", PurchaseRequest(plan_id=plan["plan_id"])),
        method="POST",
        path="/v1/subscriptions", command_id=command_id_for(user, key), command_type="PurchaseSubscription",
    )
    assert isinstance(claim, Claimed)  # another request holds the key right now
    response = await api.client.post(
        "/v1/subscriptions", content=body, headers={**api.command(user, key), "Content-Type": "application/json"}
    )
    assert response.status_code == 409
    assert response.json()["type"].endswith("/request-in-flight")
    assert int(response.headers["Retry-After"]) >= 1


async def test_a_stale_in_flight_key_is_recovered_with_the_same_command_id(api, seed, engine, settings):
    """A request that crashed after claiming its key does not block the key forever."""
    user, plan = new_user(), await seed.plan()
    key = str(uuid.uuid4())
    services = api.app.state.services
    from command_api.domain.idempotency import Claimed, request_hash
    from command_api.entrypoints.models import PurchaseRequest

    body = f'{{"plan_id":"{plan["plan_id"]}"}}'.encode()
    claim = await services.idempotency.claim(
        scope=user, key=key, hash=request_hash("POST", "/v1/subscriptions", PurchaseRequest(plan_id=plan["plan_id"])),
        method="POST",
        path="/v1/subscriptions", command_id=command_id_for(user, key), command_type="PurchaseSubscription",
    )
    assert isinstance(claim, Claimed)
    async with engine.begin() as conn:  # the crashed request's lock is now older than the stale timeout
        await conn.execute(
            text("UPDATE api.idempotency_keys SET locked_at = locked_at - make_interval(secs => :s) "
                 "WHERE scope = :u AND key = :k"),
            {"s": api.settings.api_idempotency_stale_s + 1, "u": user, "k": key},
        )
    response = await api.client.post(
        "/v1/subscriptions", content=body, headers={**api.command(user, key), "Content-Type": "application/json"}
    )
    assert response.status_code == 202
    assert response.json()["command_id"] == str(command_id_for(user, key))
    # the crashed request can no longer store its answer over ours
    assert not await services.idempotency.complete(
        scope=user, key=key, owner=claim.owner, status=500, body={}, headers={}
    )
    replay = await api.client.post(
        "/v1/subscriptions", content=body, headers={**api.command(user, key), "Content-Type": "application/json"}
    )
    assert replay.status_code == 202 and replay.headers["Idempotent-Replayed"] == "true"


async def test_concurrent_requests_with_one_key_publish_one_command(api, seed, settings):
    user, plan = new_user(), await seed.plan()
    headers = api.command(user)
    responses = await asyncio.gather(
        *[api.client.post("/v1/subscriptions", json={"plan_id": plan["plan_id"]}, headers=headers) for _ in range(12)]
    )
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) <= {202, 409}, statuses
    accepted = [r for r in responses if r.status_code == 202]
    fresh = [r for r in accepted if "Idempotent-Replayed" not in r.headers]
    assert len(fresh) == 1, statuses
    assert {r.json()["command_id"] for r in accepted} == {fresh[0].json()["command_id"]}
    records = await published_commands(
        settings, api.topic, lambda e: e["stream_id"] == f"account-{user}", expect=1
    )
    assert len(records) == 1


async def test_a_failed_check_does_not_burn_the_key(api, seed):
    """Nothing was published for an unknown plan, so the same key works once the plan exists."""
    user = new_user()
    plan_id = f"plan-{uuid.uuid4().hex[:10]}"
    headers = api.command(user)
    missing = await api.client.post("/v1/subscriptions", json={"plan_id": plan_id}, headers=headers)
    assert missing.status_code == 422
    assert missing.json()["type"].endswith("/plan-not-available")
    await seed.plan(plan_id)
    ok = await api.client.post("/v1/subscriptions", json={"plan_id": plan_id}, headers=headers)
    assert ok.status_code == 202
    assert "Idempotent-Replayed" not in ok.headers


async def test_a_publish_that_timed_out_is_retried_with_the_same_command_id(api, seed, settings, api_topic):
    """Kafka did not ack in time → 503, the key stays bound to the body, and the retry republishes the same id."""
    user, plan = new_user(), await seed.plan()
    headers = api.command(user)
    impatient = create_app(api_settings_for(settings, api_topic, api_publish_timeout_s=1e-6))
    import httpx

    async with impatient.router.lifespan_context(impatient):
        transport = httpx.ASGITransport(app=impatient, client=("127.0.0.1", 40001))
        async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as client:
            failed = await client.post("/v1/subscriptions", json={"plan_id": plan["plan_id"]}, headers=headers)
            assert failed.status_code == 503
            assert failed.headers["content-type"].startswith("application/problem+json")
            assert failed.headers["Retry-After"]
            # a different body with the same key is still refused: the first may have reached Kafka
            other = await client.post("/v1/subscriptions", json={"plan_id": plan["plan_id"], "auto_renew": False}, headers=headers)
            assert other.status_code == 422

    retried = await api.client.post("/v1/subscriptions", json={"plan_id": plan["plan_id"]}, headers=headers)
    assert retried.status_code == 202
    command_id = retried.json()["command_id"]
    records = await published_commands(settings, api.topic, lambda e: e["stream_id"] == f"account-{user}", timeout=3)
    assert records, "the retry published the command"
    assert {r[1]["id"] for r in records} == {command_id}  # maybe twice (the timed-out send landed), never two ids


async def test_completed_keys_are_kept_for_at_least_24_hours(api, seed, engine):
    user, plan = new_user(), await seed.plan()
    headers = api.command(user)
    response = await api.client.post("/v1/subscriptions", json={"plan_id": plan["plan_id"]}, headers=headers)
    assert response.status_code == 202
    async with engine.connect() as conn:
        kept_for = (
            await conn.execute(
                text("SELECT EXTRACT(EPOCH FROM expires_at - created_at) FROM api.idempotency_keys WHERE scope = :u"),
                {"u": user},
            )
        ).scalar_one()
    assert float(kept_for) >= 24 * 3600
    assert await api.app.state.services.idempotency.purge_expired() >= 0
    replay = await api.client.post("/v1/subscriptions", json={"plan_id": plan["plan_id"]}, headers=headers)
    assert replay.headers.get("Idempotent-Replayed") == "true"


async def test_missing_or_malformed_idempotency_key_is_rejected(api, seed):
    user, plan = new_user(), await seed.plan()
    no_key = await api.client.post("/v1/subscriptions", json={"plan_id": plan["plan_id"]}, headers=api.auth(user))
    assert no_key.status_code == 422
    assert no_key.headers["content-type"].startswith("application/problem+json")
    assert any(e["loc"][-1] == "Idempotency-Key" for e in no_key.json()["errors"])
    spaced = await api.client.post(
        "/v1/subscriptions", json={"plan_id": plan["plan_id"]}, headers={**api.auth(user), "Idempotency-Key": "a b"}
    )
    assert spaced.status_code == 422


async def test_many_concurrent_first_requests_never_fail(api, seed):
    """Races between first requests with one key end in one 202 and 409s — never a 5xx."""
    plan = await seed.plan()
    for _ in range(15):
        user = new_user()
        headers = api.command(user)
        responses = await asyncio.gather(
            *[api.client.post("/v1/subscriptions", json={"plan_id": plan["plan_id"]}, headers=headers) for _ in range(8)]
        )
        statuses = [r.status_code for r in responses]
        assert set(statuses) <= {202, 409}, statuses
        assert len({r.json()["command_id"] for r in responses if r.status_code == 202}) == 1


# --- keys past their window (issue 16, point 8) -------------------------------------------------

async def _expire(engine, user: str, key: str) -> None:  # type: ignore[no-untyped-def]
    """Move the key's window into the past (as 48 hours would)."""
    async with engine.begin() as conn:
        await conn.execute(
            text("UPDATE api.idempotency_keys SET expires_at = clock_timestamp() - interval '1 second' "
                 "WHERE scope = :u AND key = :k"), {"u": user, "k": key})


async def _handled(engine, command_id: str):  # type: ignore[no-untyped-def]
    async with engine.connect() as conn:
        return (await conn.execute(text("SELECT outcome FROM eventstore.handled_commands WHERE command_id = :c"),
                                   {"c": uuid.UUID(command_id)})).scalar_one_or_none()


@pytest.fixture
async def processor(engine, yookassa_sandbox):  # type: ignore[no-untyped-def]
    """The real command handler of the payment processor on the API's database (fed from the topic by hand)."""
    import orjson

    from infra.clock import SystemClock
    from payment_processor.config import ProcessorSettings
    from payment_processor.adapters.gateway import YooKassaGateway
    from payment_processor.handlers import CommandHandler
    from schemas import parse_envelope

    gateway = YooKassaGateway(shop_id=yookassa_sandbox.shop_id, secret_key=yookassa_sandbox.secret_key,
                              api_url=yookassa_sandbox.api_url, timeout_s=2.0, max_concurrency=2)
    handler = CommandHandler(engine=engine, gateway=gateway, clock=SystemClock(),
                             config=ProcessorSettings(), default_return_url="http://shop.example/return")

    async def handle(envelope: dict) -> None:  # type: ignore[type-arg]
        await handler.handle(parse_envelope(orjson.dumps(envelope)))

    yield handle
    await gateway.aclose()


async def test_a_key_reused_after_its_window_becomes_a_new_command_that_runs(api, seed, settings, engine, processor):
    """The old id is handled; answering it again would be a 202 for an operation that never runs."""
    user, plan = new_user(), await seed.plan()  # no plan in the event store: the processor rejects, a terminal end
    headers = api.command(user)
    body = {"plan_id": plan["plan_id"]}
    first = await api.client.post("/v1/subscriptions", json=body, headers=headers)
    assert first.status_code == 202
    first_id = first.json()["command_id"]
    assert first_id == str(command_id_for(user, headers["Idempotency-Key"]))
    [(_, envelope, _)] = await published_commands(settings, api.topic, _with_id(first_id))
    await processor(envelope)
    assert (await _handled(engine, first_id))["status"] == "rejected"

    await _expire(engine, user, headers["Idempotency-Key"])
    again = await api.client.post("/v1/subscriptions", json=body, headers=headers)
    assert again.status_code == 202, again.text
    assert "Idempotent-Replayed" not in again.headers, "past its window the key is a new request"
    second_id = again.json()["command_id"]
    assert second_id != first_id and again.headers["Location"] == f"/v1/commands/{second_id}"
    assert await _handled(engine, second_id) is None, "the new command id is one the processor has not handled"
    [(_, envelope, _)] = await published_commands(settings, api.topic, _with_id(second_id))
    await processor(envelope)
    assert (await _handled(engine, second_id))["status"] == "rejected", "the new command really ran to its end"

    # within the new window the key replays the new first response
    replay = await api.client.post("/v1/subscriptions", json=body, headers=headers)
    assert replay.headers.get("Idempotent-Replayed") == "true" and replay.json()["command_id"] == second_id

    # and after a purge (the row is gone, not just expired) the next window gets yet another id
    await _expire(engine, user, headers["Idempotency-Key"])
    assert await api.app.state.services.idempotency.purge_expired() >= 1
    third = await api.client.post("/v1/subscriptions", json=body, headers=headers)
    assert third.status_code == 202 and "Idempotent-Replayed" not in third.headers
    assert third.json()["command_id"] not in (first_id, second_id)


async def _claim(store, user: str, key: str, plan_id: str):  # type: ignore[no-untyped-def]
    from command_api.domain.idempotency import Claimed, request_hash
    from command_api.entrypoints.models import PurchaseRequest

    claim = await store.claim(
        scope=user, key=key, hash=request_hash("POST", "/v1/subscriptions", PurchaseRequest(plan_id=plan_id)),
        method="POST", path="/v1/subscriptions", command_id=command_id_for(user, key),
        command_type="PurchaseSubscription",
    )
    assert isinstance(claim, Claimed)
    return claim


async def test_the_purge_removes_expired_keys_including_ones_released_in_flight(api, seed, engine):
    store = api.app.state.services.idempotency
    user, plan = new_user(), await seed.plan()
    keys = {name: f"{name}-{uuid.uuid4()}" for name in ("completed", "released", "crashed", "held", "young")}
    claims = {name: await _claim(store, user, key, plan["plan_id"]) for name, key in keys.items()}
    for name in ("completed", "young"):
        assert await store.complete(scope=user, key=keys[name], owner=claims[name].owner, status=202, body={}, headers={})
    await store.release(scope=user, key=keys["released"], owner=claims["released"].owner)  # the publish failed
    async with engine.begin() as conn:  # the crashed request's lock is older than the stale timeout
        await conn.execute(text("UPDATE api.idempotency_keys SET locked_at = locked_at - make_interval(secs => :s) "
                                "WHERE scope = :u AND key = :k"),
                           {"s": api.settings.api_idempotency_stale_s + 1, "u": user, "k": keys["crashed"]})
    for name in ("completed", "released", "crashed", "held"):
        await _expire(engine, user, keys[name])

    assert await store.purge_expired() >= 3
    async with engine.connect() as conn:
        left = set((await conn.execute(text("SELECT key FROM api.idempotency_keys WHERE scope = :u"),
                                       {"u": user})).scalars())
    assert left == {keys["held"], keys["young"]}, "only a key a request holds right now, and one in its window, stay"


async def test_a_released_key_past_its_window_takes_a_different_body(api, seed, settings, engine):
    """A publish that failed two days ago no longer binds the key: the client's new request is served."""
    user, plan_a, plan_b = new_user(), await seed.plan(), await seed.plan()
    store = api.app.state.services.idempotency
    key = str(uuid.uuid4())
    claim = await _claim(store, user, key, plan_a["plan_id"])
    await store.release(scope=user, key=key, owner=claim.owner)
    await _expire(engine, user, key)
    response = await api.client.post("/v1/subscriptions", json={"plan_id": plan_b["plan_id"]}, headers=api.command(user, key))
    assert response.status_code == 202, response.text
    [(_, envelope, _)] = await published_commands(settings, api.topic, _with_id(response.json()["command_id"]))
    assert envelope["data"]["plan_id"] == plan_b["plan_id"]
