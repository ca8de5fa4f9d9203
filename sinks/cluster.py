"""The DDL for a replicated, sharded ClickHouse cluster, rendered from the single-server files.

``sinks/ddl/*.sql`` stay the one schema. For a cluster, ``billing sink migrate --cluster NAME``
runs them rendered here, each ``ON CLUSTER NAME``:

- every table ``T`` becomes ``T_local`` with the ``Replicated`` form of its engine (one copy per
  replica of a shard, kept in step through ZooKeeper / ClickHouse Keeper, path from the servers'
  ``{shard}`` and ``{replica}`` macros);
- a ``Distributed`` table under the original name ``T`` spans the shards, sharded by
  ``cityHash64(account_id)``, so the sink, the queries and reconciliation keep their table names;
- materialized views keep their names and read and write the ``_local`` tables: each shard rolls
  up the rows it holds.

Sharding by account keeps every copy of an event, and everything an account owns, on one shard,
so ``FINAL`` (which collapses duplicates within a shard only) and the per-account queries stay
exact through the Distributed tables. Objects keep the names the plain DDL creates, so the plain
``CREATE ... IF NOT EXISTS`` that other commands run at start finds them and does nothing.
"""

from __future__ import annotations

import re

from runtime.clickhouse import server_target
from runtime.settings import Settings
from sinks.sqlfiles import Statement, ddl_statements

LOCAL_SUFFIX = "_local"
SHARDING_KEY = "cityHash64(account_id)"
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CREATE_TABLE = re.compile(r"^CREATE TABLE IF NOT EXISTS (\w+)")
_CREATE_VIEW = re.compile(r"^CREATE MATERIALIZED VIEW IF NOT EXISTS (\w+)")
_ENGINE = re.compile(r"\bENGINE = (\w*MergeTree)\b(?:\((.*?)\))?")


def replication_path(database: str, table: str) -> str:
    """The table's ZooKeeper path: one per shard, shared by that shard's replicas."""
    return f"/clickhouse/tables/{{shard}}/{database}.{table}"


def cluster_ddl(settings: Settings, cluster: str) -> list[Statement]:
    """:func:`cluster_statements` for the database of ``BILLING_CLICKHOUSE_URL``, which must
    name a server (``clickhouse://``): embedded chdb has no cluster."""
    target = server_target(settings)
    if target is None:
        raise ValueError("a cluster needs a server: set BILLING_CLICKHOUSE_URL="
                         "clickhouse://host:port/database (one of the cluster's servers)")
    return cluster_statements(cluster, target.database)


def cluster_statements(cluster: str, database: str) -> list[Statement]:
    """The database, then each DDL statement rendered for ``cluster``, each table followed by
    its Distributed table. Every name is qualified with ``database`` (a statement ON CLUSTER runs
    on every server, whatever database the session that sent it had), and used bare, so cluster
    and database must be plain identifiers."""
    for what, name in (("cluster", cluster), ("database", database)):
        if not NAME.match(name):
            raise ValueError(f"{what} name {name!r} must be letters, digits and _")
    statements = ddl_statements()
    tables = [match[1] for statement in statements
              if (match := _CREATE_TABLE.match(statement.sql))]
    table_names = re.compile(r"\b(" + "|".join(map(re.escape, tables)) + r")\b")
    rendered = [Statement("database", f"CREATE DATABASE IF NOT EXISTS {database} "
                                      f"ON CLUSTER {cluster}")]
    for statement in statements:
        if table := _CREATE_TABLE.match(statement.sql):
            rendered += _table(statement, table[1], cluster, database)
        elif view := _CREATE_VIEW.match(statement.sql):
            body = table_names.sub(rf"{database}.\1{LOCAL_SUFFIX}", statement.sql[view.end():])
            rendered.append(Statement(statement.name, "CREATE MATERIALIZED VIEW IF NOT EXISTS "
                                      f"{database}.{view[1]} ON CLUSTER {cluster}{body}"))
        else:
            raise ValueError(f"{statement.name}: not a CREATE TABLE or MATERIALIZED VIEW")
    return rendered


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
