"""The SQL shipped with the sink: numbered DDL files and the documented analyst queries.

SQL lives in ``.sql`` files rather than Python strings so analysts can read and run it as is
(``billing sql "$(cat sinks/queries/top_accounts.sql)"`` after filling the parameters), and so the
DDL reviewed in a pull request is exactly what runs.
"""

from __future__ import annotations

from importlib import resources
from typing import NamedTuple

_PACKAGE = resources.files("sinks")


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
    entry = _PACKAGE.joinpath("queries", f"{name}.sql")
    if not entry.is_file():
        raise KeyError(f"no query {name!r}; known: {', '.join(query_names())}")
    (statement,) = split_statements(entry.read_text("utf-8"))
    return statement
