"""`python -m command_api`: serve the API with uvicorn (API_HOST/API_PORT, default 127.0.0.1:8000)."""

from __future__ import annotations

import uvicorn

from command_api.bootstrap import load_settings
from command_api.entrypoints.app import create_app
from infra.logging import configure_logging


def main() -> None:
    configure_logging("command_api")
    settings = load_settings()
    uvicorn.run(
        create_app(settings),
        host=settings.api_host,
        port=settings.api_port,
        log_config=None,
        access_log=False,  # the API logs each request itself, as JSON with the request id
        proxy_headers=False,  # X-Forwarded-For is judged by the webhook itself (API_TRUSTED_PROXIES/_HOPS)
        server_header=False,
        timeout_graceful_shutdown=15,
    )


if __name__ == "__main__":
    main()
