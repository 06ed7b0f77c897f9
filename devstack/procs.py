"""Small process helpers shared by the Kafka, PostgreSQL and service launchers (pid files, stopping)."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path


def read_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def pid_alive(pid: int | None, must_contain: str | None = None) -> bool:
    """True when `pid` runs and (optionally) its command line contains `must_contain`.

    The marker guards against a recycled pid: we never signal a stranger's process.
    """
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if must_contain is None:
        return True
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    # a zombie has an empty command line: it is not running any more
    return must_contain in cmdline


def terminate(pid: int, *, timeout: float = 30.0, group: bool = True) -> bool:
    """SIGTERM `pid` (its process group when it leads one), wait, then SIGKILL. True if it was running."""

    def send(sig: int) -> bool:
        try:
            if group and os.getpgid(pid) == pid:
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)
            return True
        except ProcessLookupError:
            return False

    if not send(signal.SIGTERM):
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _running(pid):
            return True
        time.sleep(0.1)
    send(signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _running(pid):
        time.sleep(0.05)
    return True


def _running(pid: int) -> bool:
    try:
        # reap it if it is our child, so it does not linger as a zombie
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0]
        return state != "Z"
    except (OSError, IndexError):
        return True


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
