"""The admin's only way to change anything: the command API's operator endpoints over httpx.

Each call carries the service token (role "service"), `X-Operator: <username>` (which the API
turns into the command's actor `{kind: admin, id: username}`; percent-encoded as UTF-8, because a
header is latin-1 and `анна` is a username too — schemas/operators.py), the form's `Idempotency-Key`
(generated when the form was rendered, so a double submit or a retry after a lost response is
one command) and `Prefer: wait=N`, so most commands come back already decided. Every call has a
timeout; a transport failure is reported as "unknown", never as success or failure, and the form
can be resubmitted safely with the same key.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import structlog
from django.conf import settings

from infra.tokens import mint_token
from schemas.operators import encode_operator_header

log = structlog.get_logger("admin.command_api")

TERMINAL_STATUSES = frozenset({"succeeded", "rejected", "failed"})
TOKEN_LIFETIME_S = 300


@dataclass(frozen=True)
class CommandResult:
    """What the operator is shown after posting a command (or looking one up)."""

    status: str  # accepted | processing | succeeded | rejected | failed | error | unknown
    command_id: str | None = None
    command_type: str | None = None
    outcome: dict[str, Any] | None = None
    code: str | None = None
    reason: str | None = None
    http_status: int | None = None
    problem: dict[str, Any] = field(default_factory=dict)

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def pending(self) -> bool:
        return self.command_id is not None and not self.terminal


class _TokenSource:
    """SERVICE_TOKEN when configured; otherwise (development, tests) a short-lived minted one
    naming the operator it acts for, as the API requires of service tokens."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._minted: dict[str, tuple[str, float]] = {}

    def token(self, operator: str) -> str:
        configured = getattr(settings, "BILLING_SERVICE_TOKEN", None)
        if configured:
            return configured
        with self._lock:
            now = time.time()
            minted = self._minted.get(operator)
            if minted is None or minted[1] - now < 60:
                token = mint_token(
                    settings.BILLING_JWT_SECRET, algorithm=settings.BILLING_JWT_ALGORITHM, user_id="admin-service",
                    role="service", operators=[operator], ttl_s=TOKEN_LIFETIME_S, now=now,
                )
                minted = self._minted[operator] = (token, now + TOKEN_LIFETIME_S)
            return minted[0]


_tokens = _TokenSource()


def service_token(operator: str) -> str:
    return _tokens.token(operator)


def _result_from_response(response: httpx.Response) -> CommandResult:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        text = response.text[:300] if response.text else ""
        return CommandResult(
            status="error",
            http_status=response.status_code,
            reason=f"the command API answered HTTP {response.status_code} {text}".strip(),
        )
    if body.get("command_id"):
        # A rejected/failed answer is problem+json: there `status` is the HTTP code and the
        # command's own status is `command_status`.
        status = body.get("command_status")
        if not isinstance(status, str):
            status = body.get("status") if isinstance(body.get("status"), str) else None
        if status is None:
            status = {422: "rejected", 502: "failed"}.get(response.status_code, "accepted")
        reason = body.get("reason")
        if status in {"rejected", "failed"} and not reason:
            reason = body.get("detail") or body.get("title")
        return CommandResult(
            status=status,
            command_id=str(body["command_id"]),
            command_type=body.get("command_type"),
            outcome=body.get("outcome") if isinstance(body.get("outcome"), dict) else None,
            code=body.get("code"),
            reason=reason,
            http_status=response.status_code,
            problem=body,
        )
    # problem+json without a command: validation, auth, an idempotency conflict...
    detail = body.get("detail") or body.get("title") or f"HTTP {response.status_code}"
    if isinstance(detail, list):  # FastAPI-style validation lists
        detail = "; ".join(str(item.get("msg", item)) if isinstance(item, dict) else str(item) for item in detail)
    if response.status_code == 409:
        detail = (
            f"{detail} — this form was already submitted and is still being processed; "
            "look the command up under Command statuses in a moment"
        )
    return CommandResult(
        status="error", http_status=response.status_code, code=body.get("code"), reason=str(detail), problem=body
    )


class CommandApi:
    """A thin, synchronous client of the command API for Django views."""

    def __init__(
        self,
        base_url: str | None = None,
        *,
        wait_s: int | None = None,
        timeout_s: float | None = None,
    ) -> None:
        self.base_url = (base_url or settings.BILLING_COMMAND_API_URL).rstrip("/")
        self.wait_s = settings.BILLING_COMMAND_WAIT_S if wait_s is None else wait_s
        self.timeout_s = settings.BILLING_API_TIMEOUT_S if timeout_s is None else timeout_s

    def _client(self, read_timeout: float) -> httpx.Client:
        return httpx.Client(
            base_url=self.base_url,
            timeout=httpx.Timeout(self.timeout_s, read=read_timeout),
            headers={"Accept": "application/json", "User-Agent": "billing-admin"},
        )

    def post(self, path: str, body: dict[str, Any], *, operator: str, idempotency_key: str) -> CommandResult:
        """POST an operator command and return its outcome (or that it is still processing)."""
        headers = {
            "Authorization": f"Bearer {service_token(operator)}",
            "X-Operator": encode_operator_header(operator),
            "Idempotency-Key": idempotency_key,
        }
        if self.wait_s:
            headers["Prefer"] = f"wait={self.wait_s}"
        bound = log.bind(path=path, operator=operator, idempotency_key=idempotency_key)
        try:
            # The API may hold the request for up to wait_s: the read timeout allows for that.
            with self._client(read_timeout=self.wait_s + self.timeout_s) as client:
                response = client.post(f"/v1/admin{path}", json=body, headers=headers)
        except httpx.TimeoutException:
            bound.warning("command_api.timeout")
            return CommandResult(
                status="unknown",
                reason=(
                    "The command API did not answer in time. The command may still be processed; "
                    "submitting the same form again is safe (it carries the same idempotency key)."
                ),
            )
        except httpx.HTTPError as exc:
            bound.warning("command_api.unreachable", error=str(exc))
            return CommandResult(
                status="unknown",
                reason=f"The command API could not be reached ({type(exc).__name__}). Nothing was confirmed; "
                "submitting the same form again is safe.",
            )
        result = _result_from_response(response)
        bound.info("command_api.posted", http_status=response.status_code, status=result.status,
                   command_id=result.command_id)
        return result

    def command(self, command_id: str, *, operator: str) -> CommandResult:
        """The current status of a command (`GET /v1/admin/commands/{id}`), asked for `operator`."""
        headers = {"Authorization": f"Bearer {service_token(operator)}", "X-Operator": encode_operator_header(operator)}
        try:
            with self._client(read_timeout=self.timeout_s) as client:
                response = client.get(f"/v1/admin/commands/{command_id}", headers=headers)
        except httpx.HTTPError as exc:
            return CommandResult(
                status="unknown", command_id=command_id,
                reason=f"The command API could not be reached ({type(exc).__name__}).",
            )
        if response.status_code == 404:
            return CommandResult(status="error", command_id=command_id, http_status=404,
                                 reason="The command API does not know this command.")
        result = _result_from_response(response)
        if result.command_id is None and result.status == "error":
            return CommandResult(status="error", command_id=command_id, http_status=result.http_status,
                                 reason=result.reason)
        return result
