"""Checks of request bodies, with the parameter names and wording of YooKassa's 400 errors.

A bad request must fail loudly and change nothing, exactly as the real API would: that is how the
sandbox catches a client that forgets the receipt or sends an amount the receipt does not add up to.
"""

from __future__ import annotations

import re
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from .errors import invalid_request

MAX_DESCRIPTION = 128
MAX_REFUND_DESCRIPTION = 250
MAX_METADATA_KEYS = 16
MAX_METADATA_KEY = 32
MAX_METADATA_VALUE = 512
MAX_IDEMPOTENCE_KEY = 64
CENT = Decimal("0.01")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
PHONE = re.compile(r"^\+?\d{7,15}$")


def money(value: Decimal) -> str:
    """Decimal -> YooKassa's amount string (`"299.00"`)."""
    return str(value.quantize(CENT, rounding=ROUND_HALF_UP))


def parse_amount(raw: Any, parameter: str = "amount") -> tuple[Decimal, str]:
    """`{"value": "299.00", "currency": "RUB"}` -> (Decimal, currency); 400 if malformed."""
    if not isinstance(raw, dict):
        raise invalid_request(f"Parameter {parameter} is missing or is not an object", parameter)
    value = raw.get("value")
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise invalid_request(f"{parameter}.value must be a string like \"100.00\"", f"{parameter}.value")
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise invalid_request(f"Invalid {parameter}.value: {value!r}", f"{parameter}.value") from None
    if not amount.is_finite() or amount <= 0:
        raise invalid_request(f"{parameter}.value must be greater than 0", f"{parameter}.value")
    if amount != amount.quantize(CENT):
        raise invalid_request(f"{parameter}.value has more than 2 decimal places", f"{parameter}.value")
    if amount >= Decimal("1000000000"):
        raise invalid_request(f"{parameter}.value is too large", f"{parameter}.value")
    currency = raw.get("currency")
    if not isinstance(currency, str) or not re.fullmatch(r"[A-Z]{3}", currency):
        raise invalid_request(f"Invalid {parameter}.currency: {currency!r}", f"{parameter}.currency")
    return amount.quantize(CENT), currency


def parse_metadata(raw: Any, parameter: str = "metadata") -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise invalid_request("metadata must be an object of string keys and values", parameter)
    if len(raw) > MAX_METADATA_KEYS:
        raise invalid_request(f"metadata may hold at most {MAX_METADATA_KEYS} keys", parameter)
    result: dict[str, str] = {}
    for key, value in raw.items():
        if len(key) > MAX_METADATA_KEY:
            raise invalid_request(f"metadata key {key!r} is longer than {MAX_METADATA_KEY}", f"{parameter}.{key}")
        if isinstance(value, dict | list):
            raise invalid_request(f"metadata value of {key!r} must be a string", f"{parameter}.{key}")
        text = "" if value is None else (str(value).lower() if isinstance(value, bool) else str(value))
        if len(text) > MAX_METADATA_VALUE:
            raise invalid_request(
                f"metadata value of {key!r} is longer than {MAX_METADATA_VALUE}", f"{parameter}.{key}"
            )
        result[str(key)] = text
    return result


def parse_description(raw: Any, limit: int = MAX_DESCRIPTION) -> str | None:
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise invalid_request("description must be a string", "description")
    if len(raw) > limit:
        raise invalid_request(f"description is longer than {limit} characters", "description")
    return raw


def parse_receipt(raw: Any, total: Decimal, currency: str, parameter: str = "receipt") -> dict[str, Any]:
    """Validate a 54-FZ receipt: a customer contact and items that add up to `total`."""
    if not isinstance(raw, dict):
        raise invalid_request("Receipt is missing or invalid. The shop must send receipt data (54-FZ)", parameter)
    customer = raw.get("customer") if isinstance(raw.get("customer"), dict) else {}
    email = customer.get("email") or raw.get("email")
    phone = customer.get("phone") or raw.get("phone")
    if not email and not phone:
        raise invalid_request("Receipt customer email or phone is required", f"{parameter}.customer")
    if email and (not isinstance(email, str) or not EMAIL.match(email)):
        raise invalid_request(f"Invalid receipt customer email: {email!r}", f"{parameter}.customer.email")
    if phone and (not isinstance(phone, str) or not PHONE.match(phone)):
        raise invalid_request(f"Invalid receipt customer phone: {phone!r}", f"{parameter}.customer.phone")
    items = raw.get("items")
    if not isinstance(items, list) or not items:
        raise invalid_request("Receipt items are missing", f"{parameter}.items")
    if len(items) > 100:
        raise invalid_request("Receipt may hold at most 100 items", f"{parameter}.items")
    tax_system = raw.get("tax_system_code")
    if tax_system is not None and (not isinstance(tax_system, int) or not 1 <= tax_system <= 6):
        raise invalid_request("tax_system_code must be 1..6", f"{parameter}.tax_system_code")
    sum_items = Decimal(0)
    for i, item in enumerate(items):
        where = f"{parameter}.items[{i}]"
        if not isinstance(item, dict):
            raise invalid_request("Receipt item must be an object", where)
        description = item.get("description")
        if not isinstance(description, str) or not description.strip() or len(description) > 128:
            raise invalid_request("Receipt item description is required (1..128 characters)", f"{where}.description")
        try:
            quantity = Decimal(str(item.get("quantity")))
        except InvalidOperation:
            raise invalid_request("Receipt item quantity is invalid", f"{where}.quantity") from None
        if not quantity.is_finite() or quantity <= 0:
            raise invalid_request("Receipt item quantity must be greater than 0", f"{where}.quantity")
        price, item_currency = parse_amount(item.get("amount"), f"{where}.amount")
        if item_currency != currency:
            raise invalid_request("Receipt item currency differs from the payment currency", f"{where}.amount.currency")
        vat_code = item.get("vat_code")
        if isinstance(vat_code, str) and vat_code.isdigit():
            vat_code = int(vat_code)
        if not isinstance(vat_code, int) or isinstance(vat_code, bool) or not 1 <= vat_code <= 12:
            raise invalid_request("Receipt item vat_code must be an integer 1..12", f"{where}.vat_code")
        sum_items += price * quantity
    if sum_items.quantize(CENT, rounding=ROUND_HALF_UP) != total:
        raise invalid_request(
            f"The sum of the receipt items ({money(sum_items)}) does not match the amount ({money(total)})",
            f"{parameter}.items",
        )
    return raw


def check_idempotence_key(key: str | None) -> str:
    if not key:
        raise invalid_request("Idempotence-Key header is required for this request", "Idempotence-Key")
    if len(key) > MAX_IDEMPOTENCE_KEY:
        raise invalid_request(
            f"Idempotence-Key is longer than {MAX_IDEMPOTENCE_KEY} characters", "Idempotence-Key"
        )
    return key


def check_object_id(value: Any, parameter: str) -> str:
    if not isinstance(value, str) or not value:
        raise invalid_request(f"{parameter} is required", parameter)
    if len(value) != 36:
        raise invalid_request(f"Invalid {parameter}: must be 36 characters", parameter)
    return value
