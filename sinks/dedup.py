"""Keep duplicates out of the inserts that feed summing rollups.

ReplacingMergeTree + ``FINAL`` already shows every event once, however often it was inserted. The
materialized views that roll rated_usage up into spend_daily and spend_monthly cannot: they sum
each inserted block, so a redelivered event would be counted again there. Before inserting, the
sink therefore drops (1) repeats of an event_id within the batch and (2) rated usage events that
rated_usage already holds, which is what a restart after "inserted but not committed" redelivers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sinks.clickhouse import ClickHouseWriter
from sinks.rows import ACCOUNTS_CURRENT_COLUMNS, RATED_USAGE_COLUMNS, RATED_USAGE_TABLE

_EVENT_ID = RATED_USAGE_COLUMNS.index("event_id")
_ACCOUNT_ID = RATED_USAGE_COLUMNS.index("account_id")
_TIMESTAMP = RATED_USAGE_COLUMNS.index("timestamp")
_STATUS_ACCOUNT = ACCOUNTS_CURRENT_COLUMNS.index("account_id")
_STATUS_VERSION = ACCOUNTS_CURRENT_COLUMNS.index("version")

# The primary key (account_id, timestamp, event_id) and the monthly partitions bound the read to
# the batch's accounts and time range, so the check costs the same on a day-old or a year-old
# table. The batch's ids and accounts go as sets (tables sent as data), not as SQL literals.
STORED_EVENT_IDS_SQL = f"""
SELECT event_id
FROM {RATED_USAGE_TABLE}
WHERE account_id IN batch_account_ids
  AND timestamp >= toDateTime(%(first)s)
  AND timestamp <= toDateTime(%(last)s)
  AND event_id IN batch_event_ids
"""


def first_of_each_event(rows: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Rows with an event_id already seen earlier in ``rows`` removed (event_id is column 0 of
    every table the sink writes)."""
    seen: set[str] = set()
    unique = []
    for row in rows:
        if row[0] not in seen:
            seen.add(row[0])
            unique.append(row)
    return unique


def latest_of_each_account(rows: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """accounts_current rows: per account, only the one with the largest version (the last of
    equal versions, as ReplacingMergeTree keeps), in first-seen account order. Fewer rows only:
    the table collapses older versions under ``FINAL`` anyway, whatever order they arrive in."""
    latest: dict[str, tuple[Any, ...]] = {}
    for row in rows:
        held = latest.get(row[_STATUS_ACCOUNT])
        if held is None or row[_STATUS_VERSION] >= held[_STATUS_VERSION]:
            latest[row[_STATUS_ACCOUNT]] = row
    return list(latest.values())


def new_rated_usage(writer: ClickHouseWriter,
                    rows: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """``rows`` (rated_usage rows) minus within-batch repeats and events already stored."""
    unique = first_of_each_event(rows)
    if not unique:
        return unique
    times = [int(row[_TIMESTAMP].timestamp()) for row in unique]
    stored = {
        event_id for (event_id,) in writer.query(
            STORED_EVENT_IDS_SQL, {"first": min(times), "last": max(times)},
            sets={"batch_account_ids": sorted({row[_ACCOUNT_ID] for row in unique}),
                  "batch_event_ids": [row[_EVENT_ID] for row in unique]})
    }
    return [row for row in unique if row[_EVENT_ID] not in stored]
