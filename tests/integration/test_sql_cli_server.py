"""``billing sql`` and ``billing invoice`` on the stack's clickhouse-server 18.16 (the driver):
the server's multi-line error is one line, the new ``account_activity`` query runs, and CSV and
JSON give back money exactly as on chdb."""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections.abc import Iterator
from decimal import Decimal

import pytest
from click.testing import CliRunner, Result

from runtime.settings import Settings, load_settings
from sinks.cli import invoice_command, sql_command
from sinks.clickhouse import DriverWriter, open_writer
from tests.test_sink_samples import ledger_run, store

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server_env(stack: Settings, stack_env: dict[str, str]) -> Iterator[dict[str, str]]:
    """The stack's variables with a database of this module's own, filled with the ledger run."""
    env = {**stack_env, "BILLING_CLICKHOUSE_URL": (f"clickhouse://127.0.0.1:"
                                                   f"{stack.clickhouse_port}/sqlcli_"
                                                   f"{uuid.uuid4().hex[:8]}")}
    run = ledger_run()
    with open_writer(load_settings(env)) as writer:
        assert isinstance(writer, DriverWriter)
        writer.apply_ddl()
        store(writer, run.rated, run.outputs)
    yield env


def invoke(env: dict[str, str], command: object, *args: str) -> Result:
    return CliRunner().invoke(command, list(args), env=env)  # type: ignore[arg-type]


def test_a_server_error_is_one_line(server_env: dict[str, str]) -> None:
    result = invoke(server_env, sql_command, "SELECT * FROM no_such_table")
    assert result.exit_code == 1
    assert "Traceback" not in result.output and "Stack trace" not in result.output
    (line,) = result.output.splitlines()
    assert line.startswith("Error: ClickHouse at clickhouse://") and "no_such_table" in line


def test_account_activity_and_invoice_on_the_server(server_env: dict[str, str]) -> None:
    invoice = next(e for e in ledger_run().outputs if e["type"] == "invoice_issued")
    result = invoke(server_env, sql_command, "account_activity", "-p",
                    f"account_id={invoice['account_id']}", "--format", "json")
    assert result.exit_code == 0, result.output
    assert {row["source"] for row in map(json.loads, result.output.splitlines())} == {
        "rated_usage", "account_state_events"}
    result = invoke(server_env, invoice_command, invoice["account_id"], invoice["period"])
    assert result.exit_code == 0, result.output
    assert "$" in result.output and invoice["invoice_id"] in result.output
    result = invoke(server_env, invoice_command, "acct-nobody", "2026-01")
    assert (result.exit_code, result.output) == (1, "Error: no such account: acct-nobody\n")


def test_csv_and_json_money_is_exact_on_the_server(server_env: dict[str, str]) -> None:
    sql = "SELECT event_id, cost FROM rated_usage FINAL ORDER BY event_id"
    expected = {record["event_id"]: record["cost"] for record in ledger_run().rated}
    as_csv = invoke(server_env, sql_command, sql, "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout_bytes.decode(), newline="")))
    assert {row["event_id"]: Decimal(row["cost"]) for row in rows} == expected
    assert all(len(row["cost"].split(".")[1]) == 6 for row in rows)  # the driver's 1.5 padded
    as_json = invoke(server_env, sql_command, sql, "--format", "json")
    objects = [json.loads(line) for line in as_json.output.splitlines()]
    assert {row["event_id"]: Decimal(row["cost"]) for row in objects} == expected
