"""Read the pipeline's results back from Kafka: group lag, table snapshots, output event ids.

Used by the equality tests, the demo and operators: the ledger's truth is the ``accounts`` table's
changelog topic (last record per key), so snapshots can be rebuilt from Kafka alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.errors import (
    CoordinatorLoadInProgressError,
    CoordinatorNotAvailableError,
    NotCoordinatorError,
)

from billing.account_record import load_state
from billing.ledger import snapshot
from runtime.codecs import codec_for
from runtime.kafka_security import kafka_python_security
from runtime.settings import Settings
from runtime.topic_reader import read_topic


def changelog_topic(app_id: str, table: str = "accounts") -> str:
    return f"{app_id}-{table}-changelog"


def group_lag(settings: Settings, group: str, topics: tuple[str, ...]) -> int:
    """Messages in ``topics`` not yet committed by consumer ``group`` (all partitions)."""
    security = kafka_python_security(settings)
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, **security)
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, **security)
    try:
        committed = committed_offsets(admin, group)
        partitions = [TopicPartition(topic, partition) for topic in topics
                      for partition in (consumer.partitions_for_topic(topic) or ())]
        ends = consumer.end_offsets(partitions)
        return sum(end - (committed[tp].offset if tp in committed and committed[tp].offset >= 0
                          else 0) for tp, end in ends.items())
    finally:
        admin.close()
        consumer.close()


def committed_offsets(admin: KafkaAdminClient, group: str, timeout: float = 30.0) -> dict:
    """The group's committed offsets; retried while a (re)started broker's coordinator loads."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return admin.list_group_offsets({group: None}).get(group, {})
        except CoordinatorNotAvailableError:  # the group has not committed anything yet
            return {}
        except (NotCoordinatorError, CoordinatorLoadInProgressError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def wait_until(condition: Callable[[], bool], timeout: float, interval: float = 0.5,
               what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def table_snapshots(settings: Settings, app_id: str) -> dict[str, dict[str, Any]]:
    """The accounts as the worker's table holds them (last changelog record per key)."""
    latest: dict[bytes, bytes | None] = {}
    for record in read_topic(settings, changelog_topic(app_id)):
        if record.key is not None:
            latest[record.key] = record.value
    return {key.decode(): snapshot(load_state(value))
            for key, value in sorted(latest.items()) if value is not None}


def output_events(settings: Settings) -> list[dict[str, Any]]:
    """Every event on the account-state topic, decoded."""
    codec = codec_for(settings)
    return [codec.decode("account_state", record.value)
            for record in read_topic(settings, settings.topics.account_state)
            if record.value is not None]
