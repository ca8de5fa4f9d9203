"""The apply job keeps account entries live between batches (``Apply._entry``): a batch reads an
account's record from the table only when no recent batch left its entry, and nothing cached
survives a revocation, where another worker may take the account over and change it."""

from __future__ import annotations

from typing import Any

from billing.account_record import AccountEntry, dump_entry
from streams import apply as apply_module
from streams.apply import Apply, _Batch
from streams.commit import CommitQueue
from tests.ledger.builders import Events, Run, prepaid_with_card


class _Table(dict):
    """What ``Apply.current`` uses of a Faust table: its name and ``get``."""

    name = "accounts"


def _record(account: str) -> bytes:
    run = Run()
    prepaid_with_card(run, Events(account), credit="5")
    return dump_entry(AccountEntry(run.state(account), {"payments": 1}))


def _apply(table: _Table) -> Apply:
    none: Any = None
    return Apply(none, none, none, {}, none, none, none, CommitQueue(), table, none, none, none)


def test_an_entry_is_read_once_and_served_live_until_partitions_are_revoked():
    table = _Table({b"a": _record("a")})
    apply = _apply(table)
    first = apply._entry(b"a", _Batch(0, apply.generation))
    assert first is not None
    table[b"a"] = _record("a")  # what a batch of another owner could write
    assert apply._entry(b"a", _Batch(0, apply.generation)) is first
    apply.forget_entries()
    assert apply._entry(b"a", _Batch(0, apply.generation)) is not first


def test_a_batch_running_across_a_revocation_caches_nothing():
    table = _Table({b"a": _record("a")})
    apply = _apply(table)
    started_before = _Batch(0, apply.generation)
    apply.forget_entries()
    loaded = apply._entry(b"a", started_before)
    assert apply._entry(b"a", _Batch(0, apply.generation)) is not loaded


def test_the_least_recently_used_entry_goes_first(monkeypatch):
    monkeypatch.setattr(apply_module, "CACHED_ENTRIES", 2)
    table = _Table({key: _record(key.decode()) for key in (b"a", b"b", b"c")})
    apply = _apply(table)
    batch = _Batch(0, apply.generation)
    a, b = apply._entry(b"a", batch), apply._entry(b"b", batch)
    assert apply._entry(b"a", batch) is a  # used again: "b" is now the oldest
    apply._entry(b"c", batch)
    assert apply._entry(b"a", batch) is a
    assert apply._entry(b"b", batch) is not b
