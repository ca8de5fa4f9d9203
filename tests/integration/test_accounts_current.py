"""accounts_current end to end: a generated workload through the real broker, the worker (which
publishes billing.account-status) and the sink into the Debian clickhouse-server 18.16; read with
FINAL, the table holds one row per account, equal to ``billing replay``'s final snapshot, money
exact, with may_send and blocked_reasons following the status."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from billing.account_status import status_record
from billing.events import SNAPSHOT_FIELDS, normalize_input
from devkit.workload import generate
from runtime.settings import Settings
from sinks.clickhouse import open_writer
from sinks.rows import ACCOUNTS_CURRENT_COLUMNS
from tests.integration.pipeline import (
    WorkerProcess,
    in_merge_order,
    isolated,
    publish,
    replay_of,
    sink_into_clickhouse,
)

pytestmark = pytest.mark.integration

ACCOUNTS, EVENTS = 200, 6_000
AUTO_TOP_UP = {"auto_top_up_enabled": "enabled",
               "auto_top_up_minimum_balance": "minimum_balance",
               "auto_top_up_amount": "top_up_amount"}


def as_snapshot(row: dict[str, Any]) -> dict[str, Any]:
    """An accounts_current row back in the snapshot's form (``SNAPSHOT_FIELDS``)."""
    snapshot = {name: row[name] for name in SNAPSHOT_FIELDS if name in row}
    snapshot["has_payment_method"] = bool(row["has_payment_method"])
    snapshot["auto_top_up"] = {field: row[column] for column, field in AUTO_TOP_UP.items()}
    snapshot["auto_top_up"]["enabled"] = bool(snapshot["auto_top_up"]["enabled"])
    return snapshot


def test_accounts_current_is_the_replay_snapshot_of_every_account(stack: Settings,
                                                                  tmp_path: Path) -> None:
    settings, app_id = isolated(stack, "current")
    events = in_merge_order([normalize_input(event) for event in generate(
        accounts=ACCOUNTS, events=EVENTS, seed=31, start=datetime(2026, 1, 1, tzinfo=UTC))])
    snapshots, _ = replay_of(events)
    publish(settings, events)
    WorkerProcess(settings, app_id, tmp_path / "worker.log").run_to_end(timeout=600)

    with open_writer(sink_into_clickhouse(settings, app_id)) as writer:
        names, rows = writer.query_with_names(
            f"SELECT {', '.join(ACCOUNTS_CURRENT_COLUMNS)} FROM accounts_current FINAL")
        ((stored, accounts),) = writer.query(
            "SELECT count(), uniqExact(account_id) FROM accounts_current FINAL")
    current = {row["account_id"]: row for row in (dict(zip(names, values, strict=True))
                                                  for values in rows)}
    assert stored == accounts == len(snapshots) and set(current) == set(snapshots)
    differing = [key for key, snapshot in snapshots.items()
                 if as_snapshot(current[key]) != snapshot]
    assert not differing, (f"{len(differing)} accounts differ, e.g. {differing[0]}: "
                           f"ClickHouse {as_snapshot(current[differing[0]])} "
                           f"replay {snapshots[differing[0]]}")
    for key, snapshot in snapshots.items():
        row = current[key]
        expected = status_record(snapshot, row["updated_at"], row["version"])
        assert (bool(row["may_send"]), row["blocked_reasons"]) == (
            expected["may_send"], expected["blocked_reasons"]), key
        assert row["version"] > 0
        assert all(isinstance(row[name], Decimal) for name in (
            "credit_balance", "outstanding_balance", "lifetime_spend"))
    # A workload that exercises the table: some accounts blocked, some spending.
    assert any(not row["may_send"] for row in current.values())
    assert sum(row["lifetime_spend"] for row in current.values()) > 0
