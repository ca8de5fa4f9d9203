"""The snapshots document: every account's snapshot in one JSON object keyed by account_id.

One format for every tool that hands the ledger's final state to another (billing rules, section
7): ``billing replay --snapshots-out`` writes it from the oracle, ``billing snapshots`` from the
live ledger (the ``billing.account-status`` topic), the demo into its run directory, and
``billing reconcile --snapshots`` reads it. Accounts sorted by id, each snapshot with exactly the
snapshot fields of section 6 in their order, money as strings with 6 fractional digits, indented
by two spaces, no trailing newline.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import orjson

from billing.events import MONEY_SNAPSHOT_FIELDS, SNAPSHOT_FIELDS, dumps, to_money


def snapshot_of_status(record: Mapping[str, Any]) -> dict[str, Any]:
    """The snapshot fields of an account-status record (without ``may_send``,
    ``blocked_reasons``, ``updated_at``, ``version``), in the snapshot's order."""
    return {name: record[name] for name in SNAPSHOT_FIELDS}


def _exact_money(snapshot: Mapping[str, Any]) -> dict[str, Any]:
    """The snapshot with its money as 6-digit Decimals (refused, not rounded, if finer)."""
    fixed = dict(snapshot)
    for name in MONEY_SNAPSHOT_FIELDS:
        fixed[name] = to_money(fixed[name], name)
    if fixed.get("monthly_budget") is not None:
        fixed["monthly_budget"] = to_money(fixed["monthly_budget"], "monthly_budget")
    auto = fixed.get("auto_top_up")
    if isinstance(auto, Mapping):
        fixed["auto_top_up"] = {**auto, **{
            name: to_money(auto[name], f"auto_top_up.{name}")
            for name in ("minimum_balance", "top_up_amount") if auto.get(name) is not None}}
    return fixed


def snapshot_document(items: Iterable[tuple[str, Mapping[str, Any]]]) -> Iterator[bytes]:
    """The snapshots document of ``items`` (account_id, snapshot), given sorted by account id
    and each id once, in pieces: one per account, so a million accounts are written without
    holding them all decoded. ``b"".join`` of the pieces is :func:`dump_snapshots`' bytes."""
    first = True
    for account_id, snapshot in items:
        member = orjson.dumps({account_id: orjson.loads(dumps(_exact_money(snapshot)))},
                              option=orjson.OPT_INDENT_2)
        yield (b"{\n" if first else b",\n") + member[2:-2]  # without this object's "{\n", "\n}"
        first = False
    yield b"{}" if first else b"\n}"


def dump_snapshots(snapshots: Mapping[str, Mapping[str, Any]]) -> bytes:
    """The snapshots document of ``snapshots`` (account_id -> snapshot, canonical form or as
    read from such a document: money as Decimal or as string)."""
    return b"".join(snapshot_document(sorted(snapshots.items())))


__all__ = ["dump_snapshots", "snapshot_document", "snapshot_of_status"]
