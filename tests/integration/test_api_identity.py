"""Tokens from real identity providers: audience, issuer, lifetime, JWKS with key rotation, the
access-type claim, and what a service token may do.

Tokens are really signed (HS256, RS256, ES256); the key set is served over real HTTP by a small
server on 127.0.0.1 whose keys the test rotates, as Keycloak does.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from command_api.entrypoints.app import create_app
from command_api.adapters.jwks import TokenVerifier
from command_api.config import ApiSettings
from command_api.domain.problems import ProblemError
from infra.tokens import mint_token
from tests.fixtures.command_api import api_settings_for, new_user

SECRET = "identity-test-secret-0123456789abcdef"  # 37 bytes


class JwksServer:
    """A JWKS endpoint on 127.0.0.1: `keys` is what it serves, `hits` how often it was asked."""

    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []
        self.hits = 0
        self.delay_s = 0.0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                server.hits += 1
                if server.delay_s:
                    time.sleep(server.delay_s)
                body = json.dumps({"keys": server.keys}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/realms/cinema/protocol/openid-connect/certs"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class Clock:
    """The key set's monotonic clock, moved by the test instead of sleeping."""

    def __init__(self, verifier: TokenVerifier) -> None:
        self.now = 1000.0
        verifier.keys.monotonic = lambda: self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class SigningKey:
    """A private key with its kid, and its public half as a JWK."""

    def __init__(self, algorithm: str = "RS256", kid: str | None = None) -> None:
        self.algorithm = algorithm
        self.kid = kid or uuid.uuid4().hex[:8]
        self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048) if algorithm == "RS256" else ec.generate_private_key(ec.SECP256R1())
        self.pem = self.private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()

    @property
    def jwk(self) -> dict[str, Any]:
        algo = jwt.algorithms.RSAAlgorithm if self.algorithm == "RS256" else jwt.algorithms.ECAlgorithm
        return {**json.loads(algo.to_jwk(self.private.public_key())), "kid": self.kid, "use": "sig", "alg": self.algorithm}

    def sign(self, claims: dict[str, Any], kid: str | None = None) -> str:
        return jwt.encode(claims, self.pem, algorithm=self.algorithm, headers={"kid": kid or self.kid})


@pytest.fixture
def jwks() -> Iterator[JwksServer]:
    server = JwksServer()
    yield server
    server.close()


def claims(sub: str = "u-1", ttl: int = 300, **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": sub, "typ": "access", "iat": now, "exp": now + ttl, **extra}


def settings(**values: Any) -> ApiSettings:
    return ApiSettings(_env_file=None, environment="test", **{"jwt_secret": SECRET, **values})  # type: ignore[call-arg]


def refused(verifier: TokenVerifier, token: str, status: int = 401) -> str:
    with pytest.raises(ProblemError) as caught:
        verifier.verify(token)
    assert caught.value.status == status
    return caught.value.detail


def hs(claims_: dict[str, Any]) -> str:
    return jwt.encode(claims_, SECRET, algorithm="HS256")


# ---------------------------------------------------------------- audience and issuer


def test_an_aud_claim_is_accepted_without_a_configured_audience_and_checked_with_one():
    open_verifier = TokenVerifier(settings())
    assert open_verifier.verify(hs(claims(aud="account"))).user_id == "u-1"  # today: "Invalid audience" for any aud

    verifier = TokenVerifier(settings(jwt_audience="billing-api,billing-web"))
    assert verifier.verify(hs(claims(aud="billing-api"))).user_id == "u-1"
    assert verifier.verify(hs(claims(sub="u-2", aud=["account", "billing-web"]))).user_id == "u-2"
    assert "aud" in refused(verifier, hs(claims(aud="another-client")))
    assert "aud" in refused(verifier, hs(claims()))  # none at all


def test_the_issuer_is_checked_when_configured():
    verifier = TokenVerifier(settings(jwt_issuer="https://sso.example.com/realms/cinema"))
    assert verifier.verify(hs(claims(iss="https://sso.example.com/realms/cinema"))).user_id == "u-1"
    assert "iss" in refused(verifier, hs(claims(iss="https://sso.example.com/realms/other")))
    assert "iss" in refused(verifier, hs(claims(sub="u-3")))


# ---------------------------------------------------------------- lifetime


def test_tokens_living_longer_than_the_maximum_are_refused():
    verifier = TokenVerifier(settings(jwt_max_token_age_s=3600))
    now = int(time.time())
    assert "longer" in refused(verifier, hs({"sub": "u", "typ": "access", "iat": now, "exp": 10**20}))
    assert "later than" in refused(verifier, hs({"sub": "u", "typ": "access", "exp": 10**20}))  # no iat at all
    assert "longer" in refused(verifier, hs({"sub": "u", "typ": "access", "iat": now - 7000, "exp": now + 100}))
    assert verifier.verify(hs({"sub": "u", "typ": "access", "iat": now, "exp": now + 3600})).user_id == "u"


def test_the_cache_never_keeps_a_token_past_now_plus_the_maximum_age():
    verifier = TokenVerifier(settings(jwt_max_token_age_s=60))
    now = time.time()
    token = hs({"sub": "u", "typ": "access", "exp": int(now) + 63})  # within the 5 s leeway, no iat
    verifier.verify(token)
    assert verifier._cache[token][1] <= now + 61  # min(exp, now + max), not exp


def test_service_tokens_have_their_own_maximum():
    verifier = TokenVerifier(settings(jwt_max_token_age_s=300, jwt_service_max_token_age_s=30 * 86400))
    long_service = mint_token(settings().jwt_secret, user_id="admin-service", role="service", operators=["maria"], ttl_s=20 * 86400)
    assert verifier.verify(long_service).operators == ("maria",)
    assert "longer" in refused(verifier, mint_token(settings().jwt_secret, user_id="u", ttl_s=20 * 86400))


# ---------------------------------------------------------------- the access-type claim


def test_flask_jwt_extended_tokens_with_type_access():
    verifier = TokenVerifier(settings(jwt_access_type_claim="type"))
    now = int(time.time())
    # what Flask-JWT-Extended issues for create_access_token(identity="42", additional_claims=...)
    flask = {"fresh": False, "iat": now, "jti": str(uuid.uuid4()), "type": "access", "sub": "42", "nbf": now,
             "exp": now + 900, "email": "anna@example.com"}
    principal = verifier.verify(hs(flask))
    assert (principal.user_id, principal.email, principal.role) == ("42", "anna@example.com", "user")
    assert "type" in refused(verifier, hs({**flask, "type": "refresh"}))
    assert "typ must be" in refused(TokenVerifier(settings()), hs(flask))  # the default wants typ: access


# ---------------------------------------------------------------- JWKS


@pytest.mark.parametrize("algorithm", ["RS256", "ES256"])
async def test_jwks_keys_are_fetched_over_http_and_rotation_picks_up_a_new_kid(jwks, algorithm):
    old, new = SigningKey(algorithm), SigningKey(algorithm)
    jwks.keys = [old.jwk]
    verifier = TokenVerifier(settings(jwt_jwks_url=jwks.url, jwt_algorithm=algorithm, jwt_jwks_min_refresh_s=0.5))
    clock = Clock(verifier)
    assert (await verifier.verify_async(old.sign(claims("u-old")))).user_id == "u-old"
    assert (await verifier.verify_async(old.sign(claims("u-old2")))).user_id == "u-old2"
    assert jwks.hits == 1  # cached

    # the provider rotates: a token with the new kid makes the API refetch the set once
    jwks.keys = [old.jwk, new.jwk]
    clock.advance(0.6)
    assert (await verifier.verify_async(new.sign(claims("u-new")))).user_id == "u-new"
    assert jwks.hits == 2

    # unknown kids cannot make the API hammer the provider: one refetch per min_refresh_s
    stranger = SigningKey(algorithm)
    for _ in range(5):
        with pytest.raises(ProblemError) as caught:
            await verifier.verify_async(stranger.sign(claims("u-x")))
        assert caught.value.status == 401 and "kid" in caught.value.detail
    assert jwks.hits <= 3
    # a token signed by another key but naming a known kid fails its signature
    with pytest.raises(ProblemError, match="not valid|signature"):
        await verifier.verify_async(stranger.sign(claims("u-y"), kid=new.kid))


async def test_jwks_set_expires_after_its_ttl(jwks):
    key = SigningKey()
    jwks.keys = [key.jwk]
    verifier = TokenVerifier(settings(jwt_jwks_url=jwks.url, jwt_jwks_ttl_s=0.3, jwt_jwks_min_refresh_s=0))
    clock = Clock(verifier)
    await verifier.verify_async(key.sign(claims("a")))
    clock.advance(0.4)
    await verifier.verify_async(key.sign(claims("b")))
    assert jwks.hits == 2


async def test_a_hanging_jwks_endpoint_times_out_and_answers_503(jwks):
    key = SigningKey()
    jwks.keys = [key.jwk]
    jwks.delay_s = 2.0
    verifier = TokenVerifier(settings(jwt_jwks_url=jwks.url, jwt_jwks_timeout_s=0.3))
    started = time.monotonic()
    with pytest.raises(ProblemError) as caught:
        await verifier.verify_async(key.sign(claims()))
    assert caught.value.status == 503 and time.monotonic() - started < 1.5


async def test_hs256_tokens_are_refused_when_the_api_trusts_a_jwks(jwks):
    key = SigningKey()
    jwks.keys = [key.jwk]
    verifier = TokenVerifier(settings(jwt_jwks_url=jwks.url))
    with pytest.raises(ProblemError):
        await verifier.verify_async(jwt.encode(claims(), SECRET, algorithm="HS256", headers={"kid": key.kid}))


# ---------------------------------------------------------------- through the API


async def test_a_keycloak_token_through_the_api(settings, engine, api_topic, seed, jwks):  # noqa: F811 - fixture name
    """Keycloak: issuer = realm URL, JWKS = the realm's certs, audience = the client, `typ: Bearer`."""
    key = SigningKey()
    jwks.keys = [key.jwk]
    realm = "https://sso.example.com/realms/cinema"
    api_settings = api_settings_for(
        settings, api_topic, jwt_jwks_url=jwks.url, jwt_algorithm="RS256", jwt_issuer=realm, jwt_audience="billing-api",
        jwt_access_type_value="Bearer",
    )
    app = create_app(api_settings)
    user = new_user()
    now = int(time.time())
    keycloak = {"exp": now + 300, "iat": now, "jti": str(uuid.uuid4()), "iss": realm, "aud": ["billing-api", "account"],
                "sub": user, "typ": "Bearer", "azp": "cinema-web", "scope": "openid email", "email": "anna@example.com"}
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api.test") as client:
            ok = await client.get("/v1/subscriptions", headers={"Authorization": f"Bearer {key.sign(keycloak)}"})
            assert ok.status_code == 200, ok.text
            for bad in ({"aud": "account"}, {"iss": "https://evil.example.com/realms/cinema"}, {"typ": "Refresh"}, {"exp": 10**20}):
                response = await client.get("/v1/subscriptions", headers={"Authorization": f"Bearer {key.sign({**keycloak, **bad})}"})
                assert response.status_code == 401, (bad, response.text)


async def test_a_service_token_is_no_user_and_acts_only_for_the_operators_it_names(api, seed):
    plan = await seed.plan()
    sub = await seed.subscription(new_user(), plan)
    path = f"/v1/admin/subscriptions/{sub['subscription_id']}/auto-renew"
    body = {"enabled": False, "reason": "asked by phone"}
    service = api.command("admin-service", role="service", operators=["maria"])

    # it is nobody's account: no user endpoint answers it
    assert (await api.client.get("/v1/subscriptions", headers=service)).status_code == 403
    bought = await api.client.post("/v1/subscriptions", json={"plan_id": plan["plan_id"]}, headers=service)
    assert bought.status_code == 403 and bought.json()["type"].endswith("/user-required")

    # it acts for maria (named by the token; X-Operator may repeat it) and for nobody else
    assert (await api.client.post(path, json=body, headers=service)).status_code == 202
    assert (await api.client.post(path, json=body, headers={**api.command("admin-service", role="service", operators=["maria"]),
                                                             "X-Operator": "maria"})).status_code == 202
    other = await api.client.post(path, json=body, headers={**api.command("admin-service", role="service", operators=["maria"]),
                                                            "X-Operator": "ivan"})
    assert other.status_code == 403 and other.json()["type"].endswith("/operator-mismatch")
    unbound = await api.client.post(path, json=body, headers={**api.command("admin-service", role="service"), "X-Operator": "maria"})
    assert unbound.status_code == 403  # a service token naming no operator acts for no one

    # an operator's own token acts only as that operator
    op = f"op-{uuid.uuid4().hex[:6]}"
    spoof = await api.client.post(path, json=body, headers={**api.command(op, role="operator"), "X-Operator": "maria"})
    assert spoof.status_code == 403
