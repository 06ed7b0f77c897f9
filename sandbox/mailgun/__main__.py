"""`python -m sandbox.mailgun`: serve the Mailgun sandbox with uvicorn."""

from __future__ import annotations

import uvicorn

from ..common.logging import configure
from .app import create_app
from .settings import MailgunSandboxSettings


def main() -> None:
    settings = MailgunSandboxSettings()
    configure("mailgun-sandbox")
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level="warning",
        access_log=settings.access_log,
        timeout_graceful_shutdown=5,
    )


if __name__ == "__main__":
    main()
