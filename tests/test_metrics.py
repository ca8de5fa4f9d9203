"""The Prometheus metrics: the worker's and the sink's values after what they count, the
exposition text, the /metrics endpoint over HTTP, and the commands' options failing fast."""

from __future__ import annotations

import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from faust.types import TP
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from runtime.metrics import PartitionLagCollector, metrics_endpoint, new_registry
from runtime.settings import SettingsError
from sinks.cli import sink_group
from sinks.clickhouse import ClickHouseWriter
from sinks.metrics import SinkMetrics
from sinks.sink import ClickHouseSink
from streams.cli import worker_command
from streams.metrics import WorkerMetrics, received_lag
from tests.test_sink_consumer import FAST, STATE, TOPICS, USAGE, FlakyWriter, drain, passthrough
from tests.test_sink_samples import FakeConsumer, chdb_with_tables, output_event, rated

INPUTS = ("billing.usage", "billing.payments", "billing.accounts", "billing.control")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Exposition text -> {(sample name, sorted labels): value}."""
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def scrape(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return samples(generate_latest(registry).decode())


# -- the worker ----------------------------------------------------------------------------


def test_worker_metrics_count_what_the_worker_reports() -> None:
    registry = CollectorRegistry()
    metrics = WorkerMetrics(INPUTS, registry)
    for event_type in ("usage", "usage", "credits_purchased"):
        metrics.event_applied(event_type)
    metrics.duplicate()
    metrics.output("usage_paused")
    metrics.output("top_up_requested")
    metrics.output("top_up_requested")
    metrics.dead_letter("billing.usage")
    metrics.read_directly("billing.usage", "skipped", 4)
    metrics.committed(events=40, seconds=0.02)
    metrics.restored(records=1_000, seconds=0.5)
    metrics.set_lag_source(lambda: {("billing.usage", 0): 7, ("billing.payments", 1): 0})
    values = scrape(registry)
    assert values[("billing_worker_events_total", (("type", "usage"),))] == 2
    assert values[("billing_worker_events_total", (("type", "credits_purchased"),))] == 1
    assert values[("billing_worker_duplicates_total", ())] == 1
    assert values[("billing_worker_outputs_total", (("type", "top_up_requested"),))] == 2
    assert values[("billing_worker_outputs_total", (("type", "usage_paused"),))] == 1
    assert values[("billing_worker_dead_letters_total", (("topic", "billing.usage"),))] == 1
    assert values[("billing_worker_inputs_read_directly_total",
                   (("reason", "skipped"), ("topic", "billing.usage")))] == 4
    assert values[("billing_worker_commit_events_count", ())] == 1
    assert values[("billing_worker_commit_events_sum", ())] == 40
    assert values[("billing_worker_commit_duration_seconds_sum", ())] == pytest.approx(0.02)
    assert values[("billing_worker_restored_records_total", ())] == 1_000
    assert values[("billing_worker_restore_duration_seconds_count", ())] == 1
    assert values[("billing_worker_consumer_lag",
                   (("partition", "0"), ("topic", "billing.usage")))] == 7


def test_worker_series_known_in_advance_start_at_zero() -> None:
    """So that ``increase(...) > 0`` alerts fire on the first dead letter or suspension."""
    registry = CollectorRegistry()
    WorkerMetrics(INPUTS, registry)
    values = scrape(registry)
    for topic in INPUTS:
        assert values[("billing_worker_dead_letters_total", (("topic", topic),))] == 0
        assert values[("billing_worker_inputs_read_directly_total",
                       (("reason", "stalled"), ("topic", topic)))] == 0
    for output_type in ("usage_paused", "account_suspended", "invoice_issued", "tier_changed"):
        assert values[("billing_worker_outputs_total", (("type", output_type),))] == 0
    assert values[("billing_worker_events_total", (("type", "close_period"),))] == 0
    assert not any(name == "billing_worker_consumer_lag" for name, _ in values)  # no source yet


def test_received_lag_is_highwater_from_the_next_offset_to_receive() -> None:
    usage0, usage1, payments0 = TP("u", 0), TP("u", 1), TP("p", 0)
    highwaters = {usage0: 100, usage1: 5, payments0: None}  # None: not fetched yet
    lag = received_lag(highwaters.__getitem__, {usage0: 90, usage1: 5, payments0: 4})
    assert lag == {("u", 0): 10, ("u", 1): 0}


def test_a_failing_lag_source_leaves_the_scrape_working(caplog: pytest.LogCaptureFixture) -> None:
    def revoked() -> dict[tuple[str, int], int]:
        raise AssertionError("Partition is not assigned")

    registry = CollectorRegistry()
    registry.register(PartitionLagCollector("some_lag", "Lag.", revoked))
    assert "# TYPE some_lag gauge" in generate_latest(registry).decode()
    assert "event=metrics.lag_unavailable" in caplog.text


# -- the sink ------------------------------------------------------------------------------


@pytest.fixture
def writer(tmp_path: Path) -> Iterator[ClickHouseWriter]:
    with chdb_with_tables(tmp_path / "chdb") as opened:
        yield opened


def test_sink_metrics_are_its_stats(writer: ClickHouseWriter) -> None:
    consumer = FakeConsumer({USAGE: [*(rated(n) for n in range(12)), rated(3), b"\x00junk"],
                             STATE: [output_event(1, "usage_paused", reason="budget_reached")]})
    sink = ClickHouseSink(consumer, FlakyWriter(writer, failures=2), TOPICS, passthrough, FAST)
    registry = CollectorRegistry()
    registry.register(SinkMetrics(sink.stats))
    drain(sink, consumer)
    sink.lag()
    values = scrape(registry)
    assert values[("billing_sink_messages_total", ())] == 15
    assert values[("billing_sink_batches_total", ())] == sink.stats.batches == 2
    assert values[("billing_sink_rows_total", (("table", "rated_usage"),))] == 12
    assert values[("billing_sink_rows_total", (("table", "account_state_events"),))] == 1
    assert values[("billing_sink_duplicates_dropped_total", ())] == 1  # usage-3 again
    assert values[("billing_sink_undecodable_total", ())] == 1
    assert values[("billing_sink_errors_total", (("operation", "insert"),))] == 2
    assert values[("billing_sink_errors_total", (("operation", "commit"),))] == 0
    assert values[("billing_sink_insert_duration_seconds_count",
                   (("table", "rated_usage"),))] == 2  # one insert per batch that had usage
    assert values[("billing_sink_consumer_lag",
                   (("partition", "0"), ("topic", USAGE.topic)))] == 0
    assert sink.stats.rows_written == 13 and sink.stats.retries == 2


# -- the endpoint and the commands -----------------------------------------------------------


def test_endpoint_serves_the_registry_over_http() -> None:
    registry = new_registry()
    WorkerMetrics(INPUTS, registry).output("usage_paused")
    port = free_port()
    with metrics_endpoint(registry, "127.0.0.1", port, "BILLING_WORKER_METRICS_PORT") as url:
        assert url == f"http://127.0.0.1:{port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
    values = samples(text)
    assert values[("billing_worker_outputs_total", (("type", "usage_paused"),))] == 1
    assert any(name.startswith("process_") for name, _ in values)  # the process metrics too


def test_endpoint_port_zero_serves_nothing() -> None:
    with metrics_endpoint(new_registry(), "127.0.0.1", 0, "BILLING_SINK_METRICS_PORT") as url:
        assert url is None


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port something else listens on."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


def test_endpoint_on_a_taken_port_fails_naming_the_variables(taken_port: int) -> None:
    endpoint = metrics_endpoint(new_registry(), "127.0.0.1", taken_port,
                                "BILLING_SINK_METRICS_PORT")
    with pytest.raises(SettingsError, match="BILLING_METRICS_HOST, BILLING_SINK_METRICS_PORT"):
        endpoint.__enter__()


@pytest.mark.parametrize(("command", "args", "variable"), [
    (sink_group, ["run"], "BILLING_SINK_METRICS_PORT"),
    (worker_command, [], "BILLING_WORKER_METRICS_PORT"),
])
@pytest.mark.parametrize("value", ["nine", "70000", "-1"])
def test_a_bad_port_variable_stops_the_command_and_is_named(command: object, args: list[str],
                                                             variable: str, value: str) -> None:
    result = CliRunner().invoke(command, args, env={variable: value})  # type: ignore[arg-type]
    assert result.exit_code == 2
    assert variable in result.output and "not a port number" in result.output


def test_sink_run_with_a_taken_port_stops_before_connecting(tmp_path: Path,
                                                            taken_port: int) -> None:
    result = CliRunner().invoke(sink_group, ["run", "--metrics-port", str(taken_port)],
                                env={"BILLING_DATA_DIR": str(tmp_path)})
    assert result.exit_code == 1
    assert "cannot serve metrics on 127.0.0.1:" in result.output
    assert "BILLING_SINK_METRICS_PORT" in result.output
