"""`python -m sandbox.yookassa`: serve the YooKassa sandbox with uvicorn."""

from __future__ import annotations

from ..common.serve import serve
from .app import create_app
from .settings import YooKassaSandboxSettings


def main() -> None:
    settings = YooKassaSandboxSettings()
    serve(create_app(settings), name="yookassa-sandbox", host=settings.host, port=settings.port, access_log=settings.access_log)


if __name__ == "__main__":
    main()
