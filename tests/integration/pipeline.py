"""Helpers for the end-to-end tests: isolated topics, publishing a workload, running the worker.

The worker process and the per-run topics live in :mod:`streams.process` (``billing demo`` uses
them too); ``WorkerProcess`` is re-exported here for the tests that import it from this module.
"""

from __future__ import annotations

import uuid
from typing import Any

from kafka import KafkaProducer

from billing.codec import encode
from billing.events import TOPIC_OF_TYPE
from billing.ledger import to_millis
from billing.settings import Settings
from streams.merge import KIND_RANK
from streams.process import WorkerProcess, private_pipeline

__all__ = ["WorkerProcess", "in_merge_order", "isolated", "publish"]


def isolated(settings: Settings, label: str) -> tuple[Settings, str]:
    """Fresh topics and a fresh app id, so tests sharing one broker do not see each other."""
    return private_pipeline(settings, f"{label}-{uuid.uuid4().hex[:8]}")


def in_merge_order(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Events as the worker applies them: by event time, then topic rank (stable otherwise)."""
    return sorted(events, key=lambda event: (to_millis(event["timestamp"]),
                                             KIND_RANK[TOPIC_OF_TYPE[event["type"]]]))


def publish(settings: Settings, events: list[dict[str, Any]]) -> None:
    """Send canonical events to their topics, keyed by account, and wait for every ack."""
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all",
                             linger_ms=20, batch_size=256 * 1024)
    try:
        for event in events:
            kind = TOPIC_OF_TYPE[event["type"]]
            producer.send(getattr(settings.topics, kind), key=event["account_id"].encode(),
                          value=encode(kind, event))
        producer.flush()
    finally:
        producer.close()

