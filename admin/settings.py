"""The Django settings module (`DJANGO_SETTINGS_MODULE=admin.settings`), read from the environment."""

import os

from admin.config import django_settings

globals().update(django_settings(os.environ))
