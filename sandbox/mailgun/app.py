"""The Mailgun sandbox's HTTP surface: `POST /v3/{domain}/messages`, the inbox, the admin API.

Order of work for a send (what makes the fault modes mean what they say): authenticate → known
domain → parse and validate the form → pick fault rules → latency → faults before storing (500,
429, timeout, dropped request) → store → faults after storing (500 applied, timeout applied,
dropped response) → `200 {"id", "message": "Queued. Thank you."}`.
"""

from __future__ import annotations

import asyncio
import hmac
import re
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from email.utils import getaddresses
from typing import Any

import orjson
import structlog
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, Response
from starlette.datastructures import UploadFile
from starlette.types import ASGIApp

from ..common.admin import json_response, mount_fault_routes
from ..common.db import Database
from ..common.faults import FaultBook
from ..common.http import DropConnection, RawSendMiddleware, basic_auth
from . import pages
from .settings import MailgunSandboxSettings
from .store import SCHEMA, MessageStore, normalise_message_id

FAULT_MODES = {
    "latency": "latency",
    "latency_ms": "latency",
    "error_500": "error_500",
    "500": "error_500",
    "error_500_not_applied": "error_500",
    "error_500_applied": "error_500_applied",
    "429": "429",
    "error_429": "429",
    "timeout": "timeout",
    "timeout_applied": "timeout_applied",
    "drop_before_apply": "drop_before_apply",
    "drop_after_apply": "drop_after_apply",
}
EMAIL = re.compile(r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$")


class MailgunError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def parse_addresses(values: list[str], field: str) -> list[str]:
    """`"Ann <a@x.io>, b@y.io"` (possibly repeated) -> ["a@x.io", "b@y.io"]; 400 if one is bad."""
    result: list[str] = []
    for _, address in getaddresses(values):
        if not address:
            continue
        if not EMAIL.match(address):
            raise MailgunError(400, f"{field} parameter is not a valid address. please check documentation")
        result.append(address)
    return result


class MailgunSandbox:
    def __init__(self, settings: MailgunSandboxSettings) -> None:
        self.settings = settings
        self.log = structlog.get_logger("sandbox.mailgun")
        self.faults = FaultBook(FAULT_MODES, {"latency"})
        self.faults.replace(self.faults.parse_env(settings.faults))
        self.db = Database(settings.db, SCHEMA)
        self.store = MessageStore(self.db)

    def authorised(self, request: Request) -> bool:
        creds = basic_auth(request.headers.get("authorization"))
        if creds is None:
            return False
        user, key = creds
        return user == "api" and hmac.compare_digest(key.encode(), self.settings.api_key.encode())

    async def parse_message(self, request: Request, domain: str) -> dict[str, Any]:
        content_type = request.headers.get("content-type", "")
        if not content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
            raise MailgunError(400, "Content-Type must be multipart/form-data or application/x-www-form-urlencoded")
        try:
            form = await request.form()
        except Exception as exc:  # malformed multipart bodies raise various parser errors
            raise MailgunError(400, f"Could not parse the form: {exc}") from None
        fields: dict[str, Any] = {}
        attachments: list[dict[str, Any]] = []
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                data = await value.read()
                attachments.append(
                    {"field": key, "filename": value.filename, "content_type": value.content_type, "size": len(data)}
                )
                continue
            if key in fields:
                existing = fields[key]
                fields[key] = [*existing, value] if isinstance(existing, list) else [existing, value]
            else:
                fields[key] = value

        def all_of(name: str) -> list[str]:
            return [str(v) for v in form.getlist(name) if not isinstance(v, UploadFile)]

        sender = all_of("from")
        if not sender or not sender[0].strip():
            raise MailgunError(400, "'from' parameter is missing")
        if not parse_addresses(sender[:1], "from"):
            raise MailgunError(400, "from parameter is not a valid address. please check documentation")
        to = parse_addresses(all_of("to"), "to")
        if not to:
            raise MailgunError(400, "'to' parameter is missing")
        subject = all_of("subject")
        if not subject:
            raise MailgunError(400, "'subject' parameter is missing")
        text, html = all_of("text"), all_of("html")
        if not text and not html and not all_of("template"):
            raise MailgunError(400, "Need at least one of 'text', 'html' or 'template' parameters specified")

        headers = {k[2:]: v for k, v in fields.items() if k.startswith("h:")}
        variables = {k[2:]: v for k, v in fields.items() if k.startswith("v:")}
        if "X-Mailgun-Variables" in headers:
            try:
                extra = orjson.loads(str(headers["X-Mailgun-Variables"]))
                if isinstance(extra, dict):
                    variables = {**extra, **variables}
            except orjson.JSONDecodeError:
                raise MailgunError(400, "h:X-Mailgun-Variables is not valid JSON") from None
        options = {k[2:]: v for k, v in fields.items() if k.startswith("o:") and k != "o:tag"}
        tags = all_of("o:tag")
        if len(tags) > 10:
            raise MailgunError(400, "Too many tags: at most 10 per message")
        message_id = next((str(v) for k, v in headers.items() if k.lower() == "message-id"), None)
        if message_id:
            message_id = normalise_message_id(message_id)
        else:
            stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime())
            message_id = f"<{stamp}.{uuid.uuid4().hex[:16]}@{domain}>"
        return {
            "id": message_id,
            "domain": domain,
            "from": sender[0],
            "to": to,
            "cc": parse_addresses(all_of("cc"), "cc"),
            "bcc": parse_addresses(all_of("bcc"), "bcc"),
            "subject": subject[0],
            "text": text[0] if text else None,
            "html": html[0] if html else None,
            "tags": tags,
            "variables": variables,
            "headers": headers,
            "options": options,
            "attachments": attachments,
            "fields": fields,
        }


def create_app(settings: MailgunSandboxSettings | None = None) -> ASGIApp:
    """Build the ASGI app (wrapped so that connections can be dropped on purpose)."""
    settings = settings or MailgunSandboxSettings()
    sb = MailgunSandbox(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        sb.log.info("sandbox_started", db=str(settings.db), domains=sorted(settings.domains))
        try:
            yield
        finally:
            sb.db.close()

    app = FastAPI(
        title="Mailgun sandbox",
        description="A local emulator of Mailgun's messages API with an inbox and fault injection.",
        lifespan=lifespan,
    )
    app.state.sandbox = sb

    @app.exception_handler(MailgunError)
    async def _mailgun_error(_: Request, exc: MailgunError) -> Response:
        return json_response({"message": exc.message}, exc.status)

    @app.post("/v3/{domain}/messages", tags=["api"])
    async def send_message(domain: str, request: Request) -> Response:
        """Accept a message the way Mailgun does (form-encoded or multipart, basic auth `api:KEY`)."""
        if not sb.authorised(request):
            return PlainTextResponse("Forbidden", 401)
        if domain.lower() not in settings.domains:
            return json_response({"message": f"Domain not found: {domain}"}, 404)
        message = await sb.parse_message(request, domain)
        target = f"POST /v3/{domain}/messages"
        subject = {
            "to": message["to"][0].lower(),
            "tag": message["tags"][0] if message["tags"] else None,
            **{f"v:{k}": v for k, v in message["variables"].items()},
        }
        fired = sb.faults.pick(target, lambda: subject)
        latency_ms = sum(r.latency_ms for r in fired if r.mode == "latency")
        fault = next((r for r in fired if r.mode != "latency"), None)
        mode = fault.mode if fault else None
        if fired:
            sb.log.info("fault_fired", target=target, modes=[r.mode for r in fired], to=message["to"])
        if latency_ms:
            await asyncio.sleep(latency_ms / 1000)
        if mode == "drop_before_apply":
            return DropConnection()
        if mode == "error_500":
            return json_response({"message": "Internal Server Error"}, 500)
        if mode == "429":
            retry_s = str(max(1, round(fault.retry_after_ms / 1000)))
            return json_response({"message": "Too many requests"}, 429, {"Retry-After": retry_s})
        if mode == "timeout":
            await asyncio.sleep(fault.hold_ms / 1000)
            return json_response({"message": "Gateway Timeout"}, 504)

        sb.store.add(message)
        sb.log.info("message_accepted", id=message["id"], to=message["to"], subject=message["subject"])

        if mode == "error_500_applied":
            return json_response({"message": "Internal Server Error"}, 500)
        if mode == "drop_after_apply":
            return DropConnection()
        if mode == "timeout_applied":
            await asyncio.sleep(fault.hold_ms / 1000)
        return json_response({"id": message["id"], "message": "Queued. Thank you."})

    @app.get("/healthz", tags=["sandbox"])
    async def healthz() -> Response:
        """Liveness: the process serves and its database answers."""
        sb.db.one("SELECT 1")
        return json_response({"status": "ok", "service": "mailgun-sandbox"})

    mount_fault_routes(app, sb.faults, sb.log)

    def list_params(request: Request) -> dict[str, Any]:
        q = request.query_params
        try:
            after = int(q.get("after", "0"))
            limit = int(q.get("limit", "1000"))
        except ValueError:
            raise MailgunError(400, "after and limit must be integers") from None
        return {
            "to": q.get("to"),
            "tag": q.get("tag"),
            "message_id": q.get("message_id"),
            "subject": q.get("subject"),
            "after_seq": after,
            "limit": max(1, min(limit, 100_000)),
            "newest_first": q.get("order", "asc") == "desc",
        }

    @app.get("/sandbox/messages", tags=["sandbox"])
    async def messages(request: Request) -> Response:
        """Stored messages, oldest first; filters: to, tag, message_id, subject, after, limit, order."""
        return json_response({"items": sb.store.list(**list_params(request))})

    @app.get("/sandbox/messages/{storage_id}", tags=["sandbox"])
    async def message(storage_id: int) -> Response:
        """One stored message by its storage id."""
        found = sb.store.get(storage_id)
        if found is None:
            return json_response({"error": "no such message"}, 404)
        return json_response(found)

    @app.get("/sandbox/stats", tags=["sandbox"])
    async def stats(request: Request) -> Response:
        """Message count, distinct Message-Ids and the duplicated ones (optionally for one `to`)."""
        return json_response(sb.store.stats(request.query_params.get("to")))

    @app.post("/sandbox/reset", tags=["sandbox"])
    async def reset() -> Response:
        """Wipe the inbox — only when started with SANDBOX_MAILGUN_ALLOW_RESET=1 (benchmarks)."""
        if not settings.allow_reset:
            return json_response({"error": "reset is disabled: tests share this sandbox"}, 403)
        sb.store.reset()
        sb.faults.clear()
        return json_response({"status": "reset"})

    @app.get("/", response_class=HTMLResponse, tags=["inbox"])
    @app.get("/inbox", response_class=HTMLResponse, tags=["inbox"])
    async def inbox(request: Request) -> HTMLResponse:
        """The inbox: the latest messages, newest first (`?to=` filters by recipient)."""
        to = request.query_params.get("to")
        items = sb.store.list(to=to, limit=200, newest_first=True)
        return HTMLResponse(pages.inbox_page(items, to))

    @app.get("/inbox/{storage_id}", response_class=HTMLResponse, tags=["inbox"])
    async def inbox_message(storage_id: int) -> HTMLResponse:
        """One message: headers, tags, variables, the text part and the rendered HTML part."""
        found = sb.store.get(storage_id)
        if found is None:
            return HTMLResponse("<h1>No such message</h1>", 404)
        return HTMLResponse(pages.message_page(found))

    return RawSendMiddleware(app)
