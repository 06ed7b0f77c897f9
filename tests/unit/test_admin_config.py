"""The admin's pure parts: settings from the environment, and money as operators read and type it."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.core.exceptions import ImproperlyConfigured

from admin.billing.money import format_money, parse_amount
from admin.config import database_from_url, django_settings

STRONG_KEY = "k" * 40


def test_development_defaults_are_safe() -> None:
    s = django_settings({})
    assert s["DEBUG"] is False
    assert s["SESSION_COOKIE_SECURE"] is False and s["CSRF_COOKIE_SECURE"] is False
    assert "django.middleware.csrf.CsrfViewMiddleware" in s["MIDDLEWARE"]
    assert "django.contrib.auth.middleware.LoginRequiredMiddleware" in s["MIDDLEWARE"]
    assert s["ALLOWED_HOSTS"] == ["127.0.0.1", "localhost", "[::1]"]
    assert s["BILLING_COMMAND_API_URL"] == "http://127.0.0.1:8000"
    assert s["BILLING_COMMAND_WAIT_S"] == 10


@pytest.mark.parametrize(
    "env, missing",
    [
        ({}, "DJANGO_SECRET_KEY, DJANGO_ALLOWED_HOSTS"),
        ({"DJANGO_SECRET_KEY": STRONG_KEY}, "DJANGO_ALLOWED_HOSTS"),
        ({"DJANGO_ALLOWED_HOSTS": "admin.example.com"}, "DJANGO_SECRET_KEY"),
    ],
)
def test_production_requires_secret_key_and_allowed_hosts(env: dict[str, str], missing: str) -> None:
    with pytest.raises(ImproperlyConfigured, match=missing):
        django_settings({"ENVIRONMENT": "production", "SERVICE_TOKEN": "t", **env})


def test_production_refuses_a_weak_key_and_a_missing_service_token() -> None:
    base = {"ENVIRONMENT": "production", "DJANGO_ALLOWED_HOSTS": "admin.example.com", "SERVICE_TOKEN": "t"}
    with pytest.raises(ImproperlyConfigured, match="at least 32"):
        django_settings({**base, "DJANGO_SECRET_KEY": "short"})
    with pytest.raises(ImproperlyConfigured, match="SERVICE_TOKEN"):
        django_settings({**base, "DJANGO_SECRET_KEY": STRONG_KEY, "SERVICE_TOKEN": ""})
    s = django_settings({**base, "DJANGO_SECRET_KEY": STRONG_KEY})
    assert s["ALLOWED_HOSTS"] == ["admin.example.com"] and s["BILLING_SERVICE_TOKEN"] == "t"


def test_https_makes_cookies_secure() -> None:
    s = django_settings({"DJANGO_SECURE": "1"})
    assert s["SESSION_COOKIE_SECURE"] and s["CSRF_COOKIE_SECURE"]
    assert s["SECURE_PROXY_SSL_HEADER"] == ("HTTP_X_FORWARDED_PROTO", "https")
    assert s["SECURE_HSTS_SECONDS"] > 0 and s["SECURE_SSL_REDIRECT"] is True


def test_database_url_puts_django_tables_in_their_own_schema() -> None:
    db = database_from_url("postgresql://bill:p%40ss@db.internal:5433/billing?sslmode=require")
    assert (db["NAME"], db["USER"], db["PASSWORD"], db["HOST"], db["PORT"]) == (
        "billing", "bill", "p@ss", "db.internal", "5433")
    assert "search_path=django" in db["OPTIONS"]["options"]
    assert db["OPTIONS"]["sslmode"] == "require"
    with pytest.raises(ImproperlyConfigured):
        database_from_url("mysql://x@y/z")


def test_money_is_shown_as_money() -> None:
    assert format_money(149000, "RUB") == "1\u00a0490,00\u00a0₽"
    assert format_money(1, "RUB") == "0,01\u00a0₽"
    assert format_money(None) == "—"


@pytest.mark.parametrize("text, value", [("1490", "1490.00"), ("1 490,50", "1490.50"), ("99.9", "99.90"),
                                         ("1\u00a0490,00\u00a0₽", "1490.00")])
def test_amounts_operators_type(text: str, value: str) -> None:
    assert parse_amount(text) == Decimal(value)


@pytest.mark.parametrize("text", ["", "abc", "1.001", "0", "-5", "NaN", "1e30", "9" * 40, "Infinity", "10 000 000 000"])
def test_amounts_that_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_amount(text)


@pytest.mark.parametrize("text, message", [("1e30", "too large"), ("9" * 40, "too large"), ("1,001", "two decimal places")])
def test_refused_amounts_say_why_in_one_line(text: str, message: str) -> None:
    """The form shows the message as is: one sentence, not pydantic's multi-line report."""
    with pytest.raises(ValueError) as caught:
        parse_amount(text)
    assert message in str(caught.value) and "\n" not in str(caught.value)
