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

A message may pack several events of the account (a ``usage_batch``), each applied on its own and
possibly in different worker batches, so an input's position is (offset, index within its
message). ``input_indexes`` holds, per kind, the index of the last event applied of the message at
``input_offsets[kind]`` while that message is applied only in part; absent, the message at that
offset is applied whole (every record written before batches existed reads so).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from decimal import Decimal
from typing import Any

import orjson

from billing.events import MAX_BATCH_RECORDS
from billing.ledger import AccountState

_MONEY = {"credit_balance", "outstanding_balance", "lifetime_spend", "lifetime_credits_purchased",
          "lifetime_invoice_payments", "free_credit_granted", "auto_top_up_minimum",
          "auto_top_up_amount"}
_OPTIONAL_MONEY = {"monthly_budget", "customer_budget"}
_MONEY_MAPS = {"month_spend", "month_unpaid", "invoices"}
_RARE_MAPS = ("invoice_payment_ids", "closed_invoice_payment_ids")  # left out of a record if empty
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
    input_indexes: dict[str, int] = field(default_factory=dict)

    def includes(self, kind: str, offset: int, index: int = 0) -> bool:
        """Whether the state includes the event at ``index`` of the ``kind`` input at ``offset``
        (a message delivered again: skip it)."""
        applied = self.input_offsets.get(kind, -1)
        if offset != applied:
            return offset < applied
        part = self.input_indexes.get(kind)
        return part is None or index <= part

    def record_input(self, kind: str, offset: int, index: int = 0, last: bool = True) -> None:
        """The event at ``index`` of the ``kind`` input at ``offset`` is applied; ``last``: it is
        the last its message has for the account (a single event is)."""
        self.input_offsets[kind] = offset
        if last:
            self.input_indexes.pop(kind, None)
        else:
            self.input_indexes[kind] = index


def status_version(entry: AccountEntry) -> int:
    """The version of an account's status record: it grows with every input event applied to the
    account (a whole message at offset ``o`` counts ``(o + 1) * MAX_BATCH_RECORDS``, its first
    ``i + 1`` events only ``o * MAX_BATCH_RECORDS + i + 1``, less) and is the same when the same
    inputs are applied again after a crash. Each version is at least the sum of offset + 1 of
    the records written before batches existed, so versions still only grow across the upgrade."""
    indexes = entry.input_indexes
    return sum(offset * MAX_BATCH_RECORDS + indexes[kind] + 1 if kind in indexes
               else (offset + 1) * MAX_BATCH_RECORDS
               for kind, offset in entry.input_offsets.items())


def dump_entry(entry: AccountEntry) -> bytes:
    record: dict[str, Any] = {name: getattr(entry.state, name) for name in _FIELD_NAMES}
    for name in _RARE_MAPS:  # most records never have one: leave them out
        if not record[name]:
            del record[name]
    record["input_offsets"] = entry.input_offsets
    if entry.input_indexes:  # only while a message is applied in part: most records never have it
        record["input_indexes"] = entry.input_indexes
    return orjson.dumps(record, default=_default)


def dump_state(state: AccountState) -> bytes:
    """A record of ``state`` that includes no input offsets (benchmarks, tools)."""
    return dump_entry(AccountEntry(state, {}))


def load_state(data: bytes) -> AccountState:
    return load_entry(data).state


def load_entry(data: bytes) -> AccountEntry:
    record = orjson.loads(data)
    input_offsets = record.pop("input_offsets", {})
    input_indexes = record.pop("input_indexes", {})
    legacy_event_ids = record.pop("recent_event_ids", None)
    for name in _MONEY:
        record[name] = Decimal(record[name])
    for name in _OPTIONAL_MONEY:
        if record[name] is not None:
            record[name] = Decimal(record[name])
    for name in _MONEY_MAPS:
        record[name] = {key: Decimal(value) for key, value in record[name].items()}
    record["pause_reasons"] = tuple(record["pause_reasons"])
    record["invoice_payment_ids"] = {invoice_id: tuple(payment_ids) for invoice_id, payment_ids
                                     in record.get("invoice_payment_ids", {}).items()}
    record.setdefault("closed_invoice_payment_ids", {})
    return AccountEntry(AccountState(**record), input_offsets, legacy_event_ids or None,
                        input_indexes)
