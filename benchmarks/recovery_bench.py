"""How long a restarted worker takes to rebuild its ``accounts`` table from the changelog.

For each size N (default 0, 100,000 and 1,000,000 accounts) a fresh app id gets its changelog
topic ``<app id>-accounts-changelog`` (compacted, ``BILLING_PARTITIONS`` partitions, as Faust
declares it) filled with N records the way the worker writes them: key = account id, value =
``dump_state`` of a real state from a replayed workload (the states are cycled, the account id
rewritten), in partition ``partition_of(key)``: the partition of the account's input events, which
is the table partition (Faust recovers changelog partition p into table partition p, and assigns
it with input partition p). Then, round by round:

- **raw**: a bare aiokafka consumer reads the changelog from the beginning to its end (the
  baseline: what reading the same bytes costs without Faust);
- **worker**: ``billing worker`` with that app id (``devkit.harness.WorkerProcess``), for each
  store: ``memory://`` (rebuilds everything at every start), ``rocksdb://`` with its local files
  removed first (a new machine or a lost disk: everything is rebuilt), ``rocksdb://`` restarted
  on the files the previous run left (the usual restart: only what is past the offsets persisted
  in RocksDB is read), and ``rocksdb:// faust-only``: a new worker again, with its bulk restore
  off (``BILLING_BULK_RESTORE=0``), so only Faust's recovery reads (the baseline of the bulk
  restore, ``streams/quirks/bulk_restore.py``).

The worker's times come from the timestamps of Faust's own log lines (``faust/tables/recovery.py``):
"Restoring state from changelog topics..." when it starts reading, "Done reading from changelog
topics" once every active changelog partition reached its high-water mark, and "Worker ready" once
the streams are resumed and the agent consumes; the bulk restore's own line (``bulk_restore
records=N ... seconds=S``) gives what it read before Faust's reading, and how long it took. Time to
ready counts from the process start; N = 0 gives the start-up overhead (imports, group join, topic
metadata) to subtract. The worker's CPU time and peak RSS are read from ``/proc`` when it is ready,
and its log's high-water table is checked to say N records were there to recover. Medians of
``--runs`` rounds; the ratio recovery / raw is the figure that survives the shared machine's noise.

    billing stack up --no-clickhouse
    python benchmarks/recovery_bench.py --workload var/bench-200k.jsonl --runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from replay_bench import load_events, replay_core

from billing.account_record import dump_state
from devkit.harness import (
    WorkerProcess,
    create_changelog,
    fill_changelog,
    private_pipeline,
    records_to_recover,
)
from runtime.observe import changelog_topic, wait_until
from runtime.settings import Settings, load_settings

RESTORING = "Restoring state from changelog topics..."
RECOVERED = "Done reading from changelog topics"
READY = "Worker ready"
PHASES = (RESTORING.encode(), RECOVERED.encode(), READY.encode())
LOG_LINE = re.compile(rb"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\] \[\d+\] \[\w+\] (.*)$")
STORES = ("memory://", "rocksdb://", "rocksdb:// restart", "rocksdb:// faust-only")
BULK_RESTORE = re.compile(rb"bulk_restore records=(\d+) partitions=\d+ seconds=([\d.]+)")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def sample_records(workload: Path) -> list[tuple[bytes, bytes]]:
    """(account id, table value) of every account after replaying ``workload`` (the event ids
    live in their own table since the boundary work: these are the records alone)."""
    return [(account_id.encode(), dump_state(state))
            for account_id, state in replay_core(load_events(workload)).accounts.items()]


def changelog_records(count: int, samples: list[tuple[bytes, bytes]]
                      ) -> Iterator[tuple[bytes, bytes]]:
    """``count`` table records for distinct accounts: account ``i`` gets the
    ``i % len(samples)``-th real state with its account id (which also appears in invoice ids)
    replaced by ``acct-i``."""
    width = max(6, len(str(count - 1)))
    for number in range(count):
        old_id, value = samples[number % len(samples)]
        key = f"acct-{number:0{width}d}".encode()
        yield key, value.replace(old_id, key)


async def raw_read(settings: Settings, topic: str, count: int) -> dict[str, float]:
    """Wall and CPU seconds for a bare aiokafka consumer to read ``count`` records of ``topic``
    from its beginning (connection and metadata included, as for the worker)."""
    wall, cpu = time.perf_counter(), time.process_time()
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap,
                                enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, partition)
                         for partition in range(settings.partitions)])
        seen = 0
        while seen < count:
            batch = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            seen += sum(len(records) for records in batch.values())
    finally:
        await consumer.stop()
    return {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu}


@dataclass
class Recovery:
    """One worker start: seconds from the process start to each log line, and its resources."""

    to_restoring: float | None  # None: nothing to recover (Faust skips the reading phase)
    to_recovered: float | None
    to_ready: float
    cpu: float  # the worker process's CPU seconds when ready
    peak_rss_mb: float
    records: int  # changelog records of the accounts table that were there to read
    bulk_records: int  # records of every table the bulk restore wrote (0: off, or nothing to do)
    bulk_seconds: float  # how long it took

    @property
    def reading(self) -> float:
        """Seconds Faust spent reading the changelog (0 when there was nothing to read)."""
        if self.to_restoring is None or self.to_recovered is None:
            return 0.0
        return self.to_recovered - self.to_restoring


def log_seconds(stamp: bytes, started: float) -> float:
    return datetime.strptime(stamp.decode(), "%Y-%m-%d %H:%M:%S,%f").timestamp() - started


def phase_times(log: bytes, started: float) -> dict[bytes, float]:
    """Seconds from ``started`` (a wall-clock time) to the first log line of each of
    :data:`PHASES` in ``log`` (a worker's output, or the part of it written since then)."""
    seen: dict[bytes, float] = {}
    for line in log.splitlines():
        match = LOG_LINE.match(line.rstrip())
        if match is None:
            continue
        for phrase in PHASES:
            if match.group(2).endswith(b"]: " + phrase):
                seen.setdefault(phrase, log_seconds(match.group(1), started))
    return seen


def proc_figures(pid: int) -> tuple[float, float]:
    """(CPU seconds, peak RSS in MB) of a running process."""
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(stat[11]) + int(stat[12])) / CLOCK_TICKS  # utime, stime
    status = Path(f"/proc/{pid}/status").read_text()
    peak_kb = int(re.search(r"VmHWM:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
    return cpu, peak_kb / 1024


def bulk_restored(log: bytes) -> tuple[int, float]:
    """(records, seconds) of the bulk restore's rounds in a worker's log."""
    rounds = [(int(records), float(seconds)) for records, seconds in BULK_RESTORE.findall(log)]
    return sum(records for records, _ in rounds), sum(seconds for _, seconds in rounds)


def recover(settings: Settings, app_id: str, store: str, log_path: Path,
            timeout: float, env: dict[str, str]) -> Recovery:
    """Start a worker on ``app_id`` and time it until Faust logs "Worker ready"."""
    log_path.unlink(missing_ok=True)
    started = time.time()
    worker = WorkerProcess(settings, app_id, log_path, store, env=env).start()
    assert worker.process is not None
    seen: dict[bytes, float] = {}
    figures: tuple[float, float] = (0.0, 0.0)

    def ready() -> bool:
        nonlocal seen, figures
        worker.check_running()
        seen = phase_times(log_path.read_bytes(), started)
        if READY.encode() in seen:
            figures = proc_figures(worker.process.pid)  # type: ignore[union-attr]
            return True
        return False

    try:
        wait_until(ready, timeout, interval=0.2, what=f"the worker ({store}) to be ready")
    finally:
        worker.stop()
    log = log_path.read_bytes()
    return Recovery(seen.get(RESTORING.encode()), seen.get(RECOVERED.encode()),
                    seen[READY.encode()], figures[0], figures[1],
                    records_to_recover(log, changelog_topic(app_id)), *bulk_restored(log))


def run_store(settings: Settings, app_id: str, store: str, log_path: Path,
              timeout: float) -> Recovery:
    """One start with ``store``: rocksdb:// without local files (with the bulk restore, or
    Faust's reading only), or restarted on them."""
    if store != "rocksdb:// restart":
        shutil.rmtree(settings.data_dir / "faust" / app_id, ignore_errors=True)
    env = {"BILLING_BULK_RESTORE": "0" if store.endswith("faust-only") else "1"}
    return recover(settings, app_id, store.split()[0], log_path, timeout, env)


def median_of(results: list[dict[str, Any]], key: str) -> float:
    return statistics.median(result[key] for result in results)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", type=Path, required=True,
                        help="JSON-lines workload whose replayed states are the records")
    parser.add_argument("--sizes", type=int, nargs="+", default=[0, 100_000, 1_000_000],
                        help="accounts in the changelog, one app id each")
    parser.add_argument("--stores", nargs="+", default=list(STORES), choices=STORES)
    parser.add_argument("--runs", type=int, default=3, help="rounds (medians)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per worker start")
    parser.add_argument("--json-out", type=Path, help="also write every run as JSON")
    args = parser.parse_args(argv)

    settings = load_settings()
    samples = sample_records(args.workload)
    print(f"{len(samples):,} sample states from {args.workload}; mean value "
          f"{statistics.fmean(len(value) for _, value in samples):,.0f} bytes; "
          f"{settings.partitions} partitions", flush=True)
    apps: dict[int, tuple[Settings, str]] = {}
    for size in args.sizes:
        private, app_id = private_pipeline(settings, f"recovery-{size}-{uuid.uuid4().hex[:6]}")
        create_changelog(private, changelog_topic(app_id))
        started = time.perf_counter()
        written = fill_changelog(private, changelog_topic(app_id),
                                 changelog_records(size, samples))
        print(f"N={size:,}: {app_id}, {written / 1e6:,.0f} MB of values written in "
              f"{time.perf_counter() - started:.0f} s", flush=True)
        apps[size] = private, app_id

    results: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="recovery-bench-") as scratch:
        for round_number in range(args.runs):
            for size, (private, app_id) in apps.items():
                raw = (asyncio.run(raw_read(private, changelog_topic(app_id), size)) if size
                       else {"wall": 0.0, "cpu": 0.0})
                results.setdefault(f"{size} raw", []).append(raw)
                print(f"round {round_number + 1}, N={size:,}: raw consumer {raw['wall']:.1f} s "
                      f"wall, {raw['cpu']:.1f} s CPU", flush=True)
                for store in args.stores:
                    recovery = run_store(private, app_id, store,
                                         Path(scratch) / "worker.log", args.timeout)
                    results.setdefault(f"{size} {store}", []).append(
                        {**asdict(recovery), "reading": recovery.reading})
                    print(f"    {store:22} ready {recovery.to_ready:6.1f} s (bulk "
                          f"{recovery.bulk_seconds:5.1f} s, {recovery.bulk_records:,} records; "
                          f"Faust reading {recovery.reading:6.1f} s) CPU {recovery.cpu:6.1f} s, "
                          f"peak RSS "
                          f"{recovery.peak_rss_mb:6,.0f} MB, {recovery.records:,} records read",
                          flush=True)

    print(f"\nmedians of {args.runs} rounds (seconds; ready = process start to 'Worker ready', "
          "bulk = the bulk restore, reading = Faust's changelog reading phase)")
    print(f"{'N':>9} {'store':22} {'ready':>7} {'bulk':>6} {'reading':>8} {'CPU':>7} "
          f"{'RSS MB':>7} "
          f"{'raw wall':>8} {'raw CPU':>7} {'reading/raw':>11} {'ready-empty':>11}")
    empty = {store: median_of(results[f"0 {store}"], "to_ready")
             for store in args.stores if f"0 {store}" in results}
    for size in apps:
        raw_wall = median_of(results[f"{size} raw"], "wall")
        raw_cpu = median_of(results[f"{size} raw"], "cpu")
        for store in args.stores:
            runs = results[f"{size} {store}"]
            ready, reading = median_of(runs, "to_ready"), median_of(runs, "reading")
            ratio = f"{reading / raw_wall:11.1f}" if size and raw_wall else f"{'-':>11}"
            net = f"{ready - empty[store]:11.1f}" if store in empty else f"{'-':>11}"
            print(f"{size:9,} {store:22} {ready:7.1f} {median_of(runs, 'bulk_seconds'):6.1f} "
                  f"{reading:8.1f} "
                  f"{median_of(runs, 'cpu'):7.1f} {median_of(runs, 'peak_rss_mb'):7,.0f} "
                  f"{raw_wall:8.1f} {raw_cpu:7.1f} {ratio} {net}")
    if args.json_out:
        args.json_out.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
