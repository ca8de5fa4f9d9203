"""``billing sink migrate --cluster``: the migrations rendered for a replicated, sharded cluster.

There is no ZooKeeper and no multi-server ClickHouse here, so these check the rendered SQL: it is
the single-server schema with only names, ``ON CLUSTER`` and engines changed, every object the
plain DDL creates exists under the same name (so the plain DDL other commands run is a no-op),
views stay on their shard, and every statement parses (current ClickHouse, through chdb).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from click.testing import CliRunner

from sinks import cli
from sinks.clickhouse import ClickHouseWriter, Rows, Sets
from sinks.cluster import cluster_statements, record_table_statement
from sinks.migrate import RECORD_COLUMNS, RECORD_TABLE
from sinks.sqlfiles import Statement, ddl_statements, load_migrations

CLUSTER, DATABASE = "billing_cluster", "analytics"
ALL_RENDERED = cluster_statements(CLUSTER, DATABASE)
RECORD = record_table_statement(CLUSTER, DATABASE)
ALL_PLAIN = ddl_statements()
# What creates objects, and the changes to them (ALTER TABLE ... ADD/COMMENT COLUMN) apart.
PLAIN = [statement for statement in ALL_PLAIN if statement.sql.startswith("CREATE")]
RENDERED = [statement for statement in ALL_RENDERED if statement.sql.startswith("CREATE")]
ALTERS = [statement for statement in ALL_RENDERED if statement.sql.startswith("ALTER")]
CREATED = re.compile(r"^CREATE (?:TABLE|MATERIALIZED VIEW|VIEW|DATABASE) IF NOT EXISTS (\S+) "
                     rf"ON CLUSTER {CLUSTER}\b")


def _created(sql: str) -> str:
    match = CREATED.match(sql)
    assert match, f"not created ON CLUSTER {CLUSTER}: {sql[:80]!r}"
    return match[1]


def test_every_statement_runs_on_the_cluster_and_qualifies_its_names() -> None:
    names = [_created(statement.sql) for statement in RENDERED]
    assert names[0] == DATABASE
    assert all(name.startswith(f"{DATABASE}.") for name in names[1:])


def test_plain_objects_keep_their_names_so_the_plain_ddl_finds_them() -> None:
    plain = {re.match(r"^CREATE \w+(?: VIEW)? IF NOT EXISTS (\w+)", s.sql)[1] for s in PLAIN}
    tables = {s.sql.split()[5] for s in PLAIN if s.sql.startswith("CREATE TABLE")}
    rendered = {_created(s.sql).removeprefix(f"{DATABASE}.") for s in RENDERED[1:]}
    assert rendered == plain | {f"{name}_local" for name in tables}


def test_local_tables_are_the_plain_tables_with_a_replicated_engine() -> None:
    rendered = {statement.name: statement.sql for statement in RENDERED}
    for statement in PLAIN:
        if not statement.sql.startswith("CREATE TABLE"):
            continue
        table = statement.sql.split()[5]
        local = rendered[statement.name]
        # The engine's own arguments (accounts_current's version column) follow the path.
        engine, arguments = re.search(r"ENGINE = (\w+)(?:\((.*?)\))?", statement.sql).groups()
        path = f"'/clickhouse/tables/{{shard}}/{DATABASE}.{table}_local', '{{replica}}'"
        replicated = f"{path}, {arguments}" if arguments else path
        plain = f"{engine}({arguments})" if arguments else engine
        assert f"ENGINE = Replicated{engine}({replicated})" in local
        assert local.replace(f"Replicated{engine}({replicated})", plain).replace(
            f"{DATABASE}.{table}_local ON CLUSTER {CLUSTER}", table) == statement.sql


def test_each_table_has_a_distributed_table_sharded_by_account() -> None:
    distributed = [s for s in RENDERED if s.name.endswith(":distributed")]
    tables = [s.sql.split()[5] for s in PLAIN if s.sql.startswith("CREATE TABLE")]
    assert [s.sql for s in distributed] == [
        f"CREATE TABLE IF NOT EXISTS {DATABASE}.{table} ON CLUSTER {CLUSTER} AS "
        f"{DATABASE}.{table}_local\nENGINE = Distributed({CLUSTER}, {DATABASE}, "
        f"{table}_local, cityHash64(account_id))" for table in tables]
    order = [s.name for s in RENDERED]
    for statement in distributed:  # right after its local table
        assert order.index(statement.name) == order.index(statement.name.split(":")[0]) + 1


def test_views_read_and_write_the_local_tables_of_their_shard() -> None:
    views = [s.sql for s in RENDERED if "MATERIALIZED VIEW" in s.sql]
    assert len(views) == sum("MATERIALIZED VIEW" in s.sql for s in PLAIN) == 6
    for sql in views:
        target = re.search(r" TO (\S+) AS", sql)[1]
        source = re.search(r"\bFROM (\S+)", sql)[1]
        assert target.endswith("_local") and source.endswith("_local"), sql
        assert target.startswith(f"{DATABASE}.") and source.startswith(f"{DATABASE}.")


def test_names_that_are_not_plain_identifiers_are_refused() -> None:
    with pytest.raises(ValueError, match="cluster name"):
        cluster_statements("prod; DROP", DATABASE)
    with pytest.raises(ValueError, match="database name"):
        cluster_statements(CLUSTER, "my-db")


def test_a_migration_the_renderer_does_not_know_is_refused() -> None:
    drop = Statement("099_region.sql#1", "ALTER TABLE rated_usage DROP COLUMN region")
    with pytest.raises(ValueError, match=r"099_region\.sql#1: not a CREATE TABLE, VIEW, "
                                         r"MATERIALIZED VIEW, INSERT \.\.\. SELECT or ALTER "
                                         r"TABLE \.\.\. ADD COLUMN / COMMENT COLUMN"):
        cluster_statements(CLUSTER, DATABASE, [*PLAIN, drop])


def test_a_new_column_goes_on_the_local_table_then_on_its_distributed_table() -> None:
    add = Statement("099_region.sql#1", "ALTER TABLE rated_usage ADD COLUMN region String")
    rendered = cluster_statements(CLUSTER, DATABASE, [*PLAIN, add])[-2:]
    assert [statement.sql for statement in rendered] == [
        f"ALTER TABLE {DATABASE}.rated_usage_local ON CLUSTER {CLUSTER} ADD COLUMN region String",
        f"ALTER TABLE {DATABASE}.rated_usage ON CLUSTER {CLUSTER} ADD COLUMN region String"]
    record_alters = sum(s.sql.startswith(f"ALTER TABLE {RECORD_TABLE}") for s in ALL_PLAIN)
    assert len(ALTERS) == 2 * sum(s.sql.startswith("ALTER") for s in ALL_PLAIN) - record_alters


def test_a_plain_view_reads_the_distributed_tables_of_every_shard() -> None:
    (view,) = [s.sql for s in RENDERED if s.sql.startswith("CREATE VIEW")]
    assert view.startswith(f"CREATE VIEW IF NOT EXISTS {DATABASE}.invoices_status ON CLUSTER "
                           f"{CLUSTER} AS")
    assert f"FROM {DATABASE}.invoice_history FINAL" in view and "_local" not in view


def test_a_backfill_runs_once_through_the_distributed_tables() -> None:
    (insert,) = [s.sql for s in ALL_RENDERED if s.sql.startswith("INSERT")]
    assert insert == (f"INSERT INTO {DATABASE}.account_state_events\nSELECT * FROM "
                      f"{DATABASE}.account_state_events WHERE type IN ('invoice_issued', "
                      "'invoice_settled')")


def test_comments_go_on_the_local_and_distributed_tables_and_once_on_the_record() -> None:
    comment = Statement("099_c.sql#1", "ALTER TABLE rated_usage\n    COMMENT COLUMN cost 'USD'")
    record = Statement("099_c.sql#2", f"ALTER TABLE {RECORD_TABLE} COMMENT COLUMN name 'file'")
    rendered = cluster_statements(CLUSTER, DATABASE, [*PLAIN, comment, record])[-3:]
    assert [(statement.name, statement.sql) for statement in rendered] == [
        ("099_c.sql#1", f"ALTER TABLE {DATABASE}.rated_usage_local ON CLUSTER {CLUSTER} "
                        "COMMENT COLUMN cost 'USD'"),
        ("099_c.sql#1:distributed", f"ALTER TABLE {DATABASE}.rated_usage ON CLUSTER {CLUSTER} "
                                    "COMMENT COLUMN cost 'USD'"),
        ("099_c.sql#2", f"ALTER TABLE {DATABASE}.{RECORD_TABLE} ON CLUSTER {CLUSTER} "
                        "COMMENT COLUMN name 'file'")]


def test_every_statement_parses() -> None:
    """EXPLAIN AST parses without executing (no cluster here). In a child process, because chdb
    allows one data directory per process and other tests hold one open."""
    program = ("import chdb, json, sys\n"
               "for sql in json.load(sys.stdin):\n"
               "    chdb.query('EXPLAIN AST ' + sql, 'CSV')\n")
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                            input=json.dumps([s.sql for s in [*ALL_RENDERED, RECORD]]),
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def test_the_record_of_migrations_is_one_replicated_table_on_every_server() -> None:
    assert RECORD.sql.startswith(f"CREATE TABLE IF NOT EXISTS {DATABASE}.{RECORD_TABLE} "
                                 f"ON CLUSTER {CLUSTER}")
    path = f"'/clickhouse/tables/all/{DATABASE}.{RECORD_TABLE}', '{{replica}}'"  # not {shard}
    assert f"ENGINE = ReplicatedMergeTree({path})" in RECORD.sql


class RecordingWriter(ClickHouseWriter):
    """Records the statements it is asked to run and the rows inserted; a fresh cluster (no
    table, nothing recorded)."""

    def __init__(self) -> None:
        self.executed: list[str] = []
        self.inserted: list[tuple[str, Sequence[str], Sequence[Any]]] = []

    def query_with_names(self, sql: str, params: Mapping[str, Any] | None = None, *,
                         sets: Sets | None = None) -> tuple[list[str], Rows]:
        assert RECORD_TABLE in sql or "system.tables" in sql, sql
        return [], []

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> int:
        self.inserted += [(table, columns, row) for row in rows]
        return len(rows)

    def execute(self, sql: str) -> None:
        self.executed.append(sql)

    def close(self) -> None:
        pass

    def _create_database(self) -> None:
        self.executed.append("local database")


def test_migrate_cluster_runs_the_rendered_ddl_on_the_configured_database(
        monkeypatch: pytest.MonkeyPatch) -> None:
    writer = RecordingWriter()
    monkeypatch.setattr(cli, "open_writer", lambda settings: writer)
    result = CliRunner().invoke(cli.sink_group, ["migrate", "--cluster", CLUSTER], env={
        "BILLING_CLICKHOUSE_URL": f"clickhouse://ch-1.internal:9000/{DATABASE}"})
    assert result.exit_code == 0, result.output
    assert writer.executed == ["local database", ALL_RENDERED[0].sql, RECORD.sql,
                               *(s.sql for s in ALL_RENDERED[1:])]
    migrations = load_migrations()
    assert [(table, columns, row[:3]) for table, columns, row in writer.inserted] == [
        (RECORD_TABLE, RECORD_COLUMNS, (m.version, m.name, m.checksum)) for m in migrations]
    assert result.output.splitlines() == [f"applied {m.name}" for m in migrations]


def test_migrate_cluster_needs_a_server() -> None:
    result = CliRunner().invoke(cli.sink_group, ["migrate", "--cluster", CLUSTER],
                                env={"BILLING_CLICKHOUSE_URL": "chdb:///tmp/nowhere"})
    assert result.exit_code == 2
    assert "a cluster needs a server: set BILLING_CLICKHOUSE_URL=clickhouse://" in result.output
