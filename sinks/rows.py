"""Canonical events (``billing.events``) -> ClickHouse rows, column for column.

Pure functions, no I/O, so the mapping is tested without a database and both writers (server and
embedded) insert exactly the same values. Conventions, matching the tables of ``sinks/migrations``:

- money stays ``Decimal`` with 6 fractional digits; :func:`billing.events.to_money` refuses a float
  or a seventh digit instead of letting the driver truncate it silently;
- a timestamp becomes a whole-second UTC ``DateTime`` plus ``timestamp_ms`` (0-999), because
  ``DateTime64`` does not exist on ClickHouse 18.16;
- booleans become 0/1 (``UInt8``); a field the event type does not have becomes NULL.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from billing.events import OUTPUT_FIELDS, SNAPSHOT_FIELDS, to_money

Row = tuple[Any, ...]

RATED_USAGE_TABLE = "rated_usage"
RATED_USAGE_COLUMNS: tuple[str, ...] = (
    "event_id", "account_id", "timestamp", "timestamp_ms", "product", "quantities.meter",
    "quantities.count", "requests", "cost", "billed_period", "late", "over_limit",
    "billing_model", "tier",
)

ACCOUNT_STATE_TABLE = "account_state_events"
# Every type's own fields, once each, in first-seen order. Each is nullable ("?"): the table has
# one column per field and an event type that does not have the field leaves it NULL.
EVENT_FIELD_KINDS: dict[str, str] = {
    name: kind.rstrip("?") + "?"
    for fields in OUTPUT_FIELDS.values()
    for name, kind in fields.items()
}

# Snapshot field -> column; auto_top_up is a record and becomes three columns.
_AUTO_TOP_UP_COLUMNS = {
    "enabled": ("snapshot_auto_top_up_enabled", "bool"),
    "minimum_balance": ("snapshot_auto_top_up_minimum_balance", "money"),
    "top_up_amount": ("snapshot_auto_top_up_amount", "money"),
}
SNAPSHOT_FIELD_KINDS = {
    name: kind for name, kind in SNAPSHOT_FIELDS.items()
    if name != "account_id" and kind != "auto_top_up"
}
ACCOUNT_STATE_COLUMNS: tuple[str, ...] = (
    "event_id", "account_id", "timestamp", "timestamp_ms", "type", "cause_event_id",
    *EVENT_FIELD_KINDS,
    *(f"snapshot_{name}" for name in SNAPSHOT_FIELD_KINDS),
    *(column for column, _ in _AUTO_TOP_UP_COLUMNS.values()),
    "source_partition", "source_offset",
)


def split_time(moment: datetime) -> tuple[datetime, int]:
    """(whole-second time, milliseconds): ``DateTime`` drops sub-seconds, ``timestamp_ms``
    keeps the milliseconds."""
    return moment.replace(microsecond=0), moment.microsecond // 1000


def _cell(kind: str, value: Any, field: str) -> Any:
    """One value as its column stores it; ``kind`` is a field kind of ``billing.events``."""
    if value is None:
        if kind.endswith("?"):
            return None
        raise ValueError(f"{field} is required, got None")
    base = kind.rstrip("?")
    if base.startswith("money"):
        return to_money(value, field)
    if base == "bool":
        return int(bool(value))
    if base == "int":
        return int(value)
    if base == "list[str]":
        return list(value)
    return value


def rows_for_rated_usage(records: Iterable[Mapping[str, Any]]) -> list[Row]:
    """Rated usage records (``RATED_USAGE_FIELDS``) -> rows in ``RATED_USAGE_COLUMNS`` order."""
    rows = []
    for record in records:
        moment, millis = split_time(record["timestamp"])
        quantities: Mapping[str, int] = record["quantities"]
        rows.append((
            record["event_id"], record["account_id"], moment, millis, record["product"],
            list(quantities), list(quantities.values()), record["requests"],
            to_money(record["cost"], "cost"), record["billed_period"], int(record["late"]),
            int(record["over_limit"]), record["billing_model"], record["tier"],
        ))
    return rows


def rows_for_account_state(
    events: Iterable[Mapping[str, Any]],
    positions: Iterable[tuple[int, int]] | None = None,
) -> list[Row]:
    """Output events -> rows in ``ACCOUNT_STATE_COLUMNS`` order.

    ``positions`` are the (Kafka partition, offset) each event was read from, which orders an
    account's snapshots; without them (a file, a test) the events' order stands in for offsets.
    """
    events = list(events)
    places: Sequence[tuple[int, int]] = (
        list(positions) if positions is not None else [(0, index) for index in range(len(events))]
    )
    if len(places) != len(events):
        raise ValueError(f"{len(events)} events but {len(places)} positions")
    rows = []
    for event, (partition, offset) in zip(events, places, strict=True):
        moment, millis = split_time(event["timestamp"])
        snapshot = event["snapshot"]
        auto_top_up = snapshot["auto_top_up"]
        rows.append((
            event["event_id"], event["account_id"], moment, millis, event["type"],
            event["cause_event_id"],
            *(_cell(kind, event.get(name), name) for name, kind in EVENT_FIELD_KINDS.items()),
            *(_cell(kind, snapshot.get(name), f"snapshot.{name}")
              for name, kind in SNAPSHOT_FIELD_KINDS.items()),
            *(_cell(kind, auto_top_up[name], f"snapshot.auto_top_up.{name}")
              for name, (_, kind) in _AUTO_TOP_UP_COLUMNS.items()),
            partition, offset,
        ))
    return rows


ACCOUNTS_CURRENT_TABLE = "accounts_current"
# The account-status record (``schemas/account_status.avsc``, :func:`billing.account_status.
# status_record`): the snapshot's fields under their own names (auto_top_up as three columns),
# then what the status adds. ``updated_at`` and ``version`` are mapped apart: the time is split
# like every timestamp, the version is the ReplacingMergeTree's version column.
_STATUS_AUTO_TOP_UP_COLUMNS = {
    name: (column.removeprefix("snapshot_"), kind)
    for name, (column, kind) in _AUTO_TOP_UP_COLUMNS.items()
}
STATUS_FIELD_KINDS: dict[str, str] = {
    **SNAPSHOT_FIELD_KINDS,
    "may_send": "bool",
    "blocked_reasons": "list[str]",
}
ACCOUNTS_CURRENT_COLUMNS: tuple[str, ...] = (
    "account_id",
    *STATUS_FIELD_KINDS,
    *(column for column, _ in _STATUS_AUTO_TOP_UP_COLUMNS.values()),
    "updated_at", "updated_at_ms", "version",
    "source_partition", "source_offset",
)


def rows_for_account_status(
    records: Iterable[Mapping[str, Any]],
    positions: Iterable[tuple[int, int]] | None = None,
) -> list[Row]:
    """Account-status records -> rows in ``ACCOUNTS_CURRENT_COLUMNS`` order.

    ``positions`` are the (Kafka partition, offset) each record was read from (kept for tracing a
    row back to its message; ``version``, not the offset, decides which row is current); without
    them the records' order stands in for offsets. A negative version is refused (the column is
    unsigned, and versions count offsets + 1).
    """
    records = list(records)
    places: Sequence[tuple[int, int]] = (
        list(positions) if positions is not None
        else [(0, index) for index in range(len(records))]
    )
    if len(places) != len(records):
        raise ValueError(f"{len(records)} records but {len(places)} positions")
    rows = []
    for record, (partition, offset) in zip(records, places, strict=True):
        moment, millis = split_time(record["updated_at"])
        version = int(record["version"])
        if version < 0:
            raise ValueError(f"version must be >= 0, got {version}")
        auto_top_up = record["auto_top_up"]
        rows.append((
            record["account_id"],
            *(_cell(kind, record.get(name), name) for name, kind in STATUS_FIELD_KINDS.items()),
            *(_cell(kind, auto_top_up[name], f"auto_top_up.{name}")
              for name, (_, kind) in _STATUS_AUTO_TOP_UP_COLUMNS.items()),
            moment, millis, version, partition, offset,
        ))
    return rows
