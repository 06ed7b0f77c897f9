"""`billing`: the operator's command line, one entry point over every part's own CLI.

Each part owns its commands as a Typer app (`projector.entrypoints.replay:app`, `command_api.entrypoints.tokens:app`,
...); this module only mounts the ones installed, so a part can be absent without breaking the rest.
"""

from __future__ import annotations

import asyncio
import importlib
from datetime import timedelta

import typer

app = typer.Typer(help="Billing operations: replay read models, mint tokens, migrate, move demo time.", no_args_is_help=True)

_SUBAPPS = {
    "replay": ("projector.entrypoints.replay", "Rebuild or check read models from the event store."),
    "token": ("command_api.entrypoints.tokens", "Mint JWTs for development."),
    "reconcile": ("payment_processor.entrypoints.reconcile", "Reconcile with YooKassa: list differences, record missed refunds and payments."),
    "report": ("projector.entrypoints.report", "The revenue report by month and plan (--csv for a spreadsheet)."),
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
    from infra.migrate import packages_with_migrations, upgrade
    from infra.settings import Settings

    upgrade(Settings())
    typer.echo("migrated: " + ", ".join(packages_with_migrations()))


@app.command("shift-time")
def shift_time_command(days: float = typer.Argument(..., help="days to move business time forward")) -> None:
    """Move business time for every process started with BILLING_CLOCK=shiftable (demo, tests)."""
    from infra.clock import shift_time
    from infra.db import create_engine
    from infra.settings import Settings

    async def run() -> timedelta:
        engine = create_engine(Settings(), pool_size=1)
        try:
            return await shift_time(engine, timedelta(days=days))
        finally:
            await engine.dispose()

    offset = asyncio.run(run())
    typer.echo(f"business time is now {offset} ahead of the system clock")


# ------------------------------------------------------------------------------------ operations

def _settings() -> object:
    from infra.settings import Settings

    return Settings()


def _print_json(data: object) -> None:
    import orjson

    typer.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())


def _console() -> object:
    """Rich's console; piped into grep or a file, lines are not folded at 80 columns."""
    import sys

    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=240)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.1f}s"


@app.command()
def status(
    json_output: bool = typer.Option(False, "--json", help="the report as JSON (for scripts)"),
    group: list[str] = typer.Option([], "--group", help="also report this consumer group (repeatable)"),
) -> None:
    """Outbox backlog, consumer lag, open YooKassa operations, dead letters and the last janitor/scheduler ticks."""
    from infra.operator_status import status as read_status

    report = asyncio.run(read_status(_settings(), group))  # type: ignore[arg-type]
    if json_output:
        _print_json(report)
    else:
        _print_status(report)
    if report["errors"]:
        raise typer.Exit(1)


def _print_status(report: dict) -> None:
    from rich.table import Table

    console = _console()
    table = Table(title=f"billing status at {report['checked_at']}", show_lines=False)
    for column in ("what", "value", "detail"):
        table.add_column(column)
    if "outbox" in report:
        outbox = report["outbox"]
        table.add_row("outbox backlog", str(outbox["rows"]), f"oldest {_age(outbox['oldest_age_s'])}")
    for g in report.get("consumer_groups", []):
        worst = max(g["partitions"], key=lambda p: p["lag"], default=None)
        detail = "never committed" if not g["committed"] else (
            f"worst {worst['topic']}/{worst['partition']}: {worst['committed']} of {worst['end']}" if worst else "")
        table.add_row(f"lag {g['group']}", str(g["lag"]), detail)
    operations = report.get("open_operations")
    if operations is not None:
        if operations["available"]:
            kinds = ", ".join(f"{k} {v}" for k, v in sorted(operations["by_kind"].items()))
            table.add_row("open operations", str(operations["count"]),
                          f"oldest {_age(operations['oldest_age_s'])}" + (f" ({kinds})" if kinds else ""))
        else:
            table.add_row("open operations", "-", "no processor.open_operations table")
    for kind, dlq in report.get("dlq", {}).items():
        table.add_row(f"dlq {kind}", str(dlq["records"]), dlq["topic"] + ("" if dlq["exists"] else " (no topic yet)"))
    for name, tick in report.get("ticks", {}).items():
        table.add_row(f"last {name} tick", _age(tick["age_s"]) + (" ago" if tick["age_s"] is not None else ""), tick["by"] or "never")
    console.print(table)  # type: ignore[attr-defined]
    for part, error in report["errors"].items():
        console.print(f"[red]{part} unreachable:[/red] {error}")


dlq_app = typer.Typer(help="Dead-letter topics: list, show and replay records that a consumer gave up on.", no_args_is_help=True)
app.add_typer(dlq_app, name="dlq")

TopicOption = typer.Option("commands", "--topic", help="commands (billing.commands.dlq) or events (billing.events.dlq)")


def _dlq_topic(kind: str) -> str:
    from infra.operator_status import dlq_topics

    topics = dlq_topics(_settings())  # type: ignore[arg-type]
    if kind not in topics:
        raise typer.BadParameter(f"--topic must be one of {', '.join(topics)}")
    return topics[kind]


@dlq_app.command("list")
def dlq_list(
    topic: str = TopicOption,
    last: int = typer.Option(50, "--last", min=1, help="the newest N records of each partition"),
    json_output: bool = typer.Option(False, "--json", help="JSON lines for scripts"),
) -> None:
    """The newest dead letters: offset, key, when, from which topic and group, and why."""
    from rich.table import Table

    from infra.operator_status import read_dead_letters

    name = _dlq_topic(topic)
    letters = asyncio.run(read_dead_letters(_settings(), name, last=last))  # type: ignore[arg-type]
    if json_output:
        _print_json([letter.as_dict() for letter in letters])
        return
    table = Table(title=f"{name}: {len(letters)} record(s) shown")
    for column in ("partition", "offset", "key", "failed at", "from", "group", "reason"):
        table.add_column(column, overflow="fold")
    for letter in letters:
        d = letter.as_dict()
        table.add_row(str(d["partition"]), str(d["offset"]), d["key"] or "", d["failed_at"] or "", d["original_topic"] or "",
                      d["consumer_group"] or "", (d["reason"] or "")[:200])
    _console().print(table)  # type: ignore[attr-defined]


@dlq_app.command("show")
def dlq_show(
    offset: int = typer.Argument(..., help="the record's offset in the dead-letter topic"),
    topic: str = TopicOption,
    partition: int = typer.Option(0, "--partition", help="the dead-letter topic's partition"),
) -> None:
    """One dead letter as JSON: key, value, and every header (dlq_reason says why it failed)."""
    from infra.operator_status import read_dead_letters

    name = _dlq_topic(topic)
    letters = asyncio.run(read_dead_letters(_settings(), name, partition=partition, offset=offset))  # type: ignore[arg-type]
    if not letters:
        typer.echo(f"no record at {name}/{partition}/{offset}", err=True)
        raise typer.Exit(1)
    _print_json(letters[0].as_dict(full=True))


@dlq_app.command("replay")
def dlq_replay(
    offset: int = typer.Argument(None, help="the record's offset in the dead-letter topic (or --all)"),
    all_records: bool = typer.Option(False, "--all", help="replay every record of the dead-letter topic"),
    topic: str = TopicOption,
    partition: int = typer.Option(0, "--partition", help="the dead-letter topic's partition (with OFFSET)"),
    yes: bool = typer.Option(False, "--yes", "-y", help="do not ask for confirmation (scripts)"),
) -> None:
    """Publish dead letters back to their original topic (same key and headers, marked replayed_from_dlq).

    Consumers are idempotent, so a record that had in fact been handled changes nothing; the
    dead-letter topic itself is left as it is (Kafka records cannot be deleted one by one).
    """
    import sys

    from infra.operator_status import read_dead_letters, replay_dead_letters

    if (offset is None) == (not all_records) or (offset is not None and all_records):
        raise typer.BadParameter("give either OFFSET or --all")
    if not yes and not sys.stdin.isatty():
        typer.echo("refusing to replay without confirmation: no terminal to ask on; pass --yes", err=True)
        raise typer.Exit(2)
    settings = _settings()
    name = _dlq_topic(topic)
    letters = asyncio.run(read_dead_letters(settings, name, partition=None if all_records else partition, offset=offset))  # type: ignore[arg-type]
    if not letters:
        typer.echo(f"nothing to replay in {name}" + ("" if all_records else f" at {partition}/{offset}"), err=True)
        raise typer.Exit(1)
    targets = sorted({letter.header("dlq_original_topic") or "(its source topic)" for letter in letters})
    if not yes:
        typer.confirm(f"replay {len(letters)} record(s) from {name} to {', '.join(targets)}?", abort=True)
    for done in asyncio.run(replay_dead_letters(settings, letters)):  # type: ignore[arg-type]
        typer.echo(f"replayed {done['from']} -> {done['to']} (key {done['key']})")


if __name__ == "__main__":
    app()
