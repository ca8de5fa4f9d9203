"""Pipeline throughput per worker on the real broker, against a raw consumer of the same topics.

For each run: a fresh private pipeline (own topics) is filled with a generated workload; then,
in the same run, (1) a raw aiokafka consumer reads all four input topics to the end, and (2) one
``billing worker`` processes them. The worker's rate is measured from its first committed offset
to the moment its group has no lag, so process start-up and group join are excluded (they are
printed apart). Medians of ``--runs`` runs; the ratio worker/raw is the figure that survives a
noisy shared machine.

    billing stack up --no-clickhouse
    python benchmarks/pipeline_bench.py --events 50000 --accounts 1000 --runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from aiokafka import AIOKafkaConsumer

from billing.events import normalize_input
from billing.settings import Settings, load_settings
from billing.workload import generate
from streams.observe import wait_until
from streams.process import WorkerProcess, private_pipeline
from tests.integration.pipeline import in_merge_order, publish


async def raw_consume(settings: Settings, total: int) -> float:
    """Seconds for a bare aiokafka consumer to read ``total`` input messages."""
    consumer = AIOKafkaConsumer(*settings.topics.inputs, bootstrap_servers=settings.kafka_bootstrap,
                                group_id=f"raw-{uuid.uuid4().hex[:8]}",
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    try:
        seen, started = 0, None
        while seen < total:
            batch = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            if batch and started is None:
                started = time.perf_counter()
            seen += sum(len(records) for records in batch.values())
        return time.perf_counter() - (started or time.perf_counter())
    finally:
        await consumer.stop()


def worker_rate(settings: Settings, app_id: str, total: int, log: Path) -> tuple[float, float]:
    """(events/s while processing, seconds of start-up before the first commit)."""
    worker = WorkerProcess(settings, app_id, log).start()
    launched = time.perf_counter()
    try:
        wait_until(lambda: worker.lag() < total, 600, 0.2, "the worker's first commit")
        first_commit = time.perf_counter()
        lag_at_first = worker.lag()
        wait_until(lambda: worker.lag() == 0, 1800, 0.2, "the worker to drain")
        drained = time.perf_counter()
    finally:
        worker.stop()
    return lag_at_first / (drained - first_commit), first_commit - launched


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--accounts", type=int, default=1_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    events = in_merge_order([normalize_input(event) for event in generate(
        accounts=args.accounts, events=args.events, seed=7,
        start=datetime(2026, 1, 1, tzinfo=UTC))])
    raw_rates, worker_rates, startups = [], [], []
    for run in range(args.runs):
        settings, app_id = private_pipeline(load_settings(), f"bench-{uuid.uuid4().hex[:8]}")
        publish(settings, events)
        raw_rates.append(len(events) / asyncio.run(raw_consume(settings, len(events))))
        rate, startup = worker_rate(settings, app_id, len(events),
                                    Path(tempfile.gettempdir()) / f"pipeline-bench-{run}.log")
        worker_rates.append(rate)
        startups.append(startup)
        print(f"run {run + 1}: raw consumer {raw_rates[-1]:,.0f} msg/s, worker {rate:,.0f} "
              f"events/s (start-up {startup:.1f} s)", flush=True)
    raw, worker = statistics.median(raw_rates), statistics.median(worker_rates)
    print(f"median over {args.runs} runs of {len(events):,} events / {args.accounts:,} accounts: "
          f"raw consumer {raw:,.0f} msg/s, worker {worker:,.0f} events/s, "
          f"ratio {worker / raw:.3f}, start-up {statistics.median(startups):.1f} s")


if __name__ == "__main__":
    main()
