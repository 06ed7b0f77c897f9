"""The two operator groups: billing-viewers (view only) and billing-operators (view and act).

Permissions are normally created after all migrations (post_migrate); this migration creates
them first so the groups can be filled on a fresh database in the same `migrate` run.
"""

from django.contrib.auth.management import create_permissions
from django.db import migrations

VIEWERS = "billing-viewers"
OPERATORS = "billing-operators"
MODELS = ("plan", "subscription", "payment", "refund", "command", "account", "storedevent")


def create_groups(apps, schema_editor):
    app_config = apps.get_app_config("billing")
    app_config.models_module = True  # create_permissions skips apps without a models module
    create_permissions(app_config, apps=apps, verbosity=0)
    app_config.models_module = None

    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    view = list(Permission.objects.filter(content_type__app_label="billing", codename__in=[f"view_{m}" for m in MODELS]))
    act = Permission.objects.get(content_type__app_label="billing", codename="can_act")
    viewers, _ = Group.objects.get_or_create(name=VIEWERS)
    viewers.permissions.set(view)
    operators, _ = Group.objects.get_or_create(name=OPERATORS)
    operators.permissions.set([*view, act])


def drop_groups(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=[VIEWERS, OPERATORS]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(create_groups, drop_groups)]
