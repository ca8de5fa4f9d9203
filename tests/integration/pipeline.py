"""Helpers for the end-to-end tests: isolated topics, publishing a workload, running the worker,
and checking what came out against the replay oracle and in ClickHouse.

The worker process and the per-run topics live in :mod:`devkit.harness` (``billing demo`` uses
them too); ``WorkerProcess`` is re-exported here for the tests that import it from this module.
"""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from kafka import KafkaProducer

from billing.events import TOPIC_OF_TYPE, InvalidEvent
from billing.ledger import Ledger, to_millis
from billing.merge import KIND_RANK
from billing.replay import Replay
from devkit.harness import WorkerProcess, private_pipeline
from runtime.codecs import codec_for
from runtime.observe import group_lag, output_events, table_snapshots, wait_until
from runtime.produce import PRODUCER_CONFIG
from runtime.rules_files import load_config, load_pricebook
from runtime.settings import Settings
from sinks.clickhouse import open_writer
from sinks.sink import SinkConfig, build_sink

__all__ = ["Position", "WorkerProcess", "as_message", "assert_matches", "clickhouse_output_ids",
           "in_merge_order", "isolated", "publish", "publish_messages", "replay_of",
           "sink_into_clickhouse"]


def isolated(settings: Settings, label: str) -> tuple[Settings, str]:
    """Fresh topics and a fresh app id, so tests sharing one broker do not see each other."""
    return private_pipeline(settings, f"{label}-{uuid.uuid4().hex[:8]}")


def in_merge_order(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Events as the worker applies them: by event time, then topic rank (stable otherwise)."""
    return sorted(events, key=lambda event: (to_millis(event["timestamp"]),
                                             KIND_RANK[TOPIC_OF_TYPE[event["type"]]]))


Position = tuple[str, int, int]  # topic, partition, offset


def publish_messages(settings: Settings,
                     messages: Iterable[tuple[str, bytes | None, bytes | None]],
                     one_by_one: bool = False) -> list[Position]:
    """Send (topic, key, value) messages in order, wait for every ack; return where each went.

    With the producer client's settings (idempotent): without idempotence, a retried batch can
    land behind the batches sent after it (Kafka allows 5 requests in flight), and retries are
    common here: the first batches to a topic created a moment before meet
    NotLeaderForPartition. The events of a partition would then not be in time order.

    Batched, messages of different partitions are appended in whatever order their batches
    fill: a worker reading while they arrive may get a later event of one topic before an
    earlier one of another, as from independent producers whose clocks and queues differ, and
    apply them in that order. ``one_by_one`` waits for each message's ack before sending the
    next, so Kafka appends them in this order across topics too (slower: one round trip each)."""
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap,
                             **{**PRODUCER_CONFIG, "batch_size": 256 * 1024})
    try:
        futures = []
        for topic, key, value in messages:
            futures.append(producer.send(topic, key=key, value=value))
            if one_by_one:
                producer.flush()
        producer.flush()
    finally:
        producer.close()
    return [(meta.topic, meta.partition, meta.offset)
            for meta in (future.get(timeout=30) for future in futures)]


def as_message(settings: Settings, event: dict[str, Any]) -> tuple[str, bytes, bytes]:
    """A canonical event as its topic, key (the account) and Avro value."""
    kind = TOPIC_OF_TYPE[event["type"]]
    return getattr(settings.topics, kind), event["account_id"].encode(), \
        codec_for(settings).encode(kind, event)


def publish(settings: Settings, events: list[dict[str, Any]], one_by_one: bool = False) -> None:
    """Send canonical events to their topics, keyed by account, and wait for every ack
    (``one_by_one``: see :func:`publish_messages`)."""
    publish_messages(settings, (as_message(settings, event) for event in events), one_by_one)



def replay_of(events: list[dict[str, Any]]) -> tuple[dict[str, Any], set[str]]:
    """The oracle: final snapshots and output event ids of ``billing replay`` over ``events``."""
    replay = Replay(Ledger(load_config(), load_pricebook()))
    ids: set[str] = set()
    for event in events:
        try:
            outputs, _ = replay.apply(event)
        except InvalidEvent:
            continue
        ids.update(output["event_id"] for output in outputs)
    return replay.snapshots(), ids


def assert_matches(settings: Settings, app_id: str,
                   expected: tuple[dict[str, Any], set[str]]) -> list[dict[str, Any]]:
    """The pipeline's table and output ids equal the oracle's; returns the outputs as read
    (with any copies a crash left on the topic)."""
    snapshots, ids = expected
    outputs = output_events(settings)
    got_ids = {event["event_id"] for event in outputs}
    assert got_ids == ids, (f"missing {sorted(ids - got_ids)[:5]}, "
                            f"unexpected {sorted(got_ids - ids)[:5]}")
    got = table_snapshots(settings, app_id)
    differing = [key for key in snapshots if got.get(key) != snapshots[key]]
    assert not differing and set(got) == set(snapshots), \
        f"{len(differing)} snapshots differ, e.g. {differing[:1]}: " + (
            f"pipeline {got.get(differing[0])} replay {snapshots[differing[0]]}"
            if differing else "")
    return outputs


def sink_into_clickhouse(settings: Settings, app_id: str, timeout: float = 600) -> Settings:
    """Run the sink from its topics (account-state, usage-rated, account-status) into a fresh
    database of the test's clickhouse-server until it caught up on all three; return the
    settings that point at that database."""
    database = f"{app_id.replace('-', '_')}_{uuid.uuid4().hex[:6]}"
    settings = replace(settings, clickhouse_url=(
        f"clickhouse://127.0.0.1:{settings.clickhouse_port}/{database}"))
    group = f"sink-{app_id}"
    with open_writer(settings) as writer:
        writer.apply_ddl()
        sink = build_sink(settings, writer, SinkConfig(batch_rows=5_000, batch_seconds=0.5),
                          group_id=group)
        thread = threading.Thread(target=sink.run, kwargs={"progress_seconds": 5.0},
                                  daemon=True)
        thread.start()
        try:
            topics = (settings.topics.account_state, settings.topics.usage_rated,
                      settings.topics.account_status)
            wait_until(lambda: group_lag(settings, group, topics) == 0, timeout, 1.0,
                       "the sink to write every output to ClickHouse")
        finally:
            sink.stop()
            thread.join(60)
            sink.close()
    return settings


def clickhouse_output_ids(settings: Settings, app_id: str, timeout: float = 600) -> Counter[str]:
    """How often each output id is in ClickHouse after :func:`sink_into_clickhouse`, as an
    analyst sees the table (``FINAL``)."""
    with open_writer(sink_into_clickhouse(settings, app_id, timeout)) as writer:
        rows = writer.query(
            "SELECT event_id, count() FROM account_state_events FINAL GROUP BY event_id")
    return Counter({event_id: count for event_id, count in rows})
