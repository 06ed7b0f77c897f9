"""The YooKassa emulator's state and rules: payments, refunds, saved cards, expiry.

Everything here is synchronous and runs on the event loop between two `await`s, so each public
method is atomic with respect to other requests (see `sandbox.common.db`). Every state change and
its notification are written in one SQLite transaction.

The stored `obj` column is the payment or refund exactly as the API returns it; the other columns
are what the emulator needs to decide (deadlines, the idempotence key that created it, ...).
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import orjson

from ..common.db import Database, metadata_path
from ..common.timeutil import iso, parse_iso
from . import cards
from .errors import ApiError, invalid_request, not_found
from .notifications import Notifications
from .settings import RuntimeConfig
from .validation import (
    CENT,
    MAX_REFUND_DESCRIPTION,
    check_object_id,
    money,
    parse_amount,
    parse_description,
    parse_metadata,
    parse_receipt,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS payments (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL,
    created_ts REAL NOT NULL,
    created_at TEXT NOT NULL,
    captured_at TEXT,
    idempotence_key TEXT,
    payment_method_id TEXT,
    confirm_deadline REAL,
    capture_deadline REAL,
    left_ts REAL,
    return_url TEXT,
    save_payment_method INTEGER NOT NULL DEFAULT 0,
    capture INTEGER NOT NULL DEFAULT 0,
    receipt TEXT,
    obj TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS payments_status_deadline ON payments(status, confirm_deadline);
CREATE INDEX IF NOT EXISTS payments_created ON payments(created_at);
CREATE INDEX IF NOT EXISTS payments_key ON payments(idempotence_key);

CREATE TABLE IF NOT EXISTS refunds (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    payment_id TEXT NOT NULL,
    status TEXT NOT NULL,
    created_ts REAL NOT NULL,
    created_at TEXT NOT NULL,
    idempotence_key TEXT,
    amount TEXT NOT NULL,
    due_at REAL,
    outcome TEXT,
    outcome_reason TEXT,
    receipt TEXT,
    obj TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS refunds_payment ON refunds(payment_id);
CREATE INDEX IF NOT EXISTS refunds_status_due ON refunds(status, due_at);

CREATE TABLE IF NOT EXISTS idempotence (
    key TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    status_code INTEGER NOT NULL,
    response TEXT NOT NULL,
    created_ts REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS idempotence_created ON idempotence(created_ts);

CREATE TABLE IF NOT EXISTS payment_methods (
    id TEXT PRIMARY KEY,
    payment_id TEXT NOT NULL,
    obj TEXT NOT NULL,
    decline_reason TEXT,
    created_ts REAL NOT NULL,
    require_3ds INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE IF NOT EXISTS notifications (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event TEXT NOT NULL,
    object_id TEXT NOT NULL,
    body TEXT NOT NULL,
    url TEXT NOT NULL,
    status TEXT NOT NULL,
    due_at REAL NOT NULL,
    ordered INTEGER NOT NULL DEFAULT 0,
    sort_key INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_status INTEGER,
    last_error TEXT,
    created_ts REAL NOT NULL,
    delivered_ts REAL
);
CREATE INDEX IF NOT EXISTS notifications_due ON notifications(status, due_at);
CREATE INDEX IF NOT EXISTS notifications_object ON notifications(object_id);

CREATE TABLE IF NOT EXISTS receipt_registrations (
    object_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    delay_ms INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    due_at REAL
);
CREATE INDEX IF NOT EXISTS receipt_registrations_due ON receipt_registrations(due_at);
"""

PAYMENT_STATUSES = ("pending", "waiting_for_capture", "succeeded", "canceled")
REFUND_STATUSES = ("pending", "succeeded", "canceled")


def dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


def new_id() -> str:
    return str(uuid.uuid4())


class CardRejected(Exception):
    """The payment page refuses the input (a typo), the payment is unchanged."""


@dataclass
class ReceiptOutcome:
    """How a receipt's registration ends once its payment or refund succeeded: after `delay_ms`
    (the `receipt_delay_ms` knob, or a `receipt_canceled` fault's `pending_ms`), succeeded or canceled."""

    status: str = "succeeded"
    delay_ms: int = 0


@dataclass
class RefundOutcome:
    """How a refund ends, when a fault rule says so: after `pending_ms`, succeeded or canceled."""

    status: str = "succeeded"
    reason: str | None = None
    pending_ms: int = 0


class Emulator:
    def __init__(
        self,
        db: Database,
        config: RuntimeConfig,
        notifications: Notifications,
        *,
        shop_id: str,
        base_url: str,
        fee_percent: Decimal,
        idempotence_ttl_s: float,
    ) -> None:
        self.db = db
        self.config = config
        self.notifications = notifications
        self.shop_id = shop_id
        self.base_url = base_url
        self.fee = Decimal(fee_percent) / 100
        self.idempotence_ttl_s = idempotence_ttl_s
        columns = {row["name"] for row in self.db.all("PRAGMA table_info(payment_methods)")}
        if "require_3ds" not in columns:  # a database made before saved cards could ask for 3-D Secure
            self.db.execute("ALTER TABLE payment_methods ADD COLUMN require_3ds INTEGER NOT NULL DEFAULT 0")

    # ------------------------------------------------------------------ idempotence

    def idempotent_lookup(self, key: str) -> Any:
        row = self.db.one("SELECT * FROM idempotence WHERE key = ?", (key,))
        if row is None:
            return None
        if time.time() - row["created_ts"] > self.idempotence_ttl_s:
            self.db.execute("DELETE FROM idempotence WHERE key = ?", (key,))
            return None
        return row

    def idempotent_store(self, key: str, fingerprint: str, method: str, path: str, status: int, body: Any) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO idempotence (key, fingerprint, method, path, status_code, response, created_ts)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (key, fingerprint, method, path, status, dumps(body), time.time()),
        )

    # ------------------------------------------------------------------ payments

    def create_payment(self, body: dict[str, Any], idempotence_key: str, receipt_outcome: ReceiptOutcome | None = None) -> dict[str, Any]:
        amount, currency = parse_amount(body.get("amount"))
        description = parse_description(body.get("description"))
        metadata = parse_metadata(body.get("metadata"))
        capture = body.get("capture", False)
        if not isinstance(capture, bool):
            raise invalid_request("capture must be true or false", "capture")
        save = body.get("save_payment_method", False)
        if not isinstance(save, bool):
            raise invalid_request("save_payment_method must be true or false", "save_payment_method")
        receipt = body.get("receipt")
        if receipt is not None or self.config.require_receipt:
            receipt = parse_receipt(receipt, amount, currency)
        for unsupported in ("payment_token", "airline", "deal", "recipient", "receiver", "payment_order"):
            if body.get(unsupported):
                raise invalid_request(f"{unsupported} is not supported by the sandbox", unsupported)

        now = time.time()
        pid = new_id()
        obj: dict[str, Any] = {
            "id": pid,
            "status": "pending",
            "amount": {"value": money(amount), "currency": currency},
            "created_at": iso(now),
            "description": description,
            "metadata": metadata,
            "paid": False,
            "recipient": {"account_id": self.shop_id, "gateway_id": "1000001"},
            "refundable": False,
            "test": True,
        }
        if receipt is not None:
            obj["receipt_registration"] = "pending"
            self._plan_receipt(pid, "payment", receipt_outcome)
        if description is None:
            del obj["description"]

        pm_id = body.get("payment_method_id")
        if pm_id is not None:
            return self._charge_saved_method(obj, pm_id, capture, idempotence_key, receipt, now)

        confirmation = body.get("confirmation")
        if not isinstance(confirmation, dict) or "type" not in confirmation:
            raise invalid_request(
                "confirmation is required: the sandbox supports confirmation.type = redirect", "confirmation"
            )
        if confirmation["type"] != "redirect":
            raise invalid_request(
                f"confirmation.type {confirmation['type']!r} is not supported by the sandbox (use redirect)",
                "confirmation.type",
            )
        return_url = confirmation.get("return_url")
        if not isinstance(return_url, str) or not return_url.startswith(("http://", "https://")):
            raise invalid_request("confirmation.return_url must be an http(s) URL", "confirmation.return_url")
        pmd = body.get("payment_method_data")
        if pmd is not None:
            if not isinstance(pmd, dict) or pmd.get("type") != "bank_card":
                raise invalid_request(
                    "payment_method_data.type: the sandbox supports bank_card only", "payment_method_data.type"
                )
            obj["payment_method"] = {"type": "bank_card", "id": new_id(), "saved": False}
        obj["confirmation"] = {
            "type": "redirect",
            "confirmation_url": f"{self.base_url}/checkout/{pid}",
        }
        self.db.execute(
            "INSERT INTO payments (id, status, created_ts, created_at, idempotence_key, confirm_deadline,"
            " return_url, save_payment_method, capture, receipt, obj) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (
                pid,
                "pending",
                now,
                obj["created_at"],
                idempotence_key,
                now + self.config.confirmation_ttl_s,
                return_url,
                int(save),
                int(capture),
                dumps(receipt) if receipt is not None else None,
                dumps(obj),
            ),
        )
        return obj

    def _charge_saved_method(
        self,
        obj: dict[str, Any],
        pm_id: Any,
        capture: bool,
        idempotence_key: str,
        receipt: Any,
        now: float,
    ) -> dict[str, Any]:
        if not isinstance(pm_id, str) or not pm_id:
            raise invalid_request("payment_method_id must be a string", "payment_method_id")
        row = self.db.one("SELECT * FROM payment_methods WHERE id = ?", (pm_id,))
        if row is None:
            raise invalid_request(
                f"Payment method {pm_id} is not found or was not saved for recurring payments",
                "payment_method_id",
            )
        obj["payment_method"] = orjson.loads(row["obj"])
        three_ds = bool(row["require_3ds"]) and not row["decline_reason"]
        if three_ds:
            # The bank wants the customer to confirm this charge: pending, with the payment page.
            obj["confirmation"] = {"type": "redirect", "confirmation_url": f"{self.base_url}/checkout/{obj['id']}"}
        self.db.execute(
            "INSERT INTO payments (id, status, created_ts, created_at, idempotence_key, payment_method_id,"
            " capture, receipt, confirm_deadline, obj) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (
                obj["id"],
                "pending",
                now,
                obj["created_at"],
                idempotence_key,
                pm_id,
                int(capture),
                dumps(receipt) if receipt is not None else None,
                now + self.config.confirmation_ttl_s if three_ds else None,
                dumps(obj),
            ),
        )
        if row["decline_reason"]:
            reason = row["decline_reason"]
            party = cards.PARTY_BY_REASON.get(reason, "payment_network")
            return self._cancel(obj, party, reason, now)
        if three_ds:
            return obj
        return self._authorize(obj, bool(capture), now, three_ds=False)

    def get_payment(self, payment_id: str) -> dict[str, Any]:
        """The payment as the API shows it, expiring it first if its deadline passed."""
        self.register_due_receipts()
        row = self.db.one("SELECT * FROM payments WHERE id = ?", (payment_id,))
        if row is None:
            raise not_found(f"Payment {payment_id} not found")
        return self._expire_if_due(row)

    def _load(self, payment_id: str) -> Any:
        return self.db.one("SELECT * FROM payments WHERE id = ?", (payment_id,))

    def _save(self, obj: dict[str, Any], **columns: Any) -> None:
        sets = ", ".join(f"{name} = ?" for name in columns)
        extra = f", {sets}" if sets else ""
        self.db.execute(
            f"UPDATE payments SET status = ?, obj = ?{extra} WHERE id = ?",
            (obj["status"], dumps(obj), *columns.values(), obj["id"]),
        )

    def _notify_payment(self, obj: dict[str, Any]) -> None:
        self.notifications.enqueue(f"payment.{obj['status']}", obj, obj.get("metadata") or {})

    def _authorize(self, obj: dict[str, Any], capture: bool, now: float, *, three_ds: bool) -> dict[str, Any]:
        """The card paid: succeeded (capture) or waiting_for_capture (two-stage)."""
        obj.pop("confirmation", None)
        obj["paid"] = True
        obj["authorization_details"] = {
            "rrn": str(int(now * 1000))[-12:],
            "auth_code": uuid.uuid4().hex[:6].upper(),
            "three_d_secure": {"applied": three_ds},
        }
        if capture:
            self._mark_succeeded(obj, now)
            self._save(obj, captured_at=obj["captured_at"])
        else:
            obj["status"] = "waiting_for_capture"
            obj["expires_at"] = iso(now + self.config.capture_ttl_s)
            self._save(obj, capture_deadline=now + self.config.capture_ttl_s, confirm_deadline=None)
        self._notify_payment(obj)
        return obj

    def _mark_succeeded(self, obj: dict[str, Any], now: float) -> None:
        amount = Decimal(obj["amount"]["value"])
        income = (amount * (1 - self.fee)).quantize(CENT, rounding=ROUND_HALF_UP)
        obj["status"] = "succeeded"
        obj["paid"] = True
        obj["captured_at"] = iso(now)
        obj["income_amount"] = {"value": money(income), "currency": obj["amount"]["currency"]}
        obj["refundable"] = True
        obj["refunded_amount"] = {"value": "0.00", "currency": obj["amount"]["currency"]}
        obj.pop("expires_at", None)
        if "receipt_registration" in obj:
            self._register_receipt(obj, now)

    def _cancel(self, obj: dict[str, Any], party: str, reason: str, now: float) -> dict[str, Any]:
        obj.pop("confirmation", None)
        obj.pop("expires_at", None)
        obj["status"] = "canceled"
        obj["paid"] = False
        obj["refundable"] = False
        obj["cancellation_details"] = {"party": party, "reason": reason}
        if "receipt_registration" in obj:
            obj["receipt_registration"] = "canceled"
            self.db.execute("DELETE FROM receipt_registrations WHERE object_id = ?", (obj["id"],))
        self._save(obj, confirm_deadline=None, capture_deadline=None)
        self._notify_payment(obj)
        return obj

    def _expire_if_due(self, row: Any, now: float | None = None) -> dict[str, Any]:
        obj = orjson.loads(row["obj"])
        now = time.time() if now is None else now
        if row["status"] == "pending" and row["confirm_deadline"] is not None and row["confirm_deadline"] <= now:
            with self.db.transaction():
                return self._cancel(obj, "yoo_money", "expired_on_confirmation", now)
        if (
            row["status"] == "waiting_for_capture"
            and row["capture_deadline"] is not None
            and row["capture_deadline"] <= now
        ):
            with self.db.transaction():
                return self._cancel(obj, "yoo_money", "expired_on_capture", now)
        return obj

    def capture(self, payment_id: str, body: dict[str, Any]) -> dict[str, Any]:
        row = self._load(payment_id)
        if row is None:
            raise not_found(f"Payment {payment_id} not found")
        obj = self._expire_if_due(row)
        if obj["status"] == "succeeded":
            return obj
        if obj["status"] != "waiting_for_capture":
            raise invalid_request(
                f"Payment {payment_id} is {obj['status']}: only a payment waiting_for_capture can be captured",
                "payment_id",
            )
        if body.get("amount") is not None:
            amount, currency = parse_amount(body.get("amount"))
            if currency != obj["amount"]["currency"]:
                raise invalid_request("amount.currency differs from the payment's", "amount.currency")
            if amount > Decimal(obj["amount"]["value"]):
                raise invalid_request("Capture amount is greater than the payment amount", "amount.value")
            obj["amount"] = {"value": money(amount), "currency": currency}
        now = time.time()
        self._mark_succeeded(obj, now)
        self._save(obj, captured_at=obj["captured_at"], capture_deadline=None)
        self._notify_payment(obj)
        return obj

    def cancel(self, payment_id: str) -> dict[str, Any]:
        row = self._load(payment_id)
        if row is None:
            raise not_found(f"Payment {payment_id} not found")
        obj = self._expire_if_due(row)
        if obj["status"] == "canceled":
            return obj
        if obj["status"] != "waiting_for_capture":
            raise invalid_request(
                f"Payment {payment_id} is {obj['status']}: only a payment waiting_for_capture can be canceled",
                "payment_id",
            )
        return self._cancel(obj, "merchant", "canceled_by_merchant", time.time())

    def list_payments(self, params: dict[str, str]) -> dict[str, Any]:
        self.sweep()
        clauses, args = self._list_filters(params, PAYMENT_STATUSES)
        if "payment_method" in params:
            clauses.append("json_extract(obj, '$.payment_method.type') = ?")
            args.append(params["payment_method"])
        for op, sql in (("gte", ">="), ("gt", ">"), ("lte", "<="), ("lt", "<")):
            name = f"captured_at.{op}"
            if name in params:
                clauses.append(f"captured_at {sql} ?")
                args.append(self._iso_param(params[name], name))
        return self._page("payments", clauses, args, params)

    # ------------------------------------------------------------------ payment page

    def checkout_view(self, payment_id: str) -> dict[str, Any] | None:
        row = self._load(payment_id)
        if row is None:
            return None
        return self._expire_if_due(row)

    def checkout_pay(
        self, payment_id: str, card_number: str, expiry_month: str | None, expiry_year: str | None
    ) -> dict[str, Any] | None:
        """A person submits the card form. Returns the payment, None if it does not exist."""
        row = self._load(payment_id)
        if row is None:
            return None
        obj = self._expire_if_due(row)
        if obj["status"] != "pending":
            return obj  # a second click, or a page opened too late: nothing more happens
        if row["payment_method_id"]:
            # A saved card's charge waiting for 3-D Secure: the customer confirms it (the card on
            # file pays; the 3-D Secure failure test card stands for a failed confirmation).
            now = time.time()
            with self.db.transaction():
                if cards.normalise(card_number) == cards.DECLINE_3D_SECURE_FAILED:
                    return self._cancel(obj, "payment_network", "3d_secure_failed", now)
                return self._authorize(obj, bool(row["capture"]), now, three_ds=True)
        number = cards.normalise(card_number)
        if not cards.luhn_valid(number):
            raise CardRejected("Check the card number: it is not a valid card number.")
        month, year = self._parse_expiry(expiry_month, expiry_year)
        now = time.time()
        card = {
            "first6": number[:6],
            "last4": number[-4:],
            "expiry_month": f"{month:02d}",
            "expiry_year": f"{year:04d}",
            "card_type": cards.card_type(number),
            "issuer_country": "RU",
            "issuer_name": "Sandbox Bank",
        }
        existing = obj.get("payment_method") or {}
        method = {
            "type": "bank_card",
            "id": existing.get("id") or new_id(),
            "saved": False,
            "title": f"Bank card *{number[-4:]}",
            "card": card,
        }
        obj["payment_method"] = method
        decline = cards.DECLINES.get(number)
        expired = (year, month) < time.gmtime(now)[:2]
        with self.db.transaction():
            if decline or expired:
                reason, party = (decline.reason, decline.party) if decline else ("card_expired", "payment_network")
                return self._cancel(obj, party, reason, now)
            if row["save_payment_method"]:
                method["saved"] = True
                self.db.execute(
                    "INSERT INTO payment_methods (id, payment_id, obj, created_ts) VALUES (?, ?, ?, ?)",
                    (method["id"], payment_id, dumps(method), now),
                )
                self.db.execute("UPDATE payments SET payment_method_id = ? WHERE id = ?", (method["id"], payment_id))
            return self._authorize(obj, bool(row["capture"]), now, three_ds=True)

    @staticmethod
    def _parse_expiry(month: str | None, year: str | None) -> tuple[int, int]:
        if not month and not year:
            return 12, time.gmtime().tm_year + 3
        try:
            m = int(str(month))
            y = int(str(year))
        except ValueError:
            raise CardRejected("Check the expiry date (MM and YY).") from None
        if y < 100:
            y += 2000
        if not 1 <= m <= 12 or not 2000 < y < 2200:
            raise CardRejected("Check the expiry date (MM and YY).")
        return m, y

    def checkout_leave(self, payment_id: str, expire_after_s: float | None) -> dict[str, Any] | None:
        """The person goes back to the shop without paying.

        The payment stays pending until its confirmation deadline (YooKassa's behaviour);
        `expire_after_s` may bring that deadline closer, for tests that cannot wait 10 minutes.
        """
        row = self._load(payment_id)
        if row is None:
            return None
        obj = self._expire_if_due(row)
        if obj["status"] != "pending":
            return obj
        now = time.time()
        deadline = row["confirm_deadline"]
        if expire_after_s is not None:
            deadline = min(deadline, now + max(0.0, expire_after_s)) if deadline else now + expire_after_s
        self.db.execute(
            "UPDATE payments SET left_ts = COALESCE(left_ts, ?), confirm_deadline = ? WHERE id = ?",
            (now, deadline, payment_id),
        )
        return self._expire_if_due(self._load(payment_id), now)

    def return_url(self, payment_id: str) -> str | None:
        row = self.db.one("SELECT return_url FROM payments WHERE id = ?", (payment_id,))
        return row["return_url"] if row else None

    # ------------------------------------------------------------------ refunds

    def payment_metadata(self, payment_id: Any) -> dict[str, Any]:
        if not isinstance(payment_id, str):
            return {}
        row = self.db.one("SELECT json_extract(obj, '$.metadata') AS m FROM payments WHERE id = ?", (payment_id,))
        return orjson.loads(row["m"]) if row and row["m"] else {}

    def create_refund(
        self,
        body: dict[str, Any],
        idempotence_key: str,
        outcome: RefundOutcome | None = None,
        receipt_outcome: ReceiptOutcome | None = None,
    ) -> dict[str, Any]:
        payment_id = check_object_id(body.get("payment_id"), "payment_id")
        row = self._load(payment_id)
        if row is None:
            raise invalid_request(f"Payment {payment_id} not found", "payment_id")
        payment = self._expire_if_due(row)
        if payment["status"] != "succeeded":
            raise invalid_request(
                f"Payment {payment_id} is {payment['status']}: only a succeeded payment can be refunded",
                "payment_id",
            )
        amount, currency = parse_amount(body.get("amount"))
        if currency != payment["amount"]["currency"]:
            raise invalid_request("amount.currency differs from the payment's", "amount.currency")
        left = Decimal(payment["amount"]["value"]) - self._refunds_total(payment_id)
        if amount > left:
            raise invalid_request(
                f"Refund amount {money(amount)} exceeds what is left to refund ({money(left)})", "amount.value"
            )
        description = parse_description(body.get("description"), MAX_REFUND_DESCRIPTION)
        metadata = parse_metadata(body.get("metadata"))
        receipt = body.get("receipt")
        if receipt is not None or self.config.require_refund_receipt:
            receipt = parse_receipt(receipt, amount, currency)

        outcome = outcome or RefundOutcome(pending_ms=self.config.refund_delay_ms)
        now = time.time()
        rid = new_id()
        obj: dict[str, Any] = {
            "id": rid,
            "payment_id": payment_id,
            "status": "pending",
            "created_at": iso(now),
            "amount": {"value": money(amount), "currency": currency},
        }
        if description is not None:
            obj["description"] = description
        if metadata:
            obj["metadata"] = metadata
        if receipt is not None:
            obj["receipt_registration"] = "pending"
            self._plan_receipt(rid, "refund", receipt_outcome)
        self.db.execute(
            "INSERT INTO refunds (id, payment_id, status, created_ts, created_at, idempotence_key, amount, due_at,"
            " outcome, outcome_reason, receipt, obj) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                rid,
                payment_id,
                "pending",
                now,
                obj["created_at"],
                idempotence_key,
                money(amount),
                now + outcome.pending_ms / 1000,
                outcome.status,
                outcome.reason,
                dumps(receipt) if receipt is not None else None,
                dumps(obj),
            ),
        )
        if outcome.pending_ms <= 0:
            return self._settle_refund(self.db.one("SELECT * FROM refunds WHERE id = ?", (rid,)), now)
        return obj

    def _refunds_total(self, payment_id: str) -> Decimal:
        rows = self.db.all(
            "SELECT amount FROM refunds WHERE payment_id = ? AND status IN ('pending', 'succeeded')", (payment_id,)
        )
        return sum((Decimal(r["amount"]) for r in rows), Decimal(0))

    def _settle_refund(self, row: Any, now: float) -> dict[str, Any]:
        obj = orjson.loads(row["obj"])
        if row["outcome"] == "canceled":
            obj["status"] = "canceled"
            obj["cancellation_details"] = {"party": "yoo_money", "reason": row["outcome_reason"] or "general_decline"}
            if "receipt_registration" in obj:
                obj["receipt_registration"] = "canceled"
                self.db.execute("DELETE FROM receipt_registrations WHERE object_id = ?", (obj["id"],))
            self.db.execute(
                "UPDATE refunds SET status = 'canceled', due_at = NULL, obj = ? WHERE id = ?", (dumps(obj), obj["id"])
            )
            return obj
        obj["status"] = "succeeded"
        if "receipt_registration" in obj:
            self._register_receipt(obj, now)
        self.db.execute(
            "UPDATE refunds SET status = 'succeeded', due_at = NULL, obj = ? WHERE id = ?", (dumps(obj), obj["id"])
        )
        payment = orjson.loads(self._load(row["payment_id"])["obj"])
        refunded = sum(
            (
                Decimal(r["amount"])
                for r in self.db.all(
                    "SELECT amount FROM refunds WHERE payment_id = ? AND status = 'succeeded'", (row["payment_id"],)
                )
            ),
            Decimal(0),
        )
        payment["refunded_amount"] = {"value": money(refunded), "currency": payment["amount"]["currency"]}
        payment["refundable"] = refunded < Decimal(payment["amount"]["value"])
        self._save(payment)
        metadata = {**(payment.get("metadata") or {}), **(obj.get("metadata") or {})}
        self.notifications.enqueue("refund.succeeded", obj, metadata)
        return obj

    def get_refund(self, refund_id: str) -> dict[str, Any]:
        self.register_due_receipts()
        row = self.db.one("SELECT * FROM refunds WHERE id = ?", (refund_id,))
        if row is None:
            raise not_found(f"Refund {refund_id} not found")
        if row["status"] == "pending" and row["due_at"] is not None and row["due_at"] <= time.time():
            with self.db.transaction():
                return self._settle_refund(row, time.time())
        return orjson.loads(row["obj"])

    def list_refunds(self, params: dict[str, str]) -> dict[str, Any]:
        self.sweep()
        clauses, args = self._list_filters(params, REFUND_STATUSES)
        if "payment_id" in params:
            clauses.append("payment_id = ?")
            args.append(params["payment_id"])
        return self._page("refunds", clauses, args, params)

    # ------------------------------------------------------------------ the dashboard

    @contextmanager
    def _silently(self, silent: bool) -> Iterator[None]:
        """While active, state changes queue no notification: YooKassa sent one and it was lost."""
        if not silent:
            yield
            return
        real = self.notifications
        self.notifications = _Unheard()  # type: ignore[assignment]
        try:
            yield
        finally:
            self.notifications = real

    def dashboard_refund(self, payment_id: str, amount: str | None, *, notify: bool) -> dict[str, Any]:
        """What an operator does in YooKassa's dashboard: refund (part of) a payment. No
        Idempotence-Key or metadata of the shop names it; `refund.succeeded` is sent like for any
        refund unless `notify` is false (a lost notification)."""
        row = self._load(check_object_id(payment_id, "payment_id"))
        if row is None:
            raise invalid_request(f"Payment {payment_id} not found", "payment_id")
        payment = orjson.loads(row["obj"])
        if amount is None:
            left = Decimal(payment["amount"]["value"]) - self._refunds_total(payment_id)
            amount = money(left)
        body = {
            "payment_id": payment_id,
            "amount": {"value": amount, "currency": payment["amount"]["currency"]},
            "description": "Refund made in the YooKassa dashboard",
        }
        with self.db.transaction(), self._silently(not notify):
            return self.create_refund(body, f"dashboard-{new_id()}", RefundOutcome())

    def dashboard_payment(self, amount: str, metadata: dict[str, Any], *, notify: bool, description: str | None = None) -> dict[str, Any]:
        """A payment that succeeded without the shop hearing: created and paid (a saved test card)
        with the given metadata; `payment.succeeded` is lost unless `notify`."""
        value, currency = parse_amount({"value": amount, "currency": "RUB"})
        body: dict[str, Any] = {
            "amount": {"value": money(value), "currency": currency},
            "capture": True,
            "confirmation": {"type": "redirect", "return_url": "http://127.0.0.1/dashboard"},
            "description": description or "Payment made outside the shop's API",
            "metadata": metadata,
            "receipt": {
                "customer": {"email": "dashboard@example.com"},
                "items": [
                    {
                        "description": description or "Payment",
                        "quantity": "1.00",
                        "amount": {"value": money(value), "currency": currency},
                        "vat_code": 1,
                    }
                ],
            },
        }
        with self.db.transaction(), self._silently(not notify):
            created = self.create_payment(body, f"dashboard-{new_id()}")
        with self._silently(not notify):
            paid = self.checkout_pay(created["id"], cards.SUCCESS, None, None)
        assert paid is not None
        return paid

    def dashboard_alter(self, object_type: str, object_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        """Make YooKassa's record of an object disagree with the shop's (`status`, `amount`), or
        `forget` it (gone from the API and its lists): the divergences reconciliation must list."""
        table = "payments" if object_type == "payment" else "refunds"
        row = self.db.one(f"SELECT * FROM {table} WHERE id = ?", (check_object_id(object_id, "id"),))
        if row is None:
            raise not_found(f"{object_type.capitalize()} {object_id} not found")
        if changes.get("forget"):
            self.db.execute(f"DELETE FROM {table} WHERE id = ?", (object_id,))
            return {"id": object_id, "forgotten": True}
        obj = orjson.loads(row["obj"])
        if "status" in changes:
            allowed = PAYMENT_STATUSES if table == "payments" else REFUND_STATUSES
            if changes["status"] not in allowed:
                raise invalid_request(f"status must be one of {', '.join(allowed)}", "status")
            obj["status"] = changes["status"]
        if "amount" in changes:
            value, _ = parse_amount({"value": str(changes["amount"]), "currency": obj["amount"]["currency"]})
            obj["amount"]["value"] = money(value)
        self.db.execute(f"UPDATE {table} SET status = ?, obj = ? WHERE id = ?", (obj["status"], dumps(obj), object_id))
        return obj

    # ------------------------------------------------------------------ lists

    @staticmethod
    def _iso_param(value: str, name: str) -> str:
        try:
            return iso(parse_iso(value))
        except ValueError:
            raise invalid_request(f"Invalid {name}: expected an ISO 8601 timestamp", name) from None

    def _list_filters(self, params: dict[str, str], statuses: tuple[str, ...]) -> tuple[list[str], list[Any]]:
        clauses: list[str] = []
        args: list[Any] = []
        if "status" in params:
            if params["status"] not in statuses:
                raise invalid_request(f"Invalid status: {params['status']!r}", "status")
            clauses.append("status = ?")
            args.append(params["status"])
        for op, sql in (("gte", ">="), ("gt", ">"), ("lte", "<="), ("lt", "<")):
            name = f"created_at.{op}"
            if name in params:
                clauses.append(f"created_at {sql} ?")
                args.append(self._iso_param(params[name], name))
        return clauses, args

    def _page(self, table: str, clauses: list[str], args: list[Any], params: dict[str, str]) -> dict[str, Any]:
        try:
            limit = int(params.get("limit", "10"))
        except ValueError:
            raise invalid_request("limit must be an integer 1..100", "limit") from None
        if not 1 <= limit <= 100:
            raise invalid_request("limit must be an integer 1..100", "limit")
        if params.get("cursor"):
            try:
                before = int(base64.urlsafe_b64decode(params["cursor"].encode()).decode())
            except (ValueError, UnicodeDecodeError):
                raise invalid_request("Invalid cursor", "cursor") from None
            clauses = [*clauses, "seq < ?"]
            args = [*args, before]
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self.db.all(f"SELECT seq, obj FROM {table} {where} ORDER BY seq DESC LIMIT ?", (*args, limit + 1))
        result: dict[str, Any] = {"type": "list", "items": [orjson.loads(r["obj"]) for r in rows[:limit]]}
        if len(rows) > limit:
            result["next_cursor"] = base64.urlsafe_b64encode(str(rows[limit - 1]["seq"]).encode()).decode()
        return result

    # ------------------------------------------------------------------ background

    def sweep(self) -> int:
        """Expire overdue payments and settle due refunds; returns how many objects changed."""
        now = time.time()
        changed = 0
        rows = self.db.all(
            "SELECT * FROM payments WHERE status = 'pending' AND confirm_deadline <= ? LIMIT 1000", (now,)
        )
        rows += self.db.all(
            "SELECT * FROM payments WHERE status = 'waiting_for_capture' AND capture_deadline <= ? LIMIT 1000",
            (now,),
        )
        for row in rows:
            self._expire_if_due(row, now)
            changed += 1
        for row in self.db.all("SELECT * FROM refunds WHERE status = 'pending' AND due_at <= ? LIMIT 1000", (now,)):
            with self.db.transaction():
                self._settle_refund(row, now)
            changed += 1
        return changed + self.register_due_receipts(now)

    # ------------------------------------------------------------------ 54-FZ receipts

    def _plan_receipt(self, object_id: str, kind: str, outcome: ReceiptOutcome | None) -> None:
        """Remember how this object's receipt registration will end once it succeeds."""
        outcome = outcome or ReceiptOutcome(delay_ms=self.config.receipt_delay_ms)
        self.db.execute(
            "INSERT OR REPLACE INTO receipt_registrations (object_id, kind, delay_ms, outcome, due_at) VALUES (?,?,?,?,NULL)",
            (object_id, kind, outcome.delay_ms, outcome.status),
        )

    def _register_receipt(self, obj: dict[str, Any], now: float) -> None:
        """The payment or refund succeeded: its receipt goes to the tax service — at once, or it stays
        `pending` until the registration is due (then it is read as succeeded or canceled)."""
        plan = self.db.one("SELECT * FROM receipt_registrations WHERE object_id = ?", (obj["id"],))
        if plan is None or plan["delay_ms"] <= 0:
            obj["receipt_registration"] = plan["outcome"] if plan is not None else "succeeded"
            self.db.execute("DELETE FROM receipt_registrations WHERE object_id = ?", (obj["id"],))
            return
        obj["receipt_registration"] = "pending"
        self.db.execute("UPDATE receipt_registrations SET due_at = ? WHERE object_id = ?", (now + plan["delay_ms"] / 1000, obj["id"]))

    def register_due_receipts(self, now: float | None = None) -> int:
        """Settle every receipt registration that is due (on reads and in the sweep)."""
        now = time.time() if now is None else now
        due = self.db.all("SELECT * FROM receipt_registrations WHERE due_at IS NOT NULL AND due_at <= ? LIMIT 1000", (now,))
        for plan in due:
            table = "payments" if plan["kind"] == "payment" else "refunds"
            with self.db.transaction():
                row = self.db.one(f"SELECT obj FROM {table} WHERE id = ?", (plan["object_id"],))
                if row is not None:
                    obj = orjson.loads(row["obj"])
                    obj["receipt_registration"] = plan["outcome"]
                    self.db.execute(f"UPDATE {table} SET obj = ? WHERE id = ?", (dumps(obj), plan["object_id"]))
                self.db.execute("DELETE FROM receipt_registrations WHERE object_id = ?", (plan["object_id"],))
        return len(due)

    def purge_idempotence(self) -> None:
        self.db.execute("DELETE FROM idempotence WHERE created_ts < ?", (time.time() - self.idempotence_ttl_s,))

    # ------------------------------------------------------------------ saved methods

    def payment_methods(self) -> list[dict[str, Any]]:
        rows = self.db.all("SELECT * FROM payment_methods ORDER BY created_ts DESC LIMIT 1000")
        return [self._method_view(r) for r in rows]

    @staticmethod
    def _method_view(row: Any) -> dict[str, Any]:
        return {
            **orjson.loads(row["obj"]),
            "payment_id": row["payment_id"],
            "decline_reason": row["decline_reason"],
            "require_3ds": bool(row["require_3ds"]),
        }

    _UNCHANGED: Any = object()

    def set_method_behaviour(self, method_id: str, decline_reason: Any = _UNCHANGED, require_3ds: Any = _UNCHANGED) -> dict[str, Any]:
        """How later charges of a saved card go: decline with a reason, or ask for 3-D Secure."""
        if decline_reason is not self._UNCHANGED and decline_reason is not None and (
            not isinstance(decline_reason, str) or not decline_reason
        ):
            raise ValueError("decline_reason must be a cancellation reason or null")
        if require_3ds is not self._UNCHANGED and not isinstance(require_3ds, bool):
            raise ValueError("require_3ds must be true or false")
        row = self.db.one("SELECT * FROM payment_methods WHERE id = ?", (method_id,))
        if row is None:
            raise KeyError(method_id)
        if decline_reason is not self._UNCHANGED:
            self.db.execute("UPDATE payment_methods SET decline_reason = ? WHERE id = ?", (decline_reason, method_id))
        if require_3ds is not self._UNCHANGED:
            self.db.execute("UPDATE payment_methods SET require_3ds = ? WHERE id = ?", (int(require_3ds), method_id))
        return self._method_view(self.db.one("SELECT * FROM payment_methods WHERE id = ?", (method_id,)))

    # ------------------------------------------------------------------ inspection

    def inspect(self, table: str, params: dict[str, str]) -> list[dict[str, Any]]:
        """Payments or refunds with sandbox-only fields, filtered by `metadata.<key>=value` etc."""
        if table == "payments":
            self.sweep()
        clauses, args = self._inspection_filters(table, params)
        try:
            limit = min(int(params.get("limit", "1000")), 100_000)
        except ValueError:
            raise ValueError("limit must be an integer") from None
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self.db.all(f"SELECT * FROM {table} {where} ORDER BY seq DESC LIMIT ?", (*args, limit))
        items = []
        for r in rows:
            obj = orjson.loads(r["obj"])
            extra: dict[str, Any] = {
                "idempotence_key": r["idempotence_key"],
                "receipt": orjson.loads(r["receipt"]) if r["receipt"] else None,
            }
            if table == "payments":
                extra.update(
                    return_url=r["return_url"],
                    save_payment_method=bool(r["save_payment_method"]),
                    capture=bool(r["capture"]),
                    left_at=iso(r["left_ts"]) if r["left_ts"] else None,
                    confirmation_deadline=iso(r["confirm_deadline"]) if r["confirm_deadline"] else None,
                )
            obj["_sandbox"] = extra
            items.append(obj)
        return items

    def _inspection_filters(self, table: str, params: dict[str, str]) -> tuple[list[str], list[Any]]:
        clauses: list[str] = []
        args: list[Any] = []
        for name, value in params.items():
            if name.startswith("metadata."):
                key = name[len("metadata.") :]
                if table == "refunds":
                    # A refund matches on its own metadata or its payment's.
                    clauses.append(
                        "(json_extract(obj, ?) = ? OR payment_id IN"
                        " (SELECT id FROM payments WHERE json_extract(obj, ?) = ?))"
                    )
                    args += [metadata_path(key), value, metadata_path(key), value]
                else:
                    clauses.append("json_extract(obj, ?) = ?")
                    args += [metadata_path(key), value]
            elif name in ("status", "idempotence_key", "id") or (name == "payment_id" and table == "refunds"):
                clauses.append(f"{name} = ?")
                args.append(value)
        return clauses, args

    def stats(self, params: dict[str, str]) -> dict[str, Any]:
        """Successful charges grouped by `by` (idempotence_key or metadata.<key>), plus totals."""
        self.sweep()
        by = params.get("by", "idempotence_key")
        filters = {k: v for k, v in params.items() if k != "by"}
        clauses, args = self._inspection_filters("payments", filters)
        where = " AND ".join(clauses) if clauses else "1"
        if by == "idempotence_key":
            group_sql, group_args = "idempotence_key", []
        elif by in ("payment_method_id", "payment_method.id"):
            group_sql, group_args = "json_extract(obj, '$.payment_method.id')", []
        elif by.startswith("metadata."):
            group_sql, group_args = "json_extract(obj, ?)", [metadata_path(by[len("metadata.") :])]
        else:
            raise ValueError("by must be idempotence_key, payment_method_id or metadata.<key>")
        rows = self.db.all(
            f"SELECT {group_sql} AS k, COUNT(*) AS n FROM payments WHERE {where} AND status = 'succeeded'"
            f" GROUP BY k",
            (*group_args, *args),
        )
        counts = {str(r["k"]): r["n"] for r in rows if r["k"] is not None}
        by_status = {
            r["status"]: r["n"]
            for r in self.db.all(f"SELECT status, COUNT(*) AS n FROM payments WHERE {where} GROUP BY status", args)
        }
        charged = self.db.one(
            f"SELECT COALESCE(SUM(CAST(json_extract(obj, '$.amount.value') AS REAL)), 0) AS s, COUNT(*) AS n"
            f" FROM payments WHERE {where} AND status = 'succeeded'",
            args,
        )
        refund_clauses, refund_args = self._inspection_filters(
            "refunds", {k: v for k, v in filters.items() if k.startswith("metadata.")}
        )
        refund_where = " AND ".join(refund_clauses) if refund_clauses else "1"
        refunds = self.db.all(
            f"SELECT status, COUNT(*) AS n, COALESCE(SUM(CAST(amount AS REAL)), 0) AS s FROM refunds"
            f" WHERE {refund_where} GROUP BY status",
            refund_args,
        )
        refunded = sum(r["s"] for r in refunds if r["status"] == "succeeded")
        return {
            "by": by,
            "counts": counts,
            "duplicates": {k: n for k, n in counts.items() if n > 1},
            "totals": {
                "payments": sum(by_status.values()),
                "by_status": by_status,
                "successful_charges": charged["n"],
                "charged_amount": money(Decimal(str(charged["s"]))),
                "refunds": sum(r["n"] for r in refunds),
                "refunds_by_status": {r["status"]: r["n"] for r in refunds},
                "refunded_amount": money(Decimal(str(refunded))),
            },
        }

    def reset(self) -> None:
        with self.db.transaction():
            for table in ("payments", "refunds", "idempotence", "payment_methods", "notifications"):
                self.db.execute(f"DELETE FROM {table}")


__all__ = ["ApiError", "CardRejected", "Emulator", "RefundOutcome", "SCHEMA"]


class _Unheard:
    """Notifications that never reach the shop (see `Emulator._silently`)."""

    def enqueue(self, event: str, obj: Any, metadata: Any) -> None:
        return None
