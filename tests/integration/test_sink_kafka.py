"""The sink end to end: Avro messages on the stack's Kafka -> the sink -> clickhouse-server 18.16.

Re-sent messages (new offsets, same event ids), an undecodable message and a second sink instance
resuming from the group's commits: the tables and the rollups still count every event once, and
the group ends with no lag.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer

from billing.account_status import status_record
from runtime.observe import group_lag, wait_until
from runtime.settings import Settings
from schemas.codec import Codec
from sinks.clickhouse import ClickHouseError, ClickHouseWriter, open_writer
from sinks.sink import ClickHouseSink, SinkConfig, build_sink
from tests.integration.pipeline import isolated
from tests.test_sink_samples import ledger_run

codec = Codec()  # plain Avro, as the test stacks run without a schema registry

pytestmark = pytest.mark.integration


def produce(settings: Settings, topic: str, messages: list[tuple[str, bytes]]) -> None:
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    try:
        for key, value in messages:
            producer.send(topic, key=key.encode(), value=value)
        producer.flush()
    finally:
        producer.close()


def run_until(sink: ClickHouseSink, done: Any, timeout: float = 120) -> None:
    """Run the sink in a thread until ``done()``, then stop it and wait for its final flush."""
    thread = threading.Thread(target=sink.run, kwargs={"progress_seconds": 1.0}, daemon=True)
    thread.start()
    try:
        wait_until(done, timeout, interval=0.5, what="the sink to write everything")
    finally:
        sink.stop()
        thread.join(60)
        sink.close()


def test_sink_writes_each_event_once_and_commits(stack: Settings) -> None:
    settings, _ = isolated(stack, "sink")
    label = uuid.uuid4().hex[:8]
    settings = replace(settings, clickhouse_url=(f"clickhouse://127.0.0.1:"
                                                 f"{stack.clickhouse_port}/sink_kafka_{label}"))
    group = f"billing-clickhouse-sink-{label}"
    topics = (settings.topics.usage_rated, settings.topics.account_state,
              settings.topics.account_status)
    run = ledger_run()
    rated = [(r["account_id"], codec.encode("usage_rated", r)) for r in run.rated]
    outputs = [(e["account_id"], codec.encode("account_state", e)) for e in run.outputs]
    # Each output's snapshot as a status record with a growing version, as the worker writes it.
    statuses = [(e["account_id"], codec.encode("account_status", status_record(
        e["snapshot"], e["timestamp"], version))) for version, e in enumerate(run.outputs, 1)]
    produce(settings, settings.topics.usage_rated, [*rated, ("acct-x", b"\x00not avro")])
    produce(settings, settings.topics.account_state, outputs)
    produce(settings, settings.topics.account_status, statuses)
    accounts = len({e["account_id"] for e in run.outputs})
    expected_cost = sum(record["cost"] for record in run.rated)

    writer: ClickHouseWriter = open_writer(settings)
    writer.apply_ddl()

    def stored() -> tuple[int, int, int]:
        ((usage,),) = writer.query("SELECT count() FROM rated_usage FINAL")
        ((state,),) = writer.query("SELECT count() FROM account_state_events FINAL")
        ((current,),) = writer.query("SELECT count() FROM accounts_current FINAL")
        return usage, state, current

    config = SinkConfig(batch_rows=500, batch_seconds=0.5)
    with open_writer(settings) as sink_writer:
        first = build_sink(settings, sink_writer, config, group_id=group)
        run_until(first, lambda: stored() == (len(run.rated), len(run.outputs), accounts)
                  and group_lag(settings, group, topics) == 0)
        assert first.stats.undecodable == 1

        # The producer re-sends 300 events (new offsets, same ids); a new instance resumes.
        produce(settings, settings.topics.usage_rated, rated[:300])
        second = build_sink(settings, sink_writer, config, group_id=group)
        run_until(second, lambda: second.stats.duplicates_dropped >= 300)

    assert stored() == (len(run.rated), len(run.outputs), accounts)
    assert writer.query("SELECT sum(cost) FROM rated_usage FINAL") == [(expected_cost,)]
    assert writer.query("SELECT sum(cost) FROM spend_daily") == [(expected_cost,)]
    assert writer.query("SELECT sum(cost) FROM spend_monthly") == [(expected_cost,)]
    assert second.stats.rows_written == 0
    assert group_lag(settings, group, topics) == 0
    writer.close()


def test_sink_run_command_shows_progress_and_stops_on_sigterm(stack: Settings,
                                                              tmp_path: Path) -> None:
    settings, _ = isolated(stack, "sinkcli")
    settings = replace(settings, clickhouse_url=(f"clickhouse://127.0.0.1:{stack.clickhouse_port}"
                                                 f"/sink_cli_{uuid.uuid4().hex[:8]}"))
    records = ledger_run().rated[:200]
    produce(settings, settings.topics.usage_rated,
            [(r["account_id"], codec.encode("usage_rated", r)) for r in records])
    log_path = tmp_path / "sink.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "commands.cli", "sink", "run", "--progress-seconds", "1"],
            env={**os.environ, **settings.to_env()}, stdout=log, stderr=subprocess.STDOUT)
    try:
        with open_writer(settings) as writer:
            def all_stored() -> bool:
                try:
                    return writer.query("SELECT count() FROM rated_usage FINAL") == [(200,)]
                except ClickHouseError:  # the sink has not created the tables yet
                    return False
            wait_until(all_stored, 120, interval=0.5, what="the sink command to write")
            wait_until(lambda: b"rows written 200" in log_path.read_bytes(), 30,
                       what="a progress line")
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0, log_path.read_text()
    assert b"event=sink.progress" in log_path.read_bytes()
