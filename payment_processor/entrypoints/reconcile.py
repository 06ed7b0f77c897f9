"""Where reconciliation runs: daily inside the processor (`DailyReconciliation`), and on demand as
`billing reconcile --from … --to …` (this module's Typer `app`, mounted by `billing_cli.py`).

The daily run reconciles the previous UTC day `PROCESSOR_RECONCILE_AFTER_S` after midnight, in
wall-clock time like YooKassa's `created_at` (a shifted business clock does not move YooKassa).
Every processor instance ticks; the run's row claims the window (a unique index), so one of them
runs it. A failed run frees the window for the next tick.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import typer

from infra.logging import get_logger
from payment_processor.adapters import reconciliation as store
from payment_processor.reconciler import Reconciler

log = get_logger(__name__)


class DailyReconciliation:
    """Reconciles yesterday (UTC) once, `after` past midnight; ticks until stopped."""

    name = "reconciliation"

    def __init__(self, reconciler: Reconciler, *, after: timedelta, tick_s: float) -> None:
        self.reconciler = reconciler
        self.after = after
        self.tick_s = tick_s
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def tick(self, now: datetime | None = None) -> bool:
        """Run yesterday's reconciliation if it is due and not done; True when it ran."""
        now = now or datetime.now(UTC)
        today = now.replace(hour=0, minute=0, second=0, microsecond=0)
        if now < today + self.after:
            return False
        async with self.reconciler.db.acquire() as conn:
            done_until = await store.last_scheduled_end(conn)
        if done_until is not None and done_until >= today:
            return False
        return await self.reconciler.run(today - timedelta(days=1), today, trigger="schedule") is not None

    async def run(self) -> None:
        while not self._stop.is_set():
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a failed run is recorded; the next tick tries again
                log.warning("reconciliation_tick_failed", error=repr(exc))
            try:
                await asyncio.wait_for(self._stop.wait(), self.tick_s)
            except TimeoutError:
                pass


# ------------------------------------------------------------------------------------ the CLI

app = typer.Typer(help="Compare YooKassa's payments and refunds with ours and record what was missed.")


def _when(value: str | None, default: datetime) -> datetime:
    if not value:
        return default
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not an ISO date or time (e.g. 2026-12-05 or 2026-12-05T10:00:00Z)") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@app.command("reconcile")
def reconcile(
    since: str = typer.Option(None, "--from", help="window start, ISO date or time (UTC); default: yesterday 00:00"),
    until: str = typer.Option(None, "--to", help="window end (exclusive); default: today 00:00 UTC"),
    json_output: bool = typer.Option(False, "--json", help="the run and its differences as JSON"),
) -> None:
    """Reconcile [--from, --to) with YooKassa: list every difference, record the facts (dashboard refunds, missed payments)."""
    from infra.logging import configure_logging
    from payment_processor.bootstrap import reconcile_once
    from payment_processor.config import ProcessorServiceSettings, ProcessorSettings

    configure_logging("billing-reconcile")  # logs to stderr: stdout is the report

    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    start, end = _when(since, today - timedelta(days=1)), _when(until, today)
    if end <= start:
        raise typer.BadParameter("--to must be after --from")
    summary = asyncio.run(reconcile_once(ProcessorServiceSettings(), ProcessorSettings(), start, end))
    if json_output:
        import orjson

        typer.echo(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode())
    else:
        _print(summary)
    if not summary["run"] or summary["run"]["status"] != "done":
        raise typer.Exit(1)


def _print(summary: dict) -> None:
    run = summary["run"]
    typer.echo(
        f"run {run['run_id']} {run['status']}: {run['window_start']} .. {run['window_end']}; YooKassa {run['payments_seen']} payments, "
        f"{run['refunds_seen']} refunds; {run['differences']} differences, {run['recorded']} recorded"
    )
    for d in summary["differences"]:
        amounts = f"{_minor(d['our_amount_minor'])} / {_minor(d['provider_amount_minor'])} {d['currency'] or ''}".strip()
        typer.echo(
            f"  [{d['status']:8}] {d['kind']:19} {d['object_type']:7} {d['provider_id']}  ours {d['our_status'] or '-'} / "
            f"YooKassa {d['provider_status'] or '-'}  {amounts}"
        )
        typer.echo(f"             {d['detail']}")


def _minor(value: int | None) -> str:
    return "-" if value is None else f"{value / 100:.2f}"
