"""`python -m admin` serves the admin under uvicorn; `python -m admin manage ARGS` is manage.py.

Serving first applies Django's own migrations (schema `django`, under an advisory lock so two
instances starting together do not race) unless ADMIN_MIGRATE=0, then runs Django's ASGI
application under uvicorn on ADMIN_HOST:ADMIN_PORT (127.0.0.1:8001 by default).
"""

from __future__ import annotations

import os
import sys

MIGRATION_LOCK_KEY = 7_220_431_080


def _setup() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "admin.settings")
    import django

    django.setup()


def migrate() -> None:
    """Apply Django's migrations once, even when several admin processes start at the same time."""
    from django.core.management import call_command
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_lock(%s)", [MIGRATION_LOCK_KEY])
        try:
            call_command("migrate", interactive=False, verbosity=0)
        finally:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [MIGRATION_LOCK_KEY])
    connection.close()


def serve() -> int:
    import uvicorn

    from infra.logging import configure_logging, get_logger

    configure_logging("admin")
    _setup()
    if os.environ.get("ADMIN_MIGRATE", "1") != "0":
        migrate()
    host = os.environ.get("ADMIN_HOST", "127.0.0.1")
    port = int(os.environ.get("ADMIN_PORT", "8001"))
    get_logger("admin").info("admin.listening", url=f"http://{host}:{port}/admin/")
    uvicorn.run(
        "admin.asgi:application",
        host=host,
        port=port,
        workers=int(os.environ.get("ADMIN_WORKERS", "1")),
        lifespan="off",  # Django's ASGI handler does not speak the lifespan protocol
        log_config=None,
        proxy_headers=True,
        forwarded_allow_ips=os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1"),
        timeout_graceful_shutdown=15,
    )
    return 0


def manage(argv: list[str]) -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "admin.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(["python -m admin manage", *argv])
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["manage"]:
        return manage(argv[1:])
    if argv[:1] in ([], ["serve"]):
        return serve()
    print("usage: python -m admin [serve] | python -m admin manage <django command> [args]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
