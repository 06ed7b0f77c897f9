"""FastAPI dependencies as `Annotated` aliases: the services, the caller, the command context.

Everything a route needs comes from `app.state.services`, built once by the composition root
(`command_api/bootstrap.py`) in the lifespan; nothing is created at import time, so tests build as many apps as they like from their own settings.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from command_api.adapters.intake import CommandContext, parse_prefer_wait
from command_api.bootstrap import Services
from command_api.domain.auth import Principal, as_user, with_operator
from command_api.domain.problems import ProblemError
from schemas import Actor
from schemas.operators import OPERATOR_HEADER_MAX, decode_operator_header


async def get_services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]

_bearer = HTTPBearer(auto_error=False, description="an access token (`typ: access`); `billing token` mints one")


async def current_principal(
    services: ServicesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None:
        raise ProblemError(
            401, "unauthorized", "Unauthorized", "send Authorization: Bearer <access token>",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return await services.tokens.verify_async(credentials.credentials)


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


async def current_user(principal: CurrentPrincipal) -> Principal:
    """User endpoints: a service token is nobody's account (decision 0112)."""
    return as_user(principal)


CurrentUser = Annotated[Principal, Depends(current_user)]


async def current_operator(
    principal: CurrentPrincipal,
    x_operator: Annotated[
        str | None,
        Header(
            alias="X-Operator",
            max_length=OPERATOR_HEADER_MAX,
            description="the operator a service token acts for: the admin's username, percent-encoded as UTF-8 "
            "when it is not ASCII (анна → `%D0%B0%D0%BD%D0%BD%D0%B0`)",
            examples=["anna+ops", "%D0%B0%D0%BD%D0%BD%D0%B0"],
        ),
    ] = None,
) -> Principal:
    if x_operator is not None:
        try:
            x_operator = decode_operator_header(x_operator)
        except ValueError as exc:
            raise ProblemError(422, "invalid-operator", "Invalid X-Operator", str(exc)) from None
    return with_operator(principal, x_operator)


CurrentOperator = Annotated[Principal, Depends(current_operator)]

IdempotencyKey = Annotated[
    str,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        pattern=r"^[\x21-\x7e]+$",
        description="unique per intended operation (a UUID); a retry with the same key and body gets the first response",
        examples=["5f0c2d4e-8b1a-4c3e-9d7f-1a2b3c4d5e6f"],
    ),
]
PreferHeader = Annotated[
    str | None,
    Header(
        alias="Prefer",
        max_length=200,
        description="`wait=N` (N ≤ 10): on a command, wait up to N seconds and answer its outcome; on a GET "
        "with `If-None-Match`, wait up to N seconds for the resource to change",
        examples=["wait=5"],
    ),
]


async def _context(
    request: Request, services: Services, principal: Principal, actor: Actor, key: str, prefer: str | None
) -> CommandContext:
    return CommandContext(
        scope=principal.user_id,
        key=key,
        method=request.method,
        path=request.url.path,
        actor=actor,
        correlation_id=request.state.request_id,
        wait_s=parse_prefer_wait(prefer, services.settings.api_max_wait_s),
    )


async def user_command_context(
    request: Request, services: ServicesDep, principal: CurrentUser, key: IdempotencyKey, prefer: PreferHeader = None
) -> CommandContext:
    return await _context(request, services, principal, Actor(kind="user", id=principal.user_id), key, prefer)


async def operator_command_context(
    request: Request, services: ServicesDep, principal: CurrentOperator, key: IdempotencyKey, prefer: PreferHeader = None
) -> CommandContext:
    assert principal.operator is not None
    return await _context(request, services, principal, Actor(kind="admin", id=principal.operator), key, prefer)


UserCommand = Annotated[CommandContext, Depends(user_command_context)]
OperatorCommand = Annotated[CommandContext, Depends(operator_command_context)]
