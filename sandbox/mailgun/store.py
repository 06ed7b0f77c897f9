"""Every accepted message, as Mailgun received it, in SQLite.

Each POST is stored as its own row even when its Message-Id repeats: tests count duplicates.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from ..common.db import Database
from ..common.timeutil import iso

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id TEXT NOT NULL,
    domain TEXT NOT NULL,
    sender TEXT NOT NULL,
    subject TEXT NOT NULL,
    text TEXT,
    html TEXT,
    recipients TEXT NOT NULL,
    tags TEXT NOT NULL,
    variables TEXT NOT NULL,
    headers TEXT NOT NULL,
    options TEXT NOT NULL,
    attachments TEXT NOT NULL,
    fields TEXT NOT NULL,
    received_ts REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_message_id ON messages(message_id);
CREATE TABLE IF NOT EXISTS message_recipients (
    message_seq INTEGER NOT NULL REFERENCES messages(seq) ON DELETE CASCADE,
    address TEXT NOT NULL,
    kind TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS message_recipients_address ON message_recipients(address);
"""


class MessageStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def add(self, message: dict[str, Any]) -> int:
        """Store one accepted message; returns its storage sequence number."""
        with self.db.transaction():
            cur = self.db.execute(
                "INSERT INTO messages (message_id, domain, sender, subject, text, html, recipients, tags,"
                " variables, headers, options, attachments, fields, received_ts)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    message["id"],
                    message["domain"],
                    message["from"],
                    message["subject"],
                    message.get("text"),
                    message.get("html"),
                    orjson.dumps({k: message[k] for k in ("to", "cc", "bcc")}).decode(),
                    orjson.dumps(message["tags"]).decode(),
                    orjson.dumps(message["variables"]).decode(),
                    orjson.dumps(message["headers"]).decode(),
                    orjson.dumps(message["options"]).decode(),
                    orjson.dumps(message["attachments"]).decode(),
                    orjson.dumps(message["fields"]).decode(),
                    time.time(),
                ),
            )
            seq = cur.lastrowid
            for kind in ("to", "cc", "bcc"):
                for address in message[kind]:
                    self.db.execute(
                        "INSERT INTO message_recipients (message_seq, address, kind) VALUES (?, ?, ?)",
                        (seq, address.lower(), kind),
                    )
        return seq

    def list(
        self,
        to: str | None = None,
        tag: str | None = None,
        message_id: str | None = None,
        subject: str | None = None,
        after_seq: int = 0,
        limit: int = 1000,
        newest_first: bool = False,
    ) -> list[dict[str, Any]]:
        clauses, args = ["seq > ?"], [after_seq]
        if to:
            clauses.append("seq IN (SELECT message_seq FROM message_recipients WHERE address = ?)")
            args.append(to.strip().lower())
        if tag:
            clauses.append("EXISTS (SELECT 1 FROM json_each(messages.tags) WHERE value = ?)")
            args.append(tag)
        if message_id:
            clauses.append("message_id = ?")
            args.append(normalise_message_id(message_id))
        if subject:
            clauses.append("subject LIKE ?")
            args.append(f"%{subject}%")
        order = "DESC" if newest_first else "ASC"
        rows = self.db.all(
            f"SELECT * FROM messages WHERE {' AND '.join(clauses)} ORDER BY seq {order} LIMIT ?", (*args, limit)
        )
        return [self._view(r) for r in rows]

    def get(self, seq: int) -> dict[str, Any] | None:
        row = self.db.one("SELECT * FROM messages WHERE seq = ?", (seq,))
        return self._view(row) if row else None

    def stats(self, to: str | None = None) -> dict[str, Any]:
        where, args = "", []
        if to:
            where = "WHERE seq IN (SELECT message_seq FROM message_recipients WHERE address = ?)"
            args.append(to.strip().lower())
        rows = self.db.all(f"SELECT message_id, COUNT(*) AS n FROM messages {where} GROUP BY message_id", args)
        counts = {r["message_id"]: r["n"] for r in rows}
        return {
            "messages": sum(counts.values()),
            "distinct_message_ids": len(counts),
            "duplicates": {k: n for k, n in counts.items() if n > 1},
        }

    def reset(self) -> None:
        with self.db.transaction():
            self.db.execute("DELETE FROM message_recipients")
            self.db.execute("DELETE FROM messages")

    @staticmethod
    def _view(row: Any) -> dict[str, Any]:
        recipients = orjson.loads(row["recipients"])
        return {
            "storage_id": row["seq"],
            "id": row["message_id"],
            "message_id": row["message_id"],
            "domain": row["domain"],
            "from": row["sender"],
            "to": recipients["to"],
            "cc": recipients["cc"],
            "bcc": recipients["bcc"],
            "subject": row["subject"],
            "text": row["text"],
            "html": row["html"],
            "tags": orjson.loads(row["tags"]),
            "variables": orjson.loads(row["variables"]),
            "headers": orjson.loads(row["headers"]),
            "options": orjson.loads(row["options"]),
            "attachments": orjson.loads(row["attachments"]),
            "fields": orjson.loads(row["fields"]),
            "received_at": iso(row["received_ts"]),
        }


def normalise_message_id(value: str) -> str:
    """Message-Ids are compared with their angle brackets: `<abc@host>`."""
    value = value.strip()
    if not value.startswith("<"):
        value = f"<{value}>"
    return value
