"""Bytes per account in the worker's ``accounts`` table, and changelog bytes per input event.

The worker keeps two tables per account. ``accounts``: one record per account (key = the account
id, value = ``dump_state`` of its ``AccountState``), rewritten to the changelog once per batch that
touches the account and read back record by record when a worker recovers. ``seen-ids``
(``streams/seen_table.py``): the account's event ids in hour buckets of chunks of 32 ids, and its
payment ids. The issue's targets: a record under 1 KiB on average, under 4 KiB for an account
sending 1,000,000 events a day; and the changelog bytes each input event costs.

What is measured: a generated month is replayed with the rules the worker runs, its seen ids kept
by the worker's own ``TableSeenIds`` over a dictionary, in batches of ``--batch`` events (the
worker's batches are what one release of a partition applies: often a single event when it keeps
up, hundreds when it catches up). After each batch, each touched account's record and the batch's
``seen-ids`` writes (tombstones included) are counted as changelog bytes (key + value, without
Kafka's per-record overhead of about 70 bytes). The same run also counts what the previous layout
wrote: the record with a ``recent_event_ids`` map of the last 7 days of ids (``"id":ms`` each),
rewritten whole per batch. Sizes are exact (no timing), so one run is enough.

Then one busy account sends 1,000,000 usage events in a day, in batches of one event.

    python benchmarks/state_bench.py                # generate 2,000 accounts, 200,000 events
    python benchmarks/state_bench.py --workload var/workload-1m.jsonl --batch 1 100
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
from collections import defaultdict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from replay_bench import add_workload_arguments, load_events, workload_path

from billing.account_record import dump_state
from billing.events import InvalidEvent, normalize_input
from billing.ledger import AccountState, Ledger, to_millis
from billing.replay import Replay
from runtime.rules_files import load_config, load_pricebook
from streams.seen_table import DELETED, TableSeenIds

OLD_WINDOW_MS = 7 * 86_400_000  # the previous layout's dedup window, kept inside the record
OLD_FIELD = len(b',"recent_event_ids":{}')


@dataclass
class OldWindow:
    """The ids the previous layout kept in one account's record, and their JSON bytes."""

    ids: deque[tuple[int, int]] = field(default_factory=deque)  # (ms, bytes of "id":ms,)
    size: int = 0
    newest: int = 0

    def add(self, event_id: str, millis: int) -> None:
        entry = len(orjson.dumps(event_id)) + len(str(millis)) + 2
        self.ids.append((millis, entry))
        self.size += entry
        self.newest = max(self.newest, millis)
        while self.ids and self.ids[0][0] < self.newest - OLD_WINDOW_MS:
            self.size -= self.ids.popleft()[1]


@dataclass
class Changelog:
    """Bytes written per table, and the events that caused them."""

    events: int = 0
    accounts: int = 0  # the account records (the current layout)
    seen_ids: int = 0  # the seen-ids table, tombstones included
    seen_records: int = 0
    old_accounts: int = 0  # the previous layout: records with their 7-day id window

    def per_event(self) -> dict[str, float]:
        return {"accounts": self.accounts / self.events, "seen_ids": self.seen_ids / self.events,
                "total": (self.accounts + self.seen_ids) / self.events,
                "seen_records": self.seen_records / self.events,
                "previous_layout": self.old_accounts / self.events}


def replay_counting(events: Iterable[dict[str, Any]], batch: int) -> tuple[Replay, Changelog]:
    """Replay ``events`` as the worker would commit them, ``batch`` events a batch."""
    store: dict[bytes, bytes] = {}
    seen = TableSeenIds(store.get)
    replay = Replay(Ledger(load_config(), load_pricebook(), seen))
    windows: dict[str, OldWindow] = defaultdict(OldWindow)
    log = Changelog()
    touched: set[str] = set()

    def commit() -> None:
        for key, value in seen.take_writes().items():
            log.seen_ids += len(key) + (0 if value == DELETED else len(value))
            log.seen_records += 1
            if value == DELETED:
                store.pop(key, None)
            else:
                store[key] = value
        for account_id in touched:
            state = replay.accounts[account_id]
            size = len(account_id.encode()) + len(dump_state(state))
            log.accounts += size
            log.old_accounts += size + OLD_FIELD + windows[account_id].size
        touched.clear()

    for number, event in enumerate(events, start=1):
        log.events += 1
        try:
            outputs, _ = replay.apply(event)
        except InvalidEvent:
            outputs = []
        else:
            if event["account_id"] in replay.accounts:
                touched.add(event["account_id"])
                windows[event["account_id"]].add(event["event_id"],
                                                 to_millis(event["timestamp"]))
        touched.update(output["account_id"] for output in outputs)
        if number % batch == 0:
            commit()
    commit()
    return replay, log


def distribution(values: Iterable[int]) -> dict[str, float]:
    """Median, p90, p99, max and mean (nearest-rank percentiles)."""
    ordered = sorted(values)

    def rank(fraction: float) -> int:
        return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]

    return {"median": statistics.median(ordered), "p90": rank(0.9), "p99": rank(0.99),
            "max": ordered[-1], "mean": statistics.fmean(ordered), "count": len(ordered)}


def account_type(state: AccountState) -> str:
    """The workload's population kinds as far as a state shows them (``devkit.workload.KINDS``)."""
    kind = f"{state.contract} {state.billing_model}"
    if state.auto_top_up_enabled:
        kind += " auto top-up"
    elif state.contract == "self_serve" and not state.payment_methods:
        kind += " no payment method"
    return kind


def busy_day(events_per_day: int) -> list[dict[str, Any]]:
    """One enterprise account sending ``events_per_day`` usage events in one day."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    step = timedelta(milliseconds=86_400_000 // events_per_day)
    events = [normalize_input({
        "type": "account_opened", "event_id": "open", "account_id": "busy",
        "timestamp": start, "created_at": start, "contract": "enterprise",
        "billing_model": "postpaid"})]
    events.extend(normalize_input({
        "type": "usage", "event_id": f"gw-{number:012d}", "account_id": "busy",
        "timestamp": start + step * (number + 1), "product": "llama-v3p1-8b",
        "quantities": {"input_tokens": 1_000, "output_tokens": 200}, "requests": 1})
        for number in range(events_per_day))
    return events


def print_sizes(label: str, sizes: list[int]) -> dict[str, float]:
    figures = distribution(sizes)
    print(f"  {label[:40]:40} {figures['count']:6} {figures['median']:7.0f} {figures['p90']:7}"
          f" {figures['p99']:7} {figures['max']:7} {figures['mean']:7.0f}")
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_workload_arguments(parser)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 100],
                        help="events per committed batch (one run each)")
    parser.add_argument("--busy-events", type=int, default=1_000_000,
                        help="events of the busy account's day (0: skip)")
    parser.add_argument("--json-out", type=Path, help="also write the figures as JSON")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="state-bench-") as scratch:
        path = workload_path(args, Path(scratch))
        events = load_events(path)
    figures: dict[str, Any] = {"workload": str(path), "changelog": {}}
    for batch in args.batch:
        replay, log = replay_counting(events, batch)
        figures["changelog"][batch] = log.per_event()
    states = replay.accounts
    print(f"workload {path}: {len(states):,} accounts, {len(events):,} events")
    print(f"  {'record bytes (dump_state), accounts':40} {'n':>6} {'median':>7} {'p90':>7}"
          f" {'p99':>7} {'max':>7} {'mean':>7}")
    figures["record_bytes"] = print_sizes("all", [len(dump_state(s)) for s in states.values()])
    by_type: dict[str, list[int]] = defaultdict(list)
    for state in states.values():
        by_type[account_type(state)].append(len(dump_state(state)))
    figures["record_bytes_by_type"] = {kind: print_sizes(kind, sizes)
                                       for kind, sizes in sorted(by_type.items())}
    print("changelog bytes per input event (key + value):")
    for batch, per_event in figures["changelog"].items():
        print(f"  batches of {batch:>4} events: accounts {per_event['accounts']:7.1f} + seen-ids "
              f"{per_event['seen_ids']:6.1f} ({per_event['seen_records']:.2f} records) = "
              f"{per_event['total']:7.1f}; previous layout (ids in the record) "
              f"{per_event['previous_layout']:9.1f}")
    if args.busy_events:
        busy = busy_day(args.busy_events)
        replay, log = replay_counting(busy, 1)
        per_event = log.per_event()
        figures["busy"] = {"events": args.busy_events,
                           "record_bytes": len(dump_state(replay.accounts["busy"])),
                           "changelog": per_event}
        print(f"busy account, {args.busy_events:,} usage events in one day, batches of one "
              f"event: record {figures['busy']['record_bytes']:,} bytes; changelog per event: "
              f"accounts {per_event['accounts']:.1f} + seen-ids {per_event['seen_ids']:.1f} = "
              f"{per_event['total']:.1f} bytes; previous layout "
              f"{per_event['previous_layout']:,.0f} bytes")
    if args.json_out:
        args.json_out.write_bytes(orjson.dumps(figures, option=orjson.OPT_INDENT_2 |
                                               orjson.OPT_NON_STR_KEYS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
