"""The migrations on the stack's Debian clickhouse-server 18.16: a fresh database gets every
migration, each recorded (the record is inserted as data, which 18.16 needs), and a second run
applies nothing; a database the old DDL created is adopted; every column of every table has a
comment either way."""

from __future__ import annotations

import uuid
from dataclasses import replace

import pytest

from runtime.settings import Settings
from sinks.clickhouse import DriverWriter, open_writer
from sinks.migrate import RECORD_TABLE
from sinks.sqlfiles import ddl_statements, load_migrations
from tests.test_sink_migrations import UNCOMMENTED_COLUMNS

pytestmark = pytest.mark.integration


def fresh_database(stack: Settings) -> DriverWriter:
    writer = open_writer(replace(stack, clickhouse_url=(
        f"clickhouse://127.0.0.1:{stack.clickhouse_port}/migrations_{uuid.uuid4().hex[:8]}")))
    assert isinstance(writer, DriverWriter)
    return writer


def test_fresh_database_then_an_idempotent_rerun(stack: Settings) -> None:
    migrations = load_migrations()
    with fresh_database(stack) as writer:
        assert writer.apply_ddl().lines() == [f"applied {m.name}" for m in migrations]
        assert writer.query("SELECT version()")[0][0].startswith("18.16")
        recorded = writer.query(f"SELECT version, name, checksum, adopted FROM {RECORD_TABLE} "
                                "ORDER BY version")
        assert recorded == [(m.version, m.name, m.checksum, 0) for m in migrations]
        assert writer.apply_ddl().lines() == [f"up to date: {len(migrations)} migrations"]
        assert len(writer.query(f"SELECT version FROM {RECORD_TABLE}")) == len(migrations)
        engines = dict(writer.query(
            "SELECT name, engine FROM system.tables WHERE database = currentDatabase()"))
        assert engines[RECORD_TABLE] == "MergeTree"
        assert engines["spend_monthly_mv"] == "MaterializedView"
        assert engines["invoices_status"] == "View"
        assert writer.query(UNCOMMENTED_COLUMNS) == []
        commented = writer.query("SELECT count() FROM system.columns WHERE database = "
                                 "currentDatabase() AND comment != ''")[0][0]
        assert commented > 100  # the check above looked at the tables' columns


def test_a_database_from_before_migrations_is_adopted(stack: Settings) -> None:
    with fresh_database(stack) as writer:
        writer._create_database()
        created_before = 7  # 001-007: the files apply_ddl ran before migrations were recorded
        for statement in ddl_statements():  # what apply_ddl did before migrations
            if int(statement.name[:3]) <= created_before:
                writer.execute(statement.sql)
        report = writer.apply_ddl()
        names = [m.name for m in load_migrations()]
        assert report.adopted == names[:created_before]
        assert report.applied == names[created_before:]
        assert writer.query(UNCOMMENTED_COLUMNS) == []
        assert writer.apply_ddl().steps == []
