"""Pure logic of the command API: Prefer parsing, request hashing, sender trust, notification parsing."""

from __future__ import annotations

import uuid

import orjson
import pytest

from command_api.domain.auth import verify_token, with_operator
from command_api.config import ApiSettings, parse_networks
from command_api.domain.idempotency import request_hash
from command_api.adapters.intake import outcome_response, parse_prefer_wait, status_body
from command_api.entrypoints.models import CancelRequest, PurchaseRequest
from command_api.domain.problems import ProblemError
from command_api.domain.webhooks import BadNotification, client_address, is_trusted, parse_notification
from infra.tokens import mint_token

YOOKASSA = parse_networks("185.71.76.0/27,185.71.77.0/27,77.75.156.11/32,2a02:5180::/32")


@pytest.mark.parametrize(
    ("header", "expected"),
    [(None, None), ("", None), ("wait=5", 5.0), ("respond-async, wait=3", 3.0), ("wait=60", 10.0),
     ('wait="2"', 2.0), ("handling=lenient", None), ("wait=abc", None), ("WAIT=1", 1.0), ("wait=0", 0.0)],
)
def test_prefer_wait(header, expected):
    assert parse_prefer_wait(header, 10.0) == expected


def test_request_hash_depends_on_meaning_not_spelling():
    a = request_hash("POST", "/v1/subscriptions", PurchaseRequest(plan_id="basic"))
    assert a == request_hash("post", "/v1/subscriptions", PurchaseRequest.model_validate_json(b'{"auto_renew": true, "plan_id": "basic"}'))
    assert a != request_hash("POST", "/v1/subscriptions", PurchaseRequest(plan_id="basic", auto_renew=False))
    assert a != request_hash("POST", "/v1/other", PurchaseRequest(plan_id="basic"))
    assert request_hash("POST", "/x", CancelRequest(mode="refund_now")) != request_hash("POST", "/x", CancelRequest(mode="at_period_end"))


def test_sender_trust():
    assert is_trusted("185.71.76.31", YOOKASSA) and not is_trusted("185.71.76.32", YOOKASSA)
    assert is_trusted("::ffff:185.71.77.1", YOOKASSA)  # IPv4-mapped IPv6
    assert is_trusted("2a02:5180::1", YOOKASSA)
    assert not is_trusted("not-an-ip", YOOKASSA) and not is_trusted(None, YOOKASSA)
    proxies = parse_networks("10.0.0.0/8")
    assert client_address("203.0.113.1", "185.71.76.1", ()) == "203.0.113.1"  # no proxies configured
    assert client_address("203.0.113.1", "185.71.76.1", proxies) == "203.0.113.1"  # peer is not a proxy
    assert client_address("10.0.0.1", "1.2.3.4, 185.71.76.1", proxies) == "185.71.76.1"
    assert client_address("10.0.0.1", "185.71.76.1, 10.0.0.2", proxies) == "185.71.76.1"
    assert client_address("10.0.0.1", "185.71.76.1, 6.6.6.6", proxies) == "6.6.6.6"


def test_parse_notification():
    pid = str(uuid.uuid4())
    notice = parse_notification(orjson.dumps({"type": "notification", "event": "payment.canceled",
                                              "object": {"id": pid, "status": "canceled", "metadata": {"user_id": "u-1"}}}))
    assert notice is not None and (notice.kind, notice.object_id, notice.status, notice.user_id) == ("payment", pid, "canceled", "u-1")
    assert parse_notification(b'{"type":"notification","event":"deal.closed","object":{"id":"d"}}') is None
    for bad in (b"", b"null", b'{"type":"notification","event":"payment.succeeded","object":{"id":"short"}}',
                b'{"type":"notification","event":"payment.succeeded","object":{"id":"' + pid.encode() + b'","metadata":[1]}}'):
        with pytest.raises(BadNotification):
            parse_notification(bad)


def test_outcome_responses():
    cid = uuid.uuid4()
    assert outcome_response(status_body(cid, "X"), "/p")[0] == 202
    row = {"command_id": cid, "status": "rejected", "command_type": "X", "code": "c", "reason": "r", "outcome": {}}
    status, body, media = outcome_response(status_body(cid, "X", row), "/p")
    assert (status, body["status"], body["command_status"], body["detail"], media) == (422, 422, "rejected", "r", "application/problem+json")
    row = {**row, "status": "succeeded", "outcome": {"confirmation_url": "u", "payment_id": None}}
    status, body, _ = outcome_response(status_body(cid, "X", row), "/p")
    assert status == 200 and body["outcome"] == {"confirmation_url": "u"}


def test_tokens_round_trip_and_roles():
    settings = ApiSettings(_env_file=None, jwt_secret="unit-test-secret-that-is-long-enough")
    principal = verify_token(settings, mint_token(settings.jwt_secret, user_id="u1", email="a@b.co", locale="de", role="operator"))
    assert (principal.user_id, principal.email, principal.locale, principal.role) == ("u1", "a@b.co", "ru", "operator")
    assert with_operator(principal, None).operator == "u1"
    service = verify_token(settings, mint_token(settings.jwt_secret, user_id="admin-app", role="service", operators=["maria", "ivan"]))
    assert with_operator(service, "maria").operator == "maria"
    with pytest.raises(ProblemError):
        with_operator(service, None)  # it names two: X-Operator must choose
    with pytest.raises(ProblemError):
        with_operator(service, "olga")  # not one it names
    with pytest.raises(ProblemError):
        with_operator(verify_token(settings, mint_token(settings.jwt_secret, user_id="u2")), "maria")
    weird = verify_token(settings, mint_token(settings.jwt_secret, user_id="u3", email="no-at-sign", role="superuser"))
    assert weird.email is None and weird.role == "user"


def test_unusable_jwt_configurations_are_refused_at_start():
    from command_api.domain.auth import verification_key

    assert verification_key(ApiSettings(_env_file=None, jwt_secret="s" * 32))[1] == "HS256"
    with pytest.raises(ValueError):
        verification_key(ApiSettings(_env_file=None, jwt_algorithm="RS256", jwt_public_key=None))
    with pytest.raises(ValueError):
        verification_key(ApiSettings(_env_file=None, jwt_algorithm="ES512"))
    assert verification_key(ApiSettings(_env_file=None, jwt_public_key="-----BEGIN PUBLIC KEY-----\\nabc\\n-----END PUBLIC KEY-----"))[1] == "RS256"


def test_token_verifier_caches_until_expiry_only():
    from command_api.adapters.jwks import TokenVerifier

    settings = ApiSettings(_env_file=None, jwt_secret="unit-test-secret-that-is-long-enough")
    verifier = TokenVerifier(settings, max_entries=2)
    token = mint_token(settings.jwt_secret, user_id="u1", ttl_s=60)
    first = verifier.verify(token)
    assert verifier.verify(token) is first  # served from the cache
    principal, _ = verifier._cache[token]
    verifier._cache[token] = (principal, 0.0)  # as if its exp had passed while cached
    assert verifier.verify(token) is not first  # verified again (still valid for PyJWT)
    with pytest.raises(ProblemError):
        verifier.verify(mint_token(settings.jwt_secret, user_id="u2", ttl_s=-60))
    for user in ("a", "b", "c"):
        verifier.verify(mint_token(settings.jwt_secret, user_id=user))
    assert len(verifier._cache) == 2
