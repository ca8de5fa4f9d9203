"""The SQL shipped with the sink: numbered migrations and the documented analyst queries.

SQL lives in ``.sql`` files rather than Python strings so analysts can read and run it as is
(``billing sql "$(cat sinks/queries/top_accounts.sql)"`` after filling the parameters), and so the
DDL reviewed in a pull request is exactly what runs. Running the migrations and recording them is
``sinks.migrate``; this module only reads the files.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from typing import NamedTuple

_PACKAGE = resources.files("sinks")
MIGRATION_FILE = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")

# A ``%(name)s`` placeholder, as clickhouse-driver fills them (``%%`` is a literal ``%``).
_PLACEHOLDER = re.compile(r"%(?:%|\((\w+)\)s)")


class Statement(NamedTuple):
    """One SQL statement and where it came from (``file#n``, for logs and error messages)."""

    name: str
    sql: str


def split_statements(text: str) -> list[str]:
    """Split a file into statements: each ends with a line ending in ``;``.

    Whole-line ``--`` comments are dropped (they explain the DDL to a reader; the server does not
    need them). A ``;`` inside a string literal at the end of a line is not supported, and no
    shipped file has one.
    """
    statements: list[str] = []
    current: list[str] = []
    for line in text.splitlines():
        if line.lstrip().startswith("--"):
            continue
        current.append(line)
        if line.rstrip().endswith(";"):
            statements.append("\n".join(current).strip().removesuffix(";").strip())
            current = []
    tail = "\n".join(current).strip()
    if tail:
        statements.append(tail)
    return [statement for statement in statements if statement]


class MigrationFileError(ValueError):
    """The migrations directory is not a clean sequence ``001_name.sql``, ``002_name.sql`` ..."""


@dataclass(frozen=True)
class Migration:
    """One numbered schema change: ``sinks/migrations/NNN_name.sql``, applied once, in order."""

    version: int
    name: str  # the file name, e.g. ``003_credit_purchases.sql``
    checksum: str  # sha256 of the file (\n line ends): an applied file must never change
    statements: tuple[Statement, ...]


def load_migrations(directory: Traversable | None = None) -> list[Migration]:
    """The migrations in ``directory`` (default ``sinks/migrations``), by version. Refuses a
    ``.sql`` file not named ``NNN_name.sql``, two files with one number, and a gap (001, 003)."""
    directory = _PACKAGE.joinpath("migrations") if directory is None else directory
    migrations = []
    for entry in sorted(directory.iterdir(), key=lambda entry: entry.name):
        if not entry.name.endswith(".sql"):
            continue
        match = MIGRATION_FILE.match(entry.name)
        if match is None:
            raise MigrationFileError(f"{entry.name}: a migration is named NNN_name.sql "
                                     "(three digits, lower-case letters, digits and _)")
        data = entry.read_bytes()
        statements = tuple(
            Statement(f"{entry.name}#{index}", sql)
            for index, sql in enumerate(split_statements(data.decode("utf-8")), start=1))
        if not statements:
            raise MigrationFileError(f"{entry.name}: no SQL statement")
        checksum = hashlib.sha256(data.replace(b"\r\n", b"\n")).hexdigest()
        migrations.append(Migration(int(match[1]), entry.name, checksum, statements))
    for expected, migration in enumerate(migrations, start=1):
        if migration.version != expected:
            raise MigrationFileError(
                f"{migration.name}: expected version {expected:03d} here; migration versions "
                "run 001, 002, ... without gaps or repeats")
    return migrations


def ddl_statements() -> list[Statement]:
    """Every statement of every migration, in version order then file order."""
    return [statement for migration in load_migrations() for statement in migration.statements]


def query_names() -> list[str]:
    """Names of the documented analyst queries (``sinks/queries/NAME.sql``)."""
    return sorted(
        entry.name.removesuffix(".sql")
        for entry in _PACKAGE.joinpath("queries").iterdir()
        if entry.name.endswith(".sql")
    )


def load_query(name: str) -> str:
    """The analyst query ``name`` as one statement with ``%(param)s`` placeholders."""
    (statement,) = split_statements(load_query_file(name))
    return statement


class QueryInfo(NamedTuple):
    """A documented query as ``billing sql --help`` lists it."""

    name: str
    description: str  # the file's first comment line
    params: list[str]  # its placeholders, in order of first use


def query_params(sql: str) -> list[str]:
    """The ``%(name)s`` placeholders of ``sql``, each once, in order of first use."""
    names = (match.group(1) for match in _PLACEHOLDER.finditer(sql))
    return list(dict.fromkeys(name for name in names if name))


def query_info(name: str) -> QueryInfo:
    """Name, one-line description (first ``--`` line of the file) and parameters of a query."""
    text = load_query_file(name)
    description = next((line.strip().removeprefix("--").strip() for line in text.splitlines()
                        if line.strip().startswith("--")), "")
    return QueryInfo(name, description, query_params(load_query(name)))


def load_query_file(name: str) -> str:
    """The whole file of the analyst query ``name``, comments included."""
    entry = _PACKAGE.joinpath("queries", f"{name}.sql")
    if not entry.is_file():
        raise KeyError(f"no query {name!r}; known: {', '.join(query_names())}")
    return entry.read_text("utf-8")
