"""Reading a whole topic, from its beginning to its end as of now: for tools, not for services.

The dead-letter commands, the end-to-end checks and the demo all need "every message this topic
holds right now" (not a consumer group's share of it), so they read it here, one way: every
partition assigned directly, committed data only, stopping at the end offsets taken at the start.
"""

from __future__ import annotations

from collections.abc import Iterator

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from runtime.kafka_security import kafka_python_security
from runtime.settings import Settings


def read_topic(settings: Settings, topic: str,
               poll_timeout_ms: int = 1000) -> Iterator[ConsumerRecord]:
    """Every record of ``topic`` (all partitions) up to the end offsets of when it was called."""
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None,
                             enable_auto_commit=False, isolation_level="read_committed",
                             **kafka_python_security(settings))
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        if not partitions:
            return
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        ends = consumer.end_offsets(partitions)
        while any(consumer.position(tp) < ends[tp] for tp in partitions):
            for tp, records in consumer.poll(timeout_ms=poll_timeout_ms).items():
                yield from (record for record in records if record.offset < ends[tp])
    finally:
        consumer.close()
