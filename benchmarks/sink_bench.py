"""Insert speed of the sink's write path against a raw clickhouse-driver insert of the same rows.

The sink's throughput into ClickHouse is bounded by its write path: the row mapping
(``sinks.rows``, Decimal checks included), the writer (``sinks.clickhouse.DriverWriter``) and, in
the sink proper, the dedup guard that queries rated_usage before each insert (``sinks.dedup``).
The baseline is the least any Python program must do: ``Client.execute`` of the same, already
mapped rows. All variants insert the same rows in the same batches into the same table (its
materialized views fire for every variant), which is emptied before each timed pass; the order of
the variants rotates between runs, and the medians are reported.

Run against a server (default: the local stack's, database ``sink_bench``)::

    python benchmarks/sink_bench.py [--url clickhouse://127.0.0.1:19000/sink_bench]
                                    [--rows 50000] [--batch 5000] [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from runtime.clickhouse import clickhouse_client, server_target
from runtime.settings import load_settings
from sinks.clickhouse import DriverWriter, insert_statement
from sinks.dedup import new_rated_usage
from sinks.rows import RATED_USAGE_COLUMNS, RATED_USAGE_TABLE, rows_for_rated_usage

PRODUCTS = (("deepseek-v3", ("input_tokens", "cached_input_tokens", "output_tokens")),
            ("llama-v3p1-8b", ("input_tokens", "output_tokens")),
            ("h100-deployment", ("gpu_seconds",)))
START = datetime(2026, 1, 1, tzinfo=UTC)


def records(count: int) -> list[dict[str, Any]]:
    """``count`` rated usage records over 500 accounts and one month, deterministic."""
    out = []
    for number in range(count):
        product, meters = PRODUCTS[number % len(PRODUCTS)]
        out.append({
            "event_id": f"gw-{number:012d}", "account_id": f"acct-{number % 500:06d}",
            "timestamp": START + timedelta(milliseconds=number * 48_271 % 2_678_400_000),
            "product": product,
            "quantities": {meter: (number * 7919 + index) % 20_000
                           for index, meter in enumerate(meters)},
            "requests": 1 + number % 3, "cost": Decimal(number % 9_999_991) / 1_000_000,
            "billed_period": "2026-01", "late": False, "over_limit": number % 97 == 0,
            "billing_model": "prepaid", "tier": str(number % 5),
        })
    return out


def batches(items: list[Any], size: int) -> list[list[Any]]:
    return [items[start:start + size] for start in range(0, len(items), size)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    settings = load_settings()
    parser.add_argument("--url", default=f"clickhouse://127.0.0.1:{settings.clickhouse_port}/"
                                         "sink_bench")
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=5_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    bench_settings = replace(settings, clickhouse_url=args.url)
    target = server_target(bench_settings)
    if target is None:
        parser.error("--url must be a clickhouse:// server (the baseline is clickhouse-driver)")
    writer = DriverWriter(target)
    writer.apply_ddl()
    raw = clickhouse_client(target, query_timeout=DriverWriter.QUERY_TIMEOUT)
    source = batches(records(args.rows), args.batch)
    mapped = [rows_for_rated_usage(batch) for batch in source]
    head = insert_statement(RATED_USAGE_TABLE, RATED_USAGE_COLUMNS) + " VALUES"

    def raw_driver() -> None:
        for rows in mapped:
            raw.execute(head, rows)

    def sink_path(guard: bool) -> None:
        for batch in source:
            rows = rows_for_rated_usage(batch)
            writer.insert(RATED_USAGE_TABLE, RATED_USAGE_COLUMNS,
                          new_rated_usage(writer, rows) if guard else rows)

    variants: dict[str, Callable[[], None]] = {
        "raw clickhouse-driver (rows pre-mapped)": raw_driver,
        "writer + row mapping": lambda: sink_path(guard=False),
        "writer + row mapping + dedup guard": lambda: sink_path(guard=True),
    }
    timings: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for run in range(args.runs):
        for name in names[run % len(names):] + names[:run % len(names)]:
            for table in ("rated_usage", "spend_daily", "spend_monthly"):
                writer.execute(f"TRUNCATE TABLE {table}")
            started = time.perf_counter()
            variants[name]()
            timings[name].append(time.perf_counter() - started)
            ((stored,),) = writer.query("SELECT count() FROM rated_usage")
            assert stored == args.rows, (name, stored)

    version = writer.query("SELECT version()")[0][0]
    print(f"ClickHouse {version} at {args.url}: {args.rows} rows in batches of {args.batch}, "
          f"median of {args.runs} runs")
    baseline = args.rows / statistics.median(timings[names[0]])
    for name in names:
        rate = args.rows / statistics.median(timings[name])
        print(f"  {name:<40} {rate:>10,.0f} rows/s   {rate / baseline:5.2f}x raw")
    writer.close()
    raw.disconnect()


if __name__ == "__main__":
    main()
