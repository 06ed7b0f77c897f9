"""The relay's composition root: one OutboxRelay, its signal handlers and its metrics server."""

from __future__ import annotations

import asyncio
import signal
from typing import Any


from infra.metrics import outbox_refresher, serve_metrics
from infra.settings import Settings, plain_url
from relay.outbox import OutboxRelay


async def run_relay(settings: Settings, **options: Any) -> None:
    """Run one relay until SIGTERM/SIGINT (serving /metrics on RELAY_METRICS_PORT when set)."""
    relay = OutboxRelay(settings, **options)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, relay.stop)
    port = getattr(settings, "relay_metrics_port", None)
    metrics = await serve_metrics(port, {"outbox": outbox_refresher(plain_url(settings.database_url))})
    try:
        await relay.run()
    finally:
        if metrics is not None:
            await metrics.close()
