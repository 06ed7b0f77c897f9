"""Django settings built from an environment mapping, so tests can build them without `os.environ`.

`admin/settings.py` calls `django_settings(os.environ)`; the test suite calls it with its own
mapping and `settings.configure(...)`, so it never has to change the process environment that
other tests read.

The admin reads only its own variables: the database, the command API's URL, its SERVICE_TOKEN
and the DJANGO_*/ADMIN_* knobs. It never holds the JWT signing key in production; only in
development and tests, with no SERVICE_TOKEN, it mints short-lived service tokens with
JWT_SECRET (decision 0111). Production refuses to start with every problem listed at once:
no real secret key, no allowed hosts, no or a placeholder service token, DEBUG on.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured

from infra.settings import weak_secret

BASE_DIR = Path(__file__).resolve().parent
DEV_SECRET_KEY = "dev-only-django-secret-key-not-for-production"  # noqa: S105 - refused in production
DEV_JWT_SECRET = "dev-only-jwt-secret-change-me-in-production"  # noqa: S105 - same default as command_api.config
ENVIRONMENTS = ("development", "test", "production")
# Every variable the admin reads (here and in admin/__main__.py); docker-compose.yml gives it no other.
ADMIN_VARIABLES = frozenset({
    "ENVIRONMENT", "DATABASE_URL", "LOG_FORMAT", "LOG_LEVEL", "COMMAND_API_URL", "SERVICE_TOKEN",
    "DJANGO_SECRET_KEY", "DJANGO_ALLOWED_HOSTS", "DJANGO_DEBUG", "DJANGO_SECURE", "DJANGO_SSL_REDIRECT",
    "DJANGO_HSTS_SECONDS", "DJANGO_CSRF_TRUSTED_ORIGINS", "ADMIN_HOST", "ADMIN_PORT", "ADMIN_WORKERS", "ADMIN_MIGRATE",
    "ADMIN_TIME_ZONE", "ADMIN_LANGUAGE", "ADMIN_COMMAND_WAIT_S", "ADMIN_API_TIMEOUT_S", "ADMIN_STATIC_ROOT",
    "FORWARDED_ALLOW_IPS",
})
# Read only outside production, to mint development service tokens when SERVICE_TOKEN is unset.
ADMIN_DEV_ONLY_VARIABLES = frozenset({"JWT_SECRET"})
DJANGO_SCHEMA = "django"


def _flag(env: Mapping[str, str], name: str, default: bool = False) -> bool:
    value = env.get(name)
    if value is None or value.strip() == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _list(value: str | None) -> list[str]:
    return [item.strip() for item in (value or "").split(",") if item.strip()]


def database_from_url(url: str) -> dict[str, Any]:
    """Django's DATABASES entry for a `postgresql://user:pass@host:port/db?...` URL.

    The search path is `django` only: Django's own tables go there, and the read models and the
    event store are always named with their schema (see models.py), so nothing lands in `public`.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.split("+", 1)[0]
    if scheme not in {"postgresql", "postgres"}:
        raise ImproperlyConfigured(f"DATABASE_URL must be a postgresql:// URL, got {parts.scheme!r}")
    query = dict(parse_qsl(parts.query))
    options: dict[str, Any] = {
        "connect_timeout": int(query.pop("connect_timeout", "10")),
        "options": f"-c search_path={DJANGO_SCHEMA} -c statement_timeout=30000",
        "application_name": "admin",
    }
    if "sslmode" in query:
        options["sslmode"] = query.pop("sslmode")
    if "host" in query and not parts.hostname:  # unix socket: postgresql:///db?host=/run/postgresql
        host = query.pop("host")
    else:
        host = parts.hostname or ""
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(parts.path.lstrip("/")) or "postgres",
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": host,
        "PORT": str(parts.port or ""),
        "OPTIONS": options,
        # Under ASGI every request runs its sync code in its own thread: persistent connections
        # would be per thread and leak, so connections close at the end of each request.
        "CONN_MAX_AGE": 0,
        "ATOMIC_REQUESTS": False,
    }


def production_problems(env: Mapping[str, str], secret_key: str, allowed_hosts: list[str], service_token: str) -> list[str]:
    """Every reason this environment cannot run the admin in production."""
    problems: list[str] = []
    missing = [name for name, value in (("DJANGO_SECRET_KEY", secret_key), ("DJANGO_ALLOWED_HOSTS", allowed_hosts)) if not value]
    if missing:
        problems.append(f"{', '.join(missing)} must be set when ENVIRONMENT=production")
    if secret_key and (weak_secret(secret_key, DEV_SECRET_KEY) or len(secret_key) < 32):
        problems.append("DJANGO_SECRET_KEY must be a real secret of at least 32 characters")
    if not service_token:
        problems.append("SERVICE_TOKEN must be set when ENVIRONMENT=production (a service token naming the operators)")
    elif weak_secret(service_token):
        problems.append("SERVICE_TOKEN is a placeholder")
    if _flag(env, "DJANGO_DEBUG"):
        problems.append("DJANGO_DEBUG must be off: debug pages show settings and stack traces")
    return problems


def django_settings(env: Mapping[str, str]) -> dict[str, Any]:
    """Every Django setting of the admin, from environment variables (see `.env.example`)."""
    environment = env.get("ENVIRONMENT", "development").strip().lower()
    if environment not in ENVIRONMENTS:
        raise ImproperlyConfigured(f"ENVIRONMENT must be one of {', '.join(ENVIRONMENTS)} (any case), not {env.get('ENVIRONMENT')!r}")
    production = environment == "production"

    secret_key = env.get("DJANGO_SECRET_KEY", "").strip()
    allowed_hosts = _list(env.get("DJANGO_ALLOWED_HOSTS"))
    service_token = env.get("SERVICE_TOKEN", "").strip()
    if production:
        problems = production_problems(env, secret_key, allowed_hosts, service_token)
        if problems:
            listed = "\n".join(f"  - {p}" for p in problems)
            raise ImproperlyConfigured(f"ENVIRONMENT=production refuses the admin configuration ({len(problems)} problems):\n{listed}")
    secret_key = secret_key or DEV_SECRET_KEY
    allowed_hosts = allowed_hosts or ["127.0.0.1", "localhost", "[::1]"]

    secure = _flag(env, "DJANGO_SECURE")
    database_url = env.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:55432/billing")

    settings: dict[str, Any] = {
        "BASE_DIR": BASE_DIR,
        "ENVIRONMENT": environment,
        "SECRET_KEY": secret_key,
        "DEBUG": _flag(env, "DJANGO_DEBUG"),
        "ALLOWED_HOSTS": allowed_hosts,
        "CSRF_TRUSTED_ORIGINS": _list(env.get("DJANGO_CSRF_TRUSTED_ORIGINS")),
        "INSTALLED_APPS": [
            "django.contrib.admin",
            "django.contrib.auth",
            "django.contrib.contenttypes",
            "django.contrib.sessions",
            "django.contrib.messages",
            "django.contrib.staticfiles",
            "admin.billing",
        ],
        "MIDDLEWARE": [
            "django.middleware.security.SecurityMiddleware",
            "whitenoise.middleware.WhiteNoiseMiddleware",
            "django.contrib.sessions.middleware.SessionMiddleware",
            "django.middleware.common.CommonMiddleware",
            "django.middleware.csrf.CsrfViewMiddleware",
            "django.contrib.auth.middleware.AuthenticationMiddleware",
            # Every page needs a logged-in user unless its view says otherwise (login, /healthz).
            "django.contrib.auth.middleware.LoginRequiredMiddleware",
            "django.contrib.messages.middleware.MessageMiddleware",
            "django.middleware.clickjacking.XFrameOptionsMiddleware",
        ],
        "ROOT_URLCONF": "admin.urls",
        "TEMPLATES": [
            {
                "BACKEND": "django.template.backends.django.DjangoTemplates",
                "DIRS": [],
                "APP_DIRS": True,
                "OPTIONS": {
                    "context_processors": [
                        "django.template.context_processors.request",
                        "django.contrib.auth.context_processors.auth",
                        "django.contrib.messages.context_processors.messages",
                    ],
                },
            },
        ],
        "ASGI_APPLICATION": "admin.asgi.application",
        "WSGI_APPLICATION": "admin.wsgi.application",
        "DATABASES": {"default": database_from_url(database_url)},
        "DEFAULT_AUTO_FIELD": "django.db.models.BigAutoField",
        "AUTH_PASSWORD_VALIDATORS": [
            {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
            {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
            {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
            {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
        ],
        "LOGIN_URL": "admin:login",
        "LANGUAGE_CODE": env.get("ADMIN_LANGUAGE", "en-us"),
        "TIME_ZONE": env.get("ADMIN_TIME_ZONE", "Europe/Moscow"),
        "USE_I18N": True,
        "USE_TZ": True,
        "STATIC_URL": "/static/",
        "STATIC_ROOT": env.get("ADMIN_STATIC_ROOT") or None,
        # Serve the admin's CSS/JS straight from the apps' static folders: no collectstatic step
        # is needed to run, and files are cached with far-future headers all the same.
        "WHITENOISE_USE_FINDERS": True,
        "WHITENOISE_AUTOREFRESH": _flag(env, "DJANGO_DEBUG"),
        "CSRF_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_AGE": 8 * 3600,
        "SESSION_COOKIE_SECURE": secure,
        "CSRF_COOKIE_SECURE": secure,
        "SECURE_CONTENT_TYPE_NOSNIFF": True,
        "SECURE_REFERRER_POLICY": "same-origin",
        "X_FRAME_OPTIONS": "DENY",
        "LOGGING_CONFIG": None,  # structlog is configured by admin.__main__ / asgi
        # Billing-specific settings
        "BILLING_COMMAND_API_URL": env.get("COMMAND_API_URL", "http://127.0.0.1:8000").rstrip("/"),
        "BILLING_SERVICE_TOKEN": service_token or None,
        # development and tests only: mint service tokens when SERVICE_TOKEN is not set
        "BILLING_JWT_SECRET": None if production else env.get("JWT_SECRET", DEV_JWT_SECRET),
        "BILLING_JWT_ALGORITHM": "HS256",
        "BILLING_COMMAND_WAIT_S": min(10, max(0, int(env.get("ADMIN_COMMAND_WAIT_S", "10")))),
        "BILLING_API_TIMEOUT_S": float(env.get("ADMIN_API_TIMEOUT_S", "5")),
    }
    if secure:
        settings.update(
            SECURE_PROXY_SSL_HEADER=("HTTP_X_FORWARDED_PROTO", "https"),
            SECURE_SSL_REDIRECT=_flag(env, "DJANGO_SSL_REDIRECT", True),
            SECURE_REDIRECT_EXEMPT=[r"^healthz$"],
            SECURE_HSTS_SECONDS=int(env.get("DJANGO_HSTS_SECONDS", "3600")),
            SESSION_COOKIE_NAME="__Host-sessionid",
            CSRF_COOKIE_NAME="__Host-csrftoken",
        )
    return settings
