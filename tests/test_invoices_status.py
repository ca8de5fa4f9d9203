"""The invoices_status view and ``billing invoice`` on chdb: one invoice open, partially paid by a
credit purchase, paid by an invoice_paid (``tests/invoice_lifecycle.py``); days overdue."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from click.testing import CliRunner

from sinks.cli import invoice_command
from sinks.clickhouse import ChdbWriter
from tests.invoice_lifecycle import check_backfill, check_invoice_command, check_lifecycle
from tests.test_sink_samples import chdb_with_tables


def test_an_invoice_goes_open_partially_paid_paid_in_the_view_and_the_invoice_command(
        tmp_path: Path) -> None:
    with chdb_with_tables(tmp_path / "chdb") as writer:
        check_lifecycle(writer)

    def invoke(*args: str) -> Any:
        return CliRunner().invoke(invoice_command, list(args),
                                  env={"BILLING_CLICKHOUSE_URL": f"chdb://{tmp_path / 'chdb'}"})

    check_invoice_command(invoke)


def test_invoice_events_stored_before_the_view_existed_are_backfilled(tmp_path: Path) -> None:
    with ChdbWriter(tmp_path / "chdb") as writer:
        check_backfill(writer)
