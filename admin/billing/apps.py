"""App config: creates the `django` schema before Django's first migration needs it."""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.db.models.signals import pre_migrate

from admin.config import DJANGO_SCHEMA


def ensure_django_schema(using: str = "default", **_: Any) -> None:
    """Django's tables live in schema `django` (the search path); it must exist before migrate."""
    from django.db import connections

    with connections[using].cursor() as cursor:
        cursor.execute(f"CREATE SCHEMA IF NOT EXISTS {DJANGO_SCHEMA}")


class BillingConfig(AppConfig):
    name = "admin.billing"
    label = "billing"
    verbose_name = "Billing"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # pre_migrate runs after the migration graph is loaded but before the recorder creates
        # django_migrations, so the schema is there in time (and on a fresh test database).
        pre_migrate.connect(ensure_django_schema, dispatch_uid="billing.ensure_django_schema")
