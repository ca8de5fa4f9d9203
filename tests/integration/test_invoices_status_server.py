"""The invoices_status view and ``billing invoice`` on the stack's clickhouse-server 18.16 (the
driver): one invoice open, partially paid by a credit purchase, paid by an invoice_paid
(``tests/invoice_lifecycle.py``); days overdue."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from click.testing import CliRunner

from runtime.settings import Settings, load_settings
from sinks.cli import invoice_command
from sinks.clickhouse import DriverWriter, open_writer
from tests.invoice_lifecycle import check_backfill, check_invoice_command, check_lifecycle

pytestmark = pytest.mark.integration


def server_env(stack: Settings, stack_env: dict[str, str]) -> dict[str, str]:
    """The stack's variables with a fresh database."""
    return {**stack_env, "BILLING_CLICKHOUSE_URL": (
        f"clickhouse://127.0.0.1:{stack.clickhouse_port}/invoices_{uuid.uuid4().hex[:8]}")}


def test_an_invoice_goes_open_partially_paid_paid_on_the_server(
        stack: Settings, stack_env: dict[str, str]) -> None:
    env = server_env(stack, stack_env)
    with open_writer(load_settings(env)) as writer:
        assert isinstance(writer, DriverWriter)
        writer.apply_ddl()
        assert writer.query("SELECT version()")[0][0].startswith("18.16")
        check_lifecycle(writer)

    def invoke(*args: str) -> Any:
        return CliRunner().invoke(invoice_command, list(args), env=env)

    check_invoice_command(invoke)


def test_invoice_events_stored_before_the_view_existed_are_backfilled_on_the_server(
        stack: Settings, stack_env: dict[str, str]) -> None:
    with open_writer(load_settings(server_env(stack, stack_env))) as writer:
        writer._create_database()  # what apply_ddl does first
        check_backfill(writer)
