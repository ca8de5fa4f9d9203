"""The pipeline agrees with ``billing replay`` at scale: one generated file, both paths, compared.

Writes the workload as JSON lines, times ``billing replay`` over it (the CLI, as a user runs it),
publishes the same events to a private pipeline on the running broker, runs one worker until it
has drained, and compares final snapshots and output event ids. Prints the figures for
BENCHMARKS.md and exits non-zero on any difference.

    billing stack up --no-clickhouse
    python benchmarks/oracle_check.py --events 1000000 --accounts 20000
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import orjson

from billing.events import normalize_input, to_jsonable
from devkit.harness import WorkerProcess, private_pipeline
from devkit.workload import generate, write_jsonl
from runtime.observe import output_events, table_snapshots
from runtime.settings import load_settings
from tests.integration.pipeline import in_merge_order, publish


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--accounts", type=int, default=20_000)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "oracle")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    events = in_merge_order([normalize_input(event) for event in generate(
        accounts=args.accounts, events=args.events, seed=2026,
        start=datetime(2026, 1, 1, tzinfo=UTC))])
    source = args.workdir / "workload.jsonl"
    write_jsonl(source, (to_jsonable(event) for event in events), total=len(events))
    print(f"generated {len(events):,} events in {time.perf_counter() - started:.0f} s", flush=True)

    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "commands.cli", "replay", str(source), "--no-progress",
                    "--events-out", str(args.workdir / "replay-events.jsonl"),
                    "--snapshots-out", str(args.workdir / "replay-snapshots.json")], check=True)
    replay_seconds = time.perf_counter() - started
    print(f"billing replay: {replay_seconds:.1f} s, {len(events) / replay_seconds:,.0f} events/s",
          flush=True)

    settings, app_id = private_pipeline(load_settings(), f"oracle-{uuid.uuid4().hex[:8]}")
    started = time.perf_counter()
    publish(settings, events)
    print(f"published in {time.perf_counter() - started:.0f} s", flush=True)
    worker = WorkerProcess(settings, app_id, args.workdir / "worker.log").start()
    started = time.perf_counter()
    try:
        worker.wait_drained(timeout=4 * 3600)
    finally:
        worker.stop()
    pipeline_seconds = time.perf_counter() - started
    print(f"worker drained in {pipeline_seconds:.0f} s "
          f"({len(events) / pipeline_seconds:,.0f} events/s including start-up)", flush=True)

    expected_ids = {orjson.loads(line)["event_id"]
                    for line in (args.workdir / "replay-events.jsonl").open("rb")}
    got_ids = {event["event_id"] for event in output_events(settings)}
    expected = orjson.loads((args.workdir / "replay-snapshots.json").read_bytes())
    got = {key: orjson.loads(orjson.dumps(value, default=str))
           for key, value in table_snapshots(settings, app_id).items()}
    differing = sorted(key for key in expected.keys() | got.keys()
                       if expected.get(key) != got.get(key))
    print(f"output ids: replay {len(expected_ids):,}, pipeline {len(got_ids):,}, "
          f"missing {len(expected_ids - got_ids)}, unexpected {len(got_ids - expected_ids)}")
    print(f"snapshots: {len(expected):,} accounts, {len(differing)} differ"
          + (f" (e.g. {differing[0]})" if differing else ""))
    return 1 if differing or expected_ids != got_ids else 0


if __name__ == "__main__":
    sys.exit(main())
