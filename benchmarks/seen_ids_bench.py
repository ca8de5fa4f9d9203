"""What a batch costs the worker's seen-ids table, by the number of accounts it holds in memory.

``TableSeenIds`` (``streams/seen_table.py``) caches the accounts' bucket indexes (up to
``CACHED_INDEXES``, 200,000) and hands a batch's changes to the commit queue at the batch's end
(``take_writes``). Until session 9 that walked every cached index to find the changed ones, so a
batch cost time in proportion to the accounts the worker had seen, not to the events it applied.
This bench fills the table with N accounts (one id each, their writes taken), then times batches
of 10 events on 10 of them: recording each event's id and taking the batch's writes. Each
``--tree`` is a checkout whose ``streams/seen_table.py`` is measured (e.g. ``git archive REV |
tar -x -C /tmp/old-tree``; ``.`` is this one); versions alternate within each round; medians of
the per-batch times, then of ``--runs`` rounds, and the ratio to the first tree.

    python benchmarks/seen_ids_bench.py --tree /tmp/old-tree --tree . --accounts 1000 100000
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from pathlib import Path
from types import ModuleType

BUCKET = 500_000  # an hour of 2027: every id in one bucket, nothing to forget
BATCHES, EVENTS_PER_BATCH = 200, 10


def seen_table_of(tree: str, number: int) -> ModuleType:
    """``streams/seen_table.py`` of ``tree``, imported under a name of its own."""
    path = Path(tree) / "streams" / "seen_table.py"
    spec = importlib.util.spec_from_file_location(f"seen_table_{number}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def batch_micros(module: ModuleType, accounts: int) -> float:
    """Median µs of a batch of :data:`EVENTS_PER_BATCH` events once ``accounts`` are cached."""
    stored: dict[bytes, bytes] = {}
    seen = module.TableSeenIds(stored.get)
    for number in range(accounts):
        seen.start_account(f"acct-{number}")
        seen.add_event(f"acct-{number}", BUCKET, f"open-{number}")
    stored.update((key, value) for key, value in seen.take_writes().items() if value)
    times, event = [], 0
    for batch in range(BATCHES):
        started = time.perf_counter()
        for _ in range(EVENTS_PER_BATCH):
            event += 1
            seen.add_event(f"acct-{(batch * EVENTS_PER_BATCH + event) % accounts}", BUCKET,
                           f"event-{event}")
        seen.take_writes()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", action="append", default=[], metavar="PATH",
                        help="checkout to measure (repeatable; the first is the baseline)")
    parser.add_argument("--accounts", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    trees = args.tree or ["."]
    modules = [seen_table_of(tree, number) for number, tree in enumerate(trees)]
    for accounts in args.accounts:
        rounds: list[list[float]] = []
        for run in range(args.runs):
            order = range(len(modules)) if run % 2 == 0 else reversed(range(len(modules)))
            figures = dict.fromkeys(range(len(modules)), 0.0)
            for number in order:
                figures[number] = batch_micros(modules[number], accounts)
            rounds.append([figures[number] for number in range(len(modules))])
        medians = [statistics.median(run[number] for run in rounds)
                   for number in range(len(modules))]
        ratios = [statistics.median(run[number] / run[0] for run in rounds)
                  for number in range(len(modules))]
        print(f"{accounts:>9,} accounts cached: " + "; ".join(
            f"{tree} {micros:,.1f} µs a batch of {EVENTS_PER_BATCH} ({ratio:.3f} x)"
            for tree, micros, ratio in zip(trees, medians, ratios, strict=True)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
