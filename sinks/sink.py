"""The ClickHouse sink: billing.account-state, billing.usage-rated and billing.account-status into
ClickHouse tables.

Delivery is at least once, and queries still see each event once:

- offsets are committed only after the batch's rows are in ClickHouse (auto-commit is off), so a
  crash or an outage loses nothing: the uncommitted tail is read again;
- what is read again collapses: every table is a ReplacingMergeTree keyed on the event id, or for
  accounts_current on the account with the status version (read with ``FINAL``), and rated usage
  already stored is not inserted again so the summing rollups do not count it twice
  (:mod:`sinks.dedup`);
- when ClickHouse is down the sink holds its position and retries with capped exponential
  backoff, logging a warning per attempt; it never skips ahead;
- a message that cannot be decoded is logged, counted and skipped (its offset is committed with
  the batch): bad input is dead-lettered upstream, so one here is a bug to look at, not a reason
  to stop.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import OffsetAndMetadata
from prometheus_client import Histogram

from runtime.codecs import codec_for
from runtime.kafka_security import kafka_python_security
from runtime.logfmt import log_event
from runtime.settings import Settings
from sinks.clickhouse import ClickHouseError, ClickHouseWriter
from sinks.dedup import first_of_each_event, latest_of_each_account, new_rated_usage
from sinks.rows import (
    ACCOUNT_STATE_COLUMNS,
    ACCOUNT_STATE_TABLE,
    ACCOUNTS_CURRENT_COLUMNS,
    ACCOUNTS_CURRENT_TABLE,
    RATED_USAGE_COLUMNS,
    RATED_USAGE_TABLE,
    rows_for_account_state,
    rows_for_account_status,
    rows_for_rated_usage,
)

log = logging.getLogger("sinks.sink")

GROUP_ID = "billing-clickhouse-sink"
FAILURES = ("insert", "commit")  # what can fail and be retried
Decode = Callable[[str, bytes], dict[str, Any]]


class Consumer(Protocol):
    """The part of ``kafka.KafkaConsumer`` the sink uses (a fake stands in for it in tests)."""

    def subscribe(self, topics: Any = (), pattern: Any = None, listener: Any = None) -> None: ...
    def poll(self, timeout_ms: int = 0, max_records: int | None = None) -> Mapping[Any, list]: ...
    def commit(self, offsets: Any = None) -> None: ...
    def assignment(self) -> set[TopicPartition]: ...
    def end_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]: ...
    def beginning_offsets(self, partitions: list[TopicPartition]
                          ) -> dict[TopicPartition, int]: ...
    def committed(self, partition: TopicPartition) -> int | None: ...
    def seek(self, partition: TopicPartition, offset: int) -> None: ...
    def close(self, autocommit: bool = True) -> None: ...


@dataclass(frozen=True)
class SinkConfig:
    """Batching and retry policy, validated at construction."""

    batch_rows: int = 5000
    batch_seconds: float = 1.0
    retry_initial_seconds: float = 0.5
    retry_max_seconds: float = 30.0

    def __post_init__(self) -> None:
        if self.batch_rows < 1 or self.batch_seconds <= 0:
            raise ValueError("batch_rows must be >= 1 and batch_seconds > 0")
        if not 0 < self.retry_initial_seconds <= self.retry_max_seconds:
            raise ValueError("need 0 < retry_initial_seconds <= retry_max_seconds")

    def backoff(self, attempt: int) -> float:
        """Seconds to wait before retry ``attempt`` (0-based): doubling, capped."""
        return min(self.retry_initial_seconds * 2 ** min(attempt, 30), self.retry_max_seconds)


def _insert_seconds() -> Histogram:
    return Histogram("billing_sink_insert_duration_seconds",
                     "Time of one successful insert into a table.", ["table"], registry=None)


@dataclass
class SinkStats:
    """What the sink has done: progress output, tests and the metrics endpoint
    (:mod:`sinks.metrics`) all read these, so each thing is counted once."""

    messages: int = 0
    rows_by_table: dict[str, int] = field(default_factory=dict)
    duplicates_dropped: int = 0
    undecodable: int = 0
    batches: int = 0
    failures: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FAILURES, 0))
    lag: dict[TopicPartition, int] = field(default_factory=dict)  # as last measured by lag()
    # A histogram rather than a counter pair, for latency percentiles (prometheus_client's
    # Histogram is only a data structure here: :mod:`sinks.metrics` exposes it).
    insert_seconds: Histogram = field(default_factory=_insert_seconds, repr=False,
                                      compare=False)

    @property
    def rows_written(self) -> int:
        return sum(self.rows_by_table.values())

    @property
    def retries(self) -> int:
        """Failed attempts, each followed by a retry (unless the sink was stopping)."""
        return sum(self.failures.values())


class Route(NamedTuple):
    """Where one topic's messages go: the codec's topic kind, the table and its columns, how a
    decoded message becomes rows, and which of a batch's rows still need inserting."""

    kind: str
    table: str
    columns: tuple[str, ...]
    to_rows: Callable[[dict[str, Any], Any], list[tuple[Any, ...]]]
    unique: Callable[[ClickHouseWriter, list[tuple[Any, ...]]], list[tuple[Any, ...]]]


def _rated_usage_rows(value: dict[str, Any], _message: Any) -> list[tuple[Any, ...]]:
    """One row per rated usage event: a ``RatedUsageBatch`` message (what the worker writes)
    holds ``records``; a single ``RatedUsage`` message (older workers) is one."""
    return rows_for_rated_usage(value["records"] if value.keys() == {"records"} else [value])


ROUTES = {
    "usage_rated": Route(
        "usage_rated", RATED_USAGE_TABLE, RATED_USAGE_COLUMNS, _rated_usage_rows,
        new_rated_usage,
    ),
    "account_state": Route(
        "account_state", ACCOUNT_STATE_TABLE, ACCOUNT_STATE_COLUMNS,
        lambda event, message: rows_for_account_state([event],
                                                      [(message.partition, message.offset)]),
        lambda _writer, rows: first_of_each_event(rows),
    ),
    "account_status": Route(
        "account_status", ACCOUNTS_CURRENT_TABLE, ACCOUNTS_CURRENT_COLUMNS,
        lambda record, message: rows_for_account_status([record],
                                                        [(message.partition, message.offset)]),
        lambda _writer, rows: latest_of_each_account(rows),
    ),
}


@dataclass
class _Batch:
    rows: dict[Route, list[tuple[Any, ...]]] = field(default_factory=dict)
    next_offsets: dict[TopicPartition, int] = field(default_factory=dict)
    first_offsets: dict[TopicPartition, int] = field(default_factory=dict)
    messages: int = 0
    started: float = 0.0


class ClickHouseSink:
    """Consumes the sink topics in a consumer group and writes them to ClickHouse in batches."""

    def __init__(self, consumer: Consumer, writer: ClickHouseWriter,
                 topic_kinds: Mapping[str, str], decode: Decode,
                 config: SinkConfig | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._consumer = consumer
        self._writer = writer
        self._routes = {topic: ROUTES[kind] for topic, kind in topic_kinds.items()}
        self._decode = decode
        self.config = config or SinkConfig()
        self._clock = clock
        self._stop = threading.Event()
        self._batch = _Batch()
        self._committed: dict[TopicPartition, int] = {}
        # Where a batch dropped at a rebalance began, per partition: kafka-python keeps the
        # position of a partition that is assigned again, which would skip the dropped messages.
        self._rewind: dict[TopicPartition, int] = {}
        self.stats = SinkStats(rows_by_table=dict.fromkeys(
            sorted({route.table for route in self._routes.values()}), 0))
        consumer.subscribe(topics=list(self._routes), listener=_Listener(self))

    # -- the loop -------------------------------------------------------------------------

    def run(self, on_progress: Callable[[SinkStats, dict[TopicPartition, int]], None]
            | None = None, progress_seconds: float = 5.0) -> None:
        """Consume until :meth:`stop`; report lag every ``progress_seconds``; flush at the end."""
        next_report = self._clock() + progress_seconds
        while not self._stop.is_set():
            self.step()
            if self._clock() >= next_report:
                self._report(on_progress)
                next_report = self._clock() + progress_seconds
        self.flush()

    def _report(self, on_progress: Callable[[SinkStats, dict[TopicPartition, int]], None]
                | None) -> None:
        try:
            lag = self.lag()
        except KafkaError as error:
            log_event(log, "sink.lag_unavailable", logging.WARNING, error=str(error))
            return
        log_event(log, "sink.progress", rows_written=self.stats.rows_written,
                  undecodable=self.stats.undecodable,
                  lag={f"{tp.topic}[{tp.partition}]": n for tp, n in lag.items()})
        if on_progress is not None:
            on_progress(self.stats, lag)

    def stop(self) -> None:
        """Ask :meth:`run` to finish (safe from a signal handler or another thread); a retry in
        progress gives up at once, leaving its batch uncommitted."""
        self._stop.set()

    def step(self) -> int:
        """Poll once and flush if the batch is full or old enough; returns rows written."""
        batch, config = self._batch, self.config
        wait = (config.batch_seconds if not batch.messages
                else max(0.0, batch.started + config.batch_seconds - self._clock()))
        self._accept(self._consumer.poll(timeout_ms=int(wait * 1000),
                                         max_records=config.batch_rows - batch.messages))
        batch = self._batch
        if batch.messages and (batch.messages >= config.batch_rows
                               or self._clock() >= batch.started + config.batch_seconds):
            return self.flush()
        return 0

    def _accept(self, polled: Mapping[TopicPartition, list[Any]]) -> None:
        batch = self._batch
        for tp, records in polled.items():
            route = self._routes[tp.topic]
            for record in records:
                if not batch.messages:
                    batch.started = self._clock()
                batch.messages += 1
                batch.next_offsets[tp] = record.offset + 1
                batch.first_offsets.setdefault(tp, record.offset)
                try:
                    rows = route.to_rows(self._decode(route.kind, record.value), record)
                except Exception as error:  # a bad message must not stop the sink
                    self.stats.undecodable += 1
                    log_event(log, "sink.undecodable", logging.WARNING, topic=tp.topic,
                              partition=tp.partition, offset=record.offset,
                              error=f"{type(error).__name__}: {error}")
                    continue
                batch.rows.setdefault(route, []).extend(rows)
        self.stats.messages += sum(len(records) for records in polled.values())

    # -- writing and committing -------------------------------------------------------------

    def flush(self) -> int:
        """Write the batch (retrying while ClickHouse is down), then commit its offsets.

        Returns the rows inserted. If :meth:`stop` is called while retrying, returns 0 without
        committing: the batch is read again by whoever consumes the partitions next.
        """
        batch = self._batch
        if not batch.messages:
            return 0
        before = self.stats.rows_written
        pending = sum(map(len, batch.rows.values()))
        if self._retry("insert", lambda: self._write(batch), rows=pending) is None:
            return 0
        if self._retry("commit", lambda: self._commit(batch)) is None:
            return 0
        self._batch = _Batch()
        self.stats.batches += 1
        return self.stats.rows_written - before

    def _write(self, batch: _Batch) -> bool:
        for route, rows in batch.rows.items():
            if not rows:
                continue
            unique = route.unique(self._writer, rows)
            started = time.perf_counter()
            inserted = self._writer.insert(route.table, route.columns, unique)
            self.stats.insert_seconds.labels(route.table).observe(time.perf_counter() - started)
            self.stats.rows_by_table[route.table] += inserted
            self.stats.duplicates_dropped += len(rows) - len(unique)
            # Done with this table: a retry after a later table failed must not insert it again.
            batch.rows[route] = []
        return True

    def _commit(self, batch: _Batch) -> bool:
        offsets = {tp: OffsetAndMetadata(offset, "", -1)
                   for tp, offset in batch.next_offsets.items()}
        try:
            self._consumer.commit(offsets=offsets)
        except CommitFailedError as error:
            # The group gave the partitions to another member (or to this one anew): it reads
            # from the last commit and the rows already written collapse as duplicates.
            log_event(log, "sink.commit_rejected", logging.WARNING, error=str(error))
            return False
        self._committed.update(batch.next_offsets)
        return True

    def _retry(self, operation: str, action: Callable[[], Any], **fields: Any) -> Any:
        """``action()`` until it succeeds; None if the sink is stopped first. Holds the position:
        nothing is committed and nothing is dropped while retrying."""
        attempt = 0
        while True:
            try:
                return action()
            except (ClickHouseError, KafkaError) as error:
                delay = self.config.backoff(attempt)
                attempt += 1
                self.stats.failures[operation] += 1
                log_event(log, f"sink.{operation}_failed", logging.WARNING, attempt=attempt,
                          retry_in_s=delay, error=str(error), **fields)
                if self._stop.wait(delay):
                    return None

    # -- partitions and lag -------------------------------------------------------------------

    def _on_revoked(self) -> None:
        """The group takes partitions away: drop what is buffered, unwritten and uncommitted; the
        next owner reads it from the last commit."""
        if self._batch.messages:
            log_event(log, "sink.batch_dropped_on_rebalance", messages=self._batch.messages)
        for tp, offset in self._batch.first_offsets.items():
            self._rewind[tp] = min(offset, self._rewind.get(tp, offset))
        self._batch = _Batch()
        self._committed.clear()
        self.stats.lag = {}

    def _on_assigned(self, assigned: Any) -> None:
        """Partitions that come back after a dropped batch are read again from its start."""
        for tp in assigned:
            if tp in self._rewind:
                self._consumer.seek(tp, self._rewind[tp])
        self._rewind.clear()

    def lag(self) -> dict[TopicPartition, int]:
        """Messages per assigned partition not yet written to ClickHouse (end offset minus the
        committed offset); kept in ``stats.lag`` for the metrics endpoint."""
        partitions = sorted(self._consumer.assignment())
        if not partitions:
            self.stats.lag = {}
            return {}
        ends = self._consumer.end_offsets(partitions)
        unknown = [tp for tp in partitions if tp not in self._committed]
        for tp in unknown:
            committed = self._consumer.committed(tp)
            if committed is not None:
                self._committed[tp] = committed
        missing = [tp for tp in unknown if tp not in self._committed]
        if missing:
            self._committed.update(self._consumer.beginning_offsets(missing))
        self.stats.lag = {tp: max(ends[tp] - self._committed[tp], 0) for tp in partitions}
        return dict(self.stats.lag)

    def close(self) -> None:
        """Leave the group without committing anything beyond what was written."""
        self._consumer.close(autocommit=False)


def build_sink(settings: Settings, writer: ClickHouseWriter, config: SinkConfig | None = None,
               group_id: str = GROUP_ID) -> ClickHouseSink:
    """The sink over the configured Kafka, in consumer group ``billing-clickhouse-sink``: the
    account-state, usage-rated and account-status topics."""
    config = config or SinkConfig()
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap.split(","),
        group_id=group_id,
        client_id=GROUP_ID,
        enable_auto_commit=False,  # offsets are committed after the insert, by the sink
        auto_offset_reset="earliest",  # a new group loads everything the topics still hold
        max_poll_records=config.batch_rows,
        **kafka_python_security(settings),
    )
    topic_kinds = {settings.topics.account_state: "account_state",
                   settings.topics.usage_rated: "usage_rated",
                   settings.topics.account_status: "account_status"}
    for topic in topic_kinds:
        # Load the topics' metadata before joining: a group leader that has none for a topic
        # assigns none of its partitions (seen in CI: the sink then sat idle).
        consumer.partitions_for_topic(topic)
    return ClickHouseSink(consumer, writer, topic_kinds, codec_for(settings).decode, config)


class _Listener(ConsumerRebalanceListener):
    def __init__(self, sink: ClickHouseSink) -> None:
        self._sink = sink

    def on_partitions_revoked(self, revoked: Any) -> None:
        self._sink._on_revoked()

    def on_partitions_assigned(self, assigned: Any) -> None:
        self._sink._on_assigned(assigned)
