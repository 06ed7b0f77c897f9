"""`python -m devstack ...`: the command line behind the Makefile targets."""

from __future__ import annotations

import json
import shlex

import typer

from devstack import kafka as kafka_mod
from devstack import paths, pg as pg_mod, stack

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Local Kafka, PostgreSQL and services.")
kafka_app = typer.Typer(no_args_is_help=True, help="The local Kafka broker (KRaft, one node).")
pg_app = typer.Typer(no_args_is_help=True, help="The project-local PostgreSQL (when DATABASE_URL is unset).")
app.add_typer(kafka_app, name="kafka")
app.add_typer(pg_app, name="pg")


def _fail(exc: Exception) -> None:
    typer.secho(str(exc), fg="red", err=True)
    raise typer.Exit(1)


@kafka_app.command("fetch")
def kafka_fetch() -> None:
    """Download the broker's jars with Maven (nothing happens when pom.xml did not change)."""
    if not kafka_mod.jars_current():
        typer.echo(f"fetching the Kafka broker's jars with Maven into {paths.KAFKA_LIBS} (once per pom.xml change)")
    try:
        fetched = kafka_mod.fetch_jars(quiet=True)
    except kafka_mod.KafkaError as exc:
        _fail(exc)
    count, size = kafka_mod.jar_summary()
    typer.echo(f"{'fetched' if fetched else 'up to date'}: {count} jars, {size / 2**20:.1f} MiB in {paths.KAFKA_LIBS}")


@kafka_app.command("start")
def kafka_start(timeout: float = 180.0) -> None:
    """Start the broker in the background and wait until a metadata request succeeds."""
    try:
        info = kafka_mod.start(timeout=timeout)
    except kafka_mod.KafkaError as exc:
        _fail(exc)
    _write_env_keep_db(info["bootstrap"])
    typer.echo(json.dumps(info))


@kafka_app.command("stop")
def kafka_stop() -> None:
    """SIGTERM the broker (SIGKILL after a timeout); its data stays on disk."""
    typer.echo("stopped" if kafka_mod.stop() else "not running")


@kafka_app.command("prune")
def kafka_prune(idle: float = typer.Option(3600.0, help="seconds without a write before a scratch topic goes")) -> None:
    """Delete the random-tagged topics tests and benchmarks left on the local broker (others stay)."""
    deleted = kafka_mod.prune_scratch_topics(kafka_mod.KafkaNode.from_env(), idle_s=idle)
    typer.echo(f"deleted {deleted} scratch topics")


@kafka_app.command("status")
def kafka_status() -> None:
    info = kafka_mod.status()
    typer.echo(json.dumps(info))
    raise typer.Exit(0 if info["ready"] else 1)


@pg_app.command("start")
def pg_start() -> None:
    """Start the project-local PostgreSQL on 127.0.0.1:PG_PORT and create the database."""
    try:
        info = pg_mod.start()
    except pg_mod.PostgresError as exc:
        _fail(exc)
    env = stack.read_env_file()
    stack.write_env(info["url"], env.get("KAFKA_BOOTSTRAP_SERVERS", kafka_mod.KafkaNode.from_env().bootstrap))
    typer.echo(json.dumps(info))


@pg_app.command("stop")
def pg_stop() -> None:
    typer.echo("stopped" if pg_mod.stop() else "not running")


@pg_app.command("status")
def pg_status() -> None:
    info = pg_mod.status()
    typer.echo(json.dumps(info))
    raise typer.Exit(0 if info["pid"] else 1)


def _write_env_keep_db(bootstrap: str) -> None:
    import os

    env = stack.read_env_file()
    db = os.environ.get("DATABASE_URL") or env.get("DATABASE_URL") or pg_mod.PgNode.from_env().url()
    stack.write_env(db, bootstrap)


@app.command()
def up(timeout: float = 60.0) -> None:
    """Start Kafka, PostgreSQL and every service in the background; return once all are healthy."""
    try:
        stack.up(timeout=timeout, echo=typer.echo)
    except (stack.StackError, kafka_mod.KafkaError, pg_mod.PostgresError) as exc:
        _fail(exc)
    typer.echo(f"env: {paths.ENV_FILE}  (set -a; . {paths.ENV_FILE}; set +a)")


@app.command()
def down() -> None:
    """Stop the background services, Kafka and PostgreSQL."""
    stack.down(echo=typer.echo)


@app.command()
def run() -> None:
    """Run the whole stack in the foreground; Ctrl-C stops it."""
    try:
        code = stack.run(echo=typer.echo)
    except (stack.StackError, kafka_mod.KafkaError, pg_mod.PostgresError) as exc:
        _fail(exc)
    raise typer.Exit(code)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def test(ctx: typer.Context) -> None:
    """Run pytest against real Kafka and PostgreSQL (started here when not running); extra args go to pytest."""
    try:
        code = stack.test(list(ctx.args), echo=typer.echo)
    except (kafka_mod.KafkaError, pg_mod.PostgresError) as exc:
        _fail(exc)
    raise typer.Exit(code)


@app.command()
def env() -> None:
    """Print `export` lines for the running stack: eval "$(python -m devstack env)"."""
    for key, value in stack.read_env_file().items():
        typer.echo(f"export {key}={shlex.quote(value)}")


@app.command()
def services() -> None:
    """List the registered services and whether their module exists yet."""
    from devstack.services import SERVICES

    for svc in SERVICES:
        typer.echo(f"{svc.name:<17}{'yes' if svc.available() else 'no ':<4}{svc.listen:<32}python -m {svc.module}")
