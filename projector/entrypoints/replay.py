"""`billing replay` / `python -m projector.entrypoints.replay`: rebuild, check or time-travel the read models.

Thin CLI over `projector.adapters.rebuild`: parses options, shows a progress bar (events/s, ETA), prints a
summary table and, for `--check`, every difference. Exit codes: 0 ok, 1 differences found,
2 the replay could not run as asked.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import orjson
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from infra.logging import configure_logging
from infra.settings import Settings
from projector.adapters.rebuild import Replay, ReplayError, ReplayOptions, ReplayReport, parse_until
from projector.domain.projections import TABLE_NAMES

app = typer.Typer(add_completion=False, help=__doc__.splitlines()[0])


class EventsPerSecond(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} ev/s" if speed else "- ev/s", style="progress.data.speed")


def _summary(report: ReplayReport) -> Table:
    table = Table(title=f"replay #{report.run_id} ({report.mode}) → {report.schema}", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("read models", ", ".join(report.tables))
    table.add_row("head position", f"{report.head_position:,}")
    table.add_row("events replayed", f"{report.events:,}")
    table.add_row("workers", str(report.workers))
    for phase, seconds in report.timings.items():
        table.add_row(f"{phase} s", f"{seconds:.2f}")
    table.add_row("replay events/s", f"{report.events_per_s:,.0f}")
    if report.duplicates or report.gap_filled:
        table.add_row("duplicates / gap-filled", f"{report.duplicates} / {report.gap_filled}")
    if report.mode != "until":
        table.add_row("caught up at the end", f"{report.caught_up_events:,} events, {report.reconciled_streams} streams")
    for name, count in report.rows.items():
        table.add_row(f"rows {name}", f"{count:,}")
    return table


def _differences_table(report: ReplayReport) -> Table:
    table = Table(title=f"{len(report.differences)} difference(s) between read.* and the rebuild")
    for column in ("table", "key", "column", "live", "rebuilt"):
        table.add_column(column, overflow="fold")
    for d in report.differences:
        table.add_row(d.table, d.key, d.column, repr(d.live), repr(d.rebuilt))
    return table


def _json_default(value: Any) -> Any:
    return str(value)


@app.command()
def replay(
    tables: list[str] = typer.Argument(
        None, help=f"read models to rebuild (default: all): {', '.join(TABLE_NAMES)}", show_default=False
    ),
    check: bool = typer.Option(False, "--check", help="rebuild into scratch tables and report every difference with the live ones"),
    until: str = typer.Option(None, "--until", metavar="POSITION|TIMESTAMP", help="build the read models as they were at this log position or time (recorded_at)"),
    into: str = typer.Option(None, "--into", metavar="SCHEMA", help="a NEW schema for the --until copy (an existing one or one of the product's own is refused, never dropped)"),
    page_size: int = typer.Option(20_000, min=100, help="events read per page"),
    workers: int = typer.Option(0, min=0, help="processes projecting ranges of streams in parallel (0: one per two CPUs, at most 4; 1 for small logs)"),
    keep: bool = typer.Option(False, "--keep", help="keep the scratch/rebuild schema (and the replaced tables) for inspection"),
    json_output: bool = typer.Option(False, "--json", help="print the report (and differences) as JSON instead of tables"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bar"),
) -> None:
    """Rebuild read models from the event store and swap them in atomically (or --check, or --until)."""
    configure_logging("replay", json=True, level="WARNING")
    console = Console(stderr=json_output)
    try:
        mode = "check" if check else ("until" if until else "swap")
        if check and until:
            raise ReplayError("--check and --until cannot be combined")
        if into and not until:
            raise ReplayError("--into is only for --until")
        until_position, until_time = parse_until(until) if until else (None, None)
        options = ReplayOptions(
            mode=mode, tables=tables or (), until_position=until_position, until_time=until_time, into=into,
            page_size=page_size, workers=workers or None, keep=keep,
        )
        runner = Replay(Settings(), options)
    except ReplayError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc

    progress = Progress(
        TextColumn("[bold]replay"), BarColumn(), MofNCompleteColumn(), EventsPerSecond(),
        TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
        console=console, disable=quiet, transient=False,
    )
    with progress:
        task_id = progress.add_task("replay", total=None)

        def on_progress(done: int, total: int) -> None:
            progress.update(task_id, completed=done, total=total)

        try:
            report = asyncio.run(runner.run(on_progress))
        except ReplayError as exc:
            progress.stop()
            console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(2) from exc

    if json_output:
        body = {
            "run_id": report.run_id, "mode": report.mode, "schema": report.schema, "tables": report.tables,
            "head_position": report.head_position, "events": report.events,
            "workers": report.workers,
            "timings": report.timings, "replay_events_per_s": round(report.events_per_s),
            "rows": report.rows, "caught_up_events": report.caught_up_events,
            "differences": [d.as_dict() for d in report.differences],
        }
        sys.stdout.write(orjson.dumps(body, default=_json_default).decode() + "\n")
    else:
        console.print(_summary(report))
        if report.mode == "check":
            if report.differences:
                console.print(_differences_table(report))
            console.print(f"{len(report.differences)} difference(s)")
        elif report.mode == "swap":
            console.print(f"swapped in: {', '.join(report.tables)}")
        else:
            console.print(f"read models as of {until} are in schema {report.schema}")
    if report.differences:
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
