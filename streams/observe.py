"""Read the pipeline's results back from Kafka: group lag, table snapshots, output event ids.

Used by the equality tests, the demo and operators: the ledger's truth is the ``accounts`` table's
changelog topic (last record per key), so snapshots can be rebuilt from Kafka alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.errors import CoordinatorNotAvailableError

from billing.codec import decode
from billing.ledger import snapshot
from billing.settings import Settings
from streams.state_store import load_state


def changelog_topic(app_id: str, table: str = "accounts") -> str:
    return f"{app_id}-{table}-changelog"


def group_lag(settings: Settings, group: str, topics: tuple[str, ...]) -> int:
    """Messages in ``topics`` not yet committed by consumer ``group`` (all partitions)."""
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    try:
        try:
            committed = admin.list_group_offsets({group: None}).get(group, {})
        except CoordinatorNotAvailableError:  # the group has not committed anything yet
            committed = {}
        partitions = [TopicPartition(topic, partition) for topic in topics
                      for partition in (consumer.partitions_for_topic(topic) or ())]
        ends = consumer.end_offsets(partitions)
        return sum(end - (committed[tp].offset if tp in committed and committed[tp].offset >= 0
                          else 0) for tp, end in ends.items())
    finally:
        admin.close()
        consumer.close()


def wait_until(condition: Callable[[], bool], timeout: float, interval: float = 0.5,
               what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def read_topic(settings: Settings, topic: str, idle_timeout_ms: int = 3000
               ) -> Iterator[tuple[bytes | None, bytes | None]]:
    """Every (key, value) of ``topic`` from the beginning to its current end."""
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap,
                             auto_offset_reset="earliest", enable_auto_commit=False,
                             consumer_timeout_ms=idle_timeout_ms,
                             isolation_level="read_committed")
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        ends = consumer.end_offsets(partitions)
        remaining = {tp for tp in partitions if ends[tp] > 0}
        while remaining:
            batch = consumer.poll(timeout_ms=idle_timeout_ms)
            if not batch:
                remaining = {tp for tp in remaining if consumer.position(tp) < ends[tp]}
                if remaining:
                    continue
                break
            for tp, records in batch.items():
                for record in records:
                    yield record.key, record.value
                if consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
    finally:
        consumer.close()


def table_snapshots(settings: Settings, app_id: str) -> dict[str, dict[str, Any]]:
    """The accounts as the worker's table holds them (last changelog record per key)."""
    latest: dict[bytes, bytes | None] = {}
    for key, value in read_topic(settings, changelog_topic(app_id)):
        if key is not None:
            latest[key] = value
    return {key.decode(): snapshot(load_state(value))
            for key, value in sorted(latest.items()) if value is not None}


def output_events(settings: Settings) -> list[dict[str, Any]]:
    """Every event on the account-state topic, decoded."""
    return [decode("account_state", value)
            for _, value in read_topic(settings, settings.topics.account_state)
            if value is not None]
