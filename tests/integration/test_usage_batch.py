"""``usage_batch`` on the real broker: the producer packs an account's usage into one message, and
a worker fed batches mixed with single events ends where ``billing replay`` ends.

The oracle replays the events in the order the worker's merge applies them (each partition's
sources by (event time, topic rank, offset), a batch's records one by one): a batch holds records
of a span of time, so the usage topic is no longer sorted by time within a partition. The workload
stops before the first month's close, so no watermark broadcast depends on how partitions
interleave.
"""

from __future__ import annotations

import math
import random
import signal
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from billing.events import TOPIC_OF_TYPE, normalize_input
from billing.ledger import to_millis
from billing.merge import KIND_RANK, EventTimeMerger
from commands.deadletter import read_dead_letters
from devkit.workload import generate
from runtime.codecs import codec_for
from runtime.observe import wait_until
from runtime.produce import EventProducer
from runtime.settings import Settings
from runtime.topic_reader import read_topic
from schemas.codec import Codec
from tests.integration import pipeline

pytestmark = pytest.mark.integration

START = datetime(2026, 1, 1, tzinfo=UTC)
BEFORE_CLOSE = datetime(2026, 2, 1, tzinfo=UTC)  # January closes at 01:00 (grace 1 h)


def record_of(event: dict[str, Any]) -> dict[str, Any]:
    """A usage event as a record of a batch: without type and account."""
    return {name: value for name, value in event.items() if name not in ("type", "account_id")}


def test_a_packed_batch_arrives_as_one_message_with_every_record(stack: Settings) -> None:
    settings, _ = pipeline.isolated(stack, "packed")
    events = [{"type": "usage", "event_id": f"p-{n}", "account_id": "acct-packed",
               "timestamp": datetime.now(UTC), "product": "llama-v3p1-8b",
               "quantities": {"input_tokens": 10 + n}, "requests": 1} for n in range(25)]
    with EventProducer(settings, pack_usage=True, pack_linger=60) as producer:
        futures = [producer.send(event) for event in events]
    [message] = list(read_topic(settings, settings.topics.usage))
    assert message.key == b"acct-packed"
    assert Codec().decode_inputs("usage", message.value) == [
        normalize_input(event) for event in events]
    assert {future.value.offset for future in futures} == {message.offset}


def batched_messages(settings: Settings, events: list[dict[str, Any]], seed: int
                     ) -> tuple[list[tuple[str, bytes, bytes]], str, str]:
    """The events as messages: each account's usage packed in batches of 1 to 8 records (one
    record goes as a single usage message), sent when full, the rest at the end; one batch
    carries a record with a negative quantity (refused on receipt), another one of an unknown
    product (refused by the ledger). Returns the messages and those two records' ids."""
    rng, codec = random.Random(seed), codec_for(settings)
    messages: list[tuple[str, bytes, bytes]] = []
    pending: dict[str, tuple[int, list[dict[str, Any]]]] = {}
    bad_id = unknown_id = ""

    def send(account_id: str) -> None:
        _, records = pending.pop(account_id)
        if len(records) == 1:
            single = {"type": "usage", "account_id": account_id, **records[0]}
            messages.append(pipeline.as_message(settings, single))
            return
        value = codec.encode("usage", {"type": "usage_batch", "account_id": account_id,
                                       "records": records})
        messages.append((settings.topics.usage, account_id.encode(), value))

    for event in events:
        if event["type"] != "usage":
            messages.append(pipeline.as_message(settings, event))
            continue
        size, records = pending.setdefault(event["account_id"],
                                           (rng.choice([1, 1, 2, 3, 5, 8]), []))
        records.append(record_of(event))
        if not bad_id and size == 5 and len(records) == 2:
            bad_id = f"{event['event_id']}-bad"
            records.append({**record_of(event), "event_id": bad_id,
                            "quantities": {"input_tokens": -1}})
        if not unknown_id and size == 8 and len(records) == 3:
            unknown_id = f"{event['event_id']}-unknown"
            records.append({**record_of(event), "event_id": unknown_id,
                            "product": "no-such-product"})
        if len(records) >= size:
            send(event["account_id"])
    for account_id in list(pending):
        send(account_id)
    return messages, bad_id, unknown_id


def worker_order(settings: Settings, messages: list[tuple[str, bytes, bytes]],
                 positions: list[tuple[str, int, int]]) -> list[dict[str, Any]]:
    """The valid events in the order the worker's merge releases them, partition by partition."""
    codec, topics = codec_for(settings), settings.topics
    kinds = {getattr(topics, kind): kind for kind in KIND_RANK}
    merger = EventTimeMerger(tuple(KIND_RANK), KIND_RANK)
    for (_, _, value), (topic, partition, offset) in zip(messages, positions, strict=True):
        for event in codec.decode_inputs(kinds[topic], value):
            if isinstance(event, dict):
                merger.add(kinds[topic], partition, to_millis(event["timestamp"]), offset, event)
    return [event for partition in range(settings.partitions)
            for event in merger.release(partition, lambda _: math.inf)]


def publish_batched(stack: Settings, label: str
                    ) -> tuple[Settings, str, tuple[dict[str, Any], set[str]], str, str]:
    """Fresh topics filled with a workload in batches and single events: their settings, app
    id, the oracle (replay in the worker's order) and the two refused records' ids."""
    settings, app_id = pipeline.isolated(stack, label)
    events = pipeline.in_merge_order([
        normalize_input(event) for event in generate(accounts=80, events=6_000, seed=31,
                                                     start=START)
        if normalize_input(event)["timestamp"] < BEFORE_CLOSE])
    assert {TOPIC_OF_TYPE[event["type"]] for event in events} >= {"usage", "payments",
                                                                 "accounts"}
    messages, bad_id, unknown_id = batched_messages(settings, events, seed=5)
    batches = sum(1 for topic, _, value in messages if topic == settings.topics.usage
                  and len(Codec().decode_inputs("usage", value)) > 1)
    assert batches > 300 and bad_id and unknown_id
    positions = pipeline.publish_messages(settings, messages)
    expected = pipeline.replay_of(worker_order(settings, messages, positions))
    return settings, app_id, expected, bad_id, unknown_id


def test_a_worker_fed_batches_and_single_events_ends_where_replay_ends(
        stack: Settings, tmp_path: Path) -> None:
    settings, app_id, expected, bad_id, unknown_id = publish_batched(stack, "usagebatch")
    pipeline.WorkerProcess(settings, app_id, tmp_path / "worker.log").run_to_end(timeout=600)
    pipeline.assert_matches(settings, app_id, expected)
    letters = [entry.letter for entry in read_dead_letters(settings, Codec(settings.topics))]
    [letter] = [letter for letter in letters if bad_id in letter["reason"]]
    assert letter["reason"].startswith("usage_batch record 2 (event_id ")
    assert "quantities.input_tokens is negative" in letter["reason"]
    assert letter["field"] == "records[2].quantities.input_tokens"
    [unknown] = [letter for letter in letters if unknown_id in letter["reason"]]
    assert unknown["reason"].startswith("usage_batch record 3 (event_id ")
    assert "no-such-product" in unknown["reason"] and unknown["field"].startswith("records[3]")


def test_a_worker_killed_amid_batches_ends_where_replay_ends(stack: Settings,
                                                             tmp_path: Path) -> None:
    """SIGKILL with batches applied in part: the restarted worker (its table recovered from the
    changelog) gets their messages again and applies exactly the records its state lacks."""
    settings, app_id, expected, _, _ = publish_batched(stack, "usagebatch-kill")
    worker = pipeline.WorkerProcess(settings, app_id, tmp_path / "worker.log").start()
    try:
        total = worker.lag()
        wait_until(lambda: worker.lag() <= total // 2, timeout=600, interval=0.2,
                   what="the worker to process half the messages")
        worker.stop(signal.SIGKILL)
        worker.start()
        worker.wait_drained(timeout=600)
    finally:
        worker.stop()
    pipeline.assert_matches(settings, app_id, expected)
