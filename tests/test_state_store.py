"""The table's record layout: an account's state and its input positions survive a round trip."""

from __future__ import annotations

from decimal import Decimal

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from billing.account_record import (
    AccountEntry,
    dump_entry,
    dump_state,
    load_entry,
    load_state,
    status_version,
)
from tests.ledger.builders import Events, Run


def an_account() -> AccountEntry:
    run, events = Run(), Events("acct-7")
    run.all(events.opened(), events.purchase("12.500001"), events.usage("0.250000"))
    return AccountEntry(run.state("acct-7"), {"accounts": 3, "payments": 9, "usage": 41})


def test_an_entry_round_trips_exactly() -> None:
    entry = an_account()
    again = load_entry(dump_entry(entry))
    assert again == entry
    assert again.state.credit_balance == entry.state.credit_balance
    assert isinstance(again.state.credit_balance, Decimal)


def test_money_is_stored_as_strings_and_offsets_by_topic_kind() -> None:
    record = orjson.loads(dump_entry(an_account()))
    assert isinstance(record["credit_balance"], str)
    assert record["input_offsets"] == {"accounts": 3, "payments": 9, "usage": 41}


def test_a_record_without_offsets_loads_with_none() -> None:
    """Records written before offsets were kept (and by tools) load with an empty map."""
    entry = an_account()
    assert load_entry(dump_state(entry.state)).input_offsets == {}
    assert load_state(dump_entry(entry)) == entry.state


# --- positions within a batch message (usage_batch) ----------------------------------------------


def test_an_input_position_is_offset_then_index_within_its_message() -> None:
    entry = an_account()  # usage applied whole through offset 41
    assert entry.includes("usage", 41, 499) and entry.includes("usage", 40, 0)
    assert not entry.includes("usage", 42) and not entry.includes("payments", 10)
    entry.record_input("usage", 42, 2, last=False)  # records 0..2 of a batch at offset 42
    assert entry.includes("usage", 42, 2) and not entry.includes("usage", 42, 3)
    assert load_entry(dump_entry(entry)) == entry
    assert orjson.loads(dump_entry(entry))["input_indexes"] == {"usage": 2}
    entry.record_input("usage", 42, 3, last=True)
    assert entry.includes("usage", 42, 499) and entry.input_indexes == {}
    assert "input_indexes" not in orjson.loads(dump_entry(entry))


def test_a_record_written_before_batches_reads_its_offsets_as_whole_messages() -> None:
    record = orjson.loads(dump_entry(an_account()))
    assert "input_indexes" not in record
    old = load_entry(orjson.dumps(record))
    assert old.input_indexes == {} and old.includes("usage", 41, 7)
    assert status_version(old) >= sum(offset + 1 for offset in old.input_offsets.values())


positions = st.lists(st.tuples(st.sampled_from(["usage", "payments", "control"]),
                               st.integers(1, 4)), min_size=1, max_size=40)


def apply_all(entry: AccountEntry, events: list[tuple[str, int, int, bool]]
              ) -> tuple[list[tuple[str, int, int, bool]], list[int]]:
    """Apply each event the entry does not include; return those applied and the versions."""
    applied, versions = [], []
    for kind, offset, index, last in events:
        if not entry.includes(kind, offset, index):
            entry.record_input(kind, offset, index, last)
            applied.append((kind, offset, index, last))
            versions.append(status_version(entry))
    return applied, versions


@settings(max_examples=200, deadline=None)
@given(positions, st.floats(0, 1))
def test_the_status_version_grows_with_every_event_and_copies_change_nothing(
        messages: list[tuple[str, int]], crash_at: float) -> None:
    """Messages of 1 to 4 events on three inputs, applied event by event: the version grows with
    every one. After a crash at any event (a batch message applied in part), everything is
    delivered again: exactly the events after the crash are applied, to the same end."""
    events, next_offset = [], dict.fromkeys(["usage", "payments", "control"], 0)
    for kind, size in messages:
        events += [(kind, next_offset[kind], index, index == size - 1) for index in range(size)]
        next_offset[kind] += 1
    whole = AccountEntry(an_account().state, {})
    applied, versions = apply_all(whole, events)
    assert applied == events and versions == sorted(set(versions))  # strictly growing
    crash = int(crash_at * len(events))
    crashed = AccountEntry(an_account().state, {})
    apply_all(crashed, events[:crash])
    recovered = load_entry(dump_entry(crashed))
    assert apply_all(recovered, events) == (events[crash:], versions[crash:])
    assert recovered == whole
