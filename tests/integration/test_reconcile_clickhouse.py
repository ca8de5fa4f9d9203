"""`billing reconcile` on the stack's Debian clickhouse-server 18.16: zero difference on the
ledger's own output, then one credit row deleted (a mutation) and the command exits 1 naming the
account and the money figure. The money queries (sumIf over Nullable ids, FINAL, Decimal
arithmetic) run here on the oldest server the project supports."""

from __future__ import annotations

import time
import uuid
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner, Result

from runtime.settings import Settings
from sinks.cli import reconcile_command
from sinks.clickhouse import DriverWriter, open_writer
from tests.test_sink_samples import ledger_run, store

pytestmark = pytest.mark.integration


def run_reconcile(url: str, snapshots: Path, events: Path) -> Result:
    return CliRunner().invoke(reconcile_command, ["--snapshots", str(snapshots),
                                                  "--events", str(events)],
                              env={"BILLING_CLICKHOUSE_URL": url})


def test_reconcile_finds_a_deleted_credit_row(stack: Settings, tmp_path: Path) -> None:
    url = f"clickhouse://127.0.0.1:{stack.clickhouse_port}/reconcile_{uuid.uuid4().hex[:8]}"
    run = ledger_run()
    snapshots = tmp_path / "snapshots.json"
    snapshots.write_bytes(orjson.dumps(run.snapshots_json))
    events = tmp_path / "events.jsonl"
    events.write_bytes(run.events_jsonl)
    victim = next(event for event in run.outputs
                  if event["type"] == "credits_applied" and event["invoice_id"] is None)
    account_id = victim["account_id"]

    with open_writer(replace(stack, clickhouse_url=url)) as writer:
        assert isinstance(writer, DriverWriter)
        writer.apply_ddl()
        store(writer, run.rated, run.outputs)

        result = run_reconcile(url, snapshots, events)
        assert result.exit_code == 0, result.output
        assert result.output.rstrip().endswith(": OK")

        # One credit row gone from the table the credit figures come from (a mutation on 18.16).
        params = {"id": victim["event_id"]}
        writer.query("ALTER TABLE credit_purchases DELETE WHERE event_id = %(id)s", params)
        deadline = time.monotonic() + 60
        while writer.query("SELECT count() FROM credit_purchases WHERE event_id = %(id)s",
                           params) != [(0,)]:
            assert time.monotonic() < deadline, "the mutation did not finish in 60 s"
            time.sleep(0.2)

    result = run_reconcile(url, snapshots, events)
    assert result.exit_code == 1, result.output
    purchased = Decimal(run.snapshots_json[account_id]["lifetime_credits_purchased"])
    lines = result.output.splitlines()
    assert (f"{account_id} lifetime_credits_purchased: ledger={purchased} "
            f"clickhouse={purchased - victim['amount']} diff=-{victim['amount']}") in lines
    named = {line.split(":")[0] for line in lines[:-1]}
    assert named == {
        f"{account_id} lifetime_credits_purchased",
        f"{account_id} credits_purchased (events)",
        f"{account_id} credits_purchased (credit_purchases view)",
        f"{account_id} credit_balance - outstanding_balance "
        "(free credit + purchases + invoice payments - spend)",
    }
    assert lines[-1].endswith("4 difference(s)")
