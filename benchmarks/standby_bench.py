"""Failover between two workers, with and without a standby replica of the accounts table.

One app id gets an accounts changelog of N records, written as ``recovery_bench.py`` writes it.
Then, round by round, for each ``--standby-replicas`` value (``--replicas``, default 0 and 1):
two ``billing worker`` processes, A and B, start together on that app id (``rocksdb://``, each
with its own data directory, none left from before; run through the wrapper
``standby_worker.py``, which lets every log line through and, with ``--unguarded``, leaves out the
worker's fix of Faust's standby seek, to show the crash it prevents). Once both logged "Worker
ready" and neither used more than ``--idle-cpu`` of a core in ``--idle-windows`` windows of 3 s in
a row (a standby reads its copies after "Worker ready"), A is stopped with SIGTERM: it leaves the
group at once (a crash would add the session timeout, 10 s here, before the rebalance).
**Takeover** = from that signal to B's next "Worker ready", when B consumes A's input partitions;
the changelog records B read to get there come from the high-water tables of its log since the
signal.

Without a standby B rebuilds A's table partitions from the changelog (about N/2 records: what a
new worker pays, for half the partitions); with one it has kept them up to date and reads only
what it had not read yet. Also reported: the set-up (start to both ready and idle) and each
worker's CPU seconds and peak RSS then, the price of keeping a copy. Medians of ``--runs``; a run
in which a worker exited or a wait timed out is reported as failed (with the last line of Faust's
crash, if any) and left out of them.

    billing stack up --no-clickhouse
    python benchmarks/standby_bench.py --workload var/bench-200k.jsonl --accounts 100000 --runs 3
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
from recovery_bench import (
    READY,
    changelog_records,
    median_of,
    phase_times,
    proc_figures,
    sample_records,
)

from devkit.harness import (
    WorkerExited,
    WorkerProcess,
    create_changelog,
    fill_changelog,
    private_pipeline,
    records_to_recover,
)
from runtime.observe import changelog_topic, wait_until
from runtime.settings import Settings, load_settings

IDLE_WINDOW = 3.0


def start_pair(settings: Settings, app_id: str, replicas: int, scratch: Path,
               unguarded: bool = False) -> list[WorkerProcess]:
    """Workers A and B on ``app_id`` with ``replicas`` standbys, fresh data directories."""
    workers = []
    for name in ("a", "b"):
        data_dir = scratch / name
        shutil.rmtree(data_dir, ignore_errors=True)
        data_dir.mkdir()
        env = {"BILLING_DATA_DIR": str(data_dir), "BILLING_STANDBY_REPLICAS": str(replicas),
               "BENCH_UNGUARDED_SEEK": "1" if unguarded else "0",
               "PYTHONPATH": str(Path(__file__).resolve().parent)}
        log_path = scratch / f"{name}.log"
        log_path.unlink(missing_ok=True)
        workers.append(WorkerProcess(settings, app_id, log_path, "rocksdb://",
                                     module="standby_worker", env=env).start())
    return workers


def crashes(scratch: Path) -> list[str]:
    """The "Crashed reason=" lines of Faust's services in the two workers' logs, named."""
    return [f"{log.stem.upper()}: {line.strip()}" for log in sorted(scratch.glob("?.log"))
            for line in log.read_text(errors="replace").splitlines()
            if "Crashed reason=" in line]


def wait_settled(workers: list[WorkerProcess], idle_cpu: float, windows: int,
                 timeout: float) -> None:
    """Until every worker has logged "Worker ready", then used at most ``idle_cpu`` of a core in
    each of ``windows`` windows of :data:`IDLE_WINDOW` seconds in a row."""
    pids = [worker.process.pid for worker in workers]  # type: ignore[union-attr]
    last = [proc_figures(pid)[0] for pid in pids]
    idle_windows = 0

    def settled() -> bool:
        nonlocal idle_windows
        for worker in workers:
            worker.check_running()
        cpu = [proc_figures(pid)[0] for pid in pids]
        idle = all(now - before <= idle_cpu * IDLE_WINDOW
                   for now, before in zip(cpu, last, strict=True))
        last[:] = cpu
        ready = all(READY.encode() in phase_times(worker.log_path.read_bytes(), 0)
                    for worker in workers)
        idle_windows = idle_windows + 1 if ready and idle else 0
        return idle_windows >= windows

    wait_until(settled, timeout, interval=IDLE_WINDOW, what="both workers ready and idle")


def failover(settings: Settings, app_id: str, replicas: int, scratch: Path,
             args: argparse.Namespace) -> dict[str, Any]:
    """Start A and B, let them settle, stop A, time B until it is ready again."""
    started = time.time()
    workers = start_pair(settings, app_id, replicas, scratch, args.unguarded)
    a, b = workers
    try:
        wait_settled(workers, args.idle_cpu, args.idle_windows, args.timeout)
        settled = time.time() - started
        resources = [proc_figures(worker.process.pid)  # type: ignore[union-attr]
                     for worker in workers]
        offset = b.log_path.stat().st_size
        stopped = time.time()
        a.stop()
        a_exit = time.time() - stopped
        takeover: dict[bytes, float] = {}

        def b_ready() -> bool:
            nonlocal takeover
            b.check_running()
            takeover = phase_times(b.log_path.read_bytes()[offset:], stopped)
            return READY.encode() in takeover

        wait_until(b_ready, args.timeout, interval=0.2, what="B to take over")
        tail = b.log_path.read_bytes()[offset:]
    finally:
        for worker in workers:
            worker.stop()
            if args.keep_logs is not None:
                args.keep_logs.mkdir(parents=True, exist_ok=True)
                shutil.copy(worker.log_path, args.keep_logs /
                            f"{app_id}-{replicas}-{int(started)}-{worker.log_path.name}")
    (cpu_a, rss_a), (cpu_b, rss_b) = resources
    return {"replicas": replicas, "settled": settled, "cpu_a": cpu_a, "cpu_b": cpu_b,
            "peak_rss_mb_a": rss_a, "peak_rss_mb_b": rss_b, "a_exit": a_exit,
            "takeover": takeover[READY.encode()],
            "takeover_records": records_to_recover(tail, changelog_topic(app_id))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", type=Path, required=True,
                        help="JSON-lines workload whose replayed states are the records")
    parser.add_argument("--accounts", type=int, default=100_000, help="records in the changelog")
    parser.add_argument("--replicas", type=int, nargs="+", default=[0, 1],
                        help="--standby-replicas values, one failover each per round")
    parser.add_argument("--runs", type=int, default=3, help="rounds (medians)")
    parser.add_argument("--idle-cpu", type=float, default=0.15,
                        help="share of a core under which a worker counts as idle")
    parser.add_argument("--idle-windows", type=int, default=3,
                        help=f"windows of {IDLE_WINDOW:.0f} s in a row both workers must be idle "
                             "in (after both are ready) before A is stopped")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per wait")
    parser.add_argument("--unguarded", action="store_true",
                        help="run Faust's own standby seek, without the worker's fix "
                             "(streams/quirks/faust_internals.py: guard_recovery_seeks)")
    parser.add_argument("--json-out", type=Path, help="also write every run as JSON")
    parser.add_argument("--keep-logs", type=Path, metavar="DIR",
                        help="copy both workers' logs of every run into DIR")
    args = parser.parse_args(argv)

    settings = load_settings()
    private, app_id = private_pipeline(settings, f"standby-{args.accounts}-{uuid.uuid4().hex[:6]}")
    create_changelog(private, changelog_topic(app_id))
    started = time.perf_counter()
    written = fill_changelog(private, changelog_topic(app_id),
                             changelog_records(args.accounts, sample_records(args.workload)))
    print(f"N={args.accounts:,}: {app_id}, {written / 1e6:,.0f} MB of values written in "
          f"{time.perf_counter() - started:.0f} s; {settings.partitions} partitions", flush=True)

    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="standby-bench-") as scratch:
        for round_number in range(args.runs):
            for replicas in args.replicas:
                name = f"round {round_number + 1}, standby replicas {replicas}"
                try:
                    run = failover(private, app_id, replicas, Path(scratch), args)
                except (WorkerExited, TimeoutError) as error:  # counted, left out of the medians
                    runs.append({"replicas": replicas, "failed": str(error)})
                    print(f"{name}: FAILED: {str(error).splitlines()[0]}"
                          + "".join(f"\n    {line}" for line in crashes(Path(scratch))),
                          flush=True)
                    continue
                runs.append(run)
                print(f"{name}: set-up "
                      f"{run['settled']:.1f} s (CPU A/B {run['cpu_a']:.1f}/{run['cpu_b']:.1f} s, "
                      f"peak RSS A/B {run['peak_rss_mb_a']:,.0f}/{run['peak_rss_mb_b']:,.0f} MB); "
                      f"A exited in "
                      f"{run['a_exit']:.1f} s; B took over in {run['takeover']:.1f} s, "
                      f"{run['takeover_records']:,} changelog records read", flush=True)

    if args.json_out:  # every run, before the summary
        args.json_out.write_bytes(orjson.dumps(runs, option=orjson.OPT_INDENT_2))
    print(f"\nmedians of {args.runs} rounds, N={args.accounts:,} (seconds)")
    print(f"{'replicas':>8} {'set-up':>7} {'CPU B':>6} {'RSS B MB':>8} {'takeover':>8} "
          f"{'records read':>12}")
    for replicas in args.replicas:
        mine = [run for run in runs if run["replicas"] == replicas and "failed" not in run]
        if not mine:
            print(f"{replicas:8} every run failed")
            continue
        print(f"{replicas:8} {median_of(mine, 'settled'):7.1f} {median_of(mine, 'cpu_b'):6.1f} "
              f"{median_of(mine, 'peak_rss_mb_b'):8,.0f} {median_of(mine, 'takeover'):8.1f} "
              f"{median_of(mine, 'takeover_records'):12,.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
