"""The ClickHouse sink's Prometheus metrics, read from its :class:`~sinks.sink.SinkStats`.

The sink counts what it does once, in ``SinkStats`` (progress lines and tests read the same
numbers); this collector turns them into metric families at each scrape. Lag is the value the
sink last measured (every ``--progress-seconds``): the Kafka consumer is not thread-safe, so the
scrape thread never asks the broker itself.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import CounterMetricFamily, Metric

from runtime.metrics import PartitionLagCollector
from sinks.sink import SinkStats


class SinkMetrics:
    """A collector over one sink's stats: ``registry.register(SinkMetrics(sink.stats))``."""

    def __init__(self, stats: SinkStats) -> None:
        self.stats = stats
        self._lag = PartitionLagCollector(
            "billing_sink_consumer_lag",
            "Messages in an assigned partition not yet written and committed (last measured).",
            lambda: self.stats.lag)

    def collect(self) -> Iterable[Metric]:
        stats = self.stats
        for name, documentation, value in (
            ("billing_sink_messages_total", "Messages consumed from Kafka.", stats.messages),
            ("billing_sink_batches_total", "Batches written to ClickHouse and committed.",
             stats.batches),
            ("billing_sink_duplicates_dropped_total",
             "Rows not inserted because ClickHouse or the batch already held their event id.",
             stats.duplicates_dropped),
            ("billing_sink_undecodable_total",
             "Messages that could not be decoded, logged and skipped.", stats.undecodable),
        ):
            yield CounterMetricFamily(name, documentation, value=value)
        yield self._by_label("billing_sink_rows_total", "Rows inserted into ClickHouse, by table.",
                             "table", stats.rows_by_table)
        yield self._by_label("billing_sink_errors_total",
                             "Failed inserts and offset commits, by operation; each is retried "
                             "with backoff while the sink holds its position.",
                             "operation", stats.failures)
        yield from stats.insert_seconds.collect()
        yield from self._lag.collect()

    @staticmethod
    def _by_label(name: str, documentation: str, label: str,
                  values: dict[str, int]) -> CounterMetricFamily:
        family = CounterMetricFamily(name, documentation, labels=[label])
        for key, value in sorted(values.items()):
            family.add_metric([key], value)
        return family
