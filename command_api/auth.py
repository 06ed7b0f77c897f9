"""Bearer JWT authentication: who is calling, and what they may do.

Tokens are verified with exactly one configured algorithm (HS256 with `JWT_SECRET` by default,
RS256 with `JWT_PUBLIC_KEY`), so an attacker cannot choose a weaker one. Only access tokens
(`typ: access`) with an expiry are accepted. `sub` is the user id every query and command is
scoped to; `email` is required to buy (receipts); `role` marks operators and the admin service.
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Literal

import jwt

from command_api.problems import ProblemError
from eventstore.settings import Settings
from schemas.operators import OPERATOR_NAME_PATTERN

Role = Literal["user", "operator", "service"]
# A user id ends up in stream ids, Kafka keys and SQL parameters: printable, no whitespace or NUL.
USER_ID_PATTERN = r"^[^\s\x00-\x1f\x7f]{1,128}$"
_USER_ID = re.compile(USER_ID_PATTERN)
_EMAIL = re.compile(r"^[^@\s\x00-\x1f\x7f]+@[^@\s\x00-\x1f\x7f]+\.[^@\s\x00-\x1f\x7f]+$")
OPERATOR_PATTERN = OPERATOR_NAME_PATTERN  # the admin's username rule too (schemas/operators.py, decision 0109)
_OPERATOR = re.compile(OPERATOR_PATTERN)
_LOCALES = ("ru", "en")


@dataclass(frozen=True, slots=True)
class Principal:
    """The verified caller."""

    user_id: str
    email: str | None
    locale: str
    role: Role
    operator: str | None = None  # who acts, for operator endpoints

    @property
    def is_operator(self) -> bool:
        return self.role == "operator" or (self.role == "service" and self.operator is not None)


def _unauthorized(detail: str, *, invalid: bool = True) -> ProblemError:
    challenge = 'Bearer error="invalid_token"' if invalid else "Bearer"
    return ProblemError(401, "unauthorized", "Unauthorized", detail, headers={"WWW-Authenticate": challenge})


def verification_key(settings: Settings) -> tuple[str, str]:
    """(key, algorithm): RS256 with `JWT_PUBLIC_KEY` (or when `JWT_ALGORITHM=RS256`), else HS256.

    Raises ValueError for a configuration that cannot work, so the API refuses to start with it.
    """
    algorithm = settings.jwt_algorithm.upper()
    if algorithm not in ("HS256", "RS256"):
        raise ValueError(f"JWT_ALGORITHM must be HS256 or RS256, not {settings.jwt_algorithm!r}")
    if settings.jwt_public_key or algorithm == "RS256":
        if not settings.jwt_public_key:
            raise ValueError("JWT_ALGORITHM=RS256 needs JWT_PUBLIC_KEY (a PEM public key)")
        return settings.jwt_public_key.replace("\\n", "\n"), "RS256"
    if not settings.jwt_secret:
        raise ValueError("JWT_SECRET is empty")
    return settings.jwt_secret, "HS256"


def verify_token(settings: Settings, token: str) -> Principal:
    """Decode and check a bearer token; raise a 401 problem when it is not a valid access token."""
    key, algorithm = verification_key(settings)
    return _verify(token, key, algorithm)[0]


class TokenVerifier:
    """`verify_token` with a bounded cache of tokens already verified, until their expiry.

    Clients send the same token with every request; its signature and claims do not change, so
    checking them once is enough. A cached token is served only while `now < exp` (no leeway),
    and only successful verifications are cached.
    """

    def __init__(self, settings: Settings, max_entries: int = 8192) -> None:
        self.key, self.algorithm = verification_key(settings)
        self.max_entries = max_entries
        self._cache: OrderedDict[str, tuple[Principal, float]] = OrderedDict()

    def verify(self, token: str) -> Principal:
        hit = self._cache.get(token)
        if hit is not None:
            if time.time() < hit[1]:
                self._cache.move_to_end(token)
                return hit[0]
            del self._cache[token]
        principal, expires = _verify(token, self.key, self.algorithm)
        self._cache[token] = (principal, expires)
        if len(self._cache) > self.max_entries:
            self._cache.popitem(last=False)
        return principal


def _verify(token: str, key: str, algorithm: str) -> tuple[Principal, float]:
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=[algorithm],
            options={"require": ["exp", "sub"]},
            leeway=5,
        )
    except jwt.ExpiredSignatureError:
        raise _unauthorized("the token has expired") from None
    except jwt.InvalidSignatureError:
        raise _unauthorized("the token's signature is not valid") from None
    except jwt.PyJWTError as exc:
        raise _unauthorized(f"the token is not valid: {exc}"[:300]) from None
    except (ValueError, TypeError):
        raise _unauthorized("the token is not valid") from None
    if claims.get("typ") != "access":
        raise _unauthorized("only access tokens are accepted (typ must be 'access')")
    sub = claims.get("sub")
    if not isinstance(sub, str) or not _USER_ID.match(sub):
        raise _unauthorized("the token's subject is not a valid user id")
    email = claims.get("email")
    if not isinstance(email, str) or len(email) > 320 or not _EMAIL.match(email):
        email = None
    locale = claims.get("locale")
    role = claims.get("role") or "user"
    if role not in ("user", "operator", "service"):
        role = "user"
    principal = Principal(user_id=sub, email=email, locale=locale if locale in _LOCALES else "ru", role=role)
    return principal, float(claims["exp"])


def with_operator(principal: Principal, operator_header: str | None) -> Principal:
    """The principal for an operator endpoint; 403 unless it may act as an operator."""
    if principal.role == "operator":
        return Principal(principal.user_id, principal.email, principal.locale, "operator", principal.user_id)
    if principal.role == "service":
        if operator_header is None or not _OPERATOR.match(operator_header):
            raise ProblemError(
                403, "operator-required", "Operator required", "a service token must name the operator in X-Operator"
            )
        return Principal(principal.user_id, principal.email, principal.locale, "service", operator_header)
    raise ProblemError(403, "operator-required", "Operator required", "this endpoint needs the operator role")


def mint_token(
    settings: Settings,
    *,
    user_id: str,
    email: str | None = None,
    locale: str | None = None,
    role: str | None = None,
    ttl_s: int = 3600,
    typ: str = "access",
    private_key: str | None = None,
    now: float | None = None,
) -> str:
    """Sign a token the API accepts (development, tests, the admin's service token)."""
    issued = int(now if now is not None else time.time())
    claims: dict[str, Any] = {"sub": user_id, "typ": typ, "iat": issued, "exp": issued + ttl_s}
    if email:
        claims["email"] = email
    if locale:
        claims["locale"] = locale
    if role:
        claims["role"] = role
    if private_key:
        return jwt.encode(claims, private_key, algorithm="RS256")
    return jwt.encode(claims, settings.jwt_secret, algorithm="HS256")
