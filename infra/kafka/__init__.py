"""Kafka as every service uses it: the producer (`producer`), topics (`topics`), the consumer loop (`consumer`).

Kafka delivers at least once; the promises of this product come from consumers that make their
effects idempotent in PostgreSQL and commit offsets only after the effect (`ConsumerLoop`).
"""

from infra.kafka.consumer import (
    ConsumerLoop,
    GiveUp,
    Handler,
    StopRequested,
    consumer_options,
    correlation_id_of,
    header,
    install_signal_handlers,
)
from infra.kafka.producer import BROKER_WAIT_S, SelfHealingProducer, make_producer, until_broker_answers
from infra.kafka.topics import ensure_topics

__all__ = [
    "BROKER_WAIT_S", "ConsumerLoop", "GiveUp", "Handler", "SelfHealingProducer", "StopRequested", "consumer_options",
    "correlation_id_of", "ensure_topics", "header", "install_signal_handlers", "make_producer", "until_broker_answers",
]
