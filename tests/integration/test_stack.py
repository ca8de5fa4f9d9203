"""The local stack really works: topics, durable data and offsets, transactions, ClickHouse, stop.

Runs against the session's private stack (``stack`` fixture in tests/conftest.py). Each test
leaves the stack running, so they can run in any order.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import CoordinatorLoadInProgressError, NotCoordinatorError
from kafka.structs import OffsetAndMetadata, TopicPartition

from devkit.stack.clickhouse import ClickHouseServer
from devkit.stack.kafka import KafkaServer
from devkit.stack.lifecycle import stack_status, start_stack, stop_stack
from devkit.stack.process import cmdline, pid_alive, port_in_use
from runtime.settings import Settings
from runtime.topics import (
    StackError,
    admin_client,
    describe_topic_configs,
    ensure_topics,
    partition_counts,
)
from schemas.topics import Topics

pytestmark = pytest.mark.integration

# Short group timeouts: a consumer that leaves or dies is noticed in seconds, not the default 45 s.
FAST_GROUP = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}


def _create_topic(settings: Settings, topic: str, partitions: int, **configs: str) -> None:
    with admin_client(settings) as admin:
        spec = {"num_partitions": partitions, "replication_factor": 1, "configs": configs}
        admin.create_topics({topic: spec}, wait_for_metadata=True)


def _poll(consumer: KafkaConsumer, count: int, timeout: float = 30.0) -> list:
    """Exactly ``count`` records (each poll asks for what is left), or fail after ``timeout``."""
    records: list = []
    deadline = time.monotonic() + timeout
    while len(records) < count and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=500, max_records=count - len(records)).values():
            records.extend(batch)
    assert len(records) == count, f"read {len(records)} of {count} records in {timeout}s"
    return records


def _committed_offsets(settings: Settings, group: str, timeout: float = 30.0) -> dict:
    """The group's committed offsets, retried while the restarted coordinator loads its state."""
    deadline = time.monotonic() + timeout
    with admin_client(settings) as admin:
        while True:
            try:
                return admin.list_group_offsets({group: None})[group]
            except (NotCoordinatorError, CoordinatorLoadInProgressError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)


def test_topics_exist_with_the_configured_partition_count(stack: Settings) -> None:
    with admin_client(stack) as admin:
        counts = partition_counts(admin, stack.topics.all)
    assert counts == dict.fromkeys(stack.topics.all, stack.partitions)
    assert ensure_topics(stack) == []  # idempotent: nothing left to create


def test_an_input_topic_with_another_partition_count_is_refused(stack: Settings) -> None:
    _create_topic(stack, "stack-test.usage-2p", 2)
    mismatched = dataclasses.replace(stack, topics=Topics(usage="stack-test.usage-2p"))
    with pytest.raises(StackError, match=r"co-partitioned.*stack-test\.usage-2p has 2"):
        ensure_topics(mismatched)


def test_topic_configs_can_be_described(stack: Settings) -> None:
    _create_topic(stack, "stack-test.compacted", 1, **{"cleanup.policy": "compact"})
    configs = describe_topic_configs(stack, ["stack-test.compacted", stack.topics.usage])
    assert configs["stack-test.compacted"]["cleanup.policy"] == "compact"
    assert configs[stack.topics.usage]["cleanup.policy"] == "delete"


def test_data_and_committed_offsets_survive_a_broker_restart(stack: Settings) -> None:
    topic, group = "stack-test.restart", "stack-test.restart-group"
    _create_topic(stack, topic, 2)
    producer = KafkaProducer(bootstrap_servers=stack.kafka_bootstrap, acks="all")
    sent = {f"v{i}".encode() for i in range(10)}
    for i, value in enumerate(sorted(sent)):
        producer.send(topic, key=f"k{i % 3}".encode(), value=value)
    producer.flush()
    producer.close()

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=stack.kafka_bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **FAST_GROUP,
    )
    first = _poll(consumer, 4)
    committed = {
        TopicPartition(r.topic, r.partition): OffsetAndMetadata(r.offset + 1, "", -1)
        for r in sorted(first, key=lambda r: r.offset)
    }
    consumer.commit(committed)
    consumer.close()

    server = KafkaServer(stack)
    old_pid = server.pid
    assert old_pid is not None
    assert server.stop()
    assert not pid_alive(old_pid)
    assert server.start()

    after = _committed_offsets(stack, group)
    assert {tp: meta.offset for tp, meta in after.items()} == {
        tp: meta.offset for tp, meta in committed.items()
    }
    everything = KafkaConsumer(
        topic, bootstrap_servers=stack.kafka_bootstrap, auto_offset_reset="earliest"
    )
    assert {r.value for r in _poll(everything, 10)} == sent
    everything.close()
    resumed = KafkaConsumer(
        topic,
        bootstrap_servers=stack.kafka_bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        **FAST_GROUP,
    )
    rest = _poll(resumed, 6)
    resumed.close()
    assert {r.value for r in first} | {r.value for r in rest} == sent


def test_transactions_commit_and_abort(stack: Settings) -> None:
    """Faust's exactly_once needs the transaction coordinator (single-node replication settings)."""
    topic = "stack-test.transactions"
    _create_topic(stack, topic, 1)

    async def roundtrip() -> list[bytes]:
        producer = AIOKafkaProducer(
            bootstrap_servers=stack.kafka_bootstrap, transactional_id="stack-test-tx"
        )
        await producer.start()
        try:
            async with producer.transaction():
                await producer.send_and_wait(topic, b"committed")
            await producer.begin_transaction()
            await producer.send_and_wait(topic, b"aborted")
            await producer.abort_transaction()
            async with producer.transaction():
                await producer.send_and_wait(topic, b"after")
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=stack.kafka_bootstrap,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
        )
        await consumer.start()
        values: list[bytes] = []
        try:
            deadline = time.monotonic() + 30
            while b"after" not in values and time.monotonic() < deadline:
                for batch in (await consumer.getmany(timeout_ms=500)).values():
                    values.extend(record.value for record in batch)
        finally:
            await consumer.stop()
        return values

    assert asyncio.run(roundtrip()) == [b"committed", b"after"]


def test_clickhouse_server_answers_with_the_project_profile(stack: Settings) -> None:
    client = ClickHouseServer(stack).client(database="billing")  # created from the URL
    try:
        assert client.execute("SELECT version()")[0][0]
        assert client.execute(
            "SELECT value FROM system.settings "
            "WHERE name = 'allow_experimental_low_cardinality_type'"
        ) == [("1",)]
        client.execute("DROP TABLE IF EXISTS stack_test")
        client.execute(
            "CREATE TABLE stack_test (account LowCardinality(String), n UInt32) "
            "ENGINE = MergeTree ORDER BY account"
        )
        # Rows go as data, never inline VALUES (clickhouse-driver hangs on that with 18.16).
        client.execute("INSERT INTO stack_test (account, n) VALUES", [("a", 1), ("b", 2)])
        assert client.execute("SELECT account, n FROM stack_test ORDER BY account") == [
            ("a", 1),
            ("b", 2),
        ]
    finally:
        client.disconnect()


def _server_processes(settings: Settings) -> list[int]:
    """Pids of live processes whose command line points into the servers' homes."""
    homes = [str(KafkaServer(settings).home), str(ClickHouseServer(settings).home)]
    return [
        int(entry)
        for entry in os.listdir("/proc")
        if entry.isdigit()
        and pid_alive(int(entry))
        and any(home in arg for arg in cmdline(int(entry)) for home in homes)
    ]


def test_stopping_the_stack_leaves_no_process(stack: Settings) -> None:
    pids = [KafkaServer(stack).pid, ClickHouseServer(stack).pid]
    assert None not in pids
    assert sorted(_server_processes(stack)) == sorted(pids)  # the two servers, nothing else

    assert stop_stack(stack) == {"clickhouse": "stopped", "kafka": "stopped"}
    assert not any(pid_alive(pid) for pid in pids if pid is not None)
    assert _server_processes(stack) == []
    ports = (stack.kafka_port, stack.kafka_controller_port, stack.clickhouse_port)
    assert not any(port_in_use(port) for port in (*ports, stack.clickhouse_http_port))
    assert [part.state for part in stack_status(stack)] == ["stopped", "stopped"]
    assert stop_stack(stack) == {"clickhouse": "not running", "kafka": "not running"}

    start_stack(stack)  # leave the session's stack as the other tests expect it
    assert all(part.answers for part in stack_status(stack))
