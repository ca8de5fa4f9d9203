"""Bootstrap of the gateway client: how long until it knows every account, next to a raw consumer.

For each ``--accounts N`` it makes a private compacted topic (``settings.partitions`` partitions)
and produces N synthetic account-status records to it with the settings' codec (one per account;
``--versions V`` writes V per account, the newest last, as a topic not compacted yet holds them).
Then, in three interleaved rounds (the order rotates each round), a fresh process per measurement
times, from just before it starts reading to the end offsets taken at its start:

- **client**: ``AccountStatusClient.start()`` to ``ready`` (decode, keep the highest version);
- **raw**: a kafka-python ``KafkaConsumer`` (partitions assigned, from the beginning, no group)
  polling every record to the end offsets, values untouched: the floor any client pays;
- **raw+decode**: the same, plus ``codec.decode`` of each value into a dict per account (what a
  hand-written consumer does).

Reported: medians of wall-clock seconds and of process CPU seconds (all threads), records/s, the
ratio to raw, and the memory the process grew by while reading (max RSS after minus before).

    billing stack up --no-clickhouse          # or any broker: BILLING_KAFKA_BOOTSTRAP
    python -m benchmarks.status_bench --accounts 100000 1000000 --json-out status.json
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from billing.account_status import status_record
from runtime.account_status import AccountStatusClient
from runtime.codecs import codec_for
from runtime.kafka_security import kafka_python_security
from runtime.settings import Settings, load_settings
from runtime.topics import CLEANUP_POLICY, admin_client
from schemas.topics import Topics

CONTENDERS = ("client", "raw", "raw+decode")
ROUNDS = 3
T0 = datetime(2026, 3, 1, tzinfo=UTC)


def synthetic(index: int, version: int, rng: random.Random) -> dict[str, Any]:
    """A plausible status record: mostly active, some paused or suspended, varied money."""
    status = rng.choices(("active", "paused", "suspended"), (90, 7, 3))[0]
    reasons = ["credits_exhausted"] if status == "paused" else []
    balance = Decimal(rng.randrange(-5_000_000, 500_000_000)).scaleb(-6)
    spend = Decimal(rng.randrange(0, 900_000_000)).scaleb(-6)
    snapshot = {
        "account_id": f"acct-{index:07d}", "billing_model": "prepaid", "contract": "self_serve",
        "status": status, "pause_reasons": reasons, "credit_balance": balance,
        "outstanding_balance": Decimal("0.000000"), "month_to_date_spend": spend,
        "open_period": "2026-03", "lifetime_spend": spend,
        "lifetime_credits_purchased": balance + spend, "tier": str(rng.randrange(5)),
        "monthly_budget": None, "rpm_limit": 600, "tpm_limit": 60_000,
        "has_payment_method": True,
        "auto_top_up": {"enabled": False, "minimum_balance": Decimal("0.000000"),
                        "top_up_amount": Decimal("0.000000")},
        "pending_top_up_request_id": None,
    }
    return status_record(snapshot, T0 + timedelta(seconds=index), version)


def make_topic(settings: Settings, accounts: int, versions: int) -> Settings:
    """A private compacted status topic holding ``accounts`` x ``versions`` records."""
    topic = f"status-bench-{uuid.uuid4().hex[:8]}.{settings.topics.account_status}"
    with admin_client(settings) as admin:
        admin.create_topics({topic: {"num_partitions": settings.partitions,
                                     "replication_factor": settings.replication_factor,
                                     "configs": {CLEANUP_POLICY: "compact"}}},
                            wait_for_metadata=True)
    private = replace(settings, topics=Topics(account_status=topic))
    codec = codec_for(private)
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all",
                             linger_ms=50, batch_size=512 * 1024,
                             **kafka_python_security(settings))
    rng = random.Random(accounts)
    started = time.monotonic()
    try:
        for version in range(1, versions + 1):
            for index in range(accounts):
                record = synthetic(index, version * 1_000_000 + index, rng)
                producer.send(topic, key=record["account_id"].encode(),
                              value=codec.encode("account_status", record))
        producer.flush()
    finally:
        producer.close()
    print(f"produced {accounts * versions:,} records to {topic} in "
          f"{time.monotonic() - started:.1f}s", file=sys.stderr)
    return private


def delete_topic(settings: Settings) -> None:
    with admin_client(settings) as admin:
        admin.delete_topics([settings.topics.account_status])


# -- one measurement, in a fresh process ----------------------------------------------------

def measure(contender: str, topic: str) -> dict[str, Any]:
    settings = load_settings()
    settings = replace(settings, topics=Topics(account_status=topic))
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    cpu_before = time.process_time()
    started = time.perf_counter()
    if contender == "client":
        with AccountStatusClient(settings) as client:
            client.wait_ready()
            seconds = time.perf_counter() - started
            records, accounts = client.progress.records_read, len(client)
    else:
        records, accounts = _raw(settings, decode=contender == "raw+decode")
        seconds = time.perf_counter() - started
    return {"contender": contender, "seconds": seconds,
            "cpu_seconds": time.process_time() - cpu_before, "records": records,
            "accounts": accounts,
            "rss_grew_mib": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before)
            / 1024}


def _raw(settings: Settings, decode: bool) -> tuple[int, int]:
    topic = settings.topics.account_status
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None,
                             enable_auto_commit=False, isolation_level="read_committed",
                             max_poll_records=5000, **kafka_python_security(settings))
    codec = codec_for(settings)
    latest: dict[bytes, dict[str, Any]] = {}
    records = 0
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        ends = consumer.end_offsets(partitions)
        while any(consumer.position(tp) < ends[tp] for tp in partitions):
            for _, batch in consumer.poll(timeout_ms=200, max_records=5000).items():
                records += len(batch)
                if decode:
                    for record in batch:
                        value = codec.decode("account_status", record.value)
                        held = latest.get(record.key)
                        if held is None or value["version"] >= held["version"]:
                            latest[record.key] = value
    finally:
        consumer.close()
    return records, len(latest)


# -- the driver ------------------------------------------------------------------------------

def run_one(contender: str, topic: str) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-m", "benchmarks.status_bench", "--measure",
                          contender, "--topic", topic], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench(settings: Settings, accounts: int, versions: int) -> dict[str, Any]:
    private = make_topic(settings, accounts, versions)
    topic = private.topics.account_status
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in CONTENDERS}
    try:
        for round_number in range(ROUNDS):
            order = CONTENDERS[round_number:] + CONTENDERS[:round_number]
            for contender in order:
                result = run_one(contender, topic)
                runs[contender].append(result)
                print(f"  round {round_number + 1} {contender:>10}: {result['seconds']:.2f}s "
                      f"wall, {result['cpu_seconds']:.2f}s CPU, {result['records']:,} records, "
                      f"+{result['rss_grew_mib']:.0f} MiB", file=sys.stderr)
    finally:
        delete_topic(private)
    summary: dict[str, Any] = {"accounts": accounts, "versions": versions,
                               "records": accounts * versions}
    raw_wall = statistics.median(r["seconds"] for r in runs["raw"])
    raw_cpu = statistics.median(r["cpu_seconds"] for r in runs["raw"])
    for name, results in runs.items():
        wall = statistics.median(r["seconds"] for r in results)
        cpu = statistics.median(r["cpu_seconds"] for r in results)
        summary[name] = {"wall_median": wall, "cpu_median": cpu,
                         "records_per_second": accounts * versions / wall,
                         "wall_vs_raw": wall / raw_wall, "cpu_vs_raw": cpu / raw_cpu,
                         "rss_grew_mib_median": statistics.median(r["rss_grew_mib"]
                                                                  for r in results),
                         "accounts": results[-1]["accounts"], "runs": results}
    return summary


def report(summary: dict[str, Any]) -> None:
    print(f"\n{summary['accounts']:,} accounts, {summary['records']:,} records "
          f"(medians of {ROUNDS} interleaved rounds)")
    print(f"{'':>12} {'wall s':>8} {'CPU s':>8} {'records/s':>11} {'wall/raw':>9} "
          f"{'CPU/raw':>8} {'+MiB':>7}")
    for name in CONTENDERS:
        row = summary[name]
        print(f"{name:>12} {row['wall_median']:>8.2f} {row['cpu_median']:>8.2f} "
              f"{row['records_per_second']:>11,.0f} {row['wall_vs_raw']:>9.2f} "
              f"{row['cpu_vs_raw']:>8.2f} {row['rss_grew_mib_median']:>7.0f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, nargs="+", default=[100_000])
    parser.add_argument("--versions", type=int, default=1,
                        help="records per account (newest last)")
    parser.add_argument("--json-out", help="write the figures here too")
    parser.add_argument("--measure", choices=CONTENDERS, help=argparse.SUPPRESS)
    parser.add_argument("--topic", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.measure, args.topic)))
        return 0
    settings = load_settings()
    summaries = []
    for accounts in args.accounts:
        summary = bench(settings, accounts, args.versions)
        report(summary)
        summaries.append(summary)
    if args.json_out:
        with open(args.json_out, "w") as out:
            json.dump(summaries, out, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
