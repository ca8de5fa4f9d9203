"""The migrations for a replicated, sharded ClickHouse cluster, rendered from the single-server
files.

``sinks/migrations/*.sql`` stay the one schema. For a cluster, ``billing sink migrate --cluster
NAME`` runs them (``sinks.migrate``) rendered here, each ``ON CLUSTER NAME``:

- every table ``T`` becomes ``T_local`` with the ``Replicated`` form of its engine (one copy per
  replica of a shard, kept in step through ZooKeeper / ClickHouse Keeper, path from the servers'
  ``{shard}`` and ``{replica}`` macros);
- a ``Distributed`` table under the original name ``T`` spans the shards, sharded by
  ``cityHash64(account_id)``, so the sink, the queries and reconciliation keep their table names;
- materialized views keep their names and read and write the ``_local`` tables: each shard rolls
  up the rows it holds;
- plain views (``invoices_status``) keep their names and read the Distributed tables: a query on
  any server sees every shard;
- ``ALTER TABLE T ADD COLUMN`` / ``COMMENT COLUMN`` changes ``T_local`` then ``T``; on the record
  of migrations (not sharded) it is one statement;
- ``INSERT INTO T SELECT ... FROM T`` (a backfill) runs once, from the server the command talks to,
  through the Distributed tables (not ``ON CLUSTER``: it would run once per server).

Sharding by account keeps every copy of an event, and everything an account owns, on one shard,
so ``FINAL`` (which collapses duplicates within a shard only) and the per-account queries stay
exact through the Distributed tables. Objects keep the names the plain files create, so another
command starting on any server with an unrecorded database adopts them instead of creating
unreplicated twins.

The record of applied migrations (``schema_migrations``) is one replicated table with the same
ZooKeeper path on every server, not per shard: every server holds the whole record, so any command
on any server sees what ``--cluster`` applied.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from runtime.clickhouse import server_target
from runtime.settings import Settings
from sinks.migrate import RECORD_TABLE, RECORD_TABLE_SQL
from sinks.sqlfiles import Migration, Statement, ddl_statements, load_migrations

LOCAL_SUFFIX = "_local"
SHARDING_KEY = "cityHash64(account_id)"
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CREATE_TABLE = re.compile(r"^CREATE TABLE IF NOT EXISTS (\w+)")
_CREATE_VIEW = re.compile(r"^CREATE (MATERIALIZED VIEW|VIEW) IF NOT EXISTS (\w+)")
_INSERT_SELECT = re.compile(r"^INSERT INTO \w+\s+SELECT\b")
_ALTER_COLUMN = re.compile(r"^ALTER TABLE (\w+)\s+((?:ADD|COMMENT) COLUMN .+)$", re.S)
_ENGINE = re.compile(r"\bENGINE = (\w*MergeTree)\b(?:\((.*?)\))?")


def replication_path(database: str, table: str) -> str:
    """The table's ZooKeeper path: one per shard, shared by that shard's replicas."""
    return f"/clickhouse/tables/{{shard}}/{database}.{table}"


@dataclass(frozen=True)
class ClusterLayout:
    """The :class:`sinks.migrate.Layout` of a cluster: database and record table ``ON CLUSTER``,
    each migration's statements rendered (all rendered up front, so a file that cannot be
    rendered is refused before anything runs)."""

    cluster: str
    database: str
    rendered: dict[str, list[Statement]]  # migration file name -> its statements, rendered

    def setup(self) -> list[Statement]:
        return [database_statement(self.cluster, self.database),
                record_table_statement(self.cluster, self.database)]

    def render(self, migration: Migration) -> Sequence[Statement]:
        return self.rendered[migration.name]


def cluster_layout(settings: Settings, cluster: str,
                   migrations: Sequence[Migration] | None = None) -> ClusterLayout:
    """The :class:`ClusterLayout` for the database of ``BILLING_CLICKHOUSE_URL``, which must
    name a server (``clickhouse://``): embedded chdb has no cluster."""
    target = server_target(settings)
    if target is None:
        raise ValueError("a cluster needs a server: set BILLING_CLICKHOUSE_URL="
                         "clickhouse://host:port/database (one of the cluster's servers)")
    migrations = load_migrations() if migrations is None else migrations
    statements = [statement for migration in migrations for statement in migration.statements]
    rendered: dict[str, list[Statement]] = {migration.name: [] for migration in migrations}
    for statement in cluster_statements(cluster, target.database, statements)[1:]:
        rendered[statement.name.split("#")[0]].append(statement)
    return ClusterLayout(cluster, target.database, rendered)


def database_statement(cluster: str, database: str) -> Statement:
    """The database on every server, before anything is created in it."""
    return Statement("database", f"CREATE DATABASE IF NOT EXISTS {database} ON CLUSTER {cluster}")


def record_table_statement(cluster: str, database: str) -> Statement:
    """``schema_migrations`` replicated on every server of the cluster (one path for all)."""
    path = f"'/clickhouse/tables/all/{database}.{RECORD_TABLE}', '{{replica}}'"
    sql = RECORD_TABLE_SQL.replace(
        f"EXISTS {RECORD_TABLE}", f"EXISTS {database}.{RECORD_TABLE} ON CLUSTER {cluster}", 1
    ).replace("ENGINE = MergeTree", f"ENGINE = ReplicatedMergeTree({path})", 1)
    return Statement(RECORD_TABLE, sql)


def cluster_statements(cluster: str, database: str,
                       statements: Sequence[Statement] | None = None) -> list[Statement]:
    """The database, then each migration statement (default: every file's) rendered for
    ``cluster``, each table followed by its Distributed table. Every name is qualified with
    ``database`` (a statement ON CLUSTER runs on every server, whatever database the session
    that sent it had), and used bare, so cluster and database must be plain identifiers."""
    for what, name in (("cluster", cluster), ("database", database)):
        if not NAME.match(name):
            raise ValueError(f"{what} name {name!r} must be letters, digits and _")
    statements = ddl_statements() if statements is None else statements
    tables = [match[1] for statement in statements
              if (match := _CREATE_TABLE.match(statement.sql))]
    table_names = re.compile(r"\b(" + "|".join(map(re.escape, tables)) + r")\b")
    rendered = [database_statement(cluster, database)]
    for statement in statements:
        if table := _CREATE_TABLE.match(statement.sql):
            rendered += _table(statement, table[1], cluster, database)
        elif view := _CREATE_VIEW.match(statement.sql):
            # A materialized view stays on its shard (_local); a plain view reads every shard.
            local = LOCAL_SUFFIX if view[1] == "MATERIALIZED VIEW" else ""
            body = table_names.sub(rf"{database}.\1{local}", statement.sql[view.end():])
            rendered.append(Statement(statement.name, f"CREATE {view[1]} IF NOT EXISTS "
                                      f"{database}.{view[2]} ON CLUSTER {cluster}{body}"))
        elif alter := _ALTER_COLUMN.match(statement.sql):
            rendered += _alter(statement, alter[1], alter[2], cluster, database)
        elif _INSERT_SELECT.match(statement.sql):
            # Once, from this server, through the Distributed tables: rows go to their shards.
            rendered.append(Statement(statement.name,
                                      table_names.sub(rf"{database}.\1", statement.sql)))
        else:
            raise ValueError(f"{statement.name}: not a CREATE TABLE, VIEW, MATERIALIZED VIEW, "
                             "INSERT ... SELECT or ALTER TABLE ... ADD COLUMN / COMMENT COLUMN")
    return rendered


def _alter(statement: Statement, table: str, change: str, cluster: str,
           database: str) -> list[Statement]:
    """A column change on the replicated local table, then on the Distributed table over it; on
    the record of migrations (one replicated table, no shards) only on itself."""
    if table == RECORD_TABLE:
        return [Statement(statement.name,
                          f"ALTER TABLE {database}.{table} ON CLUSTER {cluster} {change}")]
    return [Statement(name, f"ALTER TABLE {database}.{target} ON CLUSTER {cluster} {change}")
            for name, target in ((statement.name, table + LOCAL_SUFFIX),
                                 (f"{statement.name}:distributed", table))]


def _table(statement: Statement, table: str, cluster: str, database: str) -> list[Statement]:
    """``table`` as a replicated ``_local`` table, then the Distributed table over it."""
    local = table + LOCAL_SUFFIX
    engines = _ENGINE.findall(statement.sql)
    if len(engines) != 1:
        raise ValueError(f"{statement.name}: expected one *MergeTree engine, found {engines}")
    [(engine, arguments)] = engines
    replicated = ", ".join(filter(None, (f"'{replication_path(database, local)}'",
                                         "'{replica}'", arguments)))
    sql = _ENGINE.sub(f"ENGINE = Replicated{engine}({replicated})", statement.sql.replace(
        f"EXISTS {table}", f"EXISTS {database}.{local} ON CLUSTER {cluster}", 1))
    distributed = (f"CREATE TABLE IF NOT EXISTS {database}.{table} ON CLUSTER {cluster} AS "
                   f"{database}.{local}\nENGINE = Distributed({cluster}, {database}, {local}, "
                   f"{SHARDING_KEY})")
    return [Statement(statement.name, sql),
            Statement(f"{statement.name}:distributed", distributed)]
