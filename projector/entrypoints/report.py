"""`billing report` / `python -m projector.entrypoints.report`: the revenue report by month and plan.

Reads the projector's `read.revenue` (one GROUP BY over its monthly deltas) and computes the report
with the same pure arithmetic as the admin's Revenue page (rules/revenue.py, decision 0124).
`--csv` prints CSV for a spreadsheet; without it, a table. Exit code 2 for a bad option.
"""

from __future__ import annotations

import asyncio
import re
import sys

import asyncpg
import typer
from rich.console import Console
from rich.table import Table

from infra.settings import Settings, plain_url
from rules import revenue

app = typer.Typer(add_completion=False, help=__doc__.splitlines()[0])
MONTH = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")


async def month_totals(settings: Settings, schema: str = "read") -> list[revenue.MonthTotals]:
    conn = await asyncpg.connect(plain_url(settings.database_url), timeout=10)
    try:
        rows = await conn.fetch(revenue.SUM_SQL.format(schema=schema), timeout=60)
        return [revenue.MonthTotals(**dict(r)) for r in rows]
    finally:
        await conn.close()


def _month(value: str | None, name: str) -> str | None:
    if value is not None and not MONTH.match(value):
        typer.echo(f"{name} {value!r} is not a month (YYYY-MM)", err=True)
        raise typer.Exit(2)
    return value


@app.command()
def report(
    csv: bool = typer.Option(False, "--csv", help="print CSV instead of a table"),
    plan: str | None = typer.Option(None, "--plan", help="one plan id (default: every plan, and * for all plans)"),
    month_from: str | None = typer.Option(None, "--from", help="first month, YYYY-MM"),
    month_to: str | None = typer.Option(None, "--to", help="last month, YYYY-MM"),
) -> None:
    """The revenue report: MRR, active subscribers, new / churned / renewed, refunds, renewal recovery."""
    lines = revenue.report(
        asyncio.run(month_totals(Settings())), plan_id=plan, month_from=_month(month_from, "--from"), month_to=_month(month_to, "--to")
    )
    if csv:
        sys.stdout.write(revenue.csv_text(lines))
        return
    table = Table(title="Revenue by month and plan (UTC months, month-end MRR)")
    for column in revenue.CSV_COLUMNS:
        table.add_column(column, justify="left" if column in ("month", "plan_id", "currency") else "right")
    for row in revenue.csv_text(lines).splitlines()[1:]:
        table.add_row(*row.split(","))
    Console().print(table)


if __name__ == "__main__":
    app()
