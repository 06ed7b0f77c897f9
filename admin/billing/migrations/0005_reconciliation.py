"""The Reconciliation pages' models (unmanaged: the processor owns the tables, migration pp0006_recon)
and their view permission for both operator groups (docs/decisions/0122)."""

from django.contrib.auth.management import create_permissions
from django.db import migrations, models

MODELS = ("reconciliationrun", "reconciliationdifference")


def grant_view(apps, schema_editor):
    app_config = apps.get_app_config("billing")
    app_config.models_module = True  # create_permissions skips apps without a models module
    create_permissions(app_config, apps=apps, verbosity=0)
    app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    view = list(Permission.objects.filter(content_type__app_label="billing", codename__in=[f"view_{m}" for m in MODELS]))
    for group in Group.objects.filter(name__in=("billing-viewers", "billing-operators")):
        group.permissions.add(*view)


def revoke_view(apps, schema_editor):
    Permission = apps.get_model("auth", "Permission")
    Permission.objects.filter(content_type__app_label="billing", codename__in=[f"view_{m}" for m in MODELS]).delete()


class Migration(migrations.Migration):
    dependencies = [("billing", "0004_promo_codes")]

    operations = [
        migrations.CreateModel(
            name="ReconciliationRun",
            fields=[
                ("run_id", models.UUIDField(primary_key=True, serialize=False)),
                ("trigger", models.TextField()),
                ("window_start", models.DateTimeField()),
                ("window_end", models.DateTimeField()),
                ("started_at", models.DateTimeField()),
                ("finished_at", models.DateTimeField(null=True)),
                ("status", models.TextField()),
                ("payments_seen", models.IntegerField()),
                ("refunds_seen", models.IntegerField()),
                ("differences", models.IntegerField()),
                ("recorded", models.IntegerField()),
                ("error", models.TextField(null=True)),
            ],
            options={
                "verbose_name": "reconciliation run",
                "db_table": 'processor"."reconciliation_runs',
                "ordering": ["-started_at"],
                "managed": False,
            },
        ),
        migrations.CreateModel(
            name="ReconciliationDifference",
            fields=[
                ("difference_id", models.UUIDField(primary_key=True, serialize=False)),
                ("run_id", models.UUIDField()),
                ("kind", models.TextField()),
                ("object_type", models.TextField()),
                ("provider_id", models.TextField()),
                ("our_id", models.UUIDField(null=True)),
                ("user_id", models.TextField(null=True)),
                ("our_status", models.TextField(null=True)),
                ("provider_status", models.TextField(null=True)),
                ("our_amount_minor", models.BigIntegerField(null=True)),
                ("provider_amount_minor", models.BigIntegerField(null=True)),
                ("currency", models.TextField(null=True)),
                ("detail", models.TextField()),
                ("status", models.TextField()),
                ("command_id", models.UUIDField(null=True)),
                ("created_at", models.DateTimeField()),
                ("resolved_by", models.TextField(null=True)),
                ("resolution", models.TextField(null=True)),
                ("resolved_at", models.DateTimeField(null=True)),
            ],
            options={
                "verbose_name": "reconciliation difference",
                "db_table": 'processor"."reconciliation_differences',
                "ordering": ["-created_at", "kind"],
                "managed": False,
            },
        ),
        migrations.RunPython(grant_view, revoke_view),
    ]
