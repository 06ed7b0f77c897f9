"""Real processes for tests: start, wait until ready, kill -9, terminate, restart.

Every test that runs a part of the product as a real process (the sandboxes, the services in
end-to-end tests) goes through `ManagedProcess`, so that each one logs to its own file under
`test-output/logs/`, readiness is polled with a deadline instead of slept for, and a crash
before readiness fails the test with the tail of the log instead of a bare timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
LOG_DIR = ROOT / "test-output" / "logs"

ReadyCheck = Callable[[], bool | Awaitable[bool]]


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the test process dies, even by SIGKILL (Linux only).

    Only used when started from the main thread: the kernel ties this to the starting thread.
    """
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, 0))
        return sock.getsockname()[1]


class ProcessNotReady(AssertionError):
    """The process exited or did not become ready in time (the message holds its log's tail)."""


class ManagedProcess:
    """One child process with env overrides, a log file and a readiness check.

    `command` is an argv list, or a module name run as `[sys.executable, "-m", module]`.
    Readiness is `ready_url` answering HTTP 200, or `ready_check()` (sync or async) returning
    true; with neither, the process is ready once started.
    """

    def __init__(
        self,
        name: str,
        command: Sequence[str] | str,
        *,
        env: Mapping[str, str] | None = None,
        ready_url: str | None = None,
        ready_check: ReadyCheck | None = None,
        ready_timeout: float = 30.0,
        cwd: str | Path = ROOT,
        log_dir: str | Path = LOG_DIR,
        inherit_env: bool = True,
    ) -> None:
        self.name = name
        self.argv = [sys.executable, "-m", command] if isinstance(command, str) else list(command)
        self.env = dict(env or {})
        self.ready_url = ready_url
        self.ready_check = ready_check
        self.ready_timeout = ready_timeout
        self.cwd = Path(cwd)
        self.inherit_env = inherit_env
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", name)
        Path(log_dir).mkdir(parents=True, exist_ok=True)
        self.log_path = Path(log_dir) / f"{safe}-{os.getpid()}-{int(time.time() * 1000)}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> ManagedProcess:
        """Start the process (not waiting for readiness); a running one is left alone."""
        if self.running:
            return self
        env = {**os.environ, **self.env} if self.inherit_env else dict(self.env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== start #{self.starts}: {' '.join(self.argv)}\n".encode())
            log.flush()
            # A new session: signals go to the whole group, so children of the child die too.
            self.proc = subprocess.Popen(
                self.argv,
                cwd=self.cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent if threading.current_thread() is threading.main_thread() else None,
            )
        return self

    def start_and_wait(self, timeout: float | None = None) -> ManagedProcess:
        """Start, then block until ready (for synchronous fixtures)."""
        self.start()
        self.wait_ready_sync(timeout)
        return self

    async def astart(self, timeout: float | None = None) -> ManagedProcess:
        """Start, then wait until ready without blocking the event loop."""
        self.start()
        await self.wait_ready(timeout)
        return self

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.proc.poll() if self.proc else None

    def _signal(self, sig: int) -> None:
        if not self.running:
            return
        assert self.proc is not None
        try:
            os.killpg(self.proc.pid, sig)  # the group we created for this child, by its id
        except ProcessLookupError:
            pass

    def kill(self, timeout: float = 10.0) -> int | None:
        """SIGKILL (no chance to clean up), then reap it. Returns the exit code."""
        if self.proc is None:
            return None
        self._signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout)
        return self.proc.poll()

    def terminate(self, timeout: float = 10.0) -> int | None:
        """SIGTERM and wait for a clean exit; SIGKILL if it does not exit within `timeout`."""
        if self.proc is None:
            return None
        self._signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._log_line(f"did not exit {timeout}s after SIGTERM: SIGKILL")
            return self.kill()
        return self.proc.poll()

    def restart(self, *, hard: bool = False, timeout: float | None = None) -> ManagedProcess:
        """Stop (SIGKILL when `hard`, else SIGTERM), start again and wait until ready."""
        if hard:
            self.kill()
        else:
            self.terminate()
        return self.start_and_wait(timeout)

    async def arestart(self, *, hard: bool = False, timeout: float | None = None) -> ManagedProcess:
        await asyncio.to_thread(self.kill if hard else self.terminate)
        return await self.astart(timeout)

    # ------------------------------------------------------------------ readiness

    async def _probe(self, client: httpx.AsyncClient) -> bool:
        if self.ready_url:
            try:
                response = await client.get(self.ready_url)
            except httpx.HTTPError:
                return False
            if response.status_code != 200:
                return False
        if self.ready_check:
            result = self.ready_check()
            if inspect.isawaitable(result):
                result = await result
            return bool(result)
        return True

    async def wait_ready(self, timeout: float | None = None, interval: float = 0.05) -> None:
        """Poll readiness until true; ProcessNotReady if the process dies or time runs out."""
        timeout = self.ready_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=2.0, trust_env=False) as client:
            while True:
                if not self.running:
                    raise ProcessNotReady(
                        f"{self.name} exited with code {self.returncode} before it was ready;"
                        f" log {self.log_path}:\n{self.tail()}"
                    )
                if await self._probe(client):
                    return
                if time.monotonic() >= deadline:
                    raise ProcessNotReady(
                        f"{self.name} not ready within {timeout}s (url={self.ready_url});"
                        f" log {self.log_path}:\n{self.tail()}"
                    )
                await asyncio.sleep(interval)

    def wait_ready_sync(self, timeout: float | None = None) -> None:
        """`wait_ready` for synchronous code (must not be called from a running event loop)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            asyncio.run(self.wait_ready(timeout))
            return
        # Inside a running loop (a sync fixture called from async code): run it on a side thread.
        import concurrent.futures

        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, self.wait_ready(timeout)).result()

    # ------------------------------------------------------------------ logs

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def _log_line(self, text: str) -> None:
        with open(self.log_path, "a") as log:
            log.write(f"===== {text}\n")

    # ------------------------------------------------------------------ context managers

    def __enter__(self) -> ManagedProcess:
        return self.start_and_wait()

    def __exit__(self, *exc: Any) -> None:
        self.terminate()

    async def __aenter__(self) -> ManagedProcess:
        return await self.astart()

    async def __aexit__(self, *exc: Any) -> None:
        await asyncio.to_thread(self.terminate)

    def __repr__(self) -> str:
        state = f"pid={self.pid}" if self.running else f"exited={self.returncode}"
        return f"<ManagedProcess {self.name} {state} log={self.log_path}>"
