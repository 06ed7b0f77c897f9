"""Token verification with the identity provider's keys: the JWKS fetch and the verified-token cache.

The rules a token must satisfy are pure and live in `command_api/domain/auth.py`; this module adds
the I/O (fetching an identity provider's `JWT_JWKS_URL` over HTTP) and the per-process cache.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from collections import OrderedDict
from typing import Any

import httpx
import jwt
import structlog

from command_api.domain.auth import Principal, TokenPolicy, decode_token, unauthorized, verification_key
from command_api.domain.problems import ProblemError

log = structlog.get_logger("command_api.auth")


class KeySet:
    """An identity provider's signing keys (JWKS), fetched over HTTP and cached.

    The set is refetched after `ttl_s`; a token naming a `kid` the cached set lacks (the provider
    rotated its keys) refetches it at once, but at most once per `min_refresh_s`, so tokens with
    made-up kids cannot turn the API into a load generator against the provider. A failed fetch
    keeps the keys already known. Fetches are asynchronous with a timeout: the event loop never
    waits on the provider longer than `timeout_s`.
    """

    def __init__(self, url: str, algorithm: str, *, ttl_s: float = 300.0, timeout_s: float = 5.0,
                 min_refresh_s: float = 30.0, transport: httpx.AsyncBaseTransport | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.url = url
        self.monotonic = monotonic  # the clock of the TTL and the refresh limit (tests move it)
        self.algorithm = algorithm
        self.ttl_s = ttl_s
        self.timeout_s = timeout_s
        self.min_refresh_s = min_refresh_s
        self.transport = transport
        self.fetches = 0
        self._keys: dict[str | None, jwt.PyJWK] = {}
        self._fetched_at: float | None = None  # monotonic time of the last successful fetch
        self._tried_at: float | None = None  # monotonic time of the last attempt
        self._lock = asyncio.Lock()

    async def key_for(self, token: str) -> jwt.PyJWK:
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError as exc:
            raise unauthorized(f"the token is not valid: {exc}"[:300]) from None
        now = self.monotonic()
        if self._fetched_at is None or now - self._fetched_at >= self.ttl_s:
            await self._refresh(force=self._fetched_at is None)
        key = self._find(kid)
        if key is None:
            await self._refresh(force=False)  # rotation: a new kid; rate-limited
            key = self._find(kid)
        if key is None:
            if not self._keys:
                raise ProblemError(503, "keys-unavailable", "Keys unavailable",
                                   "the identity provider's signing keys could not be fetched; try again shortly")
            raise unauthorized("the token's signing key (kid) is not one of the identity provider's keys")
        return key

    def _find(self, kid: str | None) -> jwt.PyJWK | None:
        if kid is None:
            return next(iter(self._keys.values())) if len(self._keys) == 1 else None
        return self._keys.get(kid)

    async def _refresh(self, *, force: bool) -> None:
        async with self._lock:
            now = self.monotonic()
            if self._tried_at is not None and now - self._tried_at < self.min_refresh_s and not (
                force and self._fetched_at is None
            ):
                return
            if force and self._fetched_at is not None and now - self._fetched_at < self.ttl_s:
                return  # another request refreshed while this one waited for the lock
            self._tried_at = now
            try:
                async with httpx.AsyncClient(timeout=self.timeout_s, transport=self.transport, trust_env=False) as client:
                    response = await client.get(self.url, headers={"Accept": "application/json"})
                    response.raise_for_status()
                    document = response.json()
                self.fetches += 1
                keys = _usable_keys(document, self.algorithm)
            except (httpx.HTTPError, ValueError, TypeError, KeyError, jwt.PyJWTError) as exc:
                log.warning("jwks_fetch_failed", url=self.url, error=f"{type(exc).__name__}: {exc}"[:300])
                return
            if not keys:
                log.warning("jwks_without_usable_keys", url=self.url, algorithm=self.algorithm)
                return
            self._keys = keys
            self._fetched_at = self.monotonic()
            log.info("jwks_fetched", url=self.url, kids=sorted(str(k) for k in keys))


def _usable_keys(document: Any, algorithm: str) -> dict[str | None, jwt.PyJWK]:
    """The signing keys of a JWKS document that fit `algorithm` (others, e.g. encryption keys, are skipped)."""
    keys: dict[str | None, jwt.PyJWK] = {}
    for entry in document["keys"]:
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            continue
        if entry.get("alg") not in (None, algorithm):
            continue
        try:
            key = jwt.PyJWK(entry, algorithm=algorithm)
        except jwt.PyJWTError:
            continue
        keys[entry.get("kid")] = key
    return keys


class TokenVerifier:
    """Token verification with a bounded cache of tokens already verified.

    Clients send the same token with every request; its signature and claims do not change, so
    checking them once is enough. A cached token is served only until min(exp, verified +
    max age) (no leeway), so even a token whose `exp` is absurdly far away is re-checked — and
    refused — once the maximum age has passed; only successful verifications are cached.
    """

    def __init__(self, settings: Any, max_entries: int = 8192, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.key, self.algorithm = verification_key(settings)
        self.policy = TokenPolicy.from_settings(settings)
        self.max_entries = max_entries
        self.keys = (
            KeySet(settings.jwt_jwks_url, self.algorithm, ttl_s=settings.jwt_jwks_ttl_s, timeout_s=settings.jwt_jwks_timeout_s,
                   min_refresh_s=settings.jwt_jwks_min_refresh_s, transport=transport)
            if self.key is None else None
        )
        self._cache: OrderedDict[str, tuple[Principal, float]] = OrderedDict()

    def _cached(self, token: str, now: float) -> Principal | None:
        hit = self._cache.get(token)
        if hit is not None:
            if now < hit[1]:
                self._cache.move_to_end(token)
                return hit[0]
            del self._cache[token]
        return None

    def _remember(self, token: str, principal: Principal, until: float) -> None:
        self._cache[token] = (principal, until)
        if len(self._cache) > self.max_entries:
            self._cache.popitem(last=False)

    def verify(self, token: str) -> Principal:
        """Verify with the static key (HS256 secret or PEM public key)."""
        if self.key is None:
            raise RuntimeError("JWT_JWKS_URL is configured: use `await verify_async(token)`")
        now = time.time()
        principal = self._cached(token, now)
        if principal is None:
            principal, until = decode_token(token, self.key, self.policy, now)
            self._remember(token, principal, until)
        return principal

    async def verify_async(self, token: str) -> Principal:
        """Verify with the static key or the identity provider's key set (fetched when needed)."""
        if self.keys is None:
            return self.verify(token)
        now = time.time()
        principal = self._cached(token, now)
        if principal is None:
            key = await self.keys.key_for(token)
            principal, until = decode_token(token, key, self.policy, time.time())
            self._remember(token, principal, until)
        return principal
