"""Idempotency-Key rules that need no database: the command id of a key, the request hash, the claim results.

The store that applies them (`api.idempotency_keys`) is `command_api/adapters/idempotency.py`,
whose docstring tells the whole protocol (decision 0107).
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import BaseModel

from schemas import derived_id

WINDOW_CANDIDATES = 4
"""Command ids offered per claim round: the key's first unhandled window id among these is taken."""


def command_id_for(scope: str, key: str, window: int = 0) -> uuid.UUID:
    """The command id of (caller, Idempotency-Key) in its `window`-th life (0: first use).

    Window 0 is the id clients and tools have always derived; later ones are length-prefixed so no
    other (scope, key, window) can produce the same text.
    """
    if window == 0:
        return derived_id("command", scope, key)
    return derived_id("command-window", window, len(scope), scope, key)


@dataclass(frozen=True, slots=True)
class Claimed:
    """This request owns the key and must do the work, then `complete` or `release` it."""

    owner: uuid.UUID
    command_id: uuid.UUID
    recovered: bool = False


@dataclass(frozen=True, slots=True)
class Replay:
    status: int
    body: Any
    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class Mismatch:
    """The key was first used with another request (different body, path or method)."""

    path: str


@dataclass(frozen=True, slots=True)
class InFlight:
    """Another request with this key is still being handled."""

    retry_after_s: int


ClaimResult = Claimed | Replay | Mismatch | InFlight


def request_hash(method: str, path: str, body: BaseModel | None) -> str:
    """A hash of what the request asks for: method, path and the *validated* body.

    Hashing the parsed model (defaults filled in, keys sorted) means whitespace, key order or an
    explicitly sent default do not make a different request; any change of meaning does.
    """
    canonical = orjson.dumps(body.model_dump(mode="json") if body is not None else None, option=orjson.OPT_SORT_KEYS)
    digest = hashlib.sha256()
    for part in (method.upper().encode(), path.encode(), canonical):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()
