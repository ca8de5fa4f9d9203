"""The sink package's errors, in one place so every module (and its callers) can catch them
without importing the writer."""

from __future__ import annotations


class ClickHouseError(RuntimeError):
    """ClickHouse refused or could not be reached; the message names the statement."""


class MigrationError(ClickHouseError):
    """The database's record of applied migrations does not match the files in
    ``sinks/migrations``; the message names the file. Nothing is applied then."""
