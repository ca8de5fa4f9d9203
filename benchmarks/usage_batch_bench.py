"""Usage records/s of one worker fed single usage messages vs ``usage_batch`` messages, same run.

For each run and each packing (``--pack-linger``: 0 sends every event alone, the baseline; any
other value packs each account's usage with ``EventProducer(pack_usage=True)`` and that linger),
a fresh private pipeline is filled with the same generated workload through ``EventProducer``
(its own rate, events/s from the first send to the end of its flush, is printed), then one
``billing worker`` of this checkout drains it (``benchmarks.pipeline_bench.worker_rate``: from its
first commit to zero lag, CPU from ``/proc``). The worker's lag counts messages, so its records/s
is its messages/s times the workload's records per message (the messages drained after the first
commit are taken to carry the average). The packings alternate order between runs; medians, and
each packing against the first in the same run.

    billing stack up --no-clickhouse
    python -m benchmarks.usage_batch_bench --events 50000 --accounts 100 --runs 3 \\
        --pack-linger 0 --pack-linger 0.005 --pack-linger 0.5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from benchmarks.pipeline_bench import CURRENT, worker_rate, workload
from devkit.harness import private_pipeline
from runtime.produce import EventProducer
from runtime.settings import Settings, load_settings


def produce(settings: Settings, events: list[dict[str, Any]], linger: float) -> float:
    """Send ``events`` with the producer client (packing usage if ``linger``); its events/s."""
    with EventProducer(settings, pack_usage=linger > 0, pack_linger=linger or 0.005) as producer:
        started = time.perf_counter()
        for event in events:
            producer.send(event)
        producer.flush()
        return len(events) / (time.perf_counter() - started)


def input_messages(settings: Settings) -> int:
    """How many messages the four input topics hold."""
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    try:
        partitions = [TopicPartition(topic, partition) for topic in settings.topics.inputs
                      for partition in consumer.partitions_for_topic(topic) or ()]
        return sum(consumer.end_offsets(partitions).values())
    finally:
        consumer.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--accounts", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--pack-linger", type=float, action="append", default=[],
                        metavar="SECONDS", help="0: no packing (the baseline); repeatable, the "
                                                "first is the baseline of the ratios")
    parser.add_argument("--poll", type=float, default=1.0)
    args = parser.parse_args(argv)
    lingers = args.pack_linger or [0.0, 0.005]
    events = workload(args.accounts, args.events)
    results: dict[float, list[dict[str, float]]] = {linger: [] for linger in lingers}
    for run in range(args.runs):
        for linger in lingers if run % 2 == 0 else lingers[::-1]:
            settings, app_id = private_pipeline(load_settings(), f"ubench-{uuid.uuid4().hex[:8]}")
            produced = produce(settings, events, linger)
            messages = input_messages(settings)
            log = Path(tempfile.gettempdir()) / f"usage-batch-bench-{app_id}.log"
            result = worker_rate(settings, app_id, messages, log, CURRENT, None, 0, args.poll)
            per_message = len(events) / messages
            result.update(producer_events_per_s=produced, records_per_message=per_message,
                          records_per_s=result["events_per_s"] * per_message,
                          records_per_cpu_s=result["events_per_cpu_s"] * per_message)
            results[linger].append(result)
            print(f"run {run + 1} linger {linger}: producer {produced:,.0f} events/s, "
                  f"{per_message:.2f} records per message, worker "
                  f"{result['records_per_s']:,.0f} records/s, "
                  f"{result['records_per_cpu_s']:,.0f} per worker CPU s, "
                  f"{result['cpu_share']:.0%} of a core", flush=True)
    first = lingers[0]
    print(f"medians over {args.runs} runs of {len(events):,} events / {args.accounts:,} accounts:")
    for linger, runs in results.items():
        def median(key: str, runs: list[dict[str, float]] = runs) -> float:
            return statistics.median(run[key] for run in runs)
        ratio = statistics.median(run["records_per_s"] / base["records_per_s"]
                                  for run, base in zip(runs, results[first], strict=True))
        print(f"  linger {linger}: producer {median('producer_events_per_s'):,.0f} events/s, "
              f"{median('records_per_message'):.2f} records/message, worker "
              f"{median('records_per_s'):,.0f} records/s ({ratio:.2f} x linger {first}), "
              f"{median('records_per_cpu_s'):,.0f} per CPU s, "
              f"{median('cpu_share'):.0%} of a core")
    return 0


if __name__ == "__main__":
    sys.exit(main())
