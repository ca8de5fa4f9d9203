"""Pipeline throughput per worker on the real broker, against a raw consumer of the same topics
and a bare Faust agent that only counts them.

For each run and each version of the worker (each ``--tree``: a checkout, e.g. ``git archive 9ed84c7
| tar -x -C /tmp/old-tree``, or ``.`` for this one as installed, the default), a fresh private
pipeline (own topics) is filled with the same generated workload; then (1) a raw aiokafka consumer
reads all four input topics to the end, (2) a bare Faust counting agent
(``benchmarks/faust_count.py``, this checkout's Faust) counts them, from its first event to the
last, and (3) one ``billing worker`` of that version processes them. The versions are interleaved,
in alternating order, so that they share the machine's slow and fast minutes. The worker's rate is
measured, like the counting agent's, from its first event to its last: from the timestamps of the
first and last records it produced (outputs, rated usage, account-status records), over every
input event it is done with (its metrics endpoint's counters: applied, copies, dead letters), so
process start-up and group join are excluded (they are printed apart). Its CPU time over the same
span comes from ``/proc`` (read every 50 ms, interpolated at the two timestamps), and so does the
time it waited for a CPU. (Until issue 16 it was timed by its group's committed offsets, polled
every second: Faust commits every 2.8 s, so each drain carried up to ~4 s of idle tail. From then
until session 9 the counters were read every 50 ms, and those scrapes took ~11 % of the worker's
CPU samples, prometheus_client rendering every metric 20 times a second: the endpoint is now read
once a second, to tell the worker is done.) Medians of ``--runs`` runs; the
ratios between versions, worker/raw and worker/Faust (each the median of the per-run ratios) are
the figures that survive a noisy shared machine; the first version is the baseline of the ratios.

``--profile FILE`` samples the worker of ``.`` (else of the last version) with py-spy (installed in
the virtualenv) during its first drain, writes the raw (collapsed) stacks to FILE and prints the
functions with the largest shares of the samples, inclusive and self.

    billing stack up --no-clickhouse
    python -m benchmarks.pipeline_bench --events 30000 --accounts 600 --runs 3 \\
        --tree /tmp/old-tree --tree . --profile /tmp/worker.raw --json-out pipeline.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer

from billing.events import normalize_input
from devkit.harness import WorkerProcess, private_pipeline
from devkit.workload import generate
from runtime.settings import Settings, load_settings
from runtime.topic_reader import read_topic
from tests.integration.pipeline import in_merge_order, publish

CURRENT = "."  # this checkout, as installed
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PY_SPY = Path(sys.executable).with_name("py-spy")
SAMPLE_EVERY = 0.05  # seconds between reads of the worker's CPU time in /proc
METRICS_EVERY = 1.0  # seconds between reads of its metrics endpoint (each costs the worker CPU)
PROCESSED_COUNTERS = ("billing_worker_events_total", "billing_worker_duplicates_total",
                      "billing_worker_dead_letters_total")


@contextlib.contextmanager
def code_from(tree: str) -> Iterator[None]:
    """Child processes started inside import ``billing`` and ``streams`` from ``tree``.

    ``python -m`` puts the current directory first on ``sys.path``, ahead of ``PYTHONPATH``, and
    the current directory is this checkout: ``PYTHONSAFEPATH`` stops that, so ``tree`` wins over
    both the checkout and the editable install. The variables are set for the ``with`` block
    only (``WorkerProcess`` copies ``os.environ`` when it starts the child)."""
    if tree == CURRENT:
        yield
        return
    saved = {name: os.environ.get(name) for name in ("PYTHONPATH", "PYTHONSAFEPATH")}
    os.environ.update(PYTHONPATH=str(Path(tree).resolve()), PYTHONSAFEPATH="1")
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def worker_module_file(tree: str) -> str:
    """Where a child started with :func:`code_from` ``(tree)`` finds ``streams.worker``."""
    with code_from(tree):
        return subprocess.run(
            [sys.executable, "-c", "import streams.worker as w; print(w.__file__)"],
            check=True, capture_output=True, text=True).stdout.strip()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a running process (all its threads)."""
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(stat[11]) + int(stat[12])) / CLOCK_TICKS


def scheduler_seconds(pid: int) -> tuple[float, float]:
    """(seconds on a CPU, seconds runnable but waiting for a CPU) of a running process, summed
    over its threads (``/proc/PID/task/*/schedstat``): the second says how much a slow worker
    was starved by the shared machine rather than slow by itself."""
    on_cpu = waiting = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):  # a thread that ended
            ran, waited, _ = (task / "schedstat").read_text().split()
            on_cpu, waiting = on_cpu + int(ran), waiting + int(waited)
    return on_cpu / 1e9, waiting / 1e9


def cpu_and_waited(pids: list[int]) -> tuple[float, float]:
    """CPU seconds of the processes ``pids`` together, and the seconds they waited for a CPU."""
    return (sum(cpu_seconds(pid) for pid in pids),
            sum(scheduler_seconds(pid)[1] for pid in pids))


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


def faust_count_rate(settings: Settings, total: int) -> float:
    """Events/s of a bare Faust agent counting the ``total`` input events (first to last)."""
    finished = subprocess.run(
        [sys.executable, "-m", "benchmarks.faust_count", f"count-{uuid.uuid4().hex[:8]}",
         str(total)], env={**os.environ, **settings.to_env()}, capture_output=True, text=True,
        timeout=600, check=True)
    # Faust's worker may write more to stdout: the figure is the line that starts with "{".
    counted = orjson.loads(re.findall(r"^\{.*$", finished.stdout, re.MULTILINE)[-1])
    return counted["events"] / counted["seconds"]


def start_profile(pid: int, output: Path, seconds: float) -> subprocess.Popen[bytes]:
    """py-spy sampling ``pid`` for ``seconds`` (without pausing it), raw collapsed stacks.

    Only the thread holding the GIL is sampled (``--gil``): otherwise a thread descheduled in a
    socket write (the broker taking the CPU) counts as the worker's time."""
    return subprocess.Popen([str(PY_SPY), "record", "--pid", str(pid), "--duration",
                             str(max(1, round(seconds))), "--format", "raw", "--nonblocking",
                             "--nolineno", "--gil", "--output", str(output)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# Where a sample's time goes: the category of the frame nearest its leaf that matches one of these
# markers (substrings of py-spy's "function (file)"), the first category winning within a frame;
# no match (the event loop itself, under the process's entry point): the last category.
COST_CATEGORIES = (
    ("ledger rules", ("(billing/ledger.py)", "(billing/pricebook.py)", "(billing/config.py)")),
    ("Avro encode of outputs", ("encode (schemas/codec.py)", "(schemas/avro_writer.py)")),
    ("Avro decode and checks of inputs", ("decode_input (schemas/codec.py)",
                                          "decode_inputs (schemas/codec.py)",
                                          "(billing/events.py)", "(billing/event_shapes.py)")),
    ("account state load/dump and snapshots (JSON)", ("(billing/account_record.py)",
                                                      "(billing/snapshots.py)",
                                                      "(billing/account_status.py)")),
    ("seen ids (table, buckets)", ("(streams/seen_table.py)", "(billing/seen_ids.py)")),
    ("Faust's send path (Topic.send, FutureMessage)", ("(faust/topics.py)",
                                                        "(faust/channels.py)")),
    ("Faust's send-soon buffer (changelog records)", ("(faust/transport/producer.py)",
                                                      "send_changelog")),
    ("the worker's own code (merge, batches, publishing, commit queue, metrics)", (
        "(streams/", "(billing/merge.py)", "(billing/watermark.py)",
        "(prometheus_client/")),
    ("aiokafka producer and connections (requests, socket writes)", (
        "(aiokafka/producer/", "(aiokafka/conn.py)", "(aiokafka/client.py)",
        "(aiokafka/protocol/")),
    ("Faust/aiokafka consumer and framework (fetch, conductor, stream, timers)", (
        "(faust/", "(mode/services.py)", "(mode/threads.py)", "(mode/utils/", "(aiokafka/")),
    ("event loop and the rest", ()),
)


def cost_category(frames: list[str]) -> str:
    """The :data:`COST_CATEGORIES` label of one sample's stack (root first)."""
    for frame in reversed(frames):
        for label, markers in COST_CATEGORIES:
            if any(marker in frame for marker in markers):
                return label
    return COST_CATEGORIES[-1][0]


def profile_shares(raw: Path, top: int = 30) -> dict[str, Any]:
    """Shares of py-spy's raw samples: by :data:`COST_CATEGORIES`, and the functions with the
    largest inclusive and self shares.

    Each line is ``frame;frame;...;leaf count``, a frame ``function (file)``; a function counts
    once per sample however often it recurs in the stack."""
    inclusive: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    categories: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count, frames = int(count_text), stack.split(";")
        total += count
        inclusive.update(dict.fromkeys(frames, count))
        leaf[frames[-1]] += count
        categories[cost_category(frames)] += count
    return {"samples": total} | {
        kind: [(frame, count / max(total, 1)) for frame, count in counter.most_common(top)]
        for kind, counter in (("categories", categories), ("inclusive", inclusive),
                              ("self", leaf))}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def processed(port: int) -> int | None:
    """Input events the worker is done with (applied, recognised as copies, dead-lettered), from
    its metrics endpoint; None while it does not answer yet."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as response:
            text = response.read().decode()
    except OSError:
        return None
    return round(sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                     if line.startswith(PROCESSED_COUNTERS)))


def worker_rate(settings: Settings, app_id: str, total: int, log: Path, tree: str,
                profile: Path | None, profile_seconds: float, poll: float,
                workers: int = 1) -> dict[str, float]:
    """``workers`` workers of version ``tree`` (one consumer group) over the filled pipeline:
    events/s from the first record they produced to the last, their CPU seconds over that span
    (``/proc``, sampled every :data:`SAMPLE_EVERY` s), and the seconds of start-up before it.
    They are done when the group has no lag and the count of events they are done with (their
    metrics, summed, read every :data:`METRICS_EVERY` s) stood still since the previous lag
    check. ``profile`` samples the first worker."""
    ports = [free_port() for _ in range(workers)]
    with code_from(tree):
        started = [WorkerProcess(settings, app_id, log.with_suffix(f".{number}.log"),
                                 env={"BILLING_WORKER_METRICS_PORT": str(port)}).start()
                   for number, port in enumerate(ports)]
    pids = [worker.process.pid for worker in started if worker.process is not None]
    launched = time.time()
    profiler = None
    samples: list[tuple[float, float, float]] = []  # (wall time, CPU s, waited s)
    count = 0
    try:
        counted_at_check, next_check, next_count = -1, 0.0, 0.0
        while True:
            for worker in started:
                worker.check_running()
            now = time.time()
            samples.append((now, *cpu_and_waited(pids)))
            if now >= next_count:
                count, next_count = sum(processed(port) or 0 for port in ports), now + METRICS_EVERY
                if count and profile is not None and profiler is None:
                    profiler = start_profile(pids[0], profile, profile_seconds)
                if count and now >= next_check:
                    if count == counted_at_check and started[0].lag() == 0:
                        break
                    counted_at_check, next_check = count, now + poll
            if now - launched > 1800:
                raise TimeoutError(f"no drain in 30 min: {started[0].log_tail()}")
            time.sleep(SAMPLE_EVERY)
    finally:
        if profiler is not None:
            profiler.wait(120)
        for worker in started:
            worker.stop()
    first, last = produced_span(settings)
    span = last - first
    cpu, waited = (at(samples, last, column) - at(samples, first, column) for column in (1, 2))
    return {"events_per_s": count / span, "events_per_cpu_s": count / max(cpu, 1e-9),
            "cpu_share": cpu / span, "cpu_wait_share": waited / span,
            "startup_s": first - launched, "events_timed": count}


def at(samples: list[tuple[float, float, float]], when: float, column: int) -> float:
    """``column`` of ``samples`` (in time order) at wall time ``when``, interpolated."""
    before = max((sample for sample in samples if sample[0] <= when), default=samples[0])
    after = min((sample for sample in samples if sample[0] >= when), default=samples[-1])
    if after[0] == before[0]:
        return before[column]
    share = (when - before[0]) / (after[0] - before[0])
    return before[column] + share * (after[column] - before[column])


def produced_span(settings: Settings) -> tuple[float, float]:
    """Wall times (s) of the first and last records on the worker's output topics."""
    topics = settings.topics
    stamps = [record.timestamp
              for topic in (topics.account_state, topics.usage_rated, topics.account_status)
              for record in read_topic(settings, topic)]
    return min(stamps) / 1000, max(stamps) / 1000


def print_profile(shares: dict[str, Any]) -> None:
    print(f"py-spy samples of the worker: {shares['samples']:,}")
    for kind in ("categories", "inclusive", "self"):
        print(f"  {kind}:" if kind == "categories" else f"  top {kind}:")
        for frame, share in shares[kind]:
            print(f"    {share:6.1%}  {frame}")


def workload(accounts: int, events: int) -> list[dict[str, Any]]:
    """The generated workload (seed 7, from January 2026) in the worker's merge order."""
    return in_merge_order([normalize_input(event) for event in generate(
        accounts=accounts, events=events, seed=7, start=datetime(2026, 1, 1, tzinfo=UTC))])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--accounts", type=int, default=1_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tree", action="append", default=[], metavar="PATH",
                        help="measure the worker of this checkout (repeatable; '.' is this one, "
                             "the default; the first is the baseline)")
    parser.add_argument("--poll", type=float, default=1.0,
                        help="seconds between lag checks, to tell the worker is done (each opens "
                             "two Kafka clients)")
    parser.add_argument("--profile", type=Path, metavar="FILE",
                        help="py-spy raw stacks of the worker of '.' (else the last --tree), "
                             "first run")
    parser.add_argument("--profile-seconds", type=float, default=20.0,
                        help="how long to sample, from the first event (keep it under the drain)")
    parser.add_argument("--workers", type=int, action="append", default=[], metavar="N",
                        help="measure N workers of each version, one consumer group (their "
                             "figures summed; 'of a core' is then cores); repeatable, e.g. "
                             "--workers 1 --workers 2 (default 1)")
    parser.add_argument("--json-out", type=Path, help="also write every run as JSON")
    args = parser.parse_args(argv)
    trees, counts = args.tree or [CURRENT], args.workers or [1]
    profiled = CURRENT if CURRENT in trees else trees[-1]
    for tree in trees:
        print(f"version {tree}: worker from {worker_module_file(tree)}", flush=True)
    # A version: a tree and a number of workers, named by the tree alone for one worker.
    versions = {(tree if counts == [1] else f"{tree} x{workers}"): (tree, workers)
                for tree in trees for workers in counts}
    events = workload(args.accounts, args.events)
    results: dict[str, list[dict[str, float]]] = {version: [] for version in versions}
    for run in range(args.runs):
        order = list(versions) if run % 2 == 0 else list(versions)[::-1]
        for version in order:
            tree, workers = versions[version]
            settings, app_id = private_pipeline(load_settings(), f"bench-{uuid.uuid4().hex[:8]}")
            publish(settings, events)
            raw = len(events) / asyncio.run(raw_consume(settings, len(events)))
            counting = faust_count_rate(settings, len(events))
            profile = args.profile if tree == profiled and run == 0 and workers == counts[0] \
                else None
            result = worker_rate(settings, app_id, len(events),
                                 Path(tempfile.gettempdir()) / f"pipeline-bench-{app_id}.log",
                                 tree, profile, args.profile_seconds, args.poll, workers)
            result["raw_msg_per_s"] = raw
            result["faust_count_per_s"] = counting
            results[version].append(result)
            print(f"run {run + 1} {version}: raw consumer {raw:,.0f} msg/s, bare Faust counting "
                  f"agent {counting:,.0f} events/s, worker "
                  f"{result['events_per_s']:,.0f} events/s, {result['events_per_cpu_s']:,.0f} "
                  f"events per worker CPU s, {result['cpu_share']:.0%} of a core, waited for one "
                  f"{result['cpu_wait_share']:.0%} (start-up {result['startup_s']:.1f} s)",
                  flush=True)
    summary = summarize(results, len(events), args.accounts)
    if args.profile is not None:
        shares = profile_shares(args.profile)
        print_profile(shares)
        summary["profile"] = shares
    if args.json_out:
        args.json_out.write_bytes(orjson.dumps({"summary": summary, "runs": results},
                                               option=orjson.OPT_INDENT_2))
    return 0


def summarize(results: dict[str, list[dict[str, float]]], events: int,
              accounts: int) -> dict[str, Any]:
    """Medians per version, the ratios worker / raw consumer and worker / bare Faust counting
    agent, and each version against the first (medians of the per-run ratios)."""
    def median(tree: str, key: str) -> float:
        return statistics.median(run[key] for run in results[tree])

    first = next(iter(results))

    def paired_ratio(tree: str, key: str) -> float:
        """Median over runs of this version's figure / the first version's in the same run:
        the runs of one round shared the machine's load, so their ratio is steadier."""
        return statistics.median(run[key] / base[key]
                                 for run, base in zip(results[tree], results[first], strict=True))

    print(f"medians over {len(results[first])} runs of {events:,} events / {accounts:,} accounts:")
    summary: dict[str, Any] = {}
    for tree in results:
        figures = {key: median(tree, key) for key in results[tree][0]}
        figures["worker_over_raw"] = statistics.median(
            run["events_per_s"] / run["raw_msg_per_s"] for run in results[tree])
        figures["worker_over_faust"] = statistics.median(
            run["events_per_s"] / run["faust_count_per_s"] for run in results[tree])
        figures["vs_first"] = paired_ratio(tree, "events_per_s")
        figures["cpu_vs_first"] = paired_ratio(tree, "events_per_cpu_s")
        summary[tree] = figures
        print(f"  {tree}: worker {figures['events_per_s']:,.0f} events/s "
              f"({figures['vs_first']:.2f} x {first}), {figures['events_per_cpu_s']:,.0f} per "
              f"CPU s ({figures['cpu_vs_first']:.2f} x), {figures['cpu_share']:.0%} of a core "
              f"(waited {figures['cpu_wait_share']:.0%}), raw {figures['raw_msg_per_s']:,.0f} "
              f"msg/s, worker/raw {figures['worker_over_raw']:.4f}, bare Faust counting agent "
              f"{figures['faust_count_per_s']:,.0f} events/s, worker/Faust "
              f"{figures['worker_over_faust']:.2f}, start-up "
              f"{figures['startup_s']:.1f} s")
    return summary


if __name__ == "__main__":
    sys.exit(main())
