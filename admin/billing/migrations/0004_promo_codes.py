"""Promo codes in the admin: the unmanaged model over `read.promo_codes`, the promo columns of
subscriptions and payments, and the view permission for both operator groups."""

from django.contrib.auth.management import create_permissions
from django.db import migrations, models


def grant_view(apps, schema_editor):
    app_config = apps.get_app_config("billing")
    app_config.models_module = True  # create_permissions skips apps without a models module
    create_permissions(app_config, apps=apps, verbosity=0)
    app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    view = Permission.objects.get(content_type__app_label="billing", codename="view_promocode")
    for group in Group.objects.filter(name__in=["billing-viewers", "billing-operators"]):
        group.permissions.add(view)


class Migration(migrations.Migration):
    dependencies = [("billing", "0003_revenue")]

    operations = [
        migrations.CreateModel(
            name="PromoCode",
            fields=[
                ("code", models.TextField(primary_key=True, serialize=False)),
                ("percent_off", models.IntegerField(null=True)),
                ("amount_off_minor", models.BigIntegerField(null=True)),
                ("currency", models.TextField(null=True)),
                ("periods", models.IntegerField()),
                ("expires_at", models.DateTimeField()),
                ("max_redemptions", models.IntegerField(null=True)),
                ("plan_ids", models.JSONField(null=True)),
                ("active", models.BooleanField()),
                ("deactivated_reason", models.TextField(null=True)),
                ("redemptions", models.IntegerField()),
                ("released", models.IntegerField()),
                ("created_at", models.DateTimeField()),
                ("updated_at", models.DateTimeField()),
            ],
            options={"db_table": 'read"."promo_codes', "ordering": ["-created_at"], "managed": False},
        ),
        migrations.AddField(model_name="subscription", name="promo_code", field=models.TextField(null=True)),
        migrations.AddField(model_name="subscription", name="discount_minor", field=models.BigIntegerField(default=0), preserve_default=False),
        migrations.AddField(model_name="subscription", name="promo_periods_left", field=models.IntegerField(default=0), preserve_default=False),
        migrations.AddField(model_name="payment", name="discount_minor", field=models.BigIntegerField(default=0), preserve_default=False),
        migrations.AddField(model_name="payment", name="promo_code", field=models.TextField(null=True)),
        migrations.RunPython(grant_view, migrations.RunPython.noop),
    ]
