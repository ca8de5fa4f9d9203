"""The sink's consumer loop on chdb with an in-memory consumer: batching, commit-after-insert,
holding position while ClickHouse is down, skipping undecodable messages, redelivery, lag."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from kafka import TopicPartition

from schemas.codec import Codec
from sinks.clickhouse import ClickHouseError, ClickHouseWriter
from sinks.sink import ClickHouseSink, SinkConfig
from tests.test_sink_samples import (
    FakeConsumer,
    chdb_with_tables,
    ledger_run,
    output_event,
    rated,
    status,
)

codec = Codec()  # plain Avro, as the test stacks run without a schema registry
USAGE = TopicPartition("billing.usage-rated", 0)
STATE = TopicPartition("billing.account-state", 0)
STATUS = TopicPartition("billing.account-status", 0)
TOPICS = {USAGE.topic: "usage_rated", STATE.topic: "account_state"}
ALL_TOPICS = {**TOPICS, STATUS.topic: "account_status"}
FAST = SinkConfig(batch_rows=10, batch_seconds=60, retry_initial_seconds=0.001,
                  retry_max_seconds=0.004)


def passthrough(kind: str, value: Any) -> dict[str, Any]:
    """The fake topics hold canonical dicts; anything else is undecodable."""
    if not isinstance(value, dict):
        raise ValueError(f"not a {kind} message: {value!r}")
    return value


class FlakyWriter(ClickHouseWriter):
    """A real writer whose next ``failures`` inserts fail as if the server were down."""

    def __init__(self, inner: ClickHouseWriter, failures: int = 0) -> None:
        self.inner, self.failures, self.attempts = inner, failures, 0

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> int:
        self.attempts += 1
        if self.failures:
            self.failures -= 1
            raise ClickHouseError("Connection refused (127.0.0.1:9000)")
        return self.inner.insert(table, columns, rows)

    def query_with_names(self, sql: str, params: Any = None, *, sets: Any = None) -> Any:
        return self.inner.query_with_names(sql, params, sets=sets)

    def execute(self, sql: str) -> None:
        self.inner.execute(sql)

    def close(self) -> None:
        """The test's fixture closes the real writer."""

    def _create_database(self) -> None:
        """The real writer already has one."""


@pytest.fixture
def writer(tmp_path: Path) -> Iterator[ClickHouseWriter]:
    with chdb_with_tables(tmp_path / "chdb") as opened:
        yield opened


def drain(sink: ClickHouseSink, consumer: FakeConsumer) -> None:
    """Step until every message is read, then flush the partial batch."""
    while any(consumer.positions[tp] < len(log) for tp, log in consumer.logs.items()):
        sink.step()
    sink.flush()


def totals(writer: ClickHouseWriter) -> tuple[Any, ...]:
    return writer.query("SELECT count(), sum(cost) FROM rated_usage FINAL")[0]


def test_batches_are_written_then_committed(writer: ClickHouseWriter) -> None:
    consumer = FakeConsumer({USAGE: [rated(n, cost="1") for n in range(25)],
                             STATE: [output_event(1, "usage_paused", reason="budget_reached")]})
    sink = ClickHouseSink(consumer, writer, TOPICS, passthrough, FAST)
    drain(sink, consumer)
    assert totals(writer) == (25, Decimal(25))
    assert writer.query("SELECT count() FROM account_state_events") == [(1,)]
    assert consumer.commits == [{USAGE: 10}, {USAGE: 20}, {USAGE: 25, STATE: 1}]
    assert sink.lag() == {STATE: 0, USAGE: 0}
    assert sink.stats.rows_written == 26 and sink.stats.batches == 3


def test_a_batch_is_flushed_when_old_enough(writer: ClickHouseWriter) -> None:
    now = [0.0]
    consumer = FakeConsumer({USAGE: [rated(1)], STATE: []})
    sink = ClickHouseSink(consumer, writer, TOPICS, passthrough,
                          SinkConfig(batch_rows=100, batch_seconds=1.0), clock=lambda: now[0])
    assert sink.step() == 0 and not consumer.commits  # buffered, young
    now[0] = 1.5
    assert sink.step() == 1 and consumer.committed_offsets == {USAGE: 1}


def test_clickhouse_down_holds_position_and_retries(writer: ClickHouseWriter,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    flaky = FlakyWriter(writer, failures=3)
    consumer = FakeConsumer({USAGE: [rated(n) for n in range(5)], STATE: []})
    sink = ClickHouseSink(consumer, flaky, TOPICS, passthrough, FAST)
    drain(sink, consumer)
    assert sink.stats.retries == 3 and flaky.attempts == 4
    assert consumer.commits == [{USAGE: 5}]  # one commit, after the insert that worked
    assert totals(writer)[0] == 5
    assert caplog.text.count("event=sink.insert_failed") == 3
    assert "retry_in_s=0.002" in caplog.text  # doubling


def test_stopping_during_an_outage_commits_nothing_and_loses_nothing(
        writer: ClickHouseWriter) -> None:
    consumer = FakeConsumer({USAGE: [rated(n) for n in range(5)], STATE: []})
    down = FlakyWriter(writer, failures=10**9)
    sink = ClickHouseSink(consumer, down, TOPICS, passthrough, FAST)
    sink.step()
    sink.stop()
    assert sink.flush() == 0
    assert not consumer.commits and totals(writer)[0] == 0
    # Restarted once ClickHouse is back: the same messages are read from the last commit.
    restarted = ClickHouseSink(consumer, writer, TOPICS, passthrough, FAST)
    drain(restarted, consumer)
    assert totals(writer)[0] == 5


def test_undecodable_messages_are_skipped_and_counted(writer: ClickHouseWriter,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    consumer = FakeConsumer({USAGE: [rated(1), b"\x00garbage", rated(2)], STATE: [b""]})
    sink = ClickHouseSink(consumer, writer, TOPICS, passthrough, FAST)
    drain(sink, consumer)
    assert sink.stats.undecodable == 2 and totals(writer)[0] == 2
    assert consumer.committed_offsets == {USAGE: 3, STATE: 1}
    assert "event=sink.undecodable" in caplog.text and "offset=1" in caplog.text


def test_redelivery_after_a_rejected_commit_counts_each_event_once(
        writer: ClickHouseWriter) -> None:
    run = ledger_run()
    consumer = FakeConsumer({USAGE: list(run.rated[:300]), STATE: list(run.outputs[:50])},
                            reject_commits=1)
    config = SinkConfig(batch_rows=100, batch_seconds=60, retry_initial_seconds=0.001)
    sink = ClickHouseSink(consumer, writer, TOPICS, passthrough, config)
    sink.step()  # 100 rows inserted, the commit is rejected: they will come again
    consumer.rebalance(from_last_commit=True)
    drain(sink, consumer)
    assert sink.stats.duplicates_dropped >= 100
    exact = writer.query("SELECT sum(cost) FROM rated_usage FINAL")
    assert exact == [(sum(record["cost"] for record in run.rated[:300]),)]
    assert writer.query("SELECT sum(cost) FROM spend_daily") == exact
    assert writer.query("SELECT sum(cost) FROM spend_monthly") == exact
    assert writer.query("SELECT count() FROM account_state_events FINAL") == [(50,)]


def test_a_rebalance_drops_the_unwritten_buffer(writer: ClickHouseWriter) -> None:
    consumer = FakeConsumer({USAGE: [rated(n) for n in range(5)], STATE: []})
    sink = ClickHouseSink(consumer, writer, TOPICS, passthrough, FAST)
    sink.step()
    consumer.rebalance()  # revoked before the flush: nothing written, nothing committed
    assert sink.flush() == 0 and not consumer.commits
    drain(sink, consumer)
    assert totals(writer)[0] == 5 and sink.stats.duplicates_dropped == 0


def test_lag_counts_what_is_not_written_yet(writer: ClickHouseWriter) -> None:
    consumer = FakeConsumer({USAGE: [rated(n) for n in range(30)], STATE: []})
    sink = ClickHouseSink(consumer, writer, TOPICS, passthrough, FAST)
    assert sink.lag() == {USAGE: 30, STATE: 0}
    sink.step()
    assert sink.lag() == {USAGE: 20, STATE: 0}


def test_the_real_codec_feeds_the_sink(writer: ClickHouseWriter) -> None:
    event = output_event(1, "invoice_issued", invoice_id="inv-9", period="2026-01",
                         amount=Decimal("63.000000"))
    consumer = FakeConsumer({
        USAGE: [codec.encode("usage_rated", rated(1, cost="0.333333"))],
        STATE: [codec.encode("account_state", event)],
    })
    sink = ClickHouseSink(consumer, writer, TOPICS, codec.decode, FAST)
    drain(sink, consumer)
    assert sink.stats.undecodable == 0
    assert totals(writer) == (1, Decimal("0.333333"))
    assert writer.query("SELECT invoice_id, amount FROM invoices FINAL") == [
        ("inv-9", Decimal(63))]


def test_a_rated_usage_batch_becomes_a_row_per_record(writer: ClickHouseWriter) -> None:
    """What the worker writes (``RatedUsageBatch``), beside a single record of an older worker
    and a batch redelivered: each event is one row, once."""
    batch = codec.encode("usage_rated", {"records": [rated(n, cost="0.25") for n in (2, 3, 4)]})
    consumer = FakeConsumer({
        USAGE: [codec.encode("usage_rated", rated(1, cost="1")), batch, batch],
        STATE: []})
    sink = ClickHouseSink(consumer, writer, TOPICS, codec.decode, FAST)
    drain(sink, consumer)
    assert sink.stats.undecodable == 0 and sink.stats.messages == 3
    assert totals(writer) == (4, Decimal("1.75"))
    assert sink.stats.rows_by_table["rated_usage"] == 4  # the copies are not inserted
    assert consumer.commits == [{USAGE: 3}]


def test_account_status_goes_to_accounts_current_before_its_commit(
        writer: ClickHouseWriter) -> None:
    records = [status("a", 1), status("b", 4), status("a", 3, status="paused",
                                                      pause_reasons=["budget_reached"]),
               status("a", 2)]  # an older record of "a" after a newer one in the same batch
    consumer = FakeConsumer({
        USAGE: [codec.encode("usage_rated", rated(1, cost="0.333333"))],
        STATE: [],
        STATUS: [codec.encode("account_status", record) for record in records],
    })
    sink = ClickHouseSink(consumer, writer, ALL_TOPICS, codec.decode, FAST)
    assert sink.lag() == {STATE: 0, STATUS: 4, USAGE: 1}
    flaky = FlakyWriter(writer, failures=1)
    sink._writer = flaky  # the first insert fails: nothing may be committed before the rows
    drain(sink, consumer)
    assert sink.stats.failures["insert"] == 1 and sink.stats.undecodable == 0
    assert consumer.commits == [{USAGE: 1, STATUS: 4}]
    assert sink.lag() == {STATE: 0, STATUS: 0, USAGE: 0}
    assert sink.stats.rows_by_table["accounts_current"] == 2  # the batch's latest per account
    assert writer.query("SELECT account_id, version, status, blocked_reasons, source_offset "
                        "FROM accounts_current FINAL ORDER BY account_id") == [
        ("a", 3, "paused", ["budget_reached"], 2), ("b", 4, "active", [], 1)]
