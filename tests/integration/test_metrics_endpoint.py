"""``billing sink run --metrics-port``: a running sink's /metrics, scraped over HTTP while it
loads real Kafka topics into clickhouse-server, shows what it wrote and that it caught up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from runtime.observe import wait_until
from runtime.settings import Settings
from schemas.codec import Codec
from tests.integration.pipeline import isolated
from tests.integration.test_sink_kafka import produce
from tests.test_metrics import free_port, samples
from tests.test_sink_samples import ledger_run

codec = Codec()  # plain Avro, as the test stacks run without a schema registry

pytestmark = pytest.mark.integration


# The sink's topics: a lag gauge for each of their partitions.
SINK_TOPICS = ("account_state", "usage_rated", "account_status")


def test_sink_run_serves_batches_rows_and_lag(stack: Settings, tmp_path: Path) -> None:
    settings, _ = isolated(stack, "sinkmetrics")
    settings = replace(settings, clickhouse_url=(f"clickhouse://127.0.0.1:{stack.clickhouse_port}"
                                                 f"/sink_metrics_{uuid.uuid4().hex[:8]}"))
    run = ledger_run()
    rated, outputs = run.rated[:300], run.outputs
    produce(settings, settings.topics.usage_rated,
            [*((r["account_id"], codec.encode("usage_rated", r)) for r in rated),
             ("acct-x", b"\x00not avro")])
    produce(settings, settings.topics.account_state,
            [(e["account_id"], codec.encode("account_state", e)) for e in outputs])
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    log_path = tmp_path / "sink.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "commands.cli", "sink", "run", "--progress-seconds", "1",
             "--batch-seconds", "0.5"],
            env={**os.environ, **settings.to_env(), "BILLING_SINK_METRICS_PORT": str(port)},
            stdout=log, stderr=subprocess.STDOUT)
    seen: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}

    def caught_up() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                seen.update(samples(response.read().decode()))
        except (urllib.error.URLError, ConnectionError):  # not listening yet
            assert process.poll() is None, log_path.read_text()
            return False
        lags = [value for (name, _), value in seen.items() if name == "billing_sink_consumer_lag"]
        return (seen.get(("billing_sink_rows_total", (("table", "rated_usage"),))) == len(rated)
                and len(lags) == len(SINK_TOPICS) * settings.partitions and not any(lags))

    try:
        wait_until(caught_up, 120, interval=0.5, what="the sink's metrics to show it caught up")
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0, log_path.read_text()
    # At least once: a rebalance could have the sink read some messages twice.
    assert seen[("billing_sink_rows_total", (("table", "account_state_events"),))] >= len(outputs)
    assert seen[("billing_sink_messages_total", ())] >= len(rated) + 1 + len(outputs)
    assert seen[("billing_sink_batches_total", ())] >= 1
    # At least once: a batch dropped at a rebalance (seen right after the join) is read again.
    assert seen[("billing_sink_undecodable_total", ())] >= 1
    assert seen[("billing_sink_insert_duration_seconds_count", (("table", "rated_usage"),))] >= 1
    assert seen[("billing_sink_errors_total", (("operation", "insert"),))] == 0
    assert "metrics.serving" in log_path.read_text()
