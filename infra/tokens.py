"""Minting access tokens the command API accepts: the one place a development token is signed.

A pure function with the key given explicitly (no settings read here): the command API's
`billing token` CLI, the admin's service tokens, the demo, the tests and the benchmarks all sign
through it. Production users' tokens come from an identity provider, never from here.
"""

from __future__ import annotations

import time
from typing import Any

import jwt


def mint_token(
    key: str,
    *,
    user_id: str,
    algorithm: str = "HS256",
    email: str | None = None,
    locale: str | None = None,
    role: str | None = None,
    operators: list[str] | tuple[str, ...] | None = None,
    ttl_s: int = 3600,
    typ: str = "access",
    now: float | None = None,
    extra: dict[str, Any] | None = None,
) -> str:
    """A token signed with `key` (an HS256 secret, or a PEM private key with RS256/ES256)."""
    issued = int(now if now is not None else time.time())
    claims: dict[str, Any] = {"sub": user_id, "typ": typ, "iat": issued, "exp": issued + ttl_s}
    if email:
        claims["email"] = email
    if locale:
        claims["locale"] = locale
    if role:
        claims["role"] = role
    if operators:
        claims["operators"] = list(operators)
    claims.update(extra or {})
    return jwt.encode(claims, key, algorithm=algorithm)
