"""``billing worker --guarantee exactly_once`` on the real broker ends where replay ends; either
guarantee passes the markers of inputs written in transactions.

Kafka transactions leave a marker (a control record) in every partition they wrote: it takes an
offset that no consumer ever receives, and under ``read_committed`` (the worker's isolation level
under ``exactly_once``) neither are an aborted transaction's records. Before the worker knew that,
the offset after a partition's last message looked like input it had not received: it held the
merge, never committed past it, and exited as stuck (status 75) every ``--stuck-seconds`` (seen
every 60 s, on the markers of its own month-close broadcasts on the control topic).

Here the inputs are published the way a gateway writing with transactions publishes them: in
committed transactions (a marker after each, in every partition each wrote, the last one at the
end of every input partition), with one aborted transaction in between (records no
``read_committed`` consumer gets: the oracle leaves them out). The workload has usage, payments,
an operator's month close and the watermark's own broadcasts. The tests require:

- the pipeline ends where replay ends (table snapshots and output ids, no copy without a crash);
- the worker's group commits every input offset, markers included (lag 0), without one exit;
- the inputs really hold markers and aborted records (so the test exercises them).

Then once with a SIGKILL midway and a restart on RocksDB (the production store): the restarted
worker's producers abort what the killed one left open, and the outputs still end where replay
ends (copies with the same deterministic id allowed, as in ``test_failures.py``; every reader
here is ``read_committed``).
"""

from __future__ import annotations

import signal
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from billing.events import normalize_input
from commands.deadletter import read_dead_letters
from devkit.workload import generate
from runtime.observe import wait_until
from runtime.settings import Settings
from runtime.topic_reader import read_topic
from schemas.codec import Codec
from tests.integration.pipeline import (
    WorkerProcess,
    as_message,
    assert_matches,
    in_merge_order,
    isolated,
    publish,
    publish_messages,
    replay_of,
)

pytestmark = pytest.mark.integration

ACCOUNTS, EVENTS = 300, 12_000
START = datetime(2026, 1, 1, tzinfo=UTC)
EXACTLY_ONCE = {"BILLING_PROCESSING_GUARANTEE": "exactly_once"}
Expected = tuple[dict[str, Any], set[str]]


@pytest.fixture(scope="module")
def workload() -> list[dict[str, Any]]:
    """A generated month and a bit (usage, purchases, failed payments, auto top-ups), whose
    watermark closes January, plus an operator's ``close_period`` for January before the
    watermark gets there (an empty key: every account of its partition)."""
    events = [normalize_input(event) for event in generate(
        accounts=ACCOUNTS, events=EVENTS, seed=41, start=START)]
    close = normalize_input({"type": "close_period", "event_id": "ops-close-2026-01",
                             "account_id": "", "timestamp": datetime(2026, 2, 1, 0, 20,
                                                                     tzinfo=UTC),
                             "period": "2026-01"})
    return in_merge_order([*events, close])


@pytest.fixture(scope="module")
def expected(workload: list[dict[str, Any]]) -> Expected:
    return replay_of(workload)


@pytest.fixture(scope="module")
def aborted(workload: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Usage a gateway sent and then aborted: new ids and a thousand times the quantities, so
    any of it applied would change balances, tiers and outputs."""
    usage = [event for event in workload if event["type"] == "usage"][::97][:60]
    return [{**event, "event_id": f"aborted-{n}",
             "quantities": {meter: quantity * 1_000
                            for meter, quantity in event["quantities"].items()}}
            for n, event in enumerate(usage)]


def test_workload_has_what_the_guarantee_must_survive(workload: list[dict[str, Any]],
                                                      aborted: list[dict[str, Any]],
                                                      expected: Expected) -> None:
    """Usage, payments, an operator's month close, usage past January's close time (the
    watermark's own broadcast), and aborted records that would change the result if read."""
    types = {event["type"] for event in workload}
    assert {"usage", "credits_purchased", "close_period"} <= types, types
    assert sum(1 for event in workload if event["type"] == "usage"
               and event["timestamp"] >= datetime(2026, 2, 1, 1, tzinfo=UTC)), \
        "no usage past January's close time: the watermark would broadcast nothing"
    assert replay_of(in_merge_order([*workload, *aborted]))[0] != expected[0]


def publish_in_transactions(settings: Settings, events: list[dict[str, Any]],
                            aborted: list[dict[str, Any]], per_transaction: int = 1_000) -> None:
    """``events`` in committed transactions of ``per_transaction`` messages, in order, with
    ``aborted`` sent in a transaction that is aborted halfway through."""
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap,
                             transactional_id=f"gateway-{settings.topics.usage}", acks="all",
                             linger_ms=20)
    try:
        producer.init_transactions()
        half = len(events) // 2
        for start in range(0, len(events), per_transaction):
            if start <= half < start + per_transaction:
                producer.begin_transaction()
                for topic, key, value in (as_message(settings, event) for event in aborted):
                    producer.send(topic, key=key, value=value)
                producer.flush()
                producer.abort_transaction()
            producer.begin_transaction()
            for event in events[start:start + per_transaction]:
                topic, key, value = as_message(settings, event)
                producer.send(topic, key=key, value=value)
            producer.commit_transaction()
    finally:
        producer.close()


def offsets_without_message(settings: Settings, topic: str) -> int:
    """Offsets of ``topic`` that hold no message a ``read_committed`` reader gets: transaction
    markers and aborted records."""
    messages = sum(1 for _ in read_topic(settings, topic))
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    try:
        partitions = [TopicPartition(topic, partition)
                      for partition in consumer.partitions_for_topic(topic) or ()]
        starts = consumer.beginning_offsets(partitions)
        ends = consumer.end_offsets(partitions)
    finally:
        consumer.close()
    return sum(ends[tp] - starts[tp] for tp in partitions) - messages


def assert_inputs_hold_markers(settings: Settings, aborted: list[dict[str, Any]]) -> None:
    """Every input topic has offsets without a message; the usage topic more than its markers
    (the aborted records)."""
    empty = {topic: offsets_without_message(settings, topic) for topic in settings.topics.inputs}
    assert all(empty.values()), empty
    assert empty[settings.topics.usage] > len(aborted), empty


def drained_never_stuck(worker: WorkerProcess) -> bool:
    """Whether the worker's group has committed every input; fails at once if the worker
    exited as stuck (the harness restarts it, like a supervisor, and counts it)."""
    drained = worker.lag_reached(0)
    assert worker.stuck_restarts == 0, (
        f"the worker exited as stuck; end of its log:\n{worker.log_tail()}")
    return drained


def wait_drained(worker: WorkerProcess, timeout: float) -> None:
    """Until every input is committed, and still after a few idle seconds at the end (where
    only markers follow the last messages), the worker never stuck."""
    wait_until(lambda: drained_never_stuck(worker), timeout, interval=1.0,
               what="the worker to commit every input")
    time.sleep(5)
    wait_until(lambda: drained_never_stuck(worker), 60, interval=1.0,
               what="the worker to stay drained")


def assert_never_stuck(worker: WorkerProcess) -> None:
    """The worker ran throughout: no exit as stuck (its supervisor here would have restarted
    it and counted it), nothing stuck in its log, and it is running still."""
    worker.check_running()
    log = worker.log_path.read_text(errors="replace")
    assert worker.stuck_restarts == 0 and "worker_stuck" not in log, (
        f"{worker.stuck_restarts} stuck exits; end of the log:\n{worker.log_tail()}")


def run_without_crash(worker: WorkerProcess, settings: Settings, app_id: str,
                      expected: Expected) -> None:
    """Run the started worker until it has committed every input, never stuck, then stop it:
    the pipeline ends where replay ends, each output once."""
    try:
        wait_drained(worker, timeout=600)
        assert_never_stuck(worker)
    finally:
        worker.stop()
    outputs = assert_matches(settings, app_id, expected)
    assert len(outputs) == len(expected[1]), "copies of outputs without a crash"


def test_exactly_once_ends_where_replay_ends(stack: Settings, workload: list[dict[str, Any]],
                                            aborted: list[dict[str, Any]], expected: Expected,
                                            tmp_path: Path) -> None:
    settings, app_id = isolated(stack, "eos")
    publish_in_transactions(settings, workload, aborted)
    assert_inputs_hold_markers(settings, aborted)
    # Undecodable, keyed by 2,000 bytes: its dead letter's key is their hash (another partition
    # than the message's, most likely), and it is sent on receipt.
    [long_key] = publish_messages(settings, [(settings.topics.usage, b"k" * 2_000, b"\x00")])
    worker = WorkerProcess(settings, app_id, tmp_path / "worker.log", store="rocksdb://",
                           env=EXACTLY_ONCE).start()
    run_without_crash(worker, settings, app_id, expected)
    # The table's changelog went through transactions (so the guarantee was on); the dead
    # letter of the long-keyed message is there for a read_committed reader.
    assert offsets_without_message(settings, f"{app_id}-accounts-changelog") > 0
    letters = [entry.letter for entry in read_dead_letters(settings, Codec(settings.topics))]
    assert [letter["offset"] for letter in letters] == [long_key[2]], letters


def test_exactly_once_sigkill_midway(stack: Settings, workload: list[dict[str, Any]],
                                     aborted: list[dict[str, Any]], expected: Expected,
                                     tmp_path: Path) -> None:
    settings, app_id = isolated(stack, "eos-kill")
    publish_in_transactions(settings, workload, aborted)
    total = len(workload) + len(aborted)
    worker = WorkerProcess(settings, app_id, tmp_path / "worker.log", store="rocksdb://",
                           env=EXACTLY_ONCE).start()
    try:
        wait_until(lambda: worker.lag_reached(total // 2), timeout=600, interval=0.25,
                   what="half the inputs committed")
        worker.stop(signal.SIGKILL)
        worker.start()
        # Seen here before the fix (about one run in seven): a restarted worker whose partition
        # had a marker and nothing else after its committed offset exited stuck ("commit behind
        # applied input"): Faust commits only partitions with acknowledged messages.
        wait_drained(worker, timeout=600)
        assert_never_stuck(worker)
    finally:
        worker.stop()
    outputs = assert_matches(settings, app_id, expected)
    print(f"{app_id}: {len(expected[1])} output ids, "
          f"{len(outputs) - len(expected[1])} copies on the topic after the SIGKILL")


def test_at_least_once_passes_the_markers_of_transactional_producers(
        stack: Settings, workload: list[dict[str, Any]], expected: Expected,
        tmp_path: Path) -> None:
    """The default guarantee, on inputs a gateway wrote in committed transactions (nothing
    aborted: under ``read_uncommitted`` aborted records are applied): every input partition ends
    in a marker, and the worker still commits every offset, never stuck, and ends where replay
    ends."""
    settings, app_id = isolated(stack, "alo-tx")
    publish_in_transactions(settings, workload, [])
    assert all(offsets_without_message(settings, topic) for topic in settings.topics.inputs)
    worker = WorkerProcess(settings, app_id, tmp_path / "worker.log").start()
    run_without_crash(worker, settings, app_id, expected)


def test_offsets_without_message_counts_markers_only(stack: Settings,
                                                    workload: list[dict[str, Any]]) -> None:
    """0 on inputs published without transactions, so the counts above are the markers and
    aborted records, not an artefact of reading."""
    settings, _ = isolated(stack, "eos-plain")
    publish(settings, workload[:500])
    assert {topic: offsets_without_message(settings, topic)
            for topic in settings.topics.inputs} == dict.fromkeys(settings.topics.inputs, 0)
