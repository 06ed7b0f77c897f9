"""Webhook notifications: an outbox in SQLite and a worker that delivers it.

A state change and its notification are written in the same transaction, so a notification is
never lost and never sent for a change that rolled back; pending deliveries survive a restart.
Like YooKassa, the worker repeats a delivery until the receiver answers HTTP 200 (on the
configured back-off schedule, for at most `webhook_max_age_s`). Notification faults (duplicate,
delay, reorder) are decided when the notification is queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from typing import Any

import httpx
import orjson

from ..common.db import Database
from ..common.faults import FaultBook
from .settings import RuntimeConfig

NOTIFICATION_MODES = {"duplicate", "delay", "reorder"}
# Gap between releases of a reordered window, so that even a concurrent worker sends them in order.
REORDER_GAP_S = 0.05


class Notifications:
    def __init__(
        self,
        db: Database,
        config: RuntimeConfig,
        faults: FaultBook,
        *,
        timeout_s: float,
        max_age_s: float,
        concurrency: int,
        log: Any,
    ) -> None:
        self.db = db
        self.config = config
        self.faults = faults
        self.timeout_s = timeout_s
        self.max_age_s = max_age_s
        self.concurrency = max(1, concurrency)
        self.log = log
        self._wake = asyncio.Event()
        self._in_flight: set[int] = set()
        self._windows: dict[str, float] = {}
        self._task: asyncio.Task | None = None
        self._client: httpx.AsyncClient | None = None
        self._sem = asyncio.Semaphore(self.concurrency)
        self._tasks: set[asyncio.Task] = set()

    # -- queueing (called inside the caller's transaction) --------------------------------------

    def enqueue(self, event: str, obj: Mapping[str, Any], metadata: Mapping[str, Any]) -> None:
        """Queue `{type: notification, event, object}` for the current webhook URL."""
        now = time.time()
        url = self.config.webhook_url
        body = orjson.dumps({"type": "notification", "event": event, "object": obj}).decode()
        if not url:
            self.db.execute(
                "INSERT INTO notifications (event, object_id, body, url, status, due_at, created_ts)"
                " VALUES (?, ?, ?, '', 'no_target', ?, ?)",
                (event, obj["id"], body, now, now),
            )
            return
        fired = self.faults.pick(f"NOTIFY {event}", lambda: metadata, only=NOTIFICATION_MODES)
        copies, due, ordered = 1, now, False
        for rule in fired:
            if rule.mode == "duplicate":
                copies = max(copies, rule.times)
            elif rule.mode == "delay":
                due = max(due, now + rule.latency_ms / 1000)
            elif rule.mode == "reorder":
                end = self._windows.get(rule.id, 0.0)
                if end <= now:
                    end = now + rule.window_ms / 1000
                    self._windows[rule.id] = end
                due = max(due, end)
                ordered = True
        # Delivery order is (due_at, sort_key, seq): creation order normally, newest first inside a
        # reorder window (a later notification gets a smaller sort_key).
        sort_key = -int(now * 1_000_000) if ordered else 0
        for _ in range(copies):
            self.db.execute(
                "INSERT INTO notifications (event, object_id, body, url, status, due_at, ordered, sort_key,"
                " created_ts) VALUES (?, ?, ?, ?, 'pending', ?, ?, ?, ?)",
                (event, obj["id"], body, url, due, 1 if ordered else 0, sort_key, now),
            )
        self._wake.set()

    def replay(self, object_id: str, event: str | None = None, *, times: int = 1, delay_ms: int = 0) -> int:
        """Queue again, `times` times after `delay_ms`, the last recorded notification of each event of
        `object_id` (or only `event`), with the body it had then: a late and repeated notification,
        as YooKassa sends when it never saw our 200 — the state it shows may be old by now.

        Returns how many deliveries were queued (0: nothing was ever recorded for it).
        """
        url = self.config.webhook_url
        if not url or times < 1:
            return 0
        clauses, params = ["object_id = ?"], [object_id]
        if event:
            clauses.append("event = ?")
            params.append(event)
        rows = self.db.all(
            f"SELECT event, body, MAX(seq) AS seq FROM notifications WHERE {' AND '.join(clauses)} GROUP BY event",
            tuple(params),
        )
        now = time.time()
        for row in rows:
            for _ in range(times):
                self.db.execute(
                    "INSERT INTO notifications (event, object_id, body, url, status, due_at, created_ts)"
                    " VALUES (?, ?, ?, ?, 'pending', ?, ?)",
                    (row["event"], object_id, row["body"], url, now + delay_ms / 1000, now),
                )
        if rows:
            self._wake.set()
        return len(rows) * times

    # -- delivery -------------------------------------------------------------------------------

    def start(self) -> None:
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(self.timeout_s), trust_env=False)
        self._task = asyncio.create_task(self._run(), name="yookassa-notifications")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._client:
            await self._client.aclose()

    async def _run(self) -> None:
        while True:
            try:
                next_due = self._dispatch_due()
            except Exception:  # never let the worker die; log and carry on
                self.log.exception("notification_dispatch_failed")
                next_due = time.time() + 1
            timeout = max(0.01, min(1.0, next_due - time.time())) if next_due else 1.0
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    def _dispatch_due(self) -> float | None:
        now = time.time()
        rows = self.db.all(
            "SELECT seq, event, object_id, body, url, attempts, ordered, created_ts FROM notifications"
            " WHERE status = 'pending' AND due_at <= ? ORDER BY due_at, sort_key, seq LIMIT 500",
            (now,),
        )
        ordered_batch = []
        for row in rows:
            if row["seq"] in self._in_flight:
                continue
            self._in_flight.add(row["seq"])
            if row["ordered"]:
                ordered_batch.append(row)
            else:
                self._spawn(self._deliver_one(row))
        if ordered_batch:
            self._spawn(self._deliver_in_order(ordered_batch))
        nxt = self.db.one(
            "SELECT MIN(due_at) AS due FROM notifications WHERE status = 'pending' AND due_at > ?", (now,)
        )
        return nxt["due"] if nxt and nxt["due"] is not None else None

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            self.log.error("notification_delivery_crashed", error=repr(exc))
            self._wake.set()

    async def _deliver_in_order(self, rows: list) -> None:
        for row in rows:
            await self._deliver_one(row)
            await asyncio.sleep(REORDER_GAP_S)

    async def _deliver_one(self, row: Any) -> None:
        seq = row["seq"]
        try:
            async with self._sem:
                status, error = await self._post(row["url"], row["body"])
            now = time.time()
            attempts = row["attempts"] + 1
            if status == 200:
                self.db.execute(
                    "UPDATE notifications SET status='delivered', attempts=?, last_status=?, last_error=NULL,"
                    " delivered_ts=? WHERE seq=?",
                    (attempts, status, now, seq),
                )
                return
            schedule = self.config.webhook_retry_s
            delay = schedule[min(attempts - 1, len(schedule) - 1)]
            if now + delay - row["created_ts"] > self.max_age_s:
                new_status, due = "abandoned", now
            else:
                new_status, due = "pending", now + delay
            self.db.execute(
                "UPDATE notifications SET status=?, attempts=?, last_status=?, last_error=?, due_at=?,"
                " ordered=0 WHERE seq=?",
                (new_status, attempts, status, error, due, seq),
            )
            self.log.info(
                "notification_retry_scheduled",
                seq=seq,
                notification_event=row["event"],
                object_id=row["object_id"],
                attempt=attempts,
                http_status=status,
                error=error,
                next_in_s=delay,
                outcome=new_status,
            )
            self._wake.set()
        finally:
            self._in_flight.discard(seq)

    async def _post(self, url: str, body: str) -> tuple[int | None, str | None]:
        assert self._client is not None
        try:
            response = await self._client.post(
                url, content=body.encode(), headers={"Content-Type": "application/json"}
            )
        except httpx.HTTPError as exc:
            return None, f"{type(exc).__name__}: {exc}"[:500]
        if response.status_code == 200:
            return 200, None
        return response.status_code, response.text[:200]

    # -- inspection -----------------------------------------------------------------------------

    def list(self, object_id: str | None = None, event: str | None = None, limit: int = 1000) -> list[dict]:
        clauses, params = [], []
        if object_id:
            clauses.append("object_id = ?")
            params.append(object_id)
        if event:
            clauses.append("event = ?")
            params.append(event)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self.db.all(
            f"SELECT * FROM notifications {where} ORDER BY seq DESC LIMIT ?", (*params, limit)
        )
        return [
            {
                "seq": r["seq"],
                "event": r["event"],
                "object_id": r["object_id"],
                "url": r["url"],
                "status": r["status"],
                "attempts": r["attempts"],
                "last_status": r["last_status"],
                "last_error": r["last_error"],
                "created_ts": r["created_ts"],
                "delivered_ts": r["delivered_ts"],
                "due_at": r["due_at"],
                "body": orjson.loads(r["body"]),
            }
            for r in rows
        ]
