"""Account state <-> bytes for the Faust table (and its changelog topic).

Compact JSON via orjson: money as strings so it stays exact, field names kept so a changelog record
is readable with any Kafka tool during an incident. The table stores bytes (``raw`` serializer);
this module is the only place that knows the layout.

Next to the ledger's fields, a record carries ``input_offsets``: per input topic (by kind), the
offset of the last event of that topic the state includes (the account's partition number is the
same on every input topic). An account's events of one topic are applied in offset order, so an
event at or below that offset is already in the state: the worker skips it when Kafka delivers it
again after a crash or a rebalance. The ledger's own dedup by ``event_id`` cannot do this alone: it
keeps ids for a window of event time, and a worker catching up on a backlog can move an account
further than that window past an event before the event's offset is committed.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from decimal import Decimal
from typing import Any

import orjson

from billing.ledger import AccountState

_MONEY = {"credit_balance", "outstanding_balance", "lifetime_spend", "lifetime_credits_purchased",
          "lifetime_invoice_payments", "free_credit_granted", "auto_top_up_minimum",
          "auto_top_up_amount"}
_OPTIONAL_MONEY = {"monthly_budget", "customer_budget"}
_MONEY_MAPS = {"month_spend", "month_unpaid", "invoices"}
_FIELD_NAMES = tuple(item.name for item in fields(AccountState))


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(type(value).__name__)


@dataclass(slots=True)
class AccountEntry:
    """One table value: an account's ledger state and the input offsets it includes.

    ``legacy_event_ids`` holds the event ids a record written before they moved to their own
    table still carried (event id -> event time in ms), for the worker to move them there."""

    state: AccountState
    input_offsets: dict[str, int]
    legacy_event_ids: dict[str, int] | None = None


def status_version(input_offsets: dict[str, int]) -> int:
    """The version of an account's status record: it grows with every input applied to the
    account (each adds at least one, an input at offset 0 included) and is the same when the same
    inputs are applied again after a crash."""
    return sum(offset + 1 for offset in input_offsets.values())


def dump_entry(entry: AccountEntry) -> bytes:
    record: dict[str, Any] = {name: getattr(entry.state, name) for name in _FIELD_NAMES}
    record["input_offsets"] = entry.input_offsets
    return orjson.dumps(record, default=_default)


def dump_state(state: AccountState) -> bytes:
    """A record of ``state`` that includes no input offsets (benchmarks, tools)."""
    return dump_entry(AccountEntry(state, {}))


def load_state(data: bytes) -> AccountState:
    return load_entry(data).state


def load_entry(data: bytes) -> AccountEntry:
    record = orjson.loads(data)
    input_offsets = record.pop("input_offsets", {})
    legacy_event_ids = record.pop("recent_event_ids", None)
    for name in _MONEY:
        record[name] = Decimal(record[name])
    for name in _OPTIONAL_MONEY:
        if record[name] is not None:
            record[name] = Decimal(record[name])
    for name in _MONEY_MAPS:
        record[name] = {key: Decimal(value) for key, value in record[name].items()}
    record["pause_reasons"] = tuple(record["pause_reasons"])
    return AccountEntry(AccountState(**record), input_offsets, legacy_event_ids or None)
