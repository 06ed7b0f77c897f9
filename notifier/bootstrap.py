"""The composition root: the only place that reads settings and builds the notifier's adapters.

`run()` is the whole process: migrate the notifier's schema, consume the events topic in the
notifier's own consumer group, run the background retrier next to it, and stop both cleanly on
SIGTERM/SIGINT (the record in hand is finished and its offset committed).
"""

from __future__ import annotations

import asyncio
import contextlib

from infra.db import create_pool
from infra.kafka import ConsumerLoop, ensure_topics, install_signal_handlers, make_producer
from infra.logging import get_logger
from infra.metrics import serve_metrics
from infra.settings import Settings

from notifier.adapters.dead_letters import DeadLetters
from notifier.adapters.email_log import EmailLog
from notifier.adapters.mailgun import MailgunClient
from notifier.config import NotifierServiceSettings, NotifierSettings
from notifier.metrics import waiting_refresher
from notifier.adapters.rendering import Renderer
from notifier.service import Notifier

log = get_logger(__name__)


def migrate(settings: Settings) -> None:
    from infra.migrate import upgrade

    upgrade(settings, ["notifier"])


async def run(settings: NotifierServiceSettings, config: NotifierSettings) -> None:
    await asyncio.to_thread(migrate, settings)
    dlq_topic = config.dlq_topic or settings.events_dlq_topic
    await ensure_topics(settings, {dlq_topic: 1})

    # Plain asyncpg: a statement on a connection the server dropped fails, asyncpg discards that
    # connection, and the consumer loop retries the record.
    pool = await create_pool(settings.database_url, size=4, application_name="notifier")
    producer = await make_producer(settings, client_id="notifier-dlq")
    mailgun = MailgunClient(
        api_url=settings.mailgun_api_url,
        domain=settings.mailgun_domain,
        api_key=settings.mailgun_api_key,
        sender=settings.mailgun_from,
        timeout_s=config.http_timeout_s or settings.mailgun_timeout_s,
        backoff_initial_s=config.backoff_initial_s,
        backoff_max_s=config.backoff_max_s,
    )
    notifier = Notifier(
        email_log=EmailLog(pool),
        mailgun=mailgun,
        renderer=Renderer(zone=config.display_timezone),
        dead_letters=DeadLetters(producer, dlq_topic, config.group_id),
        config=config,
        mailgun_domain=settings.mailgun_domain,
    )
    loop = ConsumerLoop(
        settings,
        topics=[settings.events_topic],
        group_id=config.group_id,
        handle=notifier.handle,
        name="notifier",
        # Handler errors are infrastructure (database, broker), not Mailgun: retry for a while, then
        # the loop dead-letters the record with the reason rather than blocking its partition.
        max_attempts=config.handler_max_attempts,
        dead_letter_topic=dlq_topic,
        retry_backoff_max_s=5.0,
        consumer_options={"auto_offset_reset": config.start_from},
        commit_interval_s=config.commit_interval_s,
    )
    stop = asyncio.Event()
    install_signal_handlers(loop, extra=stop.set)
    metrics = await serve_metrics(config.metrics_port, {"emails": waiting_refresher(pool, lambda: notifier.health.open)})
    retrier = asyncio.create_task(notifier.run_retrier(stop), name="notifier-retrier")
    log.info(
        "notifier_starting",
        topic=settings.events_topic,
        group=config.group_id,
        dlq=dlq_topic,
        mailgun=settings.mailgun_api_url,
        lease_s=notifier.lease_s,
    )
    try:
        await loop.run()
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(retrier, timeout=notifier.lease_s)
        if metrics is not None:
            await metrics.close()
        await mailgun.aclose()
        await producer.stop()
        await pool.close()
        log.info("notifier_stopped", **notifier.stats.__dict__)
