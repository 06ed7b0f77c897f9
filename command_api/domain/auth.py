"""Bearer JWT authentication: who is calling, and what they may do.

Tokens are verified with exactly one configured algorithm (HS256 with `JWT_SECRET` by default,
RS256/ES256 with `JWT_PUBLIC_KEY` or an identity provider's `JWT_JWKS_URL`), so an attacker
cannot choose a weaker one. Only access tokens (by default `typ: access`; the claim and value are
configurable for Keycloak's `typ: Bearer` or Flask-JWT-Extended's `type: access`) with an expiry
no further than `JWT_MAX_TOKEN_AGE_S` are accepted; `iss` and `aud` are checked when configured.
`sub` is the user id every query and command is scoped to; `email` is required to buy
(receipts); `role` marks operators and services. A service token (the admin's) never acts as a
user, and acts only for the operators its `operators` claim names (decision 0112).

These rules are pure; fetching a JWKS and caching verified tokens is `command_api/adapters/jwks.py`,
and minting development tokens is `infra/tokens.py`.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any, Literal

import jwt

from command_api.domain.problems import ProblemError
from schemas.operators import OPERATOR_NAME_PATTERN

Role = Literal["user", "operator", "service"]
# A user id ends up in stream ids, Kafka keys and SQL parameters: printable, no whitespace or NUL.
USER_ID_PATTERN = r"^[^\s\x00-\x1f\x7f]{1,128}$"
_USER_ID = re.compile(USER_ID_PATTERN)
_EMAIL = re.compile(r"^[^@\s\x00-\x1f\x7f]+@[^@\s\x00-\x1f\x7f]+\.[^@\s\x00-\x1f\x7f]+$")
OPERATOR_PATTERN = OPERATOR_NAME_PATTERN  # the admin's username rule too (schemas/operators.py, decision 0109)
_OPERATOR = re.compile(OPERATOR_PATTERN)
_LOCALES = ("ru", "en")
ALGORITHMS = ("HS256", "RS256", "ES256")
LEEWAY_S = 5
MAX_OPERATORS = 1000


@dataclass(frozen=True, slots=True)
class Principal:
    """The verified caller."""

    user_id: str
    email: str | None
    locale: str
    role: Role
    operator: str | None = None  # who acts, for operator endpoints
    operators: tuple[str, ...] = ()  # a service token: the operators it may act for

    @property
    def is_operator(self) -> bool:
        return self.role == "operator" or (self.role == "service" and self.operator is not None)


@dataclass(frozen=True, slots=True)
class TokenPolicy:
    """What a valid access token must look like, from the JWT_* settings."""

    algorithm: str
    issuer: str | None = None
    audience: tuple[str, ...] = ()
    max_age_s: int = 86400
    service_max_age_s: int = 86400
    type_claim: str = "typ"
    type_value: str = "access"

    @classmethod
    def from_settings(cls, settings: Any) -> TokenPolicy:
        audience = tuple(a.strip() for a in (getattr(settings, "jwt_audience", None) or "").split(",") if a.strip())
        return cls(
            algorithm=verification_key(settings)[1],
            issuer=getattr(settings, "jwt_issuer", None) or None,
            audience=audience,
            max_age_s=getattr(settings, "jwt_max_token_age_s", 86400),
            service_max_age_s=getattr(settings, "jwt_service_max_token_age_s", 86400),
            type_claim=(getattr(settings, "jwt_access_type_claim", "typ") or "").strip(),
            type_value=getattr(settings, "jwt_access_type_value", "access"),
        )


def unauthorized(detail: str, *, invalid: bool = True) -> ProblemError:
    challenge = 'Bearer error="invalid_token"' if invalid else "Bearer"
    return ProblemError(401, "unauthorized", "Unauthorized", detail, headers={"WWW-Authenticate": challenge})


def verification_key(settings: Any) -> tuple[str | None, str]:
    """(key, algorithm): the one algorithm accepted and its static key (None with JWKS).

    HS256 with `JWT_SECRET` unless `JWT_PUBLIC_KEY` or `JWT_JWKS_URL` is set (then RS256 unless
    `JWT_ALGORITHM=ES256`). Raises ValueError for a configuration that cannot work, so the API
    refuses to start with it.
    """
    algorithm = (settings.jwt_algorithm or "HS256").upper()
    if algorithm not in ALGORITHMS:
        raise ValueError(f"JWT_ALGORITHM must be one of {', '.join(ALGORITHMS)}, not {settings.jwt_algorithm!r}")
    jwks_url = getattr(settings, "jwt_jwks_url", None)
    if jwks_url and settings.jwt_public_key:
        raise ValueError("set JWT_JWKS_URL or JWT_PUBLIC_KEY, not both")
    if jwks_url or settings.jwt_public_key or algorithm != "HS256":
        algorithm = "RS256" if algorithm == "HS256" else algorithm
        if jwks_url:
            if not jwks_url.startswith(("https://", "http://")):
                raise ValueError(f"JWT_JWKS_URL must be an http(s) URL, not {jwks_url!r}")
            return None, algorithm
        if not settings.jwt_public_key:
            raise ValueError(f"JWT_ALGORITHM={algorithm} needs JWT_PUBLIC_KEY (a PEM public key) or JWT_JWKS_URL")
        return settings.jwt_public_key.replace("\\n", "\n"), algorithm
    if not settings.jwt_secret:
        raise ValueError("JWT_SECRET is empty")
    return settings.jwt_secret, "HS256"


def verify_token(settings: Any, token: str) -> Principal:
    """Decode and check a bearer token (static keys only); raise a 401 problem when it is not valid."""
    key, _ = verification_key(settings)
    if key is None:
        raise ValueError("verify_token needs a static key; use TokenVerifier with JWT_JWKS_URL")
    return decode_token(token, key, TokenPolicy.from_settings(settings), time.time())[0]


def decode_token(token: str, key: Any, policy: TokenPolicy, now: float) -> tuple[Principal, float]:
    """(principal, cache-until) of a valid access token; a 401 problem otherwise."""
    required = ["exp", "sub"] + (["iss"] if policy.issuer else []) + (["aud"] if policy.audience else [])
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=[policy.algorithm],
            options={"require": required, "verify_aud": bool(policy.audience)},
            audience=list(policy.audience) or None,
            issuer=policy.issuer,
            leeway=LEEWAY_S,
        )
    except jwt.ExpiredSignatureError:
        raise unauthorized("the token has expired") from None
    except jwt.InvalidSignatureError:
        raise unauthorized("the token's signature is not valid") from None
    except jwt.InvalidAudienceError:
        raise unauthorized("the token is not meant for this API (aud)") from None
    except jwt.InvalidIssuerError:
        raise unauthorized("the token was not issued by the configured issuer (iss)") from None
    except jwt.PyJWTError as exc:
        raise unauthorized(f"the token is not valid: {exc}"[:300]) from None
    except (ValueError, TypeError, OverflowError):
        raise unauthorized("the token is not valid") from None
    if policy.type_claim and claims.get(policy.type_claim) != policy.type_value:
        raise unauthorized(f"only access tokens are accepted ({policy.type_claim} must be {policy.type_value!r})")
    sub = claims.get("sub")
    if not isinstance(sub, str) or not _USER_ID.match(sub):
        raise unauthorized("the token's subject is not a valid user id")
    role = claims.get("role") or "user"
    if role not in ("user", "operator", "service"):
        role = "user"
    max_age = policy.service_max_age_s if role == "service" else policy.max_age_s
    exp = float(claims["exp"])
    iat = claims.get("iat")
    if isinstance(iat, (int, float)) and exp - float(iat) > max_age:
        raise unauthorized(f"the token lives longer than the {max_age} s this API accepts (exp - iat)")
    if exp - now > max_age + LEEWAY_S:
        raise unauthorized(f"the token expires later than {max_age} s from now, more than this API accepts")
    email = claims.get("email")
    if not isinstance(email, str) or len(email) > 320 or not _EMAIL.match(email):
        email = None
    locale = claims.get("locale")
    operators: tuple[str, ...] = ()
    if role == "service":
        named = claims.get("operators")
        named = [named] if isinstance(named, str) else named
        if isinstance(named, list):
            operators = tuple(dict.fromkeys(o for o in named[:MAX_OPERATORS] if isinstance(o, str) and _OPERATOR.match(o)))
    principal = Principal(
        user_id=sub, email=email, locale=locale if locale in _LOCALES else "ru", role=role, operators=operators
    )
    return principal, min(exp, now + max_age)


def as_user(principal: Principal) -> Principal:
    """The principal for a user endpoint; 403 for a service token, which is nobody's account."""
    if principal.role == "service":
        raise ProblemError(403, "user-required", "User required", "a service token cannot act as a user")
    return principal


def with_operator(principal: Principal, operator_header: str | None) -> Principal:
    """The principal for an operator endpoint; 403 unless it may act as that operator.

    An operator's own token acts as its `sub` (an `X-Operator` naming someone else is refused).
    A service token acts only for an operator its `operators` claim names, chosen by
    `X-Operator` (which may be left out when the claim names exactly one).
    """
    if principal.role == "operator":
        if operator_header is not None and operator_header != principal.user_id:
            raise ProblemError(403, "operator-mismatch", "Operator mismatch",
                               "an operator's token acts only as that operator; X-Operator names someone else")
        return Principal(principal.user_id, principal.email, principal.locale, "operator", principal.user_id)
    if principal.role == "service":
        if not principal.operators:
            raise ProblemError(403, "operator-required", "Operator required",
                               "this service token names no operator it may act for (claim `operators`)")
        if operator_header is None and len(principal.operators) == 1:
            operator_header = principal.operators[0]
        if operator_header is None or not _OPERATOR.match(operator_header):
            raise ProblemError(
                403, "operator-required", "Operator required", "a service token must name the operator in X-Operator"
            )
        if operator_header not in principal.operators:
            raise ProblemError(403, "operator-mismatch", "Operator mismatch",
                               "this service token may not act for the operator named in X-Operator")
        return Principal(principal.user_id, principal.email, principal.locale, "service", operator_header, principal.operators)
    raise ProblemError(403, "operator-required", "Operator required", "this endpoint needs the operator role")
