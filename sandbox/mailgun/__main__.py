"""`python -m sandbox.mailgun`: serve the Mailgun sandbox with uvicorn."""

from __future__ import annotations

from ..common.serve import serve
from .app import create_app
from .settings import MailgunSandboxSettings


def main() -> None:
    settings = MailgunSandboxSettings()
    serve(create_app(settings), name="mailgun-sandbox", host=settings.host, port=settings.port, access_log=settings.access_log)


if __name__ == "__main__":
    main()
