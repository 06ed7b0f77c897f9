"""The YooKassa sandbox's HTTP surface: API v3, the payment page and the `/sandbox/` admin API.

Order of work for an API request (this is what makes the fault modes mean what they say):
authenticate → pick fault rules → added latency → faults that fire *before* the operation
(500 not applied, 429, dropped request) → the operation and its idempotence record in one
transaction → faults that fire *after* it (500 applied, 202, dropped response).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import orjson
import structlog
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp

from ..common.admin import json_response, mount_fault_routes
from ..common.db import Database
from ..common.faults import FaultBook, FaultRule
from ..common.http import DropConnection, RawSendMiddleware, basic_auth
from . import pages
from .emulator import SCHEMA, CardRejected, Emulator, ReceiptOutcome, RefundOutcome
from .errors import ApiError, internal_error, invalid_credentials, invalid_request, too_many_requests
from .notifications import Notifications
from .settings import RuntimeConfig, YooKassaSandboxSettings
from .validation import check_idempotence_key

FAULT_MODES = {
    "latency": "latency",
    "latency_ms": "latency",
    "error_500_applied": "error_500_applied",
    "error_500_not_applied": "error_500_not_applied",
    "drop_after_apply": "drop_after_apply",
    "drop_before_apply": "drop_before_apply",
    "429": "429",
    "error_429": "429",
    "too_many_requests": "429",
    "202_processing": "202_processing",
    "processing": "202_processing",
    "refund_pending": "refund_pending",
    "refund_canceled": "refund_canceled",
    "receipt_canceled": "receipt_canceled",
    "duplicate": "duplicate",
    "delay": "delay",
    "delay_ms": "delay",
    "reorder": "reorder",
}
API_MODES = {
    "latency",
    "error_500_applied",
    "error_500_not_applied",
    "drop_after_apply",
    "drop_before_apply",
    "429",
    "202_processing",
    "refund_pending",
    "refund_canceled",
    "receipt_canceled",
}
STACKABLE = {"latency", "duplicate", "delay", "reorder"}


def error_response(err: ApiError) -> Response:
    headers = None
    if err.retry_after is not None:
        headers = {"Retry-After": str(max(1, round(err.retry_after / 1000)))}
    return json_response(err.body(), err.status, headers)


class Sandbox:
    """Everything one running sandbox holds; built by `create_app`, started by its lifespan."""

    def __init__(self, settings: YooKassaSandboxSettings) -> None:
        self.settings = settings
        self.log = structlog.get_logger("sandbox.yookassa")
        self.config = RuntimeConfig(settings)
        self.faults = FaultBook(FAULT_MODES, STACKABLE)
        self.faults.replace(self.faults.parse_env(settings.faults))
        self.db = Database(settings.db, SCHEMA)
        self.notifications = Notifications(
            self.db,
            self.config,
            self.faults,
            timeout_s=settings.webhook_timeout_s,
            max_age_s=settings.webhook_max_age_s,
            concurrency=settings.webhook_concurrency,
            log=self.log,
        )
        self.emulator = Emulator(
            self.db,
            self.config,
            self.notifications,
            shop_id=settings.shop_id,
            base_url=settings.base_url,
            fee_percent=Decimal(settings.fee_percent),
            idempotence_ttl_s=settings.idempotence_ttl_s,
        )
        self._sweeper: asyncio.Task | None = None

    async def start(self) -> None:
        self.notifications.start()
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="yookassa-sweeper")
        self.log.info(
            "sandbox_started",
            url=self.settings.base_url,
            db=str(self.settings.db),
            webhook_url=self.config.webhook_url,
            faults=len(self.faults.rules),
        )

    async def stop(self) -> None:
        if self._sweeper:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        await self.notifications.stop()
        self.db.close()

    async def _sweep_forever(self) -> None:
        ticks = 0
        while True:
            await asyncio.sleep(self.settings.sweep_interval_s)
            try:
                self.emulator.sweep()
                ticks += 1
                if ticks % 60 == 0:
                    self.emulator.purge_idempotence()
            except Exception:
                self.log.exception("sweep_failed")

    def authenticate(self, request: Request) -> None:
        creds = basic_auth(request.headers.get("authorization"))
        if creds is None:
            raise invalid_credentials()
        shop, secret = creds
        ok = hmac.compare_digest(shop.encode(), self.settings.shop_id.encode())
        ok &= hmac.compare_digest(secret.encode(), self.settings.secret_key.encode())
        if not ok:
            raise invalid_credentials()


def fingerprint(method: str, path: str, body: Any) -> str:
    canonical = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(f"{method} {path}\n".encode() + canonical).hexdigest()


async def read_json(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise invalid_request("Request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise invalid_request("Request body must be a JSON object")
    return body


def create_app(settings: YooKassaSandboxSettings | None = None) -> ASGIApp:
    """Build the ASGI app (wrapped so that connections can be dropped on purpose)."""
    settings = settings or YooKassaSandboxSettings()
    sb = Sandbox(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await sb.start()
        try:
            yield
        finally:
            await sb.stop()

    app = FastAPI(
        title="YooKassa sandbox",
        description="A local emulator of YooKassa API v3 with a payment page and fault injection.",
        lifespan=lifespan,
    )
    app.state.sandbox = sb

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> Response:
        return error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if request.url.path.startswith("/v3"):
            code = {404: "not_found", 405: "invalid_request"}.get(exc.status_code, "invalid_request")
            return error_response(ApiError(exc.status_code, code, str(exc.detail)))
        return json_response({"detail": exc.detail}, exc.status_code)

    async def api_call(
        request: Request,
        operation: Callable[[dict[str, Any], str | None, FaultRule | None], Any],
        *,
        idempotent: bool,
        subject: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> Response:
        sb.authenticate(request)
        body = await read_json(request) if request.method == "POST" else {}
        target = f"{request.method} {request.url.path}"
        fired = sb.faults.pick(target, lambda: subject(body) if subject else {}, only=API_MODES)
        latency_ms = sum(r.latency_ms for r in fired if r.mode == "latency")
        fault = next((r for r in fired if r.mode != "latency"), None)
        if fired:
            sb.log.info("fault_fired", target=target, modes=[r.mode for r in fired], rules=[r.id for r in fired])
        if latency_ms:
            await asyncio.sleep(latency_ms / 1000)
        mode = fault.mode if fault else None
        if mode == "drop_before_apply":
            return DropConnection()
        if mode == "error_500_not_applied":
            raise internal_error()
        if mode == "429":
            raise too_many_requests(fault.retry_after_ms)

        if idempotent:
            key = check_idempotence_key(request.headers.get("idempotence-key"))
            print_ = fingerprint(request.method, request.url.path, body)
            with sb.db.transaction():
                cached = sb.emulator.idempotent_lookup(key)
                if cached is not None:
                    if cached["fingerprint"] != print_:
                        raise invalid_request(
                            "Idempotence-Key was already used with a different request "
                            f"({cached['method']} {cached['path']}); use a new key for new data",
                            "Idempotence-Key",
                        )
                    status, result = cached["status_code"], orjson.loads(cached["response"])
                else:
                    status, result = 200, operation(body, key, fault)
                    sb.emulator.idempotent_store(key, print_, request.method, request.url.path, status, result)
        else:
            status, result = 200, operation(body, None, fault)

        if mode == "error_500_applied":
            raise internal_error()
        if mode == "drop_after_apply":
            return DropConnection()
        if mode == "202_processing":
            return json_response(
                {
                    "type": "processing",
                    "description": "Request accepted and is being processed. Repeat it with the same "
                    "Idempotence-Key and data to get the result.",
                    "retry_after": fault.retry_after_ms,
                },
                202,
            )
        return json_response(result, status)

    def payment_subject(payment_id: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
        return lambda body: {**sb.emulator.payment_metadata(payment_id), **(body.get("metadata") or {})}

    def refund_outcome(fault: FaultRule | None) -> RefundOutcome | None:
        if fault is None:
            return None
        if fault.mode == "refund_canceled":
            return RefundOutcome("canceled", fault.reason or "general_decline", fault.pending_ms)
        if fault.mode == "refund_pending":
            return RefundOutcome("succeeded", None, fault.pending_ms or 2000)
        return None

    def receipt_outcome(fault: FaultRule | None) -> ReceiptOutcome | None:
        if fault is None or fault.mode != "receipt_canceled":
            return None
        return ReceiptOutcome("canceled", fault.pending_ms or sb.config.receipt_delay_ms)

    def fast(method: str, path: str) -> Callable[[Any], Any]:
        """Register a plain Starlette route: the API and the payment page are the hot paths, and
        FastAPI's per-request dependency solving would cost a third of their CPU time."""

        def register(handler: Any) -> Any:
            async def endpoint(request: Request) -> Response:
                try:
                    return await handler(request, **request.path_params)
                except ApiError as exc:
                    return error_response(exc)

            app.router.add_route(path, endpoint, methods=[method], include_in_schema=False)
            return handler

        return register

    # ---------------------------------------------------------------- API v3

    @fast("POST", "/v3/payments")
    async def create_payment(request: Request) -> Response:
        """Create a payment (redirect confirmation, or charge a saved payment method)."""
        return await api_call(
            request,
            lambda body, key, fault: sb.emulator.create_payment(body, key, receipt_outcome(fault)),
            idempotent=True,
            subject=lambda body: body.get("metadata") if isinstance(body.get("metadata"), dict) else {},
        )

    @fast("GET", "/v3/payments")
    async def list_payments(request: Request) -> Response:
        """List payments, newest first, with YooKassa's filters and cursor."""
        params = dict(request.query_params)
        return await api_call(request, lambda *_: sb.emulator.list_payments(params), idempotent=False)

    @fast("GET", "/v3/payments/{payment_id}")
    async def get_payment(request: Request, payment_id: str) -> Response:
        """Read one payment."""
        return await api_call(
            request,
            lambda *_: sb.emulator.get_payment(payment_id),
            idempotent=False,
            subject=payment_subject(payment_id),
        )

    @fast("POST", "/v3/payments/{payment_id}/capture")
    async def capture_payment(request: Request, payment_id: str) -> Response:
        """Capture a payment waiting_for_capture (optionally a smaller amount)."""
        return await api_call(
            request,
            lambda body, key, fault: sb.emulator.capture(payment_id, body),
            idempotent=True,
            subject=payment_subject(payment_id),
        )

    @fast("POST", "/v3/payments/{payment_id}/cancel")
    async def cancel_payment(request: Request, payment_id: str) -> Response:
        """Cancel a payment waiting_for_capture."""
        return await api_call(
            request,
            lambda body, key, fault: sb.emulator.cancel(payment_id),
            idempotent=True,
            subject=payment_subject(payment_id),
        )

    @fast("POST", "/v3/refunds")
    async def create_refund(request: Request) -> Response:
        """Refund (part of) a succeeded payment."""
        return await api_call(
            request,
            lambda body, key, fault: sb.emulator.create_refund(body, key, refund_outcome(fault), receipt_outcome(fault)),
            idempotent=True,
            subject=lambda body: {
                **sb.emulator.payment_metadata(body.get("payment_id")),
                **(body.get("metadata") if isinstance(body.get("metadata"), dict) else {}),
            },
        )

    @fast("GET", "/v3/refunds")
    async def list_refunds(request: Request) -> Response:
        """List refunds, newest first (filter by payment_id, status, created_at)."""
        params = dict(request.query_params)
        return await api_call(request, lambda *_: sb.emulator.list_refunds(params), idempotent=False)

    @fast("GET", "/v3/refunds/{refund_id}")
    async def get_refund(request: Request, refund_id: str) -> Response:
        """Read one refund."""
        return await api_call(request, lambda *_: sb.emulator.get_refund(refund_id), idempotent=False)

    # ---------------------------------------------------------------- payment page

    @fast("GET", "/checkout/{payment_id}")
    async def checkout_form(request: Request, payment_id: str) -> HTMLResponse:
        """The page behind confirmation_url: a card form while the payment is pending."""
        payment = sb.emulator.checkout_view(payment_id)
        if payment is None:
            return HTMLResponse(pages.not_found_page(), 404)
        if payment["status"] == "pending" and "confirmation" in payment:
            return HTMLResponse(pages.checkout_page(payment, f"/checkout/{payment_id}"))
        return HTMLResponse(pages.result_page(payment, sb.emulator.return_url(payment_id)))

    @fast("POST", "/checkout/{payment_id}")
    async def checkout_submit(request: Request, payment_id: str) -> HTMLResponse:
        """Submit the card form: `action=pay` with `card_number`, or `action=leave`."""
        form = await request.form()
        action = str(form.get("action") or "pay")
        if action == "leave":
            expire_after = form.get("expire_after_s")
            try:
                expire_after_s = float(str(expire_after)) if expire_after not in (None, "") else None
            except ValueError:
                return HTMLResponse("<p>expire_after_s must be a number of seconds</p>", 400)
            payment = sb.emulator.checkout_leave(payment_id, expire_after_s)
            if payment is None:
                return HTMLResponse(pages.not_found_page(), 404)
            note = None
            if payment["status"] == "pending":
                note = "The payment stays pending and expires if it is not paid in time."
            return HTMLResponse(pages.result_page(payment, sb.emulator.return_url(payment_id), note))
        if action != "pay":
            return HTMLResponse("<p>action must be pay or leave</p>", 400)
        card_number = str(form.get("card_number") or "")
        try:
            payment = sb.emulator.checkout_pay(
                payment_id,
                card_number,
                str(form.get("expiry_month") or "") or None,
                str(form.get("expiry_year") or "") or None,
            )
        except CardRejected as exc:
            current = sb.emulator.checkout_view(payment_id)
            return HTMLResponse(
                pages.checkout_page(current, f"/checkout/{payment_id}", str(exc), card_number), 422
            )
        if payment is None:
            return HTMLResponse(pages.not_found_page(), 404)
        return HTMLResponse(pages.result_page(payment, sb.emulator.return_url(payment_id)))

    # ---------------------------------------------------------------- admin / inspection

    def bad_request(message: str) -> Response:
        return json_response({"error": message}, 400)

    @app.get("/healthz", tags=["sandbox"])
    async def healthz() -> Response:
        """Liveness: the process serves and its database answers."""
        sb.db.one("SELECT 1")
        return json_response({"status": "ok", "service": "yookassa-sandbox"})

    mount_fault_routes(app, sb.faults, sb.log)

    @app.get("/sandbox/config", tags=["sandbox"])
    async def get_config() -> Response:
        """Runtime configuration (webhook URL, retry schedule, receipts, TTLs)."""
        return json_response(sb.config.as_dict())

    @app.put("/sandbox/config", tags=["sandbox"])
    async def put_config(request: Request) -> Response:
        """Change runtime configuration; fields not given stay as they are."""
        try:
            changes = orjson.loads(await request.body() or b"{}")
            if not isinstance(changes, dict):
                raise ValueError("config must be a JSON object")
            sb.config.update(changes)
        except (ValueError, orjson.JSONDecodeError) as exc:
            return bad_request(str(exc))
        sb.log.info("config_changed", config=sb.config.as_dict())
        return json_response(sb.config.as_dict())

    @app.get("/sandbox/payments", tags=["sandbox"])
    async def inspect_payments(request: Request) -> Response:
        """Payments with sandbox-only fields; filters: metadata.<key>=, status, idempotence_key, id, limit."""
        try:
            return json_response({"items": sb.emulator.inspect("payments", dict(request.query_params))})
        except ValueError as exc:
            return bad_request(str(exc))

    @app.get("/sandbox/refunds", tags=["sandbox"])
    async def inspect_refunds(request: Request) -> Response:
        """Refunds; filters: metadata.<key>= (refund's or its payment's), payment_id, status, limit."""
        try:
            return json_response({"items": sb.emulator.inspect("refunds", dict(request.query_params))})
        except ValueError as exc:
            return bad_request(str(exc))

    @app.get("/sandbox/stats", tags=["sandbox"])
    async def stats(request: Request) -> Response:
        """Successful charges per idempotence key (default) or `?by=metadata.<key>`, plus totals."""
        try:
            return json_response(sb.emulator.stats(dict(request.query_params)))
        except ValueError as exc:
            return bad_request(str(exc))

    @app.get("/sandbox/notifications", tags=["sandbox"])
    async def inspect_notifications(request: Request) -> Response:
        """Queued and delivered notifications; filters: object_id, event, limit."""
        q = request.query_params
        try:
            limit = int(q.get("limit", "1000"))
        except ValueError:
            return bad_request("limit must be an integer")
        return json_response({"items": sb.notifications.list(q.get("object_id"), q.get("event"), limit)})

    @app.post("/sandbox/notifications/replay", tags=["sandbox"])
    async def replay_notifications(request: Request) -> Response:
        """Send an object's notifications again, late and repeated: `{object_id, event?, times?, delay_ms?}`."""
        try:
            body = orjson.loads(await request.body() or b"{}")
            object_id = str(body["object_id"])
            times, delay_ms = int(body.get("times", 1)), int(body.get("delay_ms", 0))
            event = body.get("event")
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return bad_request("expected {object_id, event?, times?, delay_ms?}")
        if not 1 <= times <= 10 or not 0 <= delay_ms <= 3_600_000:
            return bad_request("times must be 1..10 and delay_ms 0..3600000")
        queued = sb.notifications.replay(object_id, str(event) if event else None, times=times, delay_ms=delay_ms)
        return json_response({"queued": queued})

    @app.get("/sandbox/payment-methods", tags=["sandbox"])
    async def payment_methods() -> Response:
        """Saved payment methods and how each behaves."""
        return json_response({"items": sb.emulator.payment_methods()})

    @app.post("/sandbox/payment-methods/{method_id}/behaviour", tags=["sandbox"])
    async def method_behaviour(method_id: str, request: Request) -> Response:
        """`{"decline_reason": "insufficient_funds"}` makes later charges decline (null restores);
        `{"require_3ds": true}` makes them wait for the customer's 3-D Secure on the payment page."""
        try:
            body = orjson.loads(await request.body() or b"{}")
            if not isinstance(body, dict) or not ({"decline_reason", "require_3ds"} & body.keys()) or body.keys() - {
                "decline_reason", "require_3ds"
            }:
                raise ValueError('body must be {"decline_reason": REASON or null} and/or {"require_3ds": true|false}')
            view = sb.emulator.set_method_behaviour(method_id, **body)
        except (ValueError, orjson.JSONDecodeError) as exc:
            return bad_request(str(exc))
        except KeyError:
            return json_response({"error": f"no saved payment method {method_id}"}, 404)
        return json_response(view)

    # ---------------------------------------------------------------- the dashboard (money moved outside the API)

    async def dashboard_body(request: Request) -> dict[str, Any]:
        body = orjson.loads(await request.body() or b"{}")
        if not isinstance(body, dict):
            raise ValueError("body must be a JSON object")
        return body

    @app.post("/sandbox/dashboard/refunds", tags=["sandbox"])
    async def dashboard_refund(request: Request) -> Response:
        """An operator refunds in YooKassa's dashboard: `{payment_id, amount?: "100.00" (default: all
        that is left), notify?: true}`; `notify: false` loses the `refund.succeeded` notification."""
        try:
            body = await dashboard_body(request)
            amount = body.get("amount")
            refund = sb.emulator.dashboard_refund(
                str(body["payment_id"]), None if amount is None else str(amount), notify=bool(body.get("notify", True))
            )
        except ApiError as exc:
            return error_response(exc)
        except (KeyError, ValueError, orjson.JSONDecodeError) as exc:
            return bad_request(f"expected {{payment_id, amount?, notify?}}: {exc}")
        return json_response(refund)

    @app.post("/sandbox/dashboard/payments", tags=["sandbox"])
    async def dashboard_payment(request: Request) -> Response:
        """A payment that succeeded without the shop hearing: `{amount: "299.00", metadata: {...},
        description?, notify?: false}` — created and paid at once; its notification is lost unless `notify`."""
        try:
            body = await dashboard_body(request)
            metadata = body.get("metadata") or {}
            if not isinstance(metadata, dict):
                raise ValueError("metadata must be an object")
            payment = sb.emulator.dashboard_payment(
                str(body["amount"]), metadata, notify=bool(body.get("notify", False)), description=body.get("description")
            )
        except ApiError as exc:
            return error_response(exc)
        except (KeyError, ValueError, orjson.JSONDecodeError) as exc:
            return bad_request(f"expected {{amount, metadata?, description?, notify?}}: {exc}")
        return json_response(payment)

    @app.post("/sandbox/dashboard/{object_type}/{object_id}/alter", tags=["sandbox"])
    async def dashboard_alter(object_type: str, object_id: str, request: Request) -> Response:
        """Make YooKassa's record disagree with the shop's: `{status?, amount?}`, or `{forget: true}`
        (gone from the API and its lists). `object_type`: payments | refunds. Tests only."""
        if object_type not in ("payments", "refunds"):
            return bad_request("object_type must be payments or refunds")
        try:
            changed = sb.emulator.dashboard_alter(object_type[:-1], object_id, await dashboard_body(request))
        except ApiError as exc:
            return error_response(exc)
        except (ValueError, orjson.JSONDecodeError) as exc:
            return bad_request(str(exc))
        return json_response(changed)

    @app.post("/sandbox/reset", tags=["sandbox"])
    async def reset() -> Response:
        """Wipe all state — only when started with SANDBOX_YOOKASSA_ALLOW_RESET=1 (benchmarks)."""
        if not settings.allow_reset:
            return json_response(
                {"error": "reset is disabled: tests share this sandbox; use unique metadata instead"}, 403
            )
        sb.emulator.reset()
        sb.faults.clear()
        return json_response({"status": "reset"})

    @app.get("/", response_class=HTMLResponse, tags=["sandbox"])
    async def index() -> HTMLResponse:
        """A list of the latest payments with links to their payment pages."""
        items = sb.emulator.inspect("payments", {"limit": "50"})
        rows = "".join(
            f"<tr><td><a href='/checkout/{p['id']}'>{p['id']}</a></td><td>{p['status']}</td>"
            f"<td>{p['amount']['value']} {p['amount']['currency']}</td><td>{p['created_at']}</td></tr>"
            for p in items
        )
        return HTMLResponse(
            "<!doctype html><meta charset=utf-8><title>YooKassa sandbox</title>"
            "<h1>YooKassa sandbox</h1><p>API: <code>/v3</code> · admin: <code>/sandbox/…</code> · "
            "<a href='/docs'>OpenAPI</a></p><table border=1 cellpadding=4><tr><th>payment</th><th>status</th>"
            f"<th>amount</th><th>created</th></tr>{rows}</table>"
        )

    return RawSendMiddleware(app)
