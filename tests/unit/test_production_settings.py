"""ENVIRONMENT=production refuses development values at start-up, with every problem in one message.

Each service's settings are built the way its bootstrap builds them, from the values `make run`
uses (`.env.example`, the shiftable clock, the crash hook the e2e tests set), with only
ENVIRONMENT switched to production: the one error must name every problem, so an operator fixes
the whole list in one go. A real production configuration must be accepted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from dotenv import dotenv_values
from pydantic import ValidationError

from admin.config import django_settings
from command_api.config import ApiSettings
from infra.settings import Settings
from notifier.config import NotifierServiceSettings
from payment_processor.config import ProcessorServiceSettings
from projector.config import ProjectorSettings

ROOT = Path(__file__).resolve().parents[2]
STRONG = "x7Kp2v9QmR4tZ8wB1nC6yH3jL5sD0fGa"  # 32 bytes, not a placeholder


def dev_values(**extra: Any) -> dict[str, Any]:
    """The development configuration: `.env.example` as `make run` uses it, lower-cased for kwargs.

    Passed as keyword arguments, so the test runner's own environment (ENVIRONMENT=test, ...) does
    not leak in.
    """
    values = {k.lower(): v for k, v in dotenv_values(ROOT / ".env.example").items() if v is not None}
    return {**values, "billing_clock": "shiftable", **extra}


def refusal(cls: type[Settings], **values: Any) -> str:
    with pytest.raises(ValidationError) as caught:
        cls(_env_file=None, **values)  # type: ignore[call-arg]
    errors = caught.value.errors()
    assert len(errors) == 1, errors  # one error ...
    return str(errors[0]["msg"])  # ... naming every problem


@pytest.mark.parametrize("spelling", ["production", "Production", " PRODUCTION "])
def test_the_api_refuses_every_development_value_at_once(spelling: str) -> None:
    message = refusal(ApiSettings, **dev_values(environment=spelling, jwt_secret="s"))
    for expected in ("JWT_SECRET is 1 bytes", "YOOKASSA_TRUSTED_NETWORKS", "127.0.0.1/32", "::1/128", "BILLING_CLOCK=shiftable"):
        assert expected in message, message
    assert "4 problems" not in message and "3 problems" in message


def test_the_api_refuses_the_development_secret() -> None:
    message = refusal(ApiSettings, **dev_values(environment="production"))
    assert "JWT_SECRET is a placeholder or the development default" in message


def test_the_processor_refuses_sandbox_credentials_local_urls_and_the_crash_hook() -> None:
    message = refusal(ProcessorServiceSettings, **dev_values(environment="production", billing_crash_at="after_checkout_started"))
    for expected in (
        "YOOKASSA_SHOP_ID is the sandbox's", "YOOKASSA_SECRET_KEY is a placeholder or a test key",
        "YOOKASSA_API_URL='http://127.0.0.1:8010/v3' must be an https:// URL",
        "YOOKASSA_RETURN_URL='http://127.0.0.1:8000/v1/return' must be an https:// URL",
        "BILLING_CRASH_AT is set", "BILLING_CLOCK=shiftable", "YOOKASSA_TAX_SYSTEM_CODE is not set",
        "YOOKASSA_RECEIPT_VAT_CODE is not set", "8 problems",
    ):
        assert expected in message, message


def test_the_notifier_refuses_the_sandbox_mailgun() -> None:
    message = refusal(NotifierServiceSettings, **dev_values(environment="production"))
    for expected in ("MAILGUN_API_KEY", "MAILGUN_DOMAIN", "MAILGUN_FROM", "MAILGUN_API_URL", "BILLING_CLOCK", "5 problems"):
        assert expected in message, message


@pytest.mark.parametrize("cls", [Settings, ProjectorSettings])
def test_the_relay_migrations_and_projector_refuse_the_movable_clock(cls: type[Settings]) -> None:
    assert "BILLING_CLOCK=shiftable" in refusal(cls, **dev_values(environment="production"))


@pytest.mark.parametrize("typo", ["prod", "prodution", "staging", ""])
def test_an_unknown_environment_is_refused_not_taken_for_development(typo: str) -> None:
    for cls in (Settings, ApiSettings, ProcessorServiceSettings, NotifierServiceSettings):
        with pytest.raises(ValidationError, match="development"):
            cls(_env_file=None, environment=typo)  # type: ignore[call-arg]
    with pytest.raises(ImproperlyConfigured, match="ENVIRONMENT must be one of"):
        django_settings({"ENVIRONMENT": typo or "?"})


def test_loopback_and_private_provider_urls_are_refused_even_over_https() -> None:
    good = production_values()
    for url in ("https://127.0.0.1/v3", "https://10.0.0.5/v3", "https://localhost/v3", "https://[::1]/v3", "https://mailgun-sandbox.local/v3"):
        message = refusal(NotifierServiceSettings, **{**good, "mailgun_api_url": url})
        assert "MAILGUN_API_URL" in message and "1 problems" in message


@pytest.mark.parametrize("networks", ["10.0.0.0/8", "0.0.0.0/0", "192.168.1.0/24", "fd00::/8", "::/0", "127.0.0.0/8"])
def test_private_or_catch_all_trusted_webhook_networks_are_refused(networks: str) -> None:
    good = production_values()
    message = refusal(ApiSettings, **{**good, "yookassa_trusted_networks": "185.71.76.0/27," + networks})
    assert "YOOKASSA_TRUSTED_NETWORKS" in message and networks.split("/")[0] in message


def test_a_jwks_provider_needs_issuer_and_audience_over_https() -> None:
    good = production_values()
    message = refusal(ApiSettings, **{**good, "jwt_jwks_url": "http://127.0.0.1:8080/certs", "jwt_algorithm": "RS256"})
    assert "JWT_JWKS_URL='http://127.0.0.1:8080/certs' must be an https:// URL" in message
    assert "JWT_JWKS_URL needs JWT_ISSUER and JWT_AUDIENCE" in message


@pytest.fixture(autouse=True)
def _no_service_variables_from_the_runner(monkeypatch: pytest.MonkeyPatch) -> None:
    """`make test` exports the development stack's variables (e.g. YOOKASSA_TRUSTED_NETWORKS with
    127.0.0.1): settings would read them before the defaults, so each test states all it means."""
    import os

    classes = (Settings, ProjectorSettings, ApiSettings, ProcessorServiceSettings, NotifierServiceSettings)
    names = {name.upper() for cls in classes for name in cls.model_fields}
    names |= {(cls.model_config.get("env_prefix") or "").upper() + name.upper() for cls in classes for name in cls.model_fields}
    for name in list(os.environ):
        if name in names:
            monkeypatch.delenv(name)


def production_values() -> dict[str, Any]:
    return {
        "environment": "production",
        "database_url": "postgresql://billing:pw@db.internal:5432/billing",
        "kafka_bootstrap_servers": "kafka:9092",
        "billing_clock": "system",
        "jwt_secret": STRONG,
        "yookassa_shop_id": "504231",
        "yookassa_secret_key": "live_" + STRONG,
        "yookassa_api_url": "https://api.yookassa.ru/v3",
        "yookassa_return_url": "https://cinema.example.com/billing/return",
        "yookassa_tax_system_code": 2,
        "yookassa_receipt_vat_code": 1,
        "mailgun_api_key": "key-" + STRONG,
        "mailgun_domain": "mg.cinema.example.com",
        "mailgun_api_url": "https://api.eu.mailgun.net/v3",
        "mailgun_from": "Cinema <billing@mg.cinema.example.com>",
    }


def test_a_real_production_configuration_is_accepted() -> None:
    values = production_values()
    for cls in (Settings, ProjectorSettings, ApiSettings, ProcessorServiceSettings, NotifierServiceSettings):
        settings = cls(_env_file=None, **values)  # type: ignore[call-arg]
        assert settings.production
    jwks = ApiSettings(_env_file=None, **{  # type: ignore[call-arg]
        **values, "jwt_secret": "", "jwt_jwks_url": "https://sso.example.com/realms/cinema/protocol/openid-connect/certs",
        "jwt_algorithm": "RS256", "jwt_issuer": "https://sso.example.com/realms/cinema", "jwt_audience": "billing-api",
    })
    assert jwks.jwt_jwks_url
    admin = django_settings({
        "ENVIRONMENT": "Production", "DJANGO_SECRET_KEY": STRONG, "DJANGO_ALLOWED_HOSTS": "admin.example.com",
        "SERVICE_TOKEN": "eyJhbGciOiJIUzI1NiJ9.e30.c2lnbmF0dXJl", "JWT_SECRET": STRONG,
    })
    assert admin["ENVIRONMENT"] == "production"
    assert admin["BILLING_JWT_SECRET"] is None  # the admin never holds the signing key in production


def test_the_admin_refuses_every_development_value_at_once() -> None:
    env = {k: v for k, v in dotenv_values(ROOT / ".env.example").items() if v is not None}
    with pytest.raises(ImproperlyConfigured) as caught:
        django_settings({**env, "ENVIRONMENT": "Production", "DJANGO_SECRET_KEY": "dev-only-django-secret-key-not-for-production",
                         "SERVICE_TOKEN": "changeme", "DJANGO_DEBUG": "1"})
    message = str(caught.value)
    for expected in ("DJANGO_ALLOWED_HOSTS must be set", "DJANGO_SECRET_KEY must be a real secret", "SERVICE_TOKEN is a placeholder",
                     "DJANGO_DEBUG must be off", "4 problems"):
        assert expected in message, message


def test_a_refused_configuration_does_not_print_its_secrets():
    secret = "live_" + "q" * 8  # too short to matter, but a secret all the same
    with pytest.raises(ValidationError) as caught:
        ProcessorServiceSettings(_env_file=None, **{**production_values(), "yookassa_secret_key": secret,  # type: ignore[call-arg]
                                                    "yookassa_api_url": "http://127.0.0.1/v3"})
    assert "YOOKASSA_API_URL" in str(caught.value) and secret not in str(caught.value)


def test_production_refuses_missing_receipt_settings_and_every_environment_refuses_wrong_ones() -> None:
    values = production_values()
    for missing in ("yookassa_tax_system_code", "yookassa_receipt_vat_code"):
        message = refusal(ProcessorServiceSettings, **{k: v for k, v in values.items() if k != missing})
        assert f"{missing.upper()} is not set" in message and "1 problems" in message, message
    wrong = {"yookassa_tax_system_code": 7, "yookassa_receipt_vat_code": 13, "yookassa_receipt_payment_subject": "subscription",
             "yookassa_receipt_payment_mode": "monthly"}
    for environment in ("production", "development"):
        for name, value in wrong.items():
            with pytest.raises(ValidationError) as caught:
                ProcessorServiceSettings(_env_file=None, **{**values, "environment": environment, name: value})  # type: ignore[call-arg]
            assert name in str(caught.value)
    good = ProcessorServiceSettings(_env_file=None, **{**values, "yookassa_receipt_payment_mode": "full_prepayment"})  # type: ignore[call-arg]
    assert (good.receipts.tax_system_code, good.receipts.vat_code, good.receipts.payment_mode) == (2, 1, "full_prepayment")
