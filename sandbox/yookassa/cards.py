"""Test cards of the YooKassa sandbox: which number succeeds and which declines, and why.

Tests import these constants instead of repeating card numbers. Every number passes the Luhn
check; a number that fails it is refused by the payment page as a typo (the payment stays
pending). Any other Luhn-valid number pays successfully, like YooKassa's test shops.
"""

from __future__ import annotations

from dataclasses import dataclass

SUCCESS = "5555555555554444"
"""MasterCard that always pays (the default card of tests)."""
SUCCESS_ALT = "5555555555554477"
SUCCESS_VISA = "4111111111111111"
SUCCESS_MIR = "2200000000000004"

DECLINE_3D_SECURE_FAILED = "5555555555554535"
DECLINE_CALL_ISSUER = "5555555555554543"
DECLINE_CARD_EXPIRED = "5555555555554550"
DECLINE_COUNTRY_FORBIDDEN = "5555555555554568"
DECLINE_FRAUD_SUSPECTED = "5555555555554576"
DECLINE_GENERAL = "5555555555554584"
DECLINE_IDENTIFICATION_REQUIRED = "5555555555554592"
DECLINE_INSUFFICIENT_FUNDS = "5555555555554600"
DECLINE_INVALID_CARD_NUMBER = "5555555555554618"
DECLINE_INVALID_CSC = "5555555555554626"
DECLINE_ISSUER_UNAVAILABLE = "5555555555554634"
DECLINE_LIMIT_EXCEEDED = "5555555555554642"
DECLINE_RESTRICTED = "5555555555554659"


@dataclass(frozen=True)
class Decline:
    reason: str
    party: str


DECLINES: dict[str, Decline] = {
    DECLINE_3D_SECURE_FAILED: Decline("3d_secure_failed", "payment_network"),
    DECLINE_CALL_ISSUER: Decline("call_issuer", "payment_network"),
    DECLINE_CARD_EXPIRED: Decline("card_expired", "payment_network"),
    DECLINE_COUNTRY_FORBIDDEN: Decline("country_forbidden", "yoo_money"),
    DECLINE_FRAUD_SUSPECTED: Decline("fraud_suspected", "yoo_money"),
    DECLINE_GENERAL: Decline("general_decline", "payment_network"),
    DECLINE_IDENTIFICATION_REQUIRED: Decline("identification_required", "yoo_money"),
    DECLINE_INSUFFICIENT_FUNDS: Decline("insufficient_funds", "payment_network"),
    DECLINE_INVALID_CARD_NUMBER: Decline("invalid_card_number", "payment_network"),
    DECLINE_INVALID_CSC: Decline("invalid_csc", "payment_network"),
    DECLINE_ISSUER_UNAVAILABLE: Decline("issuer_unavailable", "payment_network"),
    DECLINE_LIMIT_EXCEEDED: Decline("payment_method_limit_exceeded", "payment_network"),
    DECLINE_RESTRICTED: Decline("payment_method_restricted", "payment_network"),
}
"""Decline card number -> cancellation reason and the party that declined."""

DECLINE_BY_REASON: dict[str, str] = {d.reason: number for number, d in DECLINES.items()}
"""Cancellation reason -> a card number that produces it."""

# Who declines a saved method's charge, by reason (for the admin "behaviour" switch).
PARTY_BY_REASON: dict[str, str] = {d.reason: d.party for d in DECLINES.values()}

SUCCESS_CARDS = (SUCCESS, SUCCESS_ALT, SUCCESS_VISA, SUCCESS_MIR)


def luhn_valid(number: str) -> bool:
    """True if `number` is 12–19 digits with a valid Luhn check digit."""
    if not number.isdigit() or not 12 <= len(number) <= 19:
        return False
    total = 0
    for i, ch in enumerate(reversed(number)):
        d = int(ch)
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def card_type(number: str) -> str:
    """The card scheme as YooKassa names it in `payment_method.card.card_type`."""
    if number.startswith("4"):
        return "Visa"
    if number[:2] in {"51", "52", "53", "54", "55"} or 2221 <= int(number[:4] or 0) <= 2720:
        return "MasterCard"
    if 2200 <= int(number[:4] or 0) <= 2204:
        return "Mir"
    return "Unknown"


def normalise(number: str) -> str:
    """Strip spaces and dashes people type between groups."""
    return "".join(ch for ch in number if ch not in " -\t")
