"""The SQL shipped with the sink: numbered DDL files and the documented analyst queries.

SQL lives in ``.sql`` files rather than Python strings so analysts can read and run it as is
(``billing sql "$(cat sinks/queries/top_accounts.sql)"`` after filling the parameters), and so the
DDL reviewed in a pull request is exactly what runs.
"""

from __future__ import annotations

import re
from importlib import resources
from typing import NamedTuple

_PACKAGE = resources.files("sinks")

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


def ddl_statements() -> list[Statement]:
    """Every DDL statement, in file-name order (the numbers prefix the names) then file order."""
    files = sorted(
        (entry for entry in _PACKAGE.joinpath("ddl").iterdir() if entry.name.endswith(".sql")),
        key=lambda entry: entry.name,
    )
    return [
        Statement(f"{entry.name}#{index}", sql)
        for entry in files
        for index, sql in enumerate(split_statements(entry.read_text("utf-8")), start=1)
    ]


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
