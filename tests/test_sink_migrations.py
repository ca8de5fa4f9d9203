"""Numbered migrations on embedded chdb: applied in order and recorded, nothing the second time,
an edited or missing file refused with its name, an old database (tables, no record) adopted.

A test that needs other files than the shipped ones copies ``sinks/migrations`` to a temporary
directory and changes the copy."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

import pytest
from click.testing import CliRunner

from sinks.cli import sink_group
from sinks.clickhouse import ChdbWriter
from sinks.exceptions import ClickHouseError, MigrationError
from sinks.migrate import RECORD_COLUMNS, RECORD_TABLE, migrate
from sinks.sqlfiles import MigrationFileError, ddl_statements, load_migrations

SHIPPED = load_migrations()
NAMES = [migration.name for migration in SHIPPED]
TABLES = {"rated_usage", "account_state_events", "credit_purchases", "invoices", "tier_history",
          "spend_daily", "spend_monthly", "credit_purchases_mv", "invoices_mv",
          "tier_history_mv", "spend_daily_mv", "spend_monthly_mv", "accounts_current",
          "invoice_history", "invoice_history_mv", "invoices_status"}
# Columns without a comment in the tables of the current database (views have none to give:
# a materialized view's columns are its target table's, a plain view's are documented in its file).
UNCOMMENTED_COLUMNS = (
    "SELECT table, name FROM system.columns WHERE database = currentDatabase() AND comment = '' "
    "AND table IN (SELECT name FROM system.tables WHERE database = currentDatabase() "
    "AND engine LIKE '%MergeTree') ORDER BY table, name")


@pytest.fixture
def writer(tmp_path: Path) -> Iterator[ChdbWriter]:
    """An empty embedded database (no migration run)."""
    opened = ChdbWriter(tmp_path / "chdb")
    yield opened
    opened.close()


@pytest.fixture
def files(tmp_path: Path) -> Path:
    """A copy of the shipped migrations, to edit."""
    copy = tmp_path / "migrations"
    source = resources.files("sinks").joinpath("migrations")
    copy.mkdir()
    for entry in source.iterdir():
        if entry.name.endswith(".sql"):
            (copy / entry.name).write_bytes(entry.read_bytes())
    return copy


def record(writer: ChdbWriter) -> list[tuple[int, str, str, int]]:
    return [(int(version), name, checksum, int(adopted)) for version, name, checksum, adopted
            in writer.query(f"SELECT version, name, checksum, adopted FROM {RECORD_TABLE} "
                            "ORDER BY version")]


def tables(writer: ChdbWriter) -> set[str]:
    return {name for (name,) in writer.query(
        "SELECT name FROM system.tables WHERE database = currentDatabase()")}


CREATE_ONLY = 7  # 001-007 only create objects (what a database from before migrations has)
NEXT = f"{len(SHIPPED) + 1:03d}"  # the number a new file takes


def test_the_shipped_files_are_numbered_from_001_without_gaps() -> None:
    assert [migration.version for migration in SHIPPED] == list(range(1, len(SHIPPED) + 1))
    assert NAMES[0] == "001_rated_usage.sql" and NAMES[CREATE_ONLY - 1] == "007_spend_monthly.sql"


def test_a_fresh_database_gets_every_migration_in_order_each_recorded(writer: ChdbWriter) -> None:
    report = writer.apply_ddl()
    assert report.applied == NAMES and report.adopted == []
    assert report.lines() == [f"applied {name}" for name in NAMES]
    assert record(writer) == [(m.version, m.name, m.checksum, 0) for m in SHIPPED]
    assert tables(writer) == TABLES | {RECORD_TABLE}
    assert writer.query(UNCOMMENTED_COLUMNS) == []
    (applied_at,) = writer.query(f"SELECT min(applied_at) FROM {RECORD_TABLE}")[0]
    assert applied_at.tzinfo is not None


def test_a_second_run_applies_nothing(writer: ChdbWriter) -> None:
    writer.apply_ddl()
    again = writer.apply_ddl()
    assert again.steps == [] and again.lines() == [f"up to date: {len(SHIPPED)} migrations"]
    assert len(record(writer)) == len(SHIPPED)


def test_a_new_file_is_the_only_one_applied_and_may_alter(writer: ChdbWriter,
                                                          files: Path) -> None:
    migrate(writer, load_migrations(files))
    (files / f"{NEXT}_rated_usage_region.sql").write_text(
        "-- region: where the request was served (a change to a table: an ALTER).\n"
        "ALTER TABLE rated_usage ADD COLUMN region String DEFAULT '';\n")
    report = migrate(writer, load_migrations(files))
    assert report.lines() == [f"applied {NEXT}_rated_usage_region.sql"]
    assert ("region",) in writer.query(
        "SELECT name FROM system.columns WHERE database = currentDatabase() "
        "AND table = 'rated_usage'")
    assert migrate(writer, load_migrations(files)).lines() == [
        f"up to date: {len(SHIPPED) + 1} migrations"]


def test_an_applied_file_edited_in_place_is_refused_by_name(writer: ChdbWriter,
                                                            files: Path) -> None:
    migrate(writer, load_migrations(files))
    edited = files / "003_credit_purchases.sql"
    edited.write_text(edited.read_text().replace("receipt_url Nullable(String),",
                                                 "receipt_url String,", 1))
    (files / f"{NEXT}_later.sql").write_text("CREATE TABLE IF NOT EXISTS later (x UInt8)\n"
                                         "ENGINE = MergeTree ORDER BY x;\n")
    with pytest.raises(MigrationError, match=r"003_credit_purchases\.sql: edited after it was "
                                             r"applied") as refused:
        migrate(writer, load_migrations(files))
    assert "new numbered migration" in str(refused.value)
    assert "later" not in tables(writer)  # refused before anything ran
    assert len(record(writer)) == len(SHIPPED)


def test_a_recorded_version_without_its_file_is_refused_by_name(writer: ChdbWriter,
                                                                files: Path) -> None:
    (files / f"{NEXT}_later.sql").write_text("CREATE TABLE IF NOT EXISTS later (x UInt8)\n"
                                         "ENGINE = MergeTree ORDER BY x;\n")
    migrate(writer, load_migrations(files))
    with pytest.raises(MigrationError, match=rf"{NEXT}_later\.sql: recorded as applied \(version "
                                             rf"{NEXT}\) but there is no such file"):
        writer.apply_ddl()  # the shipped files: a release without it


def test_a_file_renamed_after_it_was_applied_is_refused(writer: ChdbWriter, files: Path) -> None:
    migrate(writer, load_migrations(files))
    (files / "002_account_state_events.sql").rename(files / "002_events.sql")
    with pytest.raises(MigrationError, match=r"002_events\.sql: version 002 was applied as "
                                             r"002_account_state_events\.sql"):
        migrate(writer, load_migrations(files))


def old_apply_ddl(writer: ChdbWriter, up_to: int = 7) -> None:
    """What ``apply_ddl`` did before migrations: every statement of every file, no record."""
    for statement in ddl_statements():
        if int(statement.name[:3]) <= up_to:
            writer.execute(statement.sql)


def test_a_database_from_before_migrations_is_adopted(writer: ChdbWriter) -> None:
    old_apply_ddl(writer)
    writer.execute("INSERT INTO rated_usage (event_id, account_id, timestamp, cost, "
                   "billed_period) SELECT 'e1', 'a1', toDateTime('2026-01-02 03:04:05', 'UTC'), "
                   "toDecimal64('1.5', 6), '2026-01'")
    report = writer.apply_ddl()
    assert report.adopted == NAMES[:CREATE_ONLY] and report.applied == NAMES[CREATE_ONLY:]
    assert report.lines()[0] == ("adopted 001_rated_usage.sql (its tables already existed, "
                                 "created before migrations were recorded)")
    assert record(writer) == [(m.version, m.name, m.checksum, int(m.version <= CREATE_ONLY))
                              for m in SHIPPED]
    assert writer.query("SELECT count() FROM rated_usage") == [(1,)]  # nothing recreated
    assert writer.query(UNCOMMENTED_COLUMNS) == []  # adopted tables got their comments too
    assert writer.apply_ddl().lines() == [f"up to date: {len(SHIPPED)} migrations"]


def test_an_older_database_adopts_what_it_has_and_applies_the_rest(writer: ChdbWriter) -> None:
    old_apply_ddl(writer, up_to=5)  # a release that had five files
    report = writer.apply_ddl()
    assert report.adopted == NAMES[:5] and report.applied == NAMES[5:]
    assert [adopted for *_, adopted in record(writer)] == [1] * 5 + [0] * (len(SHIPPED) - 5)


def test_a_half_created_file_is_applied_not_adopted(writer: ChdbWriter) -> None:
    """The old DDL stopped between a table and its view: the file runs again (idempotent)."""
    old_apply_ddl(writer, up_to=2)
    writer.execute(SHIPPED[2].statements[0].sql)  # credit_purchases without credit_purchases_mv
    report = writer.apply_ddl()
    assert report.adopted == NAMES[:2] and report.applied == NAMES[2:]
    assert "credit_purchases_mv" in tables(writer)


def test_a_failing_migration_names_its_statement_and_keeps_the_earlier_records(
        writer: ChdbWriter, files: Path) -> None:
    (files / f"{NEXT}_broken.sql").write_text("ALTER TABLE no_such_table ADD COLUMN x UInt8;\n")
    with pytest.raises(ClickHouseError, match=rf"{NEXT}_broken\.sql#1"):
        migrate(writer, load_migrations(files))
    assert [version for version, *_ in record(writer)] == list(range(1, len(SHIPPED) + 1))


@pytest.mark.parametrize(("names", "message"), [
    (["001_a.sql", "003_c.sql"], r"003_c\.sql: expected version 002"),
    (["001_a.sql", "001_b.sql"], r"001_b\.sql: expected version 002"),
    (["1_a.sql"], r"1_a\.sql: a migration is named NNN_name\.sql"),
    (["001_Upper.sql"], r"001_Upper\.sql: a migration is named"),
])
def test_file_names_are_a_sequence_without_gaps(tmp_path: Path, names: list[str],
                                                message: str) -> None:
    for name in names:
        (tmp_path / name).write_text("SELECT 1;\n")
    with pytest.raises(MigrationFileError, match=message):
        load_migrations(tmp_path)


def test_an_edit_to_a_comment_changes_the_checksum_but_line_endings_do_not(files: Path) -> None:
    target = files / "001_rated_usage.sql"
    text = target.read_text()
    target.write_bytes(text.replace("\n", "\r\n").encode())
    assert load_migrations(files)[0].checksum == SHIPPED[0].checksum
    target.write_text(text.replace("-- rated_usage:", "-- rated usage:", 1))
    assert load_migrations(files)[0].checksum != SHIPPED[0].checksum


def test_the_migrate_command_refuses_an_edited_file_by_name(tmp_path: Path) -> None:
    with ChdbWriter(tmp_path / "chdb") as opened:
        opened.apply_ddl()
        opened.execute(f"TRUNCATE TABLE {RECORD_TABLE}")  # 003 as if applied from another text
        opened.insert(RECORD_TABLE, RECORD_COLUMNS, [
            (m.version, m.name, "0" * 64 if m.version == 3 else m.checksum,
             datetime(2026, 1, 1, tzinfo=UTC), 0) for m in SHIPPED])
    result = CliRunner().invoke(sink_group, ["migrate"],
                                env={"BILLING_CLICKHOUSE_URL": f"chdb://{tmp_path / 'chdb'}"})
    assert result.exit_code == 1
    assert "003_credit_purchases.sql: edited after it was applied" in result.output
    assert "Traceback" not in result.output
