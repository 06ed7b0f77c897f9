"""HTTP helpers the emulators need and ASGI frameworks do not offer.

The interesting one is dropping a connection *after* the operation was applied — the "lost
response" that makes clients retry. ASGI has no way to close a socket without answering, so an
outermost middleware keeps uvicorn's own `send` callable (a bound method of its per-request cycle,
which holds the transport) and `DropConnection` closes that transport directly.
"""

from __future__ import annotations

import base64
import binascii

from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

RAW_SEND = "sandbox.raw_send"


class RawSendMiddleware:
    """Outermost ASGI wrapper: remembers the server's `send` in the scope."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope[RAW_SEND] = send
        await self.app(scope, receive, send)


def abort_connection(scope: Scope) -> None:
    """Close the client connection now, without sending anything."""
    raw_send = scope.get(RAW_SEND)
    cycle = getattr(raw_send, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if transport is None:
        raise RuntimeError("cannot drop the connection: not running under uvicorn")
    # Mark the cycle disconnected first so uvicorn writes nothing more on this request.
    cycle.disconnected = True
    transport.close()


class DropConnection(Response):
    """A 'response' that answers nothing and closes the socket."""

    def __init__(self) -> None:
        super().__init__(status_code=599)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        abort_connection(scope)


def basic_auth(header: str | None) -> tuple[str, str] | None:
    """Decode `Authorization: Basic …` to (user, password); None if absent or malformed."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value:
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    if not sep:
        return None
    return user, password
