"""Bytes per account in the worker's ``accounts`` table, and what share of them is dedup ids.

The worker stores one record per account: key = the account id, value = ``dump_state`` of its
``AccountState`` (orjson). Every record is rewritten to the changelog when the account changes and
read back, record by record, when a worker recovers, so its size bounds both the changelog's disk
and network and the recovery time. The issue's target is under 1 KiB per account.

What is measured: a generated month is replayed (the same rules the worker runs) and every final
state is dumped as the worker would. Sizes are exact (no timing), so one run is enough; they are
given as median, p90, p99, max and mean (the mean is the table's bytes per account), overall and
per account type. Each state is also dumped with an empty ``recent_event_ids`` (the 7-day window of
event ids the ledger keeps for dedup), which splits its size into the dedup window and the rest.
Last, one busy account (usage every 4 s, as in ``replay_bench.py --busy-account``) is replayed for
a week: its state at the end of the week is what a full dedup window weighs.

    python benchmarks/state_bench.py                # generate 2,000 accounts, 200,000 events
    python benchmarks/state_bench.py --workload var/workload-1m.jsonl --json-out state.json
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import zlib
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import orjson
from replay_bench import (
    add_workload_arguments,
    busy_account,
    load_events,
    replay_core,
    workload_path,
)

from billing.ledger import AccountState
from streams.state_store import dump_state


@dataclass(frozen=True)
class StateSize:
    """One account's table record: its type, value bytes, of which the dedup window, ids kept."""

    account_type: str
    total: int
    dedup: int
    ids: int


def replayed_states(path: Path) -> dict[str, AccountState]:
    """Every account's state after replaying the workload at ``path`` (dead letters skipped)."""
    return replay_core(load_events(path)).accounts


def account_type(state: AccountState) -> str:
    """The workload's population kinds as far as a state shows them (``billing.workload.KINDS``)."""
    kind = f"{state.contract} {state.billing_model}"
    if state.auto_top_up_enabled:
        kind += " auto top-up"
    elif state.contract == "self_serve" and not state.payment_methods:
        kind += " no payment method"
    return kind


def measure(state: AccountState) -> StateSize:
    total = len(dump_state(state))
    without_ids = len(dump_state(replace(state, recent_event_ids={})))
    return StateSize(account_type(state), total, total - without_ids, len(state.recent_event_ids))


def distribution(values: Iterable[int]) -> dict[str, float]:
    """Median, p90, p99, max and mean (nearest-rank percentiles)."""
    ordered = sorted(values)

    def rank(fraction: float) -> int:
        return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]

    return {"median": statistics.median(ordered), "p90": rank(0.9), "p99": rank(0.99),
            "max": ordered[-1], "mean": statistics.fmean(ordered), "count": len(ordered)}


def row(label: str, sizes: list[StateSize]) -> dict[str, Any]:
    total = sum(size.total for size in sizes)
    dedup = sum(size.dedup for size in sizes)
    return {"label": label, "bytes": distribution(size.total for size in sizes),
            "rest": distribution(size.total - size.dedup for size in sizes),
            "ids": distribution(size.ids for size in sizes),
            "dedup_share": dedup / total if total else 0.0}


def print_rows(rows: list[dict[str, Any]]) -> None:
    print(f"{'accounts':38} {'n':>6} {'median':>7} {'p90':>7} {'p99':>7} {'max':>8} {'mean':>7}"
          f" {'dedup %':>7} {'rest mean':>9} {'rest max':>8} {'ids med':>7} {'ids max':>7}")
    for item in rows:
        size, rest, ids = item["bytes"], item["rest"], item["ids"]
        print(f"{item['label'][:38]:38} {size['count']:6} {size['median']:7.0f} {size['p90']:7}"
              f" {size['p99']:7} {size['max']:8} {size['mean']:7.0f}"
              f" {100 * item['dedup_share']:6.1f}% {rest['mean']:9.0f} {rest['max']:8}"
              f" {ids['median']:7.0f} {ids['max']:7}")


def busy_week() -> dict[str, Any]:
    """The state of one account sending usage every 4 s, at the end of its first week."""
    events = busy_account(days=7)
    state = replay_core(events).accounts["busy"]
    size = measure(state)
    return {"events": len(events), "bytes": size.total, "dedup_bytes": size.dedup,
            "ids": size.ids, "bytes_per_id": size.dedup / size.ids,
            "zlib_bytes": len(zlib.compress(dump_state(state), 1))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_workload_arguments(parser)
    parser.add_argument("--skip-busy", action="store_true", help="no busy-account week")
    parser.add_argument("--json-out", type=Path, help="also write the figures as JSON")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="state-bench-") as scratch:
        path = workload_path(args, Path(scratch))
        states = replayed_states(path)
    sizes = [measure(state) for state in states.values()]
    by_type: dict[str, list[StateSize]] = defaultdict(list)
    for size in sizes:
        by_type[size.account_type].append(size)
    rows = [row("all", sizes)] + [row(kind, group) for kind, group in sorted(by_type.items())]
    records = b"".join(dump_state(state) for state in states.values())
    figures: dict[str, Any] = {
        "workload": str(path), "accounts": len(states), "rows": rows,
        "key_bytes_mean": statistics.fmean(len(key.encode()) for key in states),
        # '"name":' of each field, in every record: the JSON layout's fixed cost
        "field_name_bytes": sum(len(field.name) + 3 for field in fields(AccountState)),
        "zlib_ratio": len(zlib.compress(records, 1)) / len(records),
    }
    print(f"workload {path}: {len(states):,} accounts; value bytes of dump_state(state) per "
          f"account (rest = without recent_event_ids; ids = event ids in the dedup window)")
    print_rows(rows)
    print(f"key bytes per account (mean): {figures['key_bytes_mean']:.1f}; field names in each "
          f"value: {figures['field_name_bytes']} bytes; all values zlib level 1: "
          f"{100 * figures['zlib_ratio']:.0f} % of their size")
    if not args.skip_busy:
        busy = figures["busy_week"] = busy_week()
        print(f"busy account, usage every 4 s for 7 days ({busy['events']:,} events): state "
              f"{busy['bytes']:,} bytes, of which dedup window {busy['dedup_bytes']:,} "
              f"({busy['ids']:,} ids, {busy['bytes_per_id']:.1f} bytes each); zlib level 1: "
              f"{busy['zlib_bytes']:,} bytes")
    if args.json_out:
        args.json_out.write_bytes(orjson.dumps(figures, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
