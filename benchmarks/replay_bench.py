"""Replay throughput on one core: the ledger core and the whole ``billing replay`` command.

Why two numbers: the core (already-parsed canonical events through ``Replay.apply``) is what the
Faust worker pays per event whatever the transport, and the issue's target (>= 100,000 usage
events/s on one core) is about it; the command adds JSON parsing, validation and output, which is
what someone replaying a month of traffic waits for.

The machine is shared and noisy, so every figure is the median of ``--runs`` runs, pinned to one
CPU, next to a baseline measured in the same run on the same data (a loop touching each event for
the core; ``orjson.loads`` of each line for the command). Each run records wall-clock time and CPU
time (this process and its children): when other work shares the CPU, wall time counts the waiting
and CPU time does not, so rates are given from CPU time and the wall-clock medians beside them.

    python benchmarks/replay_bench.py                        # generate 200,000 events, 5 runs
    python benchmarks/replay_bench.py --workload var/w.jsonl --runs 7 --profile
    python benchmarks/replay_bench.py --workload var/w.jsonl --compare /tmp/before .
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pickle
import pstats
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from billing.events import InvalidEvent
from billing.ledger import Ledger
from billing.replay import DeadLetter, Replay, parse_line
from runtime.rules_files import load_config, load_pricebook


def pin_to_one_cpu() -> str:
    """Run on a single CPU (the last one allowed), so figures are per core; returns which."""
    if not hasattr(os, "sched_setaffinity"):
        return "not pinned (no sched_setaffinity)"
    cpu = max(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    return f"pinned to CPU {cpu}"


def cpu_seconds() -> float:
    """CPU time used so far by this process and its finished children."""
    own, children = (resource.getrusage(who) for who in (resource.RUSAGE_SELF,
                                                          resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@dataclass
class Timing:
    """Seconds of each timed run, wall clock and CPU."""

    wall: list[float]
    cpu: list[float]

    @property
    def median_cpu(self) -> float:
        return statistics.median(self.cpu)

    def summary(self) -> str:
        return f"CPU median {self.median_cpu:.3f} s (min {min(self.cpu):.3f}, max " \
               f"{max(self.cpu):.3f}); wall median {statistics.median(self.wall):.3f} s; " \
               f"{len(self.cpu)} runs"


def timed(runs: int, action: Callable[[], Any]) -> Timing:
    """Time ``runs`` calls (after one warm-up call that is not counted)."""
    action()
    timing = Timing([], [])
    for _ in range(runs):
        wall, cpu = time.perf_counter(), cpu_seconds()
        action()
        timing.cpu.append(cpu_seconds() - cpu)
        timing.wall.append(time.perf_counter() - wall)
    return timing


def load_events(path: Path) -> list[dict[str, Any]]:
    """The workload's valid lines as canonical events (the core benchmark's input)."""
    events = []
    with open(path, "rb") as source:
        for number, line in enumerate(source, start=1):
            parsed = parse_line(line, number)
            if not isinstance(parsed, DeadLetter):
                events.append(parsed)
    return events


def replay_core(events: list[dict[str, Any]]) -> Replay:
    """Every event through a fresh ``Replay``, outputs discarded: the rules and nothing else."""
    replay = Replay(Ledger(load_config(), load_pricebook()))
    apply = replay.apply
    for event in events:
        try:  # noqa: SIM105 (contextlib.suppress would add a context manager per event)
            apply(event)
        except InvalidEvent:
            pass
    return replay


def touch_each(events: list[dict[str, Any]]) -> None:
    """The core's in-run baseline: a loop that reads two fields of each event."""
    for event in events:
        if event["type"] == "usage" and not event["account_id"]:
            break


def loads_each(path: Path) -> None:
    """The command's in-run baseline: read the file and ``orjson.loads`` every line."""
    loads = orjson.loads
    with open(path, "rb") as source:
        for line in source:
            loads(line)


def replay_command(path: Path, workdir: Path,
                   env: dict[str, str] | None = None) -> Callable[[], None]:
    """``billing replay`` as a user runs it: a fresh process, outputs written to files.

    The click command is called directly rather than through ``commands.cli``, which would also
    import every other sub-command (the worker's Faust, the sink's ClickHouse driver): that start-up
    cost is not replay's, and an older checkout measured for comparison may lack those modules.
    """
    command = [sys.executable, "-c", "from billing.replay import replay_command as c; c()",
               str(path.resolve()),
               "--events-out", str(workdir / "events.jsonl"),
               "--snapshots-out", str(workdir / "snapshots.json"),
               "--dead-letters-out", str(workdir / "dead-letters.jsonl"), "--no-progress"]

    def run() -> None:
        # cwd: "python -c" puts the current directory first on sys.path, and a checkout's billing/
        # there would shadow the billing package being measured (e.g. one given by PYTHONPATH).
        subprocess.run(command, check=True, stderr=subprocess.DEVNULL, cwd=workdir, env=env)
    return run


def package_env(directory: str) -> dict[str, str] | None:
    """The environment that makes a child process import ``billing`` from ``directory`` ("." is
    this checkout, as installed)."""
    if directory == ".":
        return None
    return {**os.environ, "PYTHONPATH": str(Path(directory).resolve())}


def compare(directories: list[str], events: list[dict[str, Any]], path: Path, lines: int,
            runs: int, skip_command: bool, workdir: Path) -> dict[str, Any]:
    """The core (and the command) of several versions of the package, a process each, the
    versions interleaved round by round so that they share the machine's slow and fast minutes."""
    pickled = workdir / "events.pickle"
    pickled.write_bytes(pickle.dumps(events))
    core: dict[str, list[float]] = {directory: [] for directory in directories}
    command: dict[str, list[float]] = {directory: [] for directory in directories}
    for round_number in range(runs):
        for directory in directories if round_number % 2 == 0 else directories[::-1]:
            env = package_env(directory)
            child = subprocess.run([sys.executable, __file__, "--core-in-child", str(pickled)],
                                   env=env, check=True, capture_output=True, text=True)
            core[directory].append(float(child.stdout))
            if not skip_command:
                started = cpu_seconds()
                replay_command(path, workdir, env)()
                command[directory].append(cpu_seconds() - started)
    usage = sum(1 for event in events if event["type"] == "usage")
    first = statistics.median(core[directories[0]])
    print(f"{'package':40} {'core CPU':>9} {'usage/s':>9} {'vs 1st':>7}"
          + ("" if skip_command else f" {'command CPU':>12} {'lines/s':>8} {'vs 1st':>7}"))
    for directory in directories:
        median = statistics.median(core[directory])
        row = f"{directory[-40:]:40} {median:9.3f} {usage / median:9,.0f} {first / median:6.2f}x"
        if not skip_command:
            baseline = statistics.median(command[directories[0]])
            median_command = statistics.median(command[directory])
            row += f" {median_command:12.3f} {lines / median_command:8,.0f} " \
                   f"{baseline / median_command:6.2f}x"
        print(row)
    return {"core": core, "command": command}


def core_in_child(pickled: Path) -> None:
    """--compare's child: the best of two timed core runs, CPU seconds on stdout."""
    pin_to_one_cpu()
    events = pickle.loads(pickled.read_bytes())
    print(min(timed(2, lambda: replay_core(events)).cpu))


def busy_account(days: int = 14, every_seconds: int = 4) -> list[dict[str, Any]]:
    """One enterprise account sending usage every ``every_seconds`` for ``days``: past day 7 each
    event pushes the oldest id out of its dedup window, ~150,000 ids with the default horizon."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    events: list[dict[str, Any]] = [{
        "type": "account_opened", "event_id": "open", "account_id": "busy", "timestamp": start,
        "created_at": start, "contract": "enterprise", "billing_model": "postpaid"}]
    for number in range(days * 86_400 // every_seconds):
        events.append({
            "type": "usage", "event_id": f"u{number}", "account_id": "busy",
            "timestamp": start + timedelta(seconds=every_seconds * number + 1),
            "product": "llama-v3p1-8b", "quantities": {"input_tokens": 1_000, "output_tokens": 200},
            "requests": 1})
    return events


def busy_weeks(events: list[dict[str, Any]]) -> tuple[float, float]:
    """CPU seconds of ``Replay.apply`` over the first and the second half of ``events``."""
    replay = Replay(Ledger(load_config(), load_pricebook()))
    half = len(events) // 2
    seconds = []
    for part in (events[:half], events[half:]):
        started = cpu_seconds()
        for event in part:
            replay.apply(event)
        seconds.append(cpu_seconds() - started)
    return seconds[0], seconds[1]


def profile_core(events: list[dict[str, Any]], limit: int) -> str:
    profiler = cProfile.Profile()
    profiler.runcall(replay_core, events)
    report = io.StringIO()
    pstats.Stats(profiler, stream=report).sort_stats("tottime").print_stats(limit)
    return report.getvalue()


def add_workload_arguments(parser: argparse.ArgumentParser) -> None:
    """The options naming the workload a benchmark runs on (a file, or one to generate)."""
    parser.add_argument("--workload", type=Path, help="JSON-lines input (default: generate one)")
    parser.add_argument("--events", type=int, default=200_000, help="events to generate")
    parser.add_argument("--accounts", type=int, default=2_000, help="accounts to generate")
    parser.add_argument("--seed", type=int, default=7)


def workload_path(args: argparse.Namespace, workdir: Path) -> Path:
    """``--workload``, or a workload generated into ``workdir`` from the other options."""
    if args.workload is not None:
        return args.workload
    from devkit.workload import generate, write_jsonl
    path = workdir / "workload.jsonl"
    write_jsonl(path, generate(args.accounts, args.events, args.seed))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_workload_arguments(parser)
    parser.add_argument("--runs", type=int, default=5, help="timed runs per figure (median)")
    parser.add_argument("--skip-command", action="store_true", help="only the core figures")
    parser.add_argument("--busy-account", action="store_true",
                        help="also one account with a full dedup window (2 weeks, every 4 s)")
    parser.add_argument("--profile", action="store_true", help="cProfile the core once, after")
    parser.add_argument("--json-out", type=Path, help="also write the figures as JSON")
    parser.add_argument("--compare", nargs="+", metavar="DIR",
                        help="instead: compare the billing package in each DIR (first on "
                             "PYTHONPATH; '.' for this checkout), interleaved, --runs rounds")
    parser.add_argument("--core-in-child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.core_in_child:
        core_in_child(args.core_in_child)
        return 0

    pinned = pin_to_one_cpu()
    with tempfile.TemporaryDirectory(prefix="replay-bench-") as scratch:
        workdir = Path(scratch)
        path = workload_path(args, workdir)
        events = load_events(path)
        with open(path, "rb") as source:
            lines = sum(1 for _ in source)
        usage = sum(1 for event in events if event["type"] == "usage")
        print(f"workload {path}: {lines} lines, {len(events)} valid ({usage} usage); {pinned}; "
              f"Python {sys.version.split()[0]}")
        if args.compare:
            compared = compare(args.compare, events, path, lines, args.runs, args.skip_command,
                               workdir)
            if args.json_out:
                args.json_out.write_bytes(orjson.dumps(compared, option=orjson.OPT_INDENT_2))
            return 0

        core = timed(args.runs, lambda: replay_core(events))
        touch = timed(args.runs, lambda: touch_each(events))
        figures: dict[str, Any] = {
            "lines": lines, "valid_events": len(events), "usage_events": usage, "pinned": pinned,
            "core": asdict(core), "core_usage_per_s": usage / core.median_cpu,
            "core_events_per_s": len(events) / core.median_cpu,
            "touch": asdict(touch), "core_vs_touch": core.median_cpu / touch.median_cpu,
        }
        print(f"core: Replay.apply over parsed events: {core.summary()}")
        print(f"      {usage / core.median_cpu:,.0f} usage events/s, "
              f"{len(events) / core.median_cpu:,.0f} events/s (CPU time)")
        print(f"      baseline, a loop touching each event: {touch.summary()}")
        print(f"      core / baseline = {figures['core_vs_touch']:,.0f}")
        if not args.skip_command:
            command = timed(args.runs, replay_command(path, workdir))
            loads = timed(args.runs, lambda: loads_each(path))
            figures.update({
                "command": asdict(command), "command_lines_per_s": lines / command.median_cpu,
                "loads": asdict(loads), "command_vs_loads": command.median_cpu / loads.median_cpu,
            })
            print(f"billing replay FILE (a process, outputs to files): {command.summary()}")
            print(f"      {lines / command.median_cpu:,.0f} lines/s (CPU time)")
            print(f"      baseline, orjson.loads of each line: {loads.summary()}")
            print(f"      command / baseline = {figures['command_vs_loads']:,.1f}")
        if args.busy_account:
            stream = busy_account()
            weeks = [busy_weeks(stream) for _ in range(args.runs)]
            first = statistics.median(week for week, _ in weeks)
            second = statistics.median(week for _, week in weeks)
            half = len(stream) // 2
            figures.update({"busy_first_week_per_s": half / first,
                            "busy_second_week_per_s": (len(stream) - half) / second})
            print(f"busy account ({len(stream)} events, {args.runs} runs, CPU medians): first week "
                  f"{half / first:,.0f} events/s, second week (dedup window full) "
                  f"{(len(stream) - half) / second:,.0f} events/s")
        if args.json_out:
            args.json_out.write_bytes(orjson.dumps(figures, option=orjson.OPT_INDENT_2))
        if args.profile:
            print(profile_core(events, 30))
    return 0


if __name__ == "__main__":
    sys.exit(main())
