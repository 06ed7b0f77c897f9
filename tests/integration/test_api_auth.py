"""Authentication and authorisation of the command API: bearer JWTs, roles, ownership."""

from __future__ import annotations

import time
import uuid

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from command_api.entrypoints.app import create_app
from infra.tokens import mint_token
from tests.fixtures.command_api import api_settings_for, new_user, published_commands


def _problem(response, status: int, slug: str) -> dict:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status and body["type"].endswith("/" + slug)
    return body


async def test_missing_token_is_401_with_a_bearer_challenge(api):
    response = await api.client.get("/v1/subscriptions")
    _problem(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"] == "Bearer"
    basic = await api.client.get("/v1/subscriptions", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    _problem(basic, 401, "unauthorized")


@pytest.mark.parametrize(
    "make_token",
    [
        pytest.param(lambda s: mint_token(s.jwt_secret, user_id="u", ttl_s=-60), id="expired"),
        pytest.param(lambda s: jwt.encode({"sub": "u", "typ": "access", "exp": int(time.time()) + 60}, "another-secret-that-is-long-enough-for-hs256", algorithm="HS256"), id="wrong-signature"),
        pytest.param(lambda s: mint_token(s.jwt_secret, user_id="u", typ="refresh"), id="refresh-token"),
        pytest.param(lambda s: jwt.encode({"sub": "u", "exp": int(time.time()) + 60}, s.jwt_secret, algorithm="HS256"), id="no-typ"),
        pytest.param(lambda s: jwt.encode({"sub": "u", "typ": "access"}, s.jwt_secret, algorithm="HS256"), id="no-exp"),
        pytest.param(lambda s: jwt.encode({"typ": "access", "exp": int(time.time()) + 60}, s.jwt_secret, algorithm="HS256"), id="no-sub"),
        pytest.param(lambda s: jwt.encode({"sub": "a b\x00", "typ": "access", "exp": int(time.time()) + 60}, s.jwt_secret, algorithm="HS256"), id="bad-sub"),
        pytest.param(lambda s: jwt.encode({"sub": "u", "typ": "access", "exp": int(time.time()) + 60}, None, algorithm="none"), id="alg-none"),
        pytest.param(lambda s: "not.a.jwt", id="garbage"),
    ],
)
async def test_invalid_tokens_are_401(api, make_token):
    token = make_token(api.settings)
    response = await api.client.get("/v1/subscriptions", headers={"Authorization": f"Bearer {token}"})
    body = _problem(response, 401, "unauthorized")
    assert "invalid_token" in response.headers["WWW-Authenticate"]
    assert body["detail"]


async def test_an_expired_token_cannot_buy(api, seed, settings):
    user, plan = new_user(), await seed.plan()
    token = mint_token(api.settings.jwt_secret, user_id=user, email="a@example.com", ttl_s=-60)
    response = await api.client.post(
        "/v1/subscriptions", json={"plan_id": plan["plan_id"]},
        headers={"Authorization": f"Bearer {token}", "Idempotency-Key": str(uuid.uuid4())},
    )
    _problem(response, 401, "unauthorized")
    assert not await published_commands(settings, api.topic, lambda e: e["stream_id"] == f"account-{user}", expect=0)


async def test_buying_needs_an_email_claim(api, seed):
    user, plan = new_user(), await seed.plan()
    response = await api.client.post("/v1/subscriptions", json={"plan_id": plan["plan_id"]}, headers=api.command(user, email=None))
    _problem(response, 403, "email-required")


async def test_another_users_resources_are_404(api, seed):
    owner, intruder, plan = new_user(), new_user(), await seed.plan()
    sub = await seed.subscription(owner, plan)
    payment = await seed.payment(sub)
    sid = sub["subscription_id"]
    for path in (f"/v1/subscriptions/{sid}", f"/v1/subscriptions/{sid}/refund-quote", f"/v1/payments/{payment['payment_id']}"):
        assert (await api.client.get(path, headers=api.auth(owner))).status_code == 200, path
        _problem(await api.client.get(path, headers=api.auth(intruder)), 404, "not-found")
    for path, body in ((f"/v1/subscriptions/{sid}/cancel", {"mode": "refund_now"}), (f"/v1/subscriptions/{sid}/auto-renew", {"enabled": False})):
        _problem(await api.client.post(path, json=body, headers=api.command(intruder)), 404, "not-found")
    listed = await api.client.get("/v1/subscriptions", headers=api.auth(intruder))
    assert listed.json()["items"] == []
    assert (await api.client.get("/v1/payments", headers=api.auth(intruder))).json()["items"] == []

    # a command: visible to its sender only
    accepted = await api.client.post(f"/v1/subscriptions/{sid}/auto-renew", json={"enabled": False}, headers=api.command(owner))
    assert accepted.status_code == 202
    location = accepted.headers["Location"]
    assert (await api.client.get(location, headers=api.auth(owner))).status_code == 200
    _problem(await api.client.get(location, headers=api.auth(intruder)), 404, "not-found")


async def test_operator_endpoints_need_the_operator_role(api, seed):
    user, plan = new_user(), await seed.plan()
    sub = await seed.subscription(user, plan)
    path = f"/v1/admin/subscriptions/{sub['subscription_id']}/extend"
    body = {"days": 3, "reason": "outage"}
    _problem(await api.client.post(path, json=body, headers=api.command(user)), 403, "operator-required")
    # a service token must say which operator acts (it names none here; see test_api_identity.py)
    _problem(await api.client.post(path, json=body, headers=api.command("admin-app", role="service")), 403, "operator-required")
    ok = await api.client.post(path, json=body, headers=api.command(f"op-{uuid.uuid4().hex[:6]}", role="operator"))
    assert ok.status_code == 202


async def test_a_service_token_acts_as_the_named_operator(api, seed, settings):
    user, plan = new_user(), await seed.plan()
    sub = await seed.subscription(user, plan)
    headers = {**api.command("admin-app", role="service", operators=["maria", "ivan"]), "X-Operator": "maria"}
    response = await api.client.post(
        f"/v1/admin/subscriptions/{sub['subscription_id']}/auto-renew", json={"enabled": False, "reason": "asked by phone"}, headers=headers
    )
    assert response.status_code == 202
    [(key, envelope, _)] = await published_commands(settings, api.topic, lambda e: e["id"] == response.json()["command_id"])
    assert envelope["metadata"]["actor"] == {"kind": "admin", "id": "maria"}
    assert envelope["stream_id"] == f"account-{user}" and key == user.encode()
    # and X-Operator must look like a user name
    bad = await api.client.post(
        f"/v1/admin/subscriptions/{sub['subscription_id']}/auto-renew", json={"enabled": True, "reason": "x"},
        headers={**api.command("admin-app", role="service", operators=["maria"]), "X-Operator": "maria smith"},
    )
    assert bad.status_code in (403, 422)


async def test_rs256_tokens_with_a_configured_public_key(settings, engine, api_topic, seed):
    import httpx

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    rs_settings = api_settings_for(settings, api_topic, jwt_public_key=public_pem)
    app = create_app(rs_settings)
    user = new_user()
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as client:
            good = mint_token(private_pem, algorithm="RS256", user_id=user)
            assert (await client.get("/v1/subscriptions", headers={"Authorization": f"Bearer {good}"})).status_code == 200
            # an HS256 token signed with the shared secret is refused once RS256 is configured
            hs = mint_token(rs_settings.jwt_secret, user_id=user)
            assert (await client.get("/v1/subscriptions", headers={"Authorization": f"Bearer {hs}"})).status_code == 401
