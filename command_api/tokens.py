"""`billing token`: mint development access tokens the API accepts.

Uses JWT_SECRET (HS256) from the environment, or an RS256 private key file when given; never for
production use, where an identity provider issues tokens.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from command_api.auth import mint_token
from eventstore.settings import Settings

app = typer.Typer(help="Mint JWT access tokens for development.", add_completion=False)


@app.command()
def token(
    user: Annotated[str, typer.Option("--user", help="the user id (sub claim)")] = "user-1",
    email: Annotated[Optional[str], typer.Option("--email", help="email claim; required to buy")] = None,  # noqa: UP007
    locale: Annotated[Optional[str], typer.Option("--locale", help="ru or en")] = None,  # noqa: UP007
    role: Annotated[Optional[str], typer.Option("--role", help="operator or service")] = None,  # noqa: UP007
    ttl: Annotated[int, typer.Option("--ttl", help="lifetime in seconds", min=1)] = 3600,
    private_key: Annotated[
        Optional[Path], typer.Option("--private-key", help="PEM file: sign RS256 instead of HS256", exists=True)  # noqa: UP007
    ] = None,
) -> None:
    """Print a signed access token."""
    if locale is not None and locale not in ("ru", "en"):
        raise typer.BadParameter("locale must be ru or en", param_hint="--locale")
    if role is not None and role not in ("user", "operator", "service"):
        raise typer.BadParameter("role must be user, operator or service", param_hint="--role")
    key = private_key.read_text() if private_key else None
    typer.echo(mint_token(Settings(), user_id=user, email=email, locale=locale, role=role, ttl_s=ttl, private_key=key))


if __name__ == "__main__":
    app()
