"""YooKassa behind one small Protocol, over the official `yookassa` SDK.

The SDK is synchronous, keeps its configuration in global class state, builds a fresh
`requests.Session` per call and sets NO socket timeout (a silent server would hang a worker
forever); a dropped connection surfaces as `AttributeError: 'NoneType' object has no attribute
'status_code'`. This module makes it safe to use from an asyncio service:

* Timeouts: `Payment`/`Refund` subclasses use an `ApiClient` subclass whose `get_session()`
  returns a session with `_TimeoutAdapter` mounted for http:// and https://. The adapter applies
  `(connect, read)` timeouts to every request the SDK sends. The session is kept per thread (its
  `close()`, which the SDK calls after each request, is a no-op), so connections are reused
  (but not after 2 s idle, before a server's keep-alive timeout can race a request).
  The SDK's own retry-on-202 adapter is replaced too: a 202 is mapped to "unknown", and the
  janitor asks again with the same Idempotence-Key — no sleeping inside a worker thread.
* Concurrency: blocking calls run in a dedicated bounded thread pool, entered through an
  asyncio semaphore of the same size, so the event loop never blocks and YooKassa never sees
  more than `max_concurrency` requests from one process.
* Outcomes: every answer maps to `ProviderPayment`/`ProviderRefund` (YooKassa's view, including a
  decline: `status == "canceled"` with `cancellation_details.reason`), `ProviderUnknown` (timeout,
  connection error, 5xx, 202, 429, 404, an unreadable answer) or `ProviderRefused` (400/401/403, or
  the SDK refusing the parameters before sending). Unknown is never failure: the janitor re-reads
  until the state is known.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

import requests
from requests.adapters import HTTPAdapter
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

from eventstore.logging import get_logger
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


# --------------------------------------------------------------------------- the SDK, with timeouts


class _TimeoutAdapter(HTTPAdapter):
    """Applies a default `(connect, read)` timeout to every request sent through it."""

    def __init__(self, timeout: tuple[float, float]) -> None:
        super().__init__(max_retries=0, pool_connections=1, pool_maxsize=1)
        self.timeout = timeout

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.timeout
        return super().send(request, *args, **kwargs)


class _ReusedSession(requests.Session):
    """A per-thread session the SDK may "close" after each call without losing its connections."""

    def close(self) -> None:
        pass

    def really_close(self) -> None:
        super().close()


def _proxies_in_environment() -> bool:
    return any(name.lower().endswith("_proxy") for name in os.environ)


def _sdk_classes(timeout_s: float, max_idle_s: float = 2.0) -> tuple[type[Payment], type[Refund], list[_ReusedSession]]:
    """`Payment` and `Refund` whose every HTTP call has a socket timeout."""
    local = threading.local()
    sessions: list[_ReusedSession] = []
    lock = threading.Lock()
    timeout = (min(timeout_s, 5.0), timeout_s)

    class TimedApiClient(ApiClient):
        def get_session(self) -> requests.Session:
            session: _ReusedSession | None = getattr(local, "session", None)
            now = time.monotonic()
            if session is not None and now - local.last_used > max_idle_s:
                # The server may be closing an idle keep-alive connection right now; a POST sent
                # into that race fails as "no response" (unknown). Start fresh instead.
                session.really_close()
                with lock:
                    sessions.remove(session)
                session = None
            if session is None:
                session = _ReusedSession()
                # requests re-reads every proxy variable of the environment on each request
                # (~2 ms of CPU with a big environment); skip that when none is set.
                session.trust_env = _proxies_in_environment()
                adapter = _TimeoutAdapter(timeout)
                session.mount("http://", adapter)
                session.mount("https://", adapter)
                local.session = session
                with lock:
                    sessions.append(session)
            local.last_used = now
            return session

    class TimedPayment(Payment):
        def __init__(self) -> None:
            self.client = TimedApiClient()

    class TimedRefund(Refund):
        def __init__(self) -> None:
            self.client = TimedApiClient()

    return TimedPayment, TimedRefund, sessions


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
    )


def refund_from_sdk(response: Any) -> ProviderRefund:
    details = getattr(response, "cancellation_details", None)
    return ProviderRefund(
        id=str(response.id),
        status=str(response.status),
        amount=_money(getattr(response, "amount", None)),
        cancellation_reason=getattr(details, "reason", None) if details is not None else None,
    )


def _describe(exc: ApiError) -> tuple[str, str]:
    content = exc.content if isinstance(exc.content, dict) else {}
    code = str(content.get("code") or type(exc).__name__)
    description = str(content.get("description") or content.get("type") or "")
    parameter = content.get("parameter")
    if parameter:
        description = f"{description} (parameter {parameter})"
    return code, description or code


def classify_error(exc: BaseException) -> ProviderOutcome:
    """Map whatever the SDK raised during a call to unknown (ask again later) or refused (definitive)."""
    if isinstance(exc, (BadRequestError, UnauthorizedError, ForbiddenError)):
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
        # The SDK's way of saying "no response": requests raised (timeout, reset, refused)
        # and the SDK then read `.status_code` of the missing response.
        cause = exc.__context__ or exc
        return ProviderUnknown(f"no response: {type(cause).__name__}: {cause}"[:500])
    # Anything else (a requests error, an answer the SDK or we could not read) happened after
    # the request may have been applied: not knowing is not failing.
    return ProviderUnknown(f"unexpected {type(exc).__name__}: {exc}"[:500])


# --------------------------------------------------------------------------- the gateway


class YooKassaGateway:
    """`PaymentGateway` over the official SDK, with timeouts and bounded, off-loop concurrency."""

    def __init__(self, *, shop_id: str, secret_key: str, api_url: str, timeout_s: float, max_concurrency: int = 16) -> None:
        # The SDK reads its (global) configuration on every call; set it once, here.
        Configuration.configure(shop_id, secret_key, api_url=api_url)
        self._payment, self._refund, self._sessions = _sdk_classes(timeout_s)
        self._pool = ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="yookassa")
        self._slots = asyncio.Semaphore(max_concurrency)
        self.calls = 0

    async def execute(self, step: ProviderStep) -> ProviderOutcome:
        async with self._slots:
            loop = asyncio.get_running_loop()
            outcome = await loop.run_in_executor(self._pool, self._call, step)
        self.calls += 1
        if isinstance(outcome, (ProviderUnknown, ProviderRefused)):
            log.warning("yookassa_outcome", step=type(step).__name__, outcome=type(outcome).__name__, detail=outcome.detail)
        return outcome

    def _call(self, step: ProviderStep) -> ProviderOutcome:
        # 1. Parameters the SDK refuses before sending will be refused forever: a definitive answer.
        try:
            if isinstance(step, CreatePayment):
                PaymentRequest(step.body).validate()
            elif isinstance(step, CreateRefund):
                RefundRequest(step.body).validate()
        except (ValueError, TypeError) as exc:
            return ProviderRefused("invalid_parameters", f"the SDK refused the request: {exc}"[:500])
        # 2. The call. Anything going wrong from here on may have happened after YooKassa acted.
        try:
            if isinstance(step, CreatePayment):
                return payment_from_sdk(self._payment.create(step.body, step.idempotence_key))
            if isinstance(step, FindPayment):
                return payment_from_sdk(self._payment.find_one(step.provider_payment_id))
            if isinstance(step, CreateRefund):
                return refund_from_sdk(self._refund.create(step.body, step.idempotence_key))
            if isinstance(step, FindRefund):
                return refund_from_sdk(self._refund.find_one(step.provider_refund_id))
        except Exception as exc:  # noqa: BLE001 - every failure is classified, none escapes as a crash
            return classify_error(exc)
        raise TypeError(f"unknown provider step {step!r}")

    async def aclose(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        for session in self._sessions:
            session.really_close()
