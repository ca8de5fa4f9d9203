"""``billing sql`` and ``billing invoice`` on chdb: their error paths (one line, exit 2 for usage,
1 for ClickHouse or an unknown account), the help listing the documented queries, and the CSV and
JSON forms, which must give back every stored amount exactly."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from commands.cli import main
from sinks.cli import invoice_command, sql_command
from sinks.clickhouse import ChdbWriter
from sinks.sqlfiles import load_query, load_query_file, query_info, query_names, query_params
from tests.test_sink_cli import invoke
from tests.test_sink_samples import chdb_with_tables, ledger_run, rated, store

EVENT_COSTS = ("SELECT event_id, cost, timestamp, timestamp_ms FROM rated_usage FINAL "
               "ORDER BY event_id")


@pytest.fixture(scope="module")
def chdb_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ledger run's tables in a chdb directory, once for the module (tests only read it)."""
    path = tmp_path_factory.mktemp("ledger") / "chdb"
    run = ledger_run()
    with chdb_with_tables(path) as writer:
        store(writer, run.rated, run.outputs)
    return path


def one_error_line(output: str) -> str:
    """The whole output is one ``Error: ...`` line (no usage banner, no traceback)."""
    assert "Traceback" not in output
    lines = output.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), output
    return lines[0]


def stdout(result: Result) -> str:
    """What the command wrote, line ends as written (``Result.output`` turns CRLF into LF)."""
    return result.stdout_bytes.decode("utf-8")


def no_float(text: str) -> Any:
    raise AssertionError(f"a JSON float: {text}")


# --- parameters -------------------------------------------------------------------------------

def test_no_parameters_names_the_first_missing_one_and_the_query(tmp_path: Path) -> None:
    result = invoke(sql_command, tmp_path / "chdb", "top_accounts")
    assert result.exit_code == 2
    assert one_error_line(result.output) == (
        "Error: query top_accounts needs -p period=VALUE (its parameters: period, limit)")
    assert not (tmp_path / "chdb").exists()  # refused before ClickHouse was opened


@pytest.mark.parametrize("args", [["top_accounts"], ["--query", "top_accounts"]])
def test_a_missing_parameter_is_one_line_exit_2(tmp_path: Path, args: list[str]) -> None:
    result = invoke(sql_command, tmp_path / "chdb", *args, "-p", "period=2026-01")
    assert result.exit_code == 2
    assert one_error_line(result.output) == (
        "Error: query top_accounts needs -p limit=VALUE (its parameters: period, limit)")


def test_an_unknown_parameter_is_named_with_the_query_parameters(tmp_path: Path) -> None:
    result = invoke(sql_command, tmp_path / "chdb", "top_accounts", "-p", "period=2026-01",
                    "-p", "limit=3", "-p", "acount_id=acct-1")
    assert result.exit_code == 2
    assert one_error_line(result.output) == (
        "Error: query top_accounts has no parameter 'acount_id' (its parameters: period, limit)")


def test_parameters_of_ad_hoc_sql_are_checked_the_same_way(tmp_path: Path) -> None:
    result = invoke(sql_command, tmp_path / "chdb", "SELECT %(x)s AS x")
    assert result.exit_code == 2
    assert one_error_line(result.output) == "Error: the SQL needs -p x=VALUE (its parameters: x)"
    result = invoke(sql_command, tmp_path / "chdb", "SELECT 1", "-p", "x=1")
    assert one_error_line(result.output) == (
        "Error: the SQL has no parameter 'x' (its parameters: none)")
    result = invoke(sql_command, tmp_path / "chdb", "SELECT %(x)s LIKE 'a%'", "-p", "x=1")
    assert result.exit_code == 2 and "a literal % must be written %%" in result.output


def test_a_parameter_given_twice_or_malformed_is_a_usage_error(tmp_path: Path) -> None:
    for pairs in (["-p", "period=2026-01", "-p", "period=2026-02"], ["-p", "period"]):
        result = invoke(sql_command, tmp_path / "chdb", "spend_by_tier", *pairs)
        assert result.exit_code == 2 and "Traceback" not in result.output


def test_only_ascii_digits_make_a_number(chdb_dir: Path) -> None:
    result = invoke(sql_command, chdb_dir, "SELECT toTypeName(%(a)s) AS a, toTypeName(%(b)s) AS b",
                    "-p", "a=12", "-p", "b=١٢", "--format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"a": "UInt8", "b": "String"}


def test_an_unknown_query_name_lists_the_known_ones(tmp_path: Path) -> None:
    result = invoke(sql_command, tmp_path / "chdb", "top_acounts")
    assert result.exit_code == 2
    line = one_error_line(result.output)
    assert line.startswith("Error: no documented query 'top_acounts'; known: ")
    assert all(name in line for name in query_names())


def test_neither_or_both_of_sql_and_query_is_a_usage_error(tmp_path: Path) -> None:
    assert invoke(sql_command, tmp_path / "chdb").exit_code == 2
    assert invoke(sql_command, tmp_path / "chdb", "SELECT 1", "--query", "spend_by_tier",
                  "-p", "period=2026-01").exit_code == 2


# --- help -------------------------------------------------------------------------------------

def test_help_lists_every_query_with_its_parameters_and_description() -> None:
    result = CliRunner().invoke(main, ["sql", "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    listing = result.output.split("Documented queries")[1]
    for name in query_names():
        info = query_info(name)
        assert info.description and info.params, name
        line = next(line for line in listing.splitlines() if line.strip().startswith(name + " "))
        assert info.description in line
        assert f"Parameters: {', '.join(info.params)}." in line
    assert query_info("top_accounts").params == ["period", "limit"]
    assert query_info("daily_spend").params == ["account_id", "first_day", "last_day"]


@pytest.mark.parametrize("name", query_names())
def test_each_query_header_documents_exactly_its_placeholders(name: str) -> None:
    """Line 1 of a query file is its one-line description, line 2 ``-- Params: a (hint), b.``"""
    header = load_query_file(name).splitlines()
    assert header[0].startswith("-- ") and len(header[0]) <= 100
    assert header[1].startswith("-- Params: ")
    documented = re.findall(r"\w+", re.sub(r"\([^)]*\)", "", header[1].removeprefix("-- Params:")))
    assert documented == query_params(load_query(name))


# --- ClickHouse errors and FORMAT ---------------------------------------------------------------

@pytest.mark.parametrize("sql", ["SELECT * FROM no_such_table", "SELEC 1",
                                 "SELECT throwIf(1, 'multi\nline')"])
def test_a_clickhouse_error_is_one_line_exit_1(chdb_dir: Path, sql: str) -> None:
    result = invoke(sql_command, chdb_dir, sql)
    assert result.exit_code == 1
    line = one_error_line(result.output)
    assert line.startswith(f"Error: ClickHouse at chdb://{chdb_dir}: Code: ")
    assert "DB::Exception" in line


@pytest.mark.parametrize("sql", ["SELECT 1 FORMAT CSV", "select 1 format JSONEachRow;",
                                 "SELECT 1\nFORMAT Parquet\n", "SELECT 1 FORMAT CSV SETTINGS a=1",
                                 "SELECT 1 FORMAT TSV -- a comment"])
def test_sql_with_a_format_clause_is_refused(tmp_path: Path, sql: str) -> None:
    result = invoke(sql_command, tmp_path / "chdb", sql)
    assert result.exit_code == 2
    assert one_error_line(result.output) == (
        "Error: remove the FORMAT clause: billing sql chooses the output format; "
        "use --format table|csv|json")


def test_format_in_a_string_or_as_a_column_name_is_not_a_clause(chdb_dir: Path) -> None:
    result = invoke(sql_command, chdb_dir, "SELECT 'x FORMAT CSV' AS format, 2 AS b -- FORMAT CSV",
                    "--format", "csv")
    assert result.exit_code == 0, result.output
    assert stdout(result) == "format,b\r\nx FORMAT CSV,2\r\n"


# --- formats ------------------------------------------------------------------------------------

def _expected_costs() -> dict[str, tuple[Decimal, datetime]]:
    return {record["event_id"]: (record["cost"], record["timestamp"])
            for record in ledger_run().rated}


def test_csv_gives_back_every_amount_and_time_exactly(chdb_dir: Path) -> None:
    result = invoke(sql_command, chdb_dir, EVENT_COSTS, "--format", "csv")
    assert result.exit_code == 0, result.output
    assert stdout(result).count("\r\n") == len(ledger_run().rated) + 1
    records = list(csv.reader(io.StringIO(stdout(result), newline="")))
    assert records[0] == ["event_id", "cost", "timestamp", "timestamp_ms"]
    expected = _expected_costs()
    assert len(records) - 1 == len(expected)
    for event_id, cost, timestamp, millis in records[1:]:
        assert re.fullmatch(r"\d+\.\d{6}", cost), cost
        assert Decimal(cost) == expected[event_id][0]
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", timestamp), timestamp
        stored = datetime.fromisoformat(timestamp).replace(microsecond=int(millis) * 1000)
        assert stored == expected[event_id][1]


def test_json_lines_give_back_every_amount_and_time_exactly(chdb_dir: Path) -> None:
    result = invoke(sql_command, chdb_dir, EVENT_COSTS, "--format", "json")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line, parse_float=no_float) for line in result.output.splitlines()]
    expected = _expected_costs()
    assert len(rows) == len(expected)
    for row in rows:
        assert list(row) == ["event_id", "cost", "timestamp", "timestamp_ms"]
        assert isinstance(row["cost"], str) and Decimal(row["cost"]) == expected[row["event_id"]][0]
        assert row["timestamp"].endswith("Z")
        stored = datetime.fromisoformat(row["timestamp"]).replace(
            microsecond=row["timestamp_ms"] * 1000)
        assert stored == expected[row["event_id"]][1]


def test_a_documented_query_in_every_format_agrees(chdb_dir: Path) -> None:
    args = ["top_accounts", "-p", "period=2026-01", "-p", "limit=5"]
    table = invoke(sql_command, chdb_dir, *args).output.splitlines()
    as_csv = list(csv.DictReader(io.StringIO(
        stdout(invoke(sql_command, chdb_dir, *args, "--format", "csv")), newline="")))
    as_json = [json.loads(line, parse_float=no_float) for line in
               invoke(sql_command, chdb_dir, *args, "--format", "json").output.splitlines()]
    assert len(as_csv) == len(as_json) == 5 and table[-1] == "(5 rows)"
    by_account: dict[str, Decimal] = {}
    for record in ledger_run().rated:
        if record["billed_period"] == "2026-01":
            account = record["account_id"]
            by_account[account] = by_account.get(account, Decimal(0)) + record["cost"]
    for line, from_csv, from_json in zip(table[2:-1], as_csv, as_json, strict=True):
        assert from_csv == {key: str(value) for key, value in from_json.items()}
        assert Decimal(from_json["cost"]) == by_account[from_json["account_id"]]
        assert line.split()[0] == from_json["account_id"] and line.split()[-1] == from_json["cost"]


def test_values_of_every_kind_in_csv_and_json(chdb_dir: Path) -> None:
    sql = ("SELECT toDecimal128('12345678901234567890.123456', 6) AS big, "
           "toDecimal64('0.1', 7) AS seven, 0.5 AS f, toDate('2026-01-02') AS d, "
           "toDateTime64('2026-01-01 00:00:00.123', 3, 'UTC') AS t, ['a', 'b,\"c\"'] AS l, "
           "CAST(NULL, 'Nullable(String)') AS n, true AS yes, 'two\nlines' AS s")
    as_json = json.loads(invoke(sql_command, chdb_dir, sql, "--format", "json").output,
                         parse_float=no_float)
    assert as_json == {"big": "12345678901234567890.123456", "seven": "0.1000000", "f": "0.5",
                       "d": "2026-01-02", "t": "2026-01-01T00:00:00.123Z", "l": ["a", 'b,"c"'],
                       "n": None, "yes": True, "s": "two\nlines"}
    (header, row) = csv.reader(io.StringIO(
        stdout(invoke(sql_command, chdb_dir, sql, "--format", "csv")), newline=""))
    assert dict(zip(header, row, strict=True)) == {
        "big": "12345678901234567890.123456", "seven": "0.1000000", "f": "0.5",
        "d": "2026-01-02", "t": "2026-01-01T00:00:00.123Z", "l": '["a", "b,\\"c\\""]', "n": "",
        "yes": "true", "s": "two\nlines"}


def test_no_rows_in_each_format(chdb_dir: Path) -> None:
    sql = "SELECT account_id, cost FROM rated_usage WHERE account_id = 'nobody'"
    assert invoke(sql_command, chdb_dir, sql, "--format", "json").output == ""
    assert stdout(invoke(sql_command, chdb_dir, sql, "--format", "csv")) == "account_id,cost\r\n"
    assert invoke(sql_command, chdb_dir, sql).output.rstrip().endswith("(0 rows)")


# --- invoice ------------------------------------------------------------------------------------

def test_invoice_for_an_unknown_account_exits_1(chdb_dir: Path) -> None:
    result = invoke(invoice_command, chdb_dir, "acct-nobody", "2026-01")
    assert result.exit_code == 1
    assert result.output == "Error: no such account: acct-nobody\n"


def test_invoice_for_a_known_account_and_an_empty_month_says_so(chdb_dir: Path) -> None:
    account_id = ledger_run().rated[0]["account_id"]
    result = invoke(invoice_command, chdb_dir, account_id, "2030-01")
    assert result.exit_code == 0, result.output
    assert result.output == (f"Account {account_id}, 2030-01\n\nNothing in 2030-01: no usage "
                             "charged, no credits or payments applied, no invoice.\n")


def test_invoice_of_an_account_with_only_account_state_rows_is_known(tmp_path: Path) -> None:
    event = next(e for e in ledger_run().outputs if e["type"] == "tier_changed")
    with chdb_with_tables(tmp_path / "chdb") as writer:
        store(writer, outputs=[event])
    result = invoke(invoice_command, tmp_path / "chdb", event["account_id"], "2029-12")
    assert result.exit_code == 0 and "Nothing in 2029-12" in result.output


def test_invoice_money_is_cents_with_thousands_and_the_total_is_exact(tmp_path: Path) -> None:
    """Lines round half to even for display; the total is summed exactly, then rounded: here
    $1,234.56 + $0.00 on the lines, $1,234.57 in total (1234.565 + 0.005 = 1234.570)."""
    with chdb_with_tables(tmp_path / "chdb") as writer:
        store(writer, [rated(1, cost="1234.565"), rated(2, cost="0.005", product="deepseek-v3")])
    result = invoke(invoice_command, tmp_path / "chdb", "acct-1", "2026-01")
    assert result.exit_code == 0, result.output
    assert re.search(r"^deepseek-v3 .* \$0\.00$", result.output, re.MULTILINE), result.output
    assert re.search(r"^llama-v3p1-8b .* \$1,234\.56$", result.output, re.MULTILINE)
    assert result.output.rstrip().endswith("Usage total: $1,234.57")
    exact = invoke(invoice_command, tmp_path / "chdb", "acct-1", "2026-01", "--exact")
    assert "1234.565000" in exact.output and "0.005000" in exact.output
    assert exact.output.rstrip().endswith("Usage total: 1234.570000")
    with chdb_with_tables(tmp_path / "chdb") as writer:  # display never changed a stored value
        assert writer.query("SELECT sum(cost) FROM rated_usage FINAL") == [(Decimal("1234.57"),)]


def test_invoice_clickhouse_errors_are_one_line(tmp_path: Path) -> None:
    with ChdbWriter(tmp_path / "chdb") as writer:  # a rated_usage the queries cannot read
        writer.execute("CREATE TABLE rated_usage (x UInt8) ENGINE = MergeTree ORDER BY x")
    result = invoke(invoice_command, tmp_path / "chdb", "acct-1", "2026-01")
    assert result.exit_code == 1
    assert one_error_line(result.output).startswith(f"Error: ClickHouse at chdb://{tmp_path}")
    # A migration failed on that table (006's view reads its columns): the command closed its
    # writer anyway, or chdb (one data directory per process) would refuse this one.
    assert "006_spend_daily.sql#2" in result.output
    with ChdbWriter(tmp_path / "another") as other:
        assert other.query("SELECT 1") == [(1,)]


def test_times_in_json_are_utc_with_z() -> None:
    from sinks.display import iso_time, json_value
    assert iso_time(datetime(2026, 1, 1, 12, tzinfo=UTC)) == "2026-01-01T12:00:00Z"
    assert iso_time(datetime(2026, 1, 1, 12, 0, 0, 1, tzinfo=UTC)) == "2026-01-01T12:00:00.000001Z"
    assert json_value(Decimal("0E-6")) == "0.000000"
