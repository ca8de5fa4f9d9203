"""The worker's own CPU per input event, without Faust or Kafka: what the merge releases, through
the ledger, the account entries, the seen ids, publishing and the commit queue.

``pipeline_bench`` times the whole worker on the real broker; on this shared machine one version's
rate moves by up to 2x from round to round, more than most changes to the worker's own code are
worth. This bench runs the worker's own classes (:class:`streams.apply.Apply`,
:class:`streams.commit.CommitQueue`, :class:`streams.publish.Publisher`,
:class:`streams.seen_table.TableSeenIds`, the merge) in one process over the same generated
workload, with the Faust tables replaced by dicts and the sender by one whose deliveries complete
:data:`DELIVERY_SECONDS` after a window's first record, and prints CPU microseconds per input
event. What it leaves out: Faust's delivery of each
message, the input sequence check, the decoding of inputs, and Kafka's side (the producer, the
network): ``pipeline_bench`` has those.

Each ``--tree`` (a checkout, e.g. ``git archive f642eb5 | tar -x -C /tmp/old-tree``; ``.``, this
one, by default) runs in a child process of its own, round after round in alternating order; the
ratios are the medians of the per-round ratios to the first tree.

    python -m benchmarks.apply_bench --events 60000 --accounts 1200 --runs 5 \\
        --tree /tmp/old-tree --tree .
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import math
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

import orjson

RELEASE_EVERY = 500  # events taken into the merge between two releases (a fetch's worth)
DELIVERY_SECONDS = 0.01  # from a record's send to its delivery (a 5 ms linger, a round trip)


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def child(events: int, accounts: int, seed: int) -> None:
    """Run the workload once through this checkout's apply job; print one JSON line."""
    print(orjson.dumps(asyncio.run(_drive(events, accounts, seed))).decode(), flush=True)


async def _drive(events: int, accounts: int, seed: int) -> dict[str, float]:
    # Imported here: the child imports the tree under test (``code_from``), the parent need not.
    from billing.events import normalize_input
    from billing.ledger import Ledger
    from billing.merge import KIND_RANK, EventTimeMerger
    from devkit.workload import generate
    from runtime.codecs import codec_for
    from runtime.rules_files import load_config, load_pricebook
    from runtime.settings import load_settings
    from streams.apply import Apply
    from streams.commit import CommitQueue
    from streams.intake import _Input
    from streams.metrics import WorkerMetrics
    from streams.publish import Publisher
    from streams.seen_table import TableSeenIds
    from streams.sender import partition_of

    settings = load_settings({})
    topics = settings.topics
    kind_of_topic = {getattr(topics, kind): kind for kind in
                     ("usage", "payments", "accounts", "control")}
    topic_of_kind = {kind: topic for topic, kind in kind_of_topic.items()}
    merger = EventTimeMerger(tuple(kind_of_topic), {
        topic: KIND_RANK[kind] for topic, kind in kind_of_topic.items()})
    sender = _Sender(settings.partitions)
    commits = CommitQueue(sender=sender, later_tables=["seen-ids"])
    accounts_table, clock, seen_table = _Table("accounts"), _Table("partition-clock"), \
        _Table("seen-ids")
    seen = TableSeenIds(lambda key: apply.current(seen_table, key, bytes))
    ledger = Ledger(load_config(), load_pricebook()).with_seen(seen)
    metrics = WorkerMetrics(topics.inputs)
    publisher = Publisher(_App(), sender, codec_for(settings), settings, ledger, metrics,
                          "apply-bench")
    apply = Apply(settings, ledger, metrics, kind_of_topic, merger, asyncio.Lock(), publisher,
                  commits, accounts_table, clock, seen_table, seen)
    offsets: dict[tuple[str, int], int] = {}
    inputs = []
    for raw in generate(accounts, events, seed):
        canonical = normalize_input(raw)
        topic = topic_of_kind[_kind_of(canonical["type"])]
        partition = partition_of(canonical["account_id"].encode(), settings.partitions) \
            if canonical["account_id"] else 0
        offset = offsets[(topic, partition)] = offsets.get((topic, partition), -1) + 1
        inputs.append((_Event(topic, partition, offset), canonical))
    # The month close a worker's watermark broadcasts (the workload ends in the next month), as
    # read back from each partition of the control topic: this bench has no Kafka to carry it.
    first_month = inputs[0][1]["timestamp"].strftime("%Y-%m")
    close = {"type": "close_period", "event_id": f"watermark:{first_month}", "account_id": "",
             "timestamp": ledger.watermark_close_time(first_month), "period": first_month}
    for partition in range(settings.partitions):
        offset = offsets[(topics.control, partition)] = \
            offsets.get((topics.control, partition), -1) + 1
        inputs.append((_Event(topics.control, partition, offset), close))
    closes = _time_month_closes(apply)
    gc.freeze()  # the inputs built above are this bench's, not the worker's heap
    _tune_like_the_worker()
    caught_up = lambda partition: lambda topic: math.inf  # noqa: E731 (read to the end)
    committer = asyncio.get_running_loop().create_task(commits.run())
    started, cpu = time.perf_counter(), _cpu_seconds()
    for number, (event, canonical) in enumerate(inputs, 1):
        message = event.message
        merger.add(message.topic, message.partition, _millis(canonical["timestamp"]),
                   message.offset, _Input(event, canonical, False, 0, True, False))
        if number % RELEASE_EVERY == 0:
            await apply.release_all(caught_up)
            await asyncio.sleep(0)  # the committer's turn: one commit per release, as when busy
    await apply.release_all(caught_up)
    while getattr(apply, "closing", False):  # a month close in batches (not in older trees)
        await asyncio.sleep(0)
        await apply.release_all(caught_up)
    await commits.drain(timeout=600)
    cpu, wall = _cpu_seconds() - cpu, time.perf_counter() - started
    committer.cancel()
    return {"events": len(inputs), "cpu_seconds": cpu, "wall_seconds": wall,
            "records_sent": sender.records, **closes}


def _time_month_closes(apply: Any) -> dict[str, float]:
    """Time each release that closes a month for every account of a partition (the workload
    ends in the next month: its watermark broadcasts the close), in place of ``apply``'s own
    ``_release``: the agent applies nothing else meanwhile, so its wall time is a stall of the
    worker. The dict it returns fills in as the closes happen."""
    closes = {"close_releases": 0, "close_cpu_seconds": 0.0, "longest_close_seconds": 0.0}
    release, close = apply._release, apply._close_partition
    closing = [False]

    async def close_partition(*args: Any) -> None:
        closing[0] = True
        await close(*args)

    async def timed_release(*args: Any) -> None:
        closing[0] = False
        cpu, started = _cpu_seconds(), time.perf_counter()
        await release(*args)
        if closing[0]:
            closes["close_releases"] += 1
            closes["close_cpu_seconds"] += _cpu_seconds() - cpu
            closes["longest_close_seconds"] = max(closes["longest_close_seconds"],
                                                  time.perf_counter() - started)

    apply._release, apply._close_partition = timed_release, close_partition
    return closes


def _tune_like_the_worker() -> None:
    """The garbage collector as ``billing worker`` sets it, if the tree under test does."""
    try:
        from streams.gc_tuning import tune_garbage_collector
    except ImportError:  # a tree from before streams/gc_tuning.py: CPython's defaults
        return
    tune_garbage_collector()


def _kind_of(event_type: str) -> str:
    from billing.event_shapes import TOPIC_OF_TYPE
    return TOPIC_OF_TYPE[event_type]


def _millis(moment: Any) -> int:
    return round(moment.timestamp() * 1000)


class _Message:
    """What the apply job reads of a Faust message."""

    def __init__(self, topic: str, partition: int, offset: int) -> None:
        from faust.types import TP
        self.topic, self.partition, self.offset = topic, partition, offset
        self.tp = TP(topic, partition)
        self.key, self.value, self.timestamp = b"", b"", None


class _Event:
    """A Faust event as the apply job and the commit queue use it."""

    def __init__(self, topic: str, partition: int, offset: int) -> None:
        self.message = _Message(topic, partition, offset)

    def ack(self) -> None:
        """Faust's acknowledgement: nothing to do without its consumer."""


class _Changelog:
    def __init__(self, topic: str) -> None:
        self.topic = topic

    def get_topic_name(self) -> str:
        return self.topic


class _Store(dict):
    def set_persisted_offset(self, tp: Any, offset: int) -> None:
        """Where Faust keeps a changelog's offset: nowhere here."""


class _Table:
    """A Faust table as the worker uses it: a name, ``get``, ``keys``, a store, a changelog."""

    def __init__(self, name: str) -> None:
        self.name, self.data = name, _Store()
        self.changelog_topic = _Changelog(f"apply-bench-{name}-changelog")

    def get(self, key: bytes) -> bytes | None:
        return self.data.get(key)

    def keys(self) -> Any:
        return self.data.keys()


class _Sender:
    """Delivers the records sent within each :data:`DELIVERY_SECONDS` together, that long after
    the first of them: a producer's linger and its request's round trip. The commit queue then
    lags behind the batches as in a busy worker, whose uncommitted account states it serves."""

    def __init__(self, partitions: int) -> None:
        self.records = 0
        self.partitions = partitions
        self._open: asyncio.Future[int] | None = None

    async def partition_count(self, topic: str) -> int:
        return self.partitions

    async def send(self, topic: str, key: bytes, value: bytes | None,
                   partition: int | None = None) -> asyncio.Future[int]:
        self.records += 1
        if self._open is None:
            loop = asyncio.get_running_loop()
            delivered = self._open = loop.create_future()
            loop.call_later(DELIVERY_SECONDS, self._deliver, delivered)
        return self._open

    def _deliver(self, delivered: asyncio.Future[int]) -> None:
        delivered.set_result(0)
        if self._open is delivered:
            self._open = None


class _DeadLetters:
    async def send(self, **_: Any) -> asyncio.Future[int]:
        delivered: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        delivered.set_result(0)
        return delivered


class _App:
    def topic(self, name: str) -> _DeadLetters:
        return _DeadLetters()


def _run_tree(tree: str, events: int, accounts: int, seed: int) -> dict[str, float]:
    """One run in a child importing ``tree``'s code (this file runs by its path: an older tree
    has no copy of it)."""
    from benchmarks.pipeline_bench import code_from
    with code_from(tree):
        output = subprocess.run(
            [sys.executable, __file__, "--child", "--events", str(events),
             "--accounts", str(accounts), "--seed", str(seed)],
            check=True, capture_output=True, text=True).stdout
    return orjson.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--accounts", type=int, default=1_200)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tree", action="append", default=[], metavar="PATH")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.events, args.accounts, args.seed)
        return
    trees = args.tree or ["."]
    per_event: dict[str, list[float]] = {tree: [] for tree in trees}
    ratios: dict[str, list[float]] = {tree: [] for tree in trees}
    for run in range(1, args.runs + 1):
        order = trees if run % 2 else list(reversed(trees))
        this_round: dict[str, float] = {}
        for tree in order:
            result = _run_tree(tree, args.events, args.accounts, args.seed)
            micros = result["cpu_seconds"] / result["events"] * 1e6
            this_round[tree] = micros
            per_event[tree].append(micros)
            print(f"run {run} {tree}: {micros:.1f} CPU µs per event ({result['events']:,} "
                  f"events, {result['records_sent'] / result['events']:.2f} records sent "
                  f"per event, {result['wall_seconds']:.1f} s; {result['close_releases']} "
                  f"month-close releases, {result['close_cpu_seconds']:.2f} s CPU, the longest "
                  f"{result['longest_close_seconds']:.2f} s)", flush=True)
        for tree in trees:
            ratios[tree].append(this_round[tree] / this_round[trees[0]])
    print(f"medians over {args.runs} runs of {args.events:,} events / {args.accounts:,} accounts:")
    for tree in trees:
        micros = statistics.median(per_event[tree])
        print(f"  {tree}: {micros:.1f} CPU µs per event ({1e6 / micros:,.0f} events per CPU s), "
              f"{statistics.median(ratios[tree]):.2f} x the time of {trees[0]} "
              f"(range {min(ratios[tree]):.2f}-{max(ratios[tree]):.2f})")


if __name__ == "__main__":
    main()
