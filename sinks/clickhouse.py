"""One small interface to ClickHouse, for a server (clickhouse-driver) or embedded (chdb).

The sink, the analyst commands, reconciliation and the tests all talk to ClickHouse through
:class:`ClickHouseWriter`, so the same code runs against the Debian ``clickhouse-server`` 18.16 of
the local stack, a production cluster, or an embedded chdb directory with no server at all.
:func:`open_writer` picks the implementation from ``BILLING_CLICKHOUSE_URL``.

Both implementations pass rows to ClickHouse as data, never as SQL text: with clickhouse-driver an
``INSERT ... VALUES`` with the values inline in the SQL hangs and holds a table lock on 18.16, so
the driver always gets the rows as its separate ``params`` argument (native protocol blocks). chdb
has no native block input from Python, so its rows are streamed as ``JSONEachRow`` through chdb's
insert API, again outside the SQL text.

Queries take ``%(name)s`` placeholders, rendered by clickhouse-driver's escaping on both backends
so a query file behaves the same everywhere. A long list of strings (the sink's "which of these
5,000 event ids are stored?") goes as a *set* instead: a one-column table named in the SQL
(``event_id IN batch_event_ids``) and sent as data, an external table for the driver and a session
temporary table for chdb. On 18.16 that is ten times faster than the same list as a SQL literal.
"""

from __future__ import annotations

import io
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
from clickhouse_driver import Client
from clickhouse_driver import errors as driver_errors
from clickhouse_driver.util.escape import escape_params

from runtime.clickhouse import chdb_lock_holder, clickhouse_client, server_target
from runtime.settings import ClickHouseTarget, Settings
from sinks.exceptions import ClickHouseError
from sinks.migrate import Layout, MigrationReport, migrate

Rows = list[tuple[Any, ...]]
Sets = Mapping[str, Sequence[str]]  # table name -> values of its one String column ``value``


def quote_identifier(name: str) -> str:
    """Back-quoted identifier, so Nested sub-columns (``quantities.meter``) insert by name."""
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def insert_statement(table: str, columns: Sequence[str]) -> str:
    """``INSERT INTO t (c, ...)``: the statement head, without any data."""
    return f"INSERT INTO {quote_identifier(table)} ({', '.join(map(quote_identifier, columns))})"


class ClickHouseWriter(ABC):
    """What the sink and the analyst tools need from ClickHouse, and nothing more."""

    def apply_ddl(self, layout: Layout | None = None) -> MigrationReport:
        """Create the database and apply the migrations it has not recorded yet (``sinks.migrate``:
        in order, each recorded once applied), so every command runs this at start; refuses
        (:class:`MigrationError`) when an applied file was edited or is gone. ``layout``: another
        rendering of the migrations (``sinks.cluster``); default the files as they are."""
        self._create_database()
        return migrate(self, layout=layout)

    def query(self, sql: str, params: Mapping[str, Any] | None = None, *,
              sets: Sets | None = None) -> Rows:
        """Rows of a SELECT, as tuples of Python values (``Decimal`` money, aware UTC times)."""
        return self.query_with_names(sql, params, sets=sets)[1]

    @abstractmethod
    def query_with_names(self, sql: str, params: Mapping[str, Any] | None = None, *,
                         sets: Sets | None = None) -> tuple[list[str], Rows]:
        """(column names, rows) of a SELECT; ``params`` fill ``%(name)s`` placeholders and each
        of ``sets`` is a one-column table the SQL can name (``x IN name``)."""

    @abstractmethod
    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> int:
        """Insert ``rows`` (values in ``columns`` order) as one block; returns the row count."""

    @abstractmethod
    def execute(self, sql: str) -> None:
        """Run a statement that returns nothing (DDL)."""

    @abstractmethod
    def close(self) -> None:
        """Release the connection or the embedded engine."""

    @abstractmethod
    def _create_database(self) -> None:
        """Make sure the writer's database exists before the DDL runs in it."""

    def __enter__(self) -> ClickHouseWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# What clickhouse-driver raises when the server refuses a statement or the connection breaks.
_DRIVER_ERRORS = (driver_errors.Error, OSError, EOFError)


def _describe(error: BaseException) -> str:
    """The error without the server's C++ stack trace, which says nothing to an operator."""
    return f"{type(error).__name__}: " + str(error).split("Stack trace:")[0].strip()


class DriverWriter(ClickHouseWriter):
    """A ClickHouse server over the native protocol (clickhouse-driver), logged in as the
    target's user, over TLS when it says so."""

    # Connecting fails fast; a big insert or query may take minutes (the driver's default).
    CONNECT_TIMEOUT, QUERY_TIMEOUT = 5.0, 300.0

    def __init__(self, target: ClickHouseTarget) -> None:
        self.target = target
        self.database = target.database
        self._client = self._connect(target.database)

    def _connect(self, database: str) -> Client:
        return clickhouse_client(self.target, database=database, timeout=self.CONNECT_TIMEOUT,
                                 query_timeout=self.QUERY_TIMEOUT)

    def _run(self, sql: str, data: Any = None, **options: Any) -> Any:
        try:
            return self._client.execute(sql, data, **options)
        except _DRIVER_ERRORS as error:
            # A failed call may leave the connection mid-packet; the next call must reconnect.
            self._client.disconnect()
            raise ClickHouseError(_describe(error)) from error

    def query_with_names(self, sql: str, params: Mapping[str, Any] | None = None, *,
                         sets: Sets | None = None) -> tuple[list[str], Rows]:
        external = [{"name": name, "structure": [("value", "String")],
                     "data": [{"value": value} for value in values]}
                    for name, values in (sets or {}).items()]
        rows, columns = self._run(sql, dict(params) if params is not None else None,
                                  with_column_types=True, external_tables=external or None)
        return [name for name, _ in columns], [tuple(row) for row in rows]

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> int:
        if not rows:
            return 0
        # The rows go as the separate data argument (native blocks), never inline in the SQL.
        self._run(insert_statement(table, columns) + " VALUES", rows)
        return len(rows)

    def execute(self, sql: str) -> None:
        self._run(sql)

    def close(self) -> None:
        self._client.disconnect()

    def _create_database(self) -> None:
        bootstrap = self._connect("default")
        try:
            bootstrap.execute(f"CREATE DATABASE IF NOT EXISTS {quote_identifier(self.database)}")
        except _DRIVER_ERRORS as error:
            raise ClickHouseError(
                f"creating database {self.database}: {_describe(error)}") from error
        finally:
            bootstrap.disconnect()


# clickhouse-driver's escaping renders datetimes in the server's time zone; chdb runs in UTC.
_UTC_CONTEXT = SimpleNamespace(server_info=SimpleNamespace(get_timezone=lambda: "UTC"))


def _json_value(value: Any) -> Any:
    """JSONEachRow input: exact decimal strings, ``YYYY-MM-DD hh:mm:ss`` UTC times."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, date):
        return value.isoformat()
    raise TypeError(f"cannot insert {type(value).__name__}: {value!r}")


def _tuples(value: Any) -> Any:
    """Parquet has no tuple type (ClickHouse writes structs): give tuples back, as the driver."""
    if isinstance(value, dict):
        return tuple(_tuples(item) for item in value.values())
    if isinstance(value, list):
        return [_tuples(item) for item in value]
    return value


class ChdbWriter(ClickHouseWriter):
    """Embedded ClickHouse (chdb) in a directory: no server, same SQL.

    chdb allows one data directory per process at a time: close a writer before opening another
    on a different path.
    """

    def __init__(self, path: Path, database: str = "billing") -> None:
        from chdb import session

        path.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.database = database
        try:
            self._session = session.Session(str(path))
        except RuntimeError as error:
            holder = chdb_lock_holder(path)
            raise ClickHouseError(f"opening chdb at {path}: " + (
                f"in use by {holder} (chdb opens a directory in one process at a time)"
                if holder else str(error))) from error
        self._create_database()
        self.execute(f"USE {quote_identifier(database)}")

    def _run(self, sql: str, fmt: str) -> bytes:
        try:
            return self._session.query(sql, fmt).bytes()
        except RuntimeError as error:
            raise ClickHouseError(str(error)) from error

    def query_with_names(self, sql: str, params: Mapping[str, Any] | None = None, *,
                         sets: Sets | None = None) -> tuple[list[str], Rows]:
        import pyarrow.parquet as parquet

        if params is not None:
            sql = sql % escape_params(params, _UTC_CONTEXT)
        for name, values in (sets or {}).items():
            quoted = quote_identifier(name)
            self.execute(f"DROP TEMPORARY TABLE IF EXISTS {quoted}")
            self.execute(f"CREATE TEMPORARY TABLE {quoted} (value String)")
            self.insert(name, ("value",), [(value,) for value in values])
        try:
            # Parquet keeps the driver's types: Decimal128 -> Decimal, DateTime -> datetime.
            table = parquet.read_table(io.BytesIO(self._run(sql, "Parquet")))
        finally:
            for name in sets or {}:
                self.execute(f"DROP TEMPORARY TABLE IF EXISTS {quote_identifier(name)}")
        columns = [
            [_tuples(value) for value in column.to_pylist()]
            if "struct" in str(column.type) else column.to_pylist()
            for column in table.columns
        ]
        return table.column_names, list(zip(*columns, strict=True))

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> int:
        if not rows:
            return 0
        data = b"".join(
            orjson.dumps(dict(zip(columns, row, strict=True)), default=_json_value,
                         option=orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_APPEND_NEWLINE)
            for row in rows
        )
        try:
            with self._session.send_insert(insert_statement(table, columns),
                                           "JSONEachRow") as inserter:
                inserter.append(data)
                inserter.finish()
        except RuntimeError as error:
            raise ClickHouseError(f"insert into {table}: {error}") from error
        return len(rows)

    def execute(self, sql: str) -> None:
        self._run(sql, "CSV")

    def close(self) -> None:
        self._session.close()

    def _create_database(self) -> None:
        self.execute(f"CREATE DATABASE IF NOT EXISTS {quote_identifier(self.database)}")


def chdb_directory(settings: Settings) -> Path:
    """The directory of an embedded ``chdb://DIR`` URL (when :func:`server_target` is None)."""
    return Path(settings.clickhouse_url.removeprefix("chdb://")).expanduser()


def open_writer(settings: Settings) -> ClickHouseWriter:
    """The writer for ``settings.clickhouse_url``: ``chdb://DIR`` (embedded, database
    ``billing``) or ``clickhouse://[user@]host:port/database[?secure=1]`` (a server, read as
    the stack reads it, with the password of the settings)."""
    target = server_target(settings)
    return ChdbWriter(chdb_directory(settings)) if target is None else DriverWriter(target)
