"""Benchmarks: each module runs with `python -m bench.<name>` and ends with one JSON line of results."""

from __future__ import annotations

import os


def infra(kafka: str | None, database_url: str | None) -> tuple[str, str]:
    """(bootstrap servers, database URL): the options, else the environment, else `.stack/env`."""
    import typer

    from devstack.stack import read_env_file

    file_env = read_env_file()
    kafka = kafka or os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or file_env.get("KAFKA_BOOTSTRAP_SERVERS") or "127.0.0.1:9092"
    database_url = database_url or os.environ.get("DATABASE_URL") or file_env.get("DATABASE_URL")
    if not database_url:
        raise typer.BadParameter("no DATABASE_URL (run `make up` or set it)")
    return kafka, database_url
