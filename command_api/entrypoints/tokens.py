"""`billing token`: mint development access tokens the API accepts.

Uses JWT_SECRET (HS256) from the environment, or an RS256/ES256 private key file when given (signed
by `infra.tokens.mint_token`, as every development token is);
never for production users, whose tokens an identity provider issues. A service token for the
admin names the operators it may act for (`--role service --operator alice --operator bob`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from command_api.config import ApiSettings
from infra.tokens import mint_token

app = typer.Typer(help="Mint JWT access tokens for development.", add_completion=False)


@app.command()
def token(
    user: Annotated[str, typer.Option("--user", help="the user id (sub claim)")] = "user-1",
    email: Annotated[Optional[str], typer.Option("--email", help="email claim; required to buy")] = None,  # noqa: UP007
    locale: Annotated[Optional[str], typer.Option("--locale", help="ru or en")] = None,  # noqa: UP007
    role: Annotated[Optional[str], typer.Option("--role", help="operator or service")] = None,  # noqa: UP007
    operator: Annotated[
        Optional[list[str]], typer.Option("--operator", help="with --role service: an operator it may act for (repeat)")  # noqa: UP007
    ] = None,
    ttl: Annotated[int, typer.Option("--ttl", help="lifetime in seconds", min=1)] = 3600,
    private_key: Annotated[
        Optional[Path], typer.Option("--private-key", help="PEM file: sign RS256/ES256 instead of HS256", exists=True)  # noqa: UP007
    ] = None,
    algorithm: Annotated[str, typer.Option("--algorithm", help="with --private-key: RS256 or ES256")] = "RS256",
) -> None:
    """Print a signed access token."""
    if locale is not None and locale not in ("ru", "en"):
        raise typer.BadParameter("locale must be ru or en", param_hint="--locale")
    if role is not None and role not in ("user", "operator", "service"):
        raise typer.BadParameter("role must be user, operator or service", param_hint="--role")
    if operator and role != "service":
        raise typer.BadParameter("only a service token names operators", param_hint="--operator")
    secret = ApiSettings().jwt_secret
    key, alg = (private_key.read_text(), algorithm.upper()) if private_key else (secret, "HS256")
    typer.echo(mint_token(key, algorithm=alg, user_id=user, email=email, locale=locale, role=role, operators=operator,
                          ttl_s=ttl))


if __name__ == "__main__":
    app()
