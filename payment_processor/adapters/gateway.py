"""YooKassa behind one small Protocol, over the official `yookassa` SDK.

The SDK is synchronous, keeps its configuration in global class state, builds a new `ApiClient`
(with an OS-probing user agent) and a new `requests.Session` per call, computes the response's
charset by detection on every answer and sets NO socket timeout (a silent server would hang a
worker forever); a dropped connection surfaces as `AttributeError: 'NoneType' object has no
attribute 'status_code'`. This module makes it safe and cheap to use from an asyncio service:

* The transport (docs/decisions/0047): the SDK still builds every request (its request models,
  validation, headers, Idempotence-Key, the JSON body) and parses every answer (status → its
  exceptions, JSON → its response models); only `ApiClient.execute` — the one method that turns a
  prepared (method, url, headers, body) into an HTTP response — is replaced. It sends through one
  urllib3 connection pool per gateway: keep-alive connections shared by the worker threads,
  `(connect, read)` timeouts on every request, no retries and no redirects (a 202 is "unknown",
  the janitor asks again with the same key — no sleeping inside a worker thread), and a pooled
  connection idle for more than 2 s is reconnected before use, so a request never races a server
  closing an idle keep-alive connection. One `ApiClient` serves every call of a gateway.
  That is ~0.7 ms of CPU for a `find_one` instead of ~3 ms through `requests`.
* Concurrency: blocking calls run in a dedicated bounded thread pool, entered through an
  asyncio semaphore of the same size, so the event loop never blocks and YooKassa never sees
  more than `max_concurrency` requests from one process.
* Outcomes: every answer maps to `ProviderPayment`/`ProviderRefund` (YooKassa's view, including a
  decline: `status == "canceled"` with `cancellation_details.reason`), `ProviderUnknown` (timeout,
  connection error, 5xx, 202, 429, 404, an unreadable answer, and 401/403 — our credentials, not the
  customer's payment, were refused: logged as an error and counted) or `ProviderRefused` (400, or the
  SDK refusing the parameters before sending). Unknown is never failure: the janitor re-reads
  until the state is known.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Literal, Protocol
from urllib.parse import urlencode, urlsplit

import urllib3
from prometheus_client import Counter
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from yookassa import Configuration, Payment, Refund
from yookassa.client import ApiClient
from yookassa.domain.exceptions import (
    ApiError,
    BadRequestError,
    ForbiddenError,
    InternalServerError,
    NotFoundError,
    ResponseProcessingError,
    TooManyRequestsError,
    UnauthorizedError,
)
from yookassa.domain.request import PaymentRequest, RefundRequest

from infra.logging import get_logger
from payment_processor.metrics import LATENCY_BY_OPERATION, provider_outcome
from payment_processor.domain.provider import (
    CreatePayment,
    CreateRefund,
    FindPayment,
    FindRefund,
    ProviderOutcome,
    ProviderPayment,
    ProviderRefund,
    ProviderRefused,
    ProviderStep,
    ProviderUnknown,
)
from schemas import Money

log = get_logger(__name__)


class PaymentGateway(Protocol):
    """What the handlers need from a payment provider: run one step, get one outcome."""

    async def execute(self, step: ProviderStep) -> ProviderOutcome: ...

    async def aclose(self) -> None: ...


# --------------------------------------------------------------------------- the SDK's transport


class _ReconnectIdle:
    """Pool mix-in: a connection idle longer than `max_idle_s` is reconnected before it is used.

    A server closes idle keep-alive connections after its own timeout (uvicorn 5 s, nginx 75 s);
    a request written into that moment fails as "no response" — for a POST an unknown outcome the
    janitor must settle. Reconnecting first costs one TCP handshake after a quiet spell.
    """

    max_idle_s = 2.0

    def _get_conn(self, timeout: float | None = None) -> Any:
        conn = super()._get_conn(timeout)  # type: ignore[misc]
        idle_since = getattr(conn, "_billing_idle_since", None)
        if idle_since is not None and time.monotonic() - idle_since > self.max_idle_s:
            conn.close()  # http.client reconnects on the next request
        return conn

    def _put_conn(self, conn: Any) -> None:
        if conn is not None:
            conn._billing_idle_since = time.monotonic()
        super()._put_conn(conn)  # type: ignore[misc]


class _HTTPPool(_ReconnectIdle, HTTPConnectionPool):
    pass


class _HTTPSPool(_ReconnectIdle, HTTPSConnectionPool):
    pass


class _Response:
    """What the SDK reads of an HTTP response: `status_code`, `json()` (and `content`, `headers`)."""

    __slots__ = ("status_code", "content", "headers")

    def __init__(self, status_code: int, content: bytes, headers: Any) -> None:
        self.status_code, self.content, self.headers = status_code, content, headers

    def json(self) -> Any:
        return json.loads(self.content)

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")


class _Transport:
    """One keep-alive connection pool to YooKassa, safe to share between threads."""

    def __init__(self, api_url: str, timeout_s: float, maxsize: int, verify: bool | str | None = None) -> None:
        parts = urlsplit(api_url)
        timeout = urllib3.Timeout(connect=min(timeout_s, 5.0), read=timeout_s)
        options: dict[str, Any] = {"maxsize": maxsize, "block": False, "retries": False, "timeout": timeout}
        if parts.scheme == "https":
            if verify is False:
                options["cert_reqs"] = "CERT_NONE"
            else:
                import certifi  # the CA bundle `requests` (and so the stock SDK) verifies against

                options["ca_certs"] = verify if isinstance(verify, str) else certifi.where()
        proxy = _proxy_for(api_url)
        self._pool: Any
        if proxy is not None:
            self._pool = urllib3.ProxyManager(proxy, num_pools=1, **options)
        elif parts.scheme == "https":
            self._pool = _HTTPSPool(parts.hostname, parts.port, **options)
        else:
            self._pool = _HTTPPool(parts.hostname, parts.port, **options)

    def send(self, method: str, url: str, body: bytes | None, headers: dict[str, str]) -> _Response:
        raw = self._pool.urlopen(method, url, body=body, headers=headers, retries=False, redirect=False, preload_content=True)
        return _Response(raw.status, raw.data, raw.headers)

    def close(self) -> None:
        self._pool.close() if hasattr(self._pool, "close") else self._pool.clear()


def _proxy_for(url: str) -> str | None:
    """The proxy the environment names for `url` (HTTPS_PROXY, NO_PROXY …), read once at start-up."""
    scheme, host = urlsplit(url).scheme, urlsplit(url).hostname or ""
    proxy = urllib.request.getproxies().get(scheme)
    if not proxy or urllib.request.proxy_bypass(host):
        return None
    return proxy


class _PooledApiClient(ApiClient):
    """The SDK's `ApiClient` with one method replaced: `execute`, its HTTP transport (see 0047).

    Everything else is the SDK's own: `request()` validates the request object, builds the
    headers (Basic auth, user agent, Idempotence-Key), calls `execute`, turns a status other than
    200 into its exceptions and parses the JSON. The body is serialised exactly as `requests`
    would (`json.dumps(allow_nan=False)`, UTF-8), so a repeated create sends the same bytes.
    Anything raised here has no `.response`, so the SDK turns it into the AttributeError the
    gateway already classifies as "no response" (unknown).
    """

    def __init__(self, transport: _Transport) -> None:
        super().__init__()
        self._transport = transport

    def execute(self, body: Any, method: str, path: str, query_params: Any, request_headers: dict[str, str]) -> _Response:
        self.log_request(body, method, path, query_params, request_headers)
        url = self.endpoint + path
        if query_params:
            url += ("&" if "?" in url else "?") + urlencode(query_params, doseq=True)
        data = None if body is None else json.dumps(body, allow_nan=False).encode("utf-8")
        response = self._transport.send(method.upper(), url, data, request_headers)  # the SDK says "post"
        if Configuration.logger:
            self.log_response(response.content, {"status_code": response.status_code}, response.headers)
        return response


def _sdk_classes(client: ApiClient) -> tuple[type[Payment], type[Refund]]:
    """`Payment` and `Refund` whose every call goes through `client` (the SDK makes a new instance per call)."""

    class PooledPayment(Payment):
        def __init__(self) -> None:
            self.client = client

    class PooledRefund(Refund):
        def __init__(self) -> None:
            self.client = client

    return PooledPayment, PooledRefund


# --------------------------------------------------------------------------- mapping answers


def _parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def _money(amount: Any) -> Money | None:
    if amount is None:
        return None
    return Money(amount=Decimal(str(amount.value)).quantize(Decimal("0.01")), currency=str(amount.currency))


def payment_from_sdk(response: Any) -> ProviderPayment:
    confirmation = getattr(response, "confirmation", None)
    details = getattr(response, "cancellation_details", None)
    method = getattr(response, "payment_method", None)
    return ProviderPayment(
        id=str(response.id),
        status=str(response.status),
        amount=_money(getattr(response, "amount", None)),
        confirmation_url=getattr(confirmation, "confirmation_url", None) if confirmation is not None else None,
        captured_at=_parse_time(getattr(response, "captured_at", None)),
        cancellation_reason=getattr(details, "reason", None) if details is not None else None,
        cancellation_party=getattr(details, "party", None) if details is not None else None,
        payment_method_id=getattr(method, "id", None) if method is not None else None,
        payment_method_saved=bool(getattr(method, "saved", False)) if method is not None else False,
        payment_method_title=getattr(method, "title", None) if method is not None else None,
        receipt_registration=_text(getattr(response, "receipt_registration", None)),
        metadata=_metadata(getattr(response, "metadata", None)),
        created_at=_parse_time(getattr(response, "created_at", None)),
    )


def _text(value: Any) -> str | None:
    return str(value) if value else None


def _metadata(value: Any) -> dict[str, str] | None:
    if not isinstance(value, dict):
        return None
    return {str(k): str(v) for k, v in value.items()}


def refund_from_sdk(response: Any) -> ProviderRefund:
    details = getattr(response, "cancellation_details", None)
    return ProviderRefund(
        id=str(response.id),
        status=str(response.status),
        amount=_money(getattr(response, "amount", None)),
        cancellation_reason=getattr(details, "reason", None) if details is not None else None,
        payment_id=getattr(response, "payment_id", None),
        created_at=_parse_time(getattr(response, "created_at", None)),
        receipt_registration=_text(getattr(response, "receipt_registration", None)),
    )


def _describe(exc: ApiError) -> tuple[str, str]:
    content = exc.content if isinstance(exc.content, dict) else {}
    code = str(content.get("code") or type(exc).__name__)
    description = str(content.get("description") or content.get("type") or "")
    parameter = content.get("parameter")
    if parameter:
        description = f"{description} (parameter {parameter})"
    return code, description or code


CREDENTIALS_REJECTED = Counter(
    "billing_yookassa_credentials_rejected_total",
    "Calls YooKassa refused for our shop id / secret key (401, 403): operations stay open until an operator fixes them",
    ["status"],
)
for _status in ("401", "403"):  # at 0 from the start, so the alert's increase() sees the first refusal
    CREDENTIALS_REJECTED.labels(_status)


def classify_error(exc: BaseException) -> ProviderOutcome:
    """Map whatever the SDK raised during a call to unknown (ask again later) or refused (definitive)."""
    if isinstance(exc, (UnauthorizedError, ForbiddenError)):
        # YooKassa refused *us* (a rotated or mistyped secret, a shop not allowed the operation),
        # not the customer's payment: nothing was done, and nothing may end as the customer's
        # failure. The operation stays open (the janitor asks again) and the operator is told
        # loudly (docs/decisions/0106).
        code, description = _describe(exc)
        CREDENTIALS_REJECTED.labels(str(exc.HTTP_CODE)).inc()
        log.error("yookassa_credentials_rejected", status=exc.HTTP_CODE, code=code, detail=description)
        return ProviderUnknown(f"credentials_rejected: {exc.HTTP_CODE} {description}"[:500])
    if isinstance(exc, BadRequestError):
        code, description = _describe(exc)
        return ProviderRefused(code, f"{exc.HTTP_CODE} {description}")
    if isinstance(exc, ResponseProcessingError):
        return ProviderUnknown("202: YooKassa is still processing the request")
    if isinstance(exc, TooManyRequestsError):
        return ProviderUnknown("429: too many requests")
    if isinstance(exc, InternalServerError):
        return ProviderUnknown("500: YooKassa's result is unknown")
    if isinstance(exc, NotFoundError):
        return ProviderUnknown("404: not found (yet)")
    if isinstance(exc, ApiError):
        code, description = _describe(exc)
        return ProviderUnknown(f"HTTP error {code}: {description}")
    if isinstance(exc, AttributeError):
        # The SDK's way of saying "no response": the transport raised (timeout, reset, refused)
        # and the SDK then read `.response` of that exception, which has none.
        cause = exc.__context__ or exc
        return ProviderUnknown(f"no response: {type(cause).__name__}: {cause}"[:500])
    # Anything else (a transport error, an answer the SDK or we could not read) happened after
    # the request may have been applied: not knowing is not failing.
    return ProviderUnknown(f"unexpected {type(exc).__name__}: {exc}"[:500])


# --------------------------------------------------------------------------- the gateway

_OPERATION_OF: dict[type, str] = {
    CreatePayment: "create_payment", FindPayment: "find_payment", CreateRefund: "create_refund", FindRefund: "find_refund",
}


def outcome_label(outcome: ProviderOutcome) -> str:
    """The `outcome` label of a call: YooKassa's status of the object, or unknown / refused."""
    if isinstance(outcome, (ProviderPayment, ProviderRefund)):
        return outcome.status
    return "refused" if isinstance(outcome, ProviderRefused) else "unknown"


class YooKassaGateway:
    """`PaymentGateway` over the official SDK, with timeouts and bounded, off-loop concurrency."""

    def __init__(self, *, shop_id: str, secret_key: str, api_url: str, timeout_s: float, max_concurrency: int = 16) -> None:
        # The SDK keeps its configuration in global state; our client reads it once, here.
        Configuration.configure(shop_id, secret_key, api_url=api_url)
        self._transport = _Transport(api_url, timeout_s, maxsize=max_concurrency, verify=Configuration.verify)
        self._payment, self._refund = _sdk_classes(_PooledApiClient(self._transport))
        self._pool = ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="yookassa")
        self._slots = asyncio.Semaphore(max_concurrency)
        self.calls = 0

    async def execute(self, step: ProviderStep) -> ProviderOutcome:
        operation = _OPERATION_OF[type(step)]
        async with self._slots:
            loop = asyncio.get_running_loop()
            started = time.perf_counter()
            outcome = await loop.run_in_executor(self._pool, self._call, step)
            LATENCY_BY_OPERATION[operation].observe(time.perf_counter() - started)
        self.calls += 1
        provider_outcome(operation, outcome_label(outcome)).inc()
        if isinstance(outcome, (ProviderUnknown, ProviderRefused)):
            log.warning("yookassa_outcome", step=type(step).__name__, outcome=type(outcome).__name__, detail=outcome.detail)
        return outcome

    def _call(self, step: ProviderStep) -> ProviderOutcome:
        # 1. Parameters the SDK refuses before sending will be refused forever: a definitive answer.
        #    The SDK's request object built here is the one it sends (built once, not twice).
        request: PaymentRequest | RefundRequest | None = None
        try:
            if isinstance(step, CreatePayment):
                request = PaymentRequest(step.body)
                request.validate()
            elif isinstance(step, CreateRefund):
                request = RefundRequest(step.body)
                request.validate()
        except (ValueError, TypeError) as exc:
            return ProviderRefused("invalid_parameters", f"the SDK refused the request: {exc}"[:500])
        # 2. The call. Anything going wrong from here on may have happened after YooKassa acted.
        try:
            if isinstance(step, CreatePayment):
                return payment_from_sdk(self._payment.create(request, step.idempotence_key))
            if isinstance(step, FindPayment):
                return payment_from_sdk(self._payment.find_one(step.provider_payment_id))
            if isinstance(step, CreateRefund):
                return refund_from_sdk(self._refund.create(request, step.idempotence_key))
            if isinstance(step, FindRefund):
                return refund_from_sdk(self._refund.find_one(step.provider_refund_id))
        except Exception as exc:  # noqa: BLE001 - every failure is classified, none escapes as a crash
            return classify_error(exc)
        raise TypeError(f"unknown provider step {step!r}")

    async def list_created(
        self, kind: Literal["payments", "refunds"], since: datetime, until: datetime, *, page_size: int = 100,
        attempts: int = 3, backoff_s: float = 0.5,
    ) -> list[ProviderPayment] | list[ProviderRefund]:
        """Every payment or refund YooKassa created in [since, until), following `next_cursor`.

        Each page is one call with the gateway's timeouts; a page whose answer is unknown (timeout,
        5xx, 429) is asked again up to `attempts` times, then `ListingFailed` is raised: a listing
        with a page missing would make everything on it look unknown to YooKassa, so a
        reconciliation never compares against part of a list (docs/decisions/0122).
        """
        found: list[Any] = []
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"created_at.gte": _iso(since), "created_at.lt": _iso(until), "limit": page_size}
            if cursor:
                params["cursor"] = cursor
            page: Any = None
            for attempt in range(1, attempts + 1):
                async with self._slots:
                    loop = asyncio.get_running_loop()
                    started = time.perf_counter()
                    page = await loop.run_in_executor(self._pool, self._list_page, kind, params)
                    LATENCY_BY_OPERATION["list"].observe(time.perf_counter() - started)
                self.calls += 1
                if not isinstance(page, (ProviderUnknown, ProviderRefused)):
                    break
                provider_outcome("list", outcome_label(page)).inc()
                log.warning("yookassa_list_page_failed", kind=kind, attempt=attempt, detail=page.detail)
                if isinstance(page, ProviderRefused) or attempt == attempts:
                    raise ListingFailed(f"YooKassa's {kind} list could not be read: {page.detail}")
                await asyncio.sleep(backoff_s * attempt)
            items, cursor = page
            provider_outcome("list", "listed").inc()
            found.extend(items)
            if not cursor:
                return found

    def _list_page(self, kind: str, params: dict[str, Any]) -> tuple[list[Any], str | None] | ProviderOutcome:
        try:
            if kind == "payments":
                response = self._payment.list(params)
                items: list[Any] = [payment_from_sdk(item) for item in (response.items or [])]
            else:
                response = self._refund.list(params)
                items = [refund_from_sdk(item) for item in (response.items or [])]
            return items, getattr(response, "next_cursor", None) or None
        except Exception as exc:  # noqa: BLE001 - classified like every other call
            return classify_error(exc)

    async def aclose(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._transport.close()


class ListingFailed(RuntimeError):
    """YooKassa's list could not be read completely: nothing may be concluded from part of it."""


def _iso(at: datetime) -> str:
    return at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
