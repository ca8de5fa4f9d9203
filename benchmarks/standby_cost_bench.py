"""What a standby replica costs while the workers bill: two workers drain the same workload with
``--standby-replicas`` 0 and 1.

Each keeps a copy of the other's table partitions by reading the changelog the other writes as it
bills (about two records per input event when keeping up: the account's record and its seen-ids
chunk, ``BENCHMARKS.md``), applying each record to its own RocksDB as recovery does. Per round and
value, a fresh private pipeline gets the same generated workload (seed 7); two ``billing worker``
processes (``rocksdb://``, a data directory each, through ``standby_worker.py``) start together and
drain it. Reported: wall seconds from the start to the group's lag reaching 0 (start-up
included, the same for both values); then, once both workers are idle (as in
``standby_bench.py``: the copies caught up), the CPU seconds of both workers together, per 1,000
events. Medians of ``--runs``; the ratio 1 / 0 per round is the figure that survives the shared
machine's noise.

    billing stack up --no-clickhouse
    python benchmarks/standby_cost_bench.py --events 40000 --accounts 800 --runs 3
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

from pipeline_bench import workload
from recovery_bench import proc_figures
from standby_bench import start_pair, wait_settled

from devkit.harness import private_pipeline
from runtime.observe import wait_until
from runtime.settings import Settings, load_settings
from tests.integration.pipeline import publish


def drain(settings: Settings, events: list[dict[str, Any]], replicas: int, scratch: Path,
          args: argparse.Namespace) -> dict[str, float]:
    """Two workers with ``replicas`` standbys drain ``events`` on a pipeline of their own."""
    private, app_id = private_pipeline(settings, f"standby-cost-{uuid.uuid4().hex[:6]}")
    publish(private, events)
    started = time.time()
    workers = start_pair(private, app_id, replicas, scratch)
    try:
        wait_until(lambda: workers[0].lag_reached(0) and all(
            worker.check_running() is None for worker in workers), args.timeout, interval=0.5,
            what="the workers to drain the inputs")
        drained = time.time() - started
        wait_settled(workers, args.idle_cpu, 2, args.timeout)
        cpu = sum(proc_figures(worker.process.pid)[0]  # type: ignore[union-attr]
                  for worker in workers)
    finally:
        for worker in workers:
            worker.stop()
    return {"replicas": replicas, "drained": drained, "cpu": cpu,
            "cpu_per_1000": cpu * 1000 / len(events)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=40_000)
    parser.add_argument("--accounts", type=int, default=800)
    parser.add_argument("--runs", type=int, default=3, help="rounds (medians)")
    parser.add_argument("--idle-cpu", type=float, default=0.15,
                        help="share of a core under which a worker counts as idle")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per wait")
    args = parser.parse_args(argv)

    settings = load_settings()
    events = workload(args.accounts, args.events)
    runs: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="standby-cost-") as scratch:
        for round_number in range(args.runs):
            for replicas in ((0, 1) if round_number % 2 == 0 else (1, 0)):
                run = drain(settings, events, replicas, Path(scratch), args)
                runs.append(run)
                print(f"round {round_number + 1}, standby replicas {replicas}: drained in "
                      f"{run['drained']:.1f} s; CPU of both workers {run['cpu']:.1f} s "
                      f"({run['cpu_per_1000']:.2f} s per 1,000 events)", flush=True)
    by = {replicas: [run for run in runs if run["replicas"] == replicas] for replicas in (0, 1)}
    print(f"\nmedians of {args.runs} rounds, {args.events:,} events, {args.accounts:,} accounts")
    for replicas, mine in by.items():
        print(f"standby replicas {replicas}: drained in "
              f"{statistics.median(run['drained'] for run in mine):.1f} s, CPU "
              f"{statistics.median(run['cpu'] for run in mine):.1f} s")
    ratios = [one["cpu"] / zero["cpu"] for zero, one in zip(by[0], by[1], strict=True)]
    walls = [one["drained"] / zero["drained"] for zero, one in zip(by[0], by[1], strict=True)]
    print(f"ratio 1/0 per round: CPU {', '.join(f'{r:.2f}' for r in ratios)} (median "
          f"{statistics.median(ratios):.2f}); drain wall {', '.join(f'{r:.2f}' for r in walls)} "
          f"(median {statistics.median(walls):.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
