"""The table's record layout: an account's state and its input offsets survive a round trip."""

from __future__ import annotations

from decimal import Decimal

import orjson

from billing.account_record import AccountEntry, dump_entry, dump_state, load_entry, load_state
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
