"""The ledger worker's Prometheus metrics: what it applied, emitted and rejected, and how far
behind its inputs it reads.

The worker calls the methods of :class:`WorkerMetrics` where things happen; the registry is served
by ``billing worker --metrics-port`` (:mod:`runtime.metrics`). Every label value that is known in
advance (event types, output types, input topics) starts at 0, so a rate or an ``increase() > 0``
alert sees the first occurrence instead of a series that appears already at 1.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

from billing.events import OUTPUT_TYPES, TOPIC_OF_TYPE
from runtime.metrics import LagSource, PartitionLagCollector

COMMIT_EVENT_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000)
RESTORE_SECOND_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 20, 30, 45, 60, 120)  # 1M accounts: ~10 s


class WorkerMetrics:
    """Counters and histograms of one worker process, registered in ``registry`` (default: a
    private one, so a worker built without an endpoint, as in tests, needs no special case)."""

    def __init__(self, input_topics: Iterable[str] = (),
                 registry: CollectorRegistry | None = None) -> None:
        registry = CollectorRegistry() if registry is None else registry
        self.events = Counter(
            "billing_worker_events_total",
            "Input events applied to the ledger, by event type (duplicates not included).",
            ["type"], registry=registry)
        self.duplicates = Counter(
            "billing_worker_duplicates_total",
            "Input events recognised by event_id as already applied, and ignored.",
            registry=registry)
        self.inputs_read_directly = Counter(
            "billing_worker_inputs_read_directly_total",
            "Input messages the worker read from Kafka itself: Faust skipped them (reason "
            "skipped, around a rebalance) or stopped delivering their partition (stalled).",
            ["topic", "reason"], registry=registry)
        self.outputs = Counter(
            "billing_worker_outputs_total",
            "Account-state events published, by type (usage_paused, top_up_requested, ...).",
            ["type"], registry=registry)
        self.dead_letters = Counter(
            "billing_worker_dead_letters_total",
            "Input messages sent to the dead-letter topic, by the input topic they came from.",
            ["topic"], registry=registry)
        self.commit_events = Histogram(
            "billing_worker_commit_events",
            "Input events acknowledged per commit (a group of batches whose outputs were "
            "delivered).", buckets=COMMIT_EVENT_BUCKETS, registry=registry)
        self.commit_seconds = Histogram(
            "billing_worker_commit_duration_seconds",
            "Time to write a commit group's table values, have their changelog records "
            "delivered and acknowledge its events.", registry=registry)
        self.restored_records = Counter(
            "billing_worker_restored_records_total",
            "Changelog records the worker wrote into its tables itself at a recovery (the bulk "
            "restore), before Faust's own reading.", registry=registry)
        self.restore_seconds = Histogram(
            "billing_worker_restore_duration_seconds",
            "Time of each bulk restore of a recovery round (interrupted ones included).",
            buckets=RESTORE_SECOND_BUCKETS, registry=registry)
        self.lag = PartitionLagCollector(
            "billing_worker_consumer_lag",
            "Messages in an assigned input partition after the last one the worker received.")
        registry.register(self.lag)
        # Each type's child counter, looked up once: ``labels()`` per event costs a lock and a
        # tuple, at every event applied and every output.
        self._events_of = {event_type: self.events.labels(event_type)
                           for event_type in TOPIC_OF_TYPE}
        self._outputs_of = {output_type: self.outputs.labels(output_type)
                            for output_type in OUTPUT_TYPES}
        for topic in input_topics:
            self.dead_letters.labels(topic)
            for reason in ("skipped", "stalled"):
                self.inputs_read_directly.labels(topic, reason)

    def event_applied(self, event_type: str) -> None:
        self._events_of[event_type].inc()

    def duplicate(self) -> None:
        self.duplicates.inc()

    def read_directly(self, topic: str, reason: str, messages: int) -> None:
        self.inputs_read_directly.labels(topic, reason).inc(messages)

    def output(self, output_type: str) -> None:
        self._outputs_of[output_type].inc()

    def dead_letter(self, topic: str) -> None:
        self.dead_letters.labels(topic).inc()

    def committed(self, events: int, seconds: float) -> None:
        """A commit group's size and duration (the shape of ``CommitQueue.on_commit``)."""
        self.commit_events.observe(events)
        self.commit_seconds.observe(seconds)

    def restored(self, records: int, seconds: float) -> None:
        """One bulk restore's records and duration (the shape of ``BulkRestore.on_restored``)."""
        self.restored_records.inc(records)
        self.restore_seconds.observe(seconds)

    def set_lag_source(self, source: LagSource) -> None:
        """Where the lag gauge reads from at each scrape (see :func:`received_lag`)."""
        self.lag.source = source


def received_lag(highwater: Callable[[Any], int | None],
                 next_offsets: Mapping[Any, int]) -> dict[tuple[str, int], int]:
    """Per partition the worker reads: messages from the next one it must receive on
    (``highwater - next offset``). Read-only, so it can run in the metrics thread."""
    lags = {}
    for tp, offset in list(next_offsets.items()):  # a copy: the worker's loop adds entries
        end = highwater(tp)
        if end is not None:
            lags[(tp.topic, tp.partition)] = max(end - offset, 0)
    return lags
