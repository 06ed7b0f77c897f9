"""A tiny real HTTP server that records the webhook notifications it receives.

Tests point the YooKassa sandbox at it to see exactly what a provider would POST, and make it
answer errors on purpose to exercise the sandbox's retries.
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Delivery:
    at: float
    body: dict[str, Any]
    answered: int

    @property
    def event(self) -> str:
        return self.body.get("event", "")

    @property
    def object_id(self) -> str:
        return (self.body.get("object") or {}).get("id", "")


class WebhookReceiver:
    """`with WebhookReceiver() as receiver:` — `receiver.url`, `receiver.deliveries(...)`."""

    def __init__(self, path: str = "/webhook", port: int = 0) -> None:
        self.path = path
        self.port = port
        self._lock = threading.Lock()
        self._deliveries: list[Delivery] = []
        self._failures: dict[str, int] = defaultdict(int)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def fail_next(self, object_id: str, times: int, status: int = 500) -> None:
        """Answer `status` to the next `times` deliveries about `object_id`."""
        with self._lock:
            self._failures[object_id] = times
            self._failure_status = status

    def start(self) -> WebhookReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = {"_raw": raw.decode(errors="replace")}
                object_id = (body.get("object") or {}).get("id", "") if isinstance(body, dict) else ""
                with receiver._lock:
                    status = 200
                    if self.path != receiver.path:
                        status = 404
                    elif receiver._failures.get(object_id, 0) > 0:
                        receiver._failures[object_id] -= 1
                        status = getattr(receiver, "_failure_status", 500)
                    receiver._deliveries.append(Delivery(time.time(), body, status))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="webhook-receiver", daemon=True)
        self._thread.start()
        return self

    @property
    def url(self) -> str:
        assert self._server is not None, "receiver not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}{self.path}"

    def deliveries(self, object_id: str | None = None, event: str | None = None, answered: int | None = 200) -> list[Delivery]:
        """Deliveries received so far (by default only those answered 200), oldest first."""
        with self._lock:
            items = list(self._deliveries)
        return [
            d
            for d in items
            if (object_id is None or d.object_id == object_id)
            and (event is None or d.event == event)
            and (answered is None or d.answered == answered)
        ]

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> WebhookReceiver:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
