"""Mailgun's messages API through httpx: one call with hard timeouts, and retries that know when to stop.

What is worth retrying is decided here once: timeouts, connection errors, 5xx and 429 are
transient (Mailgun may answer next time — respecting `Retry-After`); any other 4xx is permanent
(the request itself is wrong: retrying cannot help, the caller dead-letters it). Retries use
exponential back-off with full jitter (tenacity) and stop BEFORE a wait would cross the caller's
budget, so one send is bounded by `budget + one attempt's timeout`; every attempt also has a hard
`asyncio.timeout` on top of httpx's per-phase timeouts, since a server that trickles bytes could
otherwise hold an attempt open indefinitely.

Every message carries `h:Message-Id` derived from the event id: a retry after a lost response or
a crash repeats the SAME Message-Id, so the copy can be recognised and dropped downstream.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_before_delay, wait_random_exponential

from infra.logging import get_logger

log = get_logger(__name__)


class MailgunError(Exception):
    """A send that did not get Mailgun's 200."""

    def __init__(self, message: str, *, status: int | None = None, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after_s = retry_after_s


class TransientMailgunError(MailgunError):
    """Timeout, connection error, 5xx or 429: worth trying again later."""


class PermanentMailgunError(MailgunError):
    """Any other 4xx: the request is wrong, retrying cannot help."""


@dataclass(frozen=True)
class OutgoingEmail:
    """One message as Mailgun's form fields describe it."""

    to: str
    subject: str
    text: str
    html: str
    message_id: str
    tag: str
    variables: dict[str, str] = field(default_factory=dict)

    def form(self, sender: str) -> dict[str, str]:
        fields = {
            "from": sender,
            "to": self.to,
            "subject": self.subject,
            "text": self.text,
            "html": self.html,
            "h:Message-Id": self.message_id,
            "o:tag": self.tag,
        }
        fields.update({f"v:{name}": value for name, value in self.variables.items()})
        return fields

    def to_dict(self) -> dict[str, Any]:
        return {
            "to": self.to,
            "subject": self.subject,
            "text": self.text,
            "html": self.html,
            "message_id": self.message_id,
            "tag": self.tag,
            "variables": dict(self.variables),
        }

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> "OutgoingEmail":
        return cls(**value)


@dataclass(frozen=True)
class Delivery:
    """What a send ended with: Mailgun's id, and how many HTTP attempts it took."""

    provider_id: str | None
    attempts: int


def message_id_for(event_id: object, domain: str) -> str:
    """`<event-id@domain>`: stable per event, so every copy of an email has the same Message-Id."""
    return f"<{event_id}@{domain}>"


class MailgunClient:
    """Sends through `POST {api_url}/{domain}/messages` with basic auth `api:<key>`."""

    def __init__(
        self,
        *,
        api_url: str,
        domain: str,
        api_key: str,
        sender: str,
        timeout_s: float,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 60.0,
    ) -> None:
        self.url = f"{api_url.rstrip('/')}/{domain}/messages"
        self.domain = domain
        self.sender = sender
        self.timeout_s = timeout_s
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.http = httpx.AsyncClient(
            auth=("api", api_key),
            timeout=httpx.Timeout(timeout_s),
            limits=httpx.Limits(max_connections=10, max_keepalive_connections=5, keepalive_expiry=5.0),
        )

    async def aclose(self) -> None:
        await self.http.aclose()

    async def send_once(self, email: OutgoingEmail) -> str | None:
        """One attempt; returns Mailgun's message id, raises Transient/PermanentMailgunError."""
        try:
            async with asyncio.timeout(self.timeout_s):
                # multipart/form-data, as Mailgun's own examples send: the Russian text and HTML go
                # as raw UTF-8, not percent-encoded (which tripled their size and the parse cost).
                # The body is built in memory first: httpx would otherwise stream each part as its
                # own socket write.
                parts = [(name, (None, value.encode())) for name, value in email.form(self.sender).items()]
                request = self.http.build_request("POST", self.url, files=parts)
                request.read()
                response = await self.http.send(request)
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise TransientMailgunError(f"timeout after {self.timeout_s}s: {type(exc).__name__}") from exc
        except httpx.TransportError as exc:
            raise TransientMailgunError(f"connection error: {type(exc).__name__}: {exc}") from exc
        status = response.status_code
        if status == 200:
            try:
                body = response.json()
            except ValueError:
                body = {}
            return str(body.get("id")) if isinstance(body, dict) and body.get("id") else None
        detail = _detail(response)
        if status == 429 or status >= 500:
            raise TransientMailgunError(
                f"Mailgun answered {status}: {detail}", status=status, retry_after_s=_retry_after(response)
            )
        raise PermanentMailgunError(f"Mailgun rejected the message with {status}: {detail}", status=status)

    async def send(self, email: OutgoingEmail, budget_s: float) -> Delivery:
        """Send with retries on transient failures for at most `budget_s` (+ one attempt's timeout).

        Raises the last TransientMailgunError when the budget is spent, PermanentMailgunError at once.
        """
        attempts = 0
        retrying = AsyncRetrying(
            stop=stop_before_delay(budget_s),
            wait=_Wait(self.backoff_initial_s, self.backoff_max_s),
            retry=retry_if_exception_type(TransientMailgunError),
            reraise=True,
            before_sleep=_log_retry,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    attempts += 1
                    provider_id = await self.send_once(email)
        except MailgunError as exc:
            exc.attempts = attempts  # type: ignore[attr-defined]
            raise
        return Delivery(provider_id=provider_id, attempts=attempts)


class _Wait:
    """Full-jitter exponential back-off, but never shorter than the server's Retry-After."""

    def __init__(self, initial_s: float, max_s: float) -> None:
        self.jitter = wait_random_exponential(multiplier=initial_s, max=max_s)
        self.max_s = max_s

    def __call__(self, state: RetryCallState) -> float:
        wait = self.jitter(state)
        exc = state.outcome.exception() if state.outcome else None
        retry_after = getattr(exc, "retry_after_s", None)
        if retry_after:
            wait = max(wait, min(retry_after, self.max_s))
        return wait


def _log_retry(state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    log.warning(
        "mailgun_retrying",
        attempt=state.attempt_number,
        wait_s=round(state.next_action.sleep, 3) if state.next_action else None,
        error=str(exc),
    )


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
        if isinstance(body, dict) and "message" in body:
            return str(body["message"])[:500]
    except ValueError:
        pass
    return response.text[:500]


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None
