"""The commands on an embedded chdb directory: sink migrate, sql, invoice, reconcile."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner, Result

from sinks.cli import invoice_command, reconcile_command, sink_group, sql_command
from sinks.display import exact_decimal, format_money
from sinks.sqlfiles import load_migrations
from tests.test_sink_samples import chdb_with_tables, ledger_run, store


@pytest.fixture
def chdb_dir(tmp_path: Path) -> Path:
    """A chdb directory holding the ledger run's tables (the writer is closed again)."""
    run = ledger_run()
    with chdb_with_tables(tmp_path / "chdb") as writer:
        store(writer, run.rated, run.outputs)
    return tmp_path / "chdb"


def invoke(command: object, chdb_dir: Path, *args: str) -> Result:
    return CliRunner().invoke(command, list(args),  # type: ignore[arg-type]
                              env={"BILLING_CLICKHOUSE_URL": f"chdb://{chdb_dir}"})


def test_migrate_prints_what_it_applied_then_is_up_to_date(tmp_path: Path) -> None:
    first = invoke(sink_group, tmp_path / "fresh", "migrate")
    assert first.exit_code == 0, first.output
    assert first.output.splitlines() == [f"applied {m.name}" for m in load_migrations()]
    assert first.output.splitlines()[2] == "applied 003_credit_purchases.sql"
    again = invoke(sink_group, tmp_path / "fresh", "migrate")
    assert again.exit_code == 0, again.output
    assert again.output.splitlines() == [f"up to date: {len(load_migrations())} migrations"]


def test_sql_prints_a_table(chdb_dir: Path) -> None:
    result = invoke(sql_command, chdb_dir, "SELECT count() AS events FROM rated_usage FINAL")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == "events"
    assert result.output.splitlines()[2].strip() == str(len(ledger_run().rated))


def test_sql_runs_a_documented_query_with_params(chdb_dir: Path) -> None:
    result = invoke(sql_command, chdb_dir, "--query", "top_accounts", "-p", "period=2026-01",
                    "-p", "limit=3")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0].split() == [
        "account_id", "billing_model", "events", "requests", "cost"]
    assert result.output.rstrip().endswith("(3 rows)")


def test_sql_reports_clickhouse_errors_cleanly(chdb_dir: Path) -> None:
    result = invoke(sql_command, chdb_dir, "SELECT * FROM no_such_table")
    assert result.exit_code == 1 and "no_such_table" in result.output


def test_invoice_prints_lines_credits_and_the_invoice(chdb_dir: Path) -> None:
    invoice = next(e for e in ledger_run().outputs if e["type"] == "invoice_issued")
    result = invoke(invoice_command, chdb_dir, invoice["account_id"], invoice["period"])
    assert result.exit_code == 0, result.output
    assert invoice["invoice_id"] in result.output
    assert format_money(invoice["amount"]) in result.output  # dollars to the cent
    assert "Usage charged to the month" in result.output and "Usage total: $" in result.output
    exact = invoke(invoice_command, chdb_dir, invoice["account_id"], invoice["period"], "--exact")
    assert exact.exit_code == 0, exact.output
    assert exact_decimal(invoice["amount"]) in exact.output and "$" not in exact.output


def test_invoice_rejects_a_bad_period(chdb_dir: Path) -> None:
    assert invoke(invoice_command, chdb_dir, "acct-1", "2026-13").exit_code == 2


def test_reconcile_exit_codes(chdb_dir: Path, tmp_path: Path) -> None:
    run = ledger_run()
    snapshots = tmp_path / "snapshots.json"
    snapshots.write_bytes(orjson.dumps(run.snapshots_json))
    events = tmp_path / "events.jsonl"
    events.write_bytes(run.events_jsonl)
    result = invoke(reconcile_command, chdb_dir, "--snapshots", str(snapshots),
                    "--events", str(events))
    assert result.exit_code == 0, result.output
    assert result.output.rstrip().endswith(": OK")

    account_id = sorted(run.snapshots_json)[0]
    tampered = {**run.snapshots_json, account_id: {**run.snapshots_json[account_id],
                                                   "lifetime_spend": "123456.000000"}}
    snapshots.write_bytes(orjson.dumps(tampered))
    result = invoke(reconcile_command, chdb_dir, "--snapshots", str(snapshots))
    assert result.exit_code == 1
    assert f"{account_id} lifetime_spend: ledger=123456.000000" in result.output
