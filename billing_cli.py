"""`billing`: the operator's command line, one entry point over every part's own CLI.

Each part owns its commands as a Typer app (`projector.replay:app`, `command_api.tokens:app`,
...); this module only mounts the ones installed, so a part can be absent without breaking the rest.
"""

from __future__ import annotations

import asyncio
import importlib
from datetime import timedelta

import typer

app = typer.Typer(help="Billing operations: replay read models, mint tokens, migrate, move demo time.", no_args_is_help=True)

_SUBAPPS = {
    "replay": ("projector.replay", "Rebuild or check read models from the event store."),
    "token": ("command_api.tokens", "Mint JWTs for development."),
}

for _name, (_module, _help) in _SUBAPPS.items():
    try:
        _sub = importlib.import_module(_module).app
    except (ImportError, AttributeError):
        continue
    if getattr(_sub, "registered_commands", None) and len(_sub.registered_commands) == 1 and not _sub.registered_groups:
        app.command(_name, help=_help)(_sub.registered_commands[0].callback)
    else:
        app.add_typer(_sub, name=_name, help=_help)


@app.command()
def migrate() -> None:
    """Apply every package's database migrations."""
    from eventstore.migrate import packages_with_migrations, upgrade
    from eventstore.settings import Settings

    upgrade(Settings())
    typer.echo("migrated: " + ", ".join(packages_with_migrations()))


@app.command("shift-time")
def shift_time_command(days: float = typer.Argument(..., help="days to move business time forward")) -> None:
    """Move business time for every process started with BILLING_CLOCK=shiftable (demo, tests)."""
    from eventstore.clock import shift_time
    from eventstore.db import create_engine
    from eventstore.settings import Settings

    async def run() -> timedelta:
        engine = create_engine(Settings(), pool_size=1)
        try:
            return await shift_time(engine, timedelta(days=days))
        finally:
            await engine.dispose()

    offset = asyncio.run(run())
    typer.echo(f"business time is now {offset} ahead of the system clock")


if __name__ == "__main__":
    app()
