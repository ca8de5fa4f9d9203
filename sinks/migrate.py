"""Numbered schema migrations: each file of ``sinks/migrations`` applied once, in order, and
recorded in the database, so a schema change (an ``ALTER`` too) has a place and a history.

The record is the table ``schema_migrations``: one row per migration that ran (version, file
name, sha256 of the file, when, and whether it was *adopted*). A run reads the record, checks it
against the files, then applies the missing migrations in version order and records each one
right after it succeeded. It refuses, before applying anything, when

- an applied migration's file changed since (its checksum differs, or another file has its
  number): an applied file is history; the change goes in a new numbered file;
- a recorded version has no file (the database was migrated by a newer release, or a file was
  deleted).

**Adoption.** Databases created before the record existed (every file ran at every start, all
``CREATE ... IF NOT EXISTS``) have the tables and no record. When nothing is recorded yet, a
migration that only creates objects, all of which exist already, is recorded as *adopted*
instead of run; the output says so. An adopted table is not compared column by column with its
file: it was created by that file.

Files stay idempotent (``IF NOT EXISTS``): a run that stopped between applying a migration and
recording it applies it again next time, and two commands starting together on a fresh database
(each runs this at start) may both apply one; the reader keeps one row per version.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol

from sinks.exceptions import ClickHouseError, MigrationError
from sinks.sqlfiles import Migration, Statement, load_migrations

if TYPE_CHECKING:
    from sinks.clickhouse import ClickHouseWriter

RECORD_TABLE = "schema_migrations"
RECORD_COLUMNS = ("version", "name", "checksum", "applied_at", "adopted")
# Engine MergeTree, sorted by version: a handful of rows, each the fact "this file ran", read
# whole and in version order; nothing to collapse (a twin row from two concurrent runs is
# harmless, the reader keeps the first per version). Same SQL on 18.16 and chdb.
RECORD_TABLE_SQL = f"""CREATE TABLE IF NOT EXISTS {RECORD_TABLE}
(
    version UInt32,
    name String,
    checksum String,
    applied_at DateTime('UTC'),
    adopted UInt8
)
ENGINE = MergeTree
ORDER BY version"""

_CREATES = re.compile(r"^CREATE (?:TABLE|MATERIALIZED VIEW|VIEW) IF NOT EXISTS (\w+)\b")


class Layout(Protocol):
    """How the migrations run on a kind of deployment: the statements that prepare the record
    table, and each migration's statements as executed (``sinks.cluster`` renders them for a
    replicated cluster)."""

    def setup(self) -> list[Statement]:
        """Statements run before the record is read (they create it when missing)."""
        ...

    def render(self, migration: Migration) -> Sequence[Statement]:
        """The statements that apply ``migration``."""
        ...


class SingleServer:
    """One server or embedded chdb: the files as they are, the record table as written above."""

    def setup(self) -> list[Statement]:
        return [Statement(RECORD_TABLE, RECORD_TABLE_SQL)]

    def render(self, migration: Migration) -> Sequence[Statement]:
        return migration.statements


@dataclass
class MigrationReport:
    """What a run did, in order: ``(action, file name)`` with action ``applied`` or ``adopted``."""

    total: int  # migrations in the files, all recorded once the run succeeded
    steps: list[tuple[str, str]] = field(default_factory=list)

    @property
    def applied(self) -> list[str]:
        return [name for action, name in self.steps if action == "applied"]

    @property
    def adopted(self) -> list[str]:
        return [name for action, name in self.steps if action == "adopted"]

    def lines(self) -> list[str]:
        """What ``billing sink migrate`` prints."""
        if not self.steps:
            return [f"up to date: {self.total} migrations"]
        return [f"adopted {name} (its tables already existed, created before migrations were "
                "recorded)" if action == "adopted" else f"applied {name}"
                for action, name in self.steps]


def migrate(writer: ClickHouseWriter, migrations: Sequence[Migration] | None = None, *,
            layout: Layout | None = None) -> MigrationReport:
    """Apply the migrations the writer's database has not recorded, in order, recording each
    after it succeeded; adopt an unrecorded database's existing tables. ``migrations``: default
    the files of ``sinks/migrations``. Raises :class:`MigrationError` (nothing applied) when
    the record and the files disagree."""
    migrations = load_migrations() if migrations is None else list(migrations)
    layout = SingleServer() if layout is None else layout
    for statement in layout.setup():
        _execute(writer, statement)
    recorded = _recorded(writer)
    check_record(recorded, migrations)
    existing = set() if recorded else {name for (name,) in writer.query(
        "SELECT name FROM system.tables WHERE database = currentDatabase()")}
    report = MigrationReport(total=len(migrations))
    for migration in migrations:
        if migration.version in recorded:
            continue
        adopt = bool(existing) and _all_created(migration, existing)
        if not adopt:
            for statement in layout.render(migration):
                _execute(writer, statement)
        _record(writer, migration, adopted=adopt)
        report.steps.append(("adopted" if adopt else "applied", migration.name))
    return report


def check_record(recorded: dict[int, tuple[str, str]], migrations: Sequence[Migration]) -> None:
    """Refuse when an applied migration's file was edited, renamed, replaced or removed."""
    files = {migration.version: migration for migration in migrations}
    problems = []
    for version, (name, checksum) in sorted(recorded.items()):
        migration = files.get(version)
        if migration is None:
            problems.append(f"{name}: recorded as applied (version {version:03d}) but there is "
                            "no such file in sinks/migrations; this database was migrated by a "
                            "newer release, or the file was deleted")
        elif migration.name != name:
            problems.append(f"{migration.name}: version {version:03d} was applied as {name}; an "
                            "applied migration is never renamed or replaced, add a new number")
        elif migration.checksum != checksum:
            problems.append(f"{migration.name}: edited after it was applied (sha256 recorded "
                            f"{checksum[:12]}, file {migration.checksum[:12]}); restore it and "
                            "put the change in a new numbered migration")
    if problems:
        raise MigrationError("migrations refused, nothing applied:\n  " + "\n  ".join(problems))


def _recorded(writer: ClickHouseWriter) -> dict[int, tuple[str, str]]:
    """version -> (file name, checksum) of the applied migrations; the first row per version."""
    recorded: dict[int, tuple[str, str]] = {}
    for version, name, checksum in writer.query(
            f"SELECT version, name, checksum FROM {RECORD_TABLE} ORDER BY version, applied_at"):
        recorded.setdefault(int(version), (name, checksum))
    return recorded


def _all_created(migration: Migration, existing: set[str]) -> bool:
    """Whether ``migration`` only creates objects and every one of them exists."""
    for statement in migration.statements:
        match = _CREATES.match(statement.sql)
        if match is None or match[1] not in existing:
            return False
    return True


def _execute(writer: ClickHouseWriter, statement: Statement) -> None:
    try:
        writer.execute(statement.sql)
    except ClickHouseError as error:
        raise ClickHouseError(f"{statement.name}: {error}") from error


def _record(writer: ClickHouseWriter, migration: Migration, *, adopted: bool) -> None:
    """One row in the record, sent as data (never inline VALUES: that hangs 18.16)."""
    applied_at = datetime.now(UTC).replace(microsecond=0)
    writer.insert(RECORD_TABLE, RECORD_COLUMNS, [
        (migration.version, migration.name, migration.checksum, applied_at, int(adopted))])
