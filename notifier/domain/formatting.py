"""Money and dates as a reader of each language expects them, through Babel (CLDR data).

Russian: `1 490,00 ₽`, English: `RUB 1,490.00`. Babel puts a NO-BREAK SPACE (U+00A0) between the
digit groups and before `₽` in Russian; we keep it — an amount must never wrap across two lines —
and use the same character between a letter-code currency and the digits in English, which CLDR's
currency-spacing rule asks for and Babel leaves out (`RUB1,490.00`). Dates are shown in one
display time zone (Moscow by default, the product's market) with the zone named; Russian days
leave out CLDR's trailing "г." so a date can end a sentence without a double full stop.
"""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo

from babel.dates import format_date, format_time
from babel.numbers import format_currency, get_currency_symbol, is_currency

from schemas import Money

NBSP = "\u00a0"
SUPPORTED_LOCALES = ("ru", "en")
_ZONE_LABELS = {"Europe/Moscow": {"ru": "МСК", "en": "Moscow time"}}


class FormattingError(ValueError):
    """A value the emails cannot show (e.g. an unknown currency); the event is dead-lettered."""


def _locale(locale: str) -> str:
    if locale not in SUPPORTED_LOCALES:
        raise FormattingError(f"unsupported locale {locale!r}")
    return locale


def format_money(money: Money | None, locale: str) -> str:
    """`1 490,00 ₽` (ru) or `RUB 1,490.00` (en), with NO-BREAK SPACEs."""
    if money is None:
        raise FormattingError("amount is missing")
    locale = _locale(locale)
    if not is_currency(money.currency):
        raise FormattingError(f"unknown currency {money.currency!r}")
    amount = Decimal(money.amount)
    if locale == "en":
        symbol = get_currency_symbol(money.currency, locale="en")
        if symbol[-1:].isalpha():  # a letter code touching digits: CLDR inserts a space
            return format_currency(amount, money.currency, format=f"¤{NBSP}#,##0.00", locale="en", currency_digits=False)
    return format_currency(amount, money.currency, locale=locale)


def _local(moment: datetime, zone: str) -> datetime:
    if moment.tzinfo is None:
        raise FormattingError("timestamp without a time zone")
    return moment.astimezone(ZoneInfo(zone))


# Russian without the trailing "г." (CLDR's long form), so a date can end a sentence: "по 6 марта 2026."
_DAY_PATTERNS = {"ru": "d MMMM y", "en": "MMMM d, y"}


def format_day(moment: datetime | None, locale: str, zone: str = "Europe/Moscow") -> str:
    """The calendar day in the display zone: `6 марта 2026` / `March 6, 2026`."""
    if moment is None:
        raise FormattingError("date is missing")
    return format_date(_local(moment, zone).date(), _DAY_PATTERNS[_locale(locale)], locale=locale)


def zone_label(zone: str, locale: str, moment: datetime | None = None) -> str:
    """`МСК` / `Moscow time` for Moscow, else `UTC+hh:mm`."""
    label = _ZONE_LABELS.get(zone, {}).get(locale)
    if label:
        return label
    offset = _local(moment or datetime.now(timezone.utc), zone).utcoffset()
    minutes = int(offset.total_seconds() // 60) if offset else 0
    sign = "+" if minutes >= 0 else "-"
    return f"UTC{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def format_moment(moment: datetime | None, locale: str, zone: str = "Europe/Moscow") -> str:
    """Day and time with the zone: `6 марта 2026, 00:30 (МСК)` / `March 6, 2026, 00:30 (Moscow time)`."""
    if moment is None:
        raise FormattingError("time is missing")
    local = _local(moment, zone)
    day = format_date(local.date(), _DAY_PATTERNS[_locale(locale)], locale=locale)
    clock = format_time(local.timetz(), "HH:mm", locale=locale)
    return f"{day}, {clock} ({zone_label(zone, locale, moment)})"
