"""The dashboard's SQL on the stack's Debian clickhouse-server 18.16: the oldest server the project
supports, where a construct newer than 18.16 would fail. Same data and same expectations as the
chdb tests (tests/test_dashboard.py), in a database of this module's own.
"""

from __future__ import annotations

import html
import uuid
from collections.abc import Iterator
from dataclasses import replace

import orjson
import pytest

from dashboard.cli import open_data
from dashboard.data import DashboardData
from dashboard.pages import account_href
from runtime.settings import Settings
from sinks.clickhouse import DriverWriter, open_writer
from tests.dashboard_support import (
    ODD_ACCOUNT,
    SUSPENDED_ACCOUNT,
    SUSPENDED_BANNER,
    Expected,
    assert_lists_and_send_state,
    assert_shows_the_ledger,
    fetch,
    populate,
    serving,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server_data(stack: Settings) -> Iterator[tuple[DashboardData, dict[str, Expected]]]:
    settings = replace(stack, clickhouse_url=(f"clickhouse://127.0.0.1:{stack.clickhouse_port}/"
                                              f"dashboard_{uuid.uuid4().hex[:8]}"))
    with open_writer(settings) as writer:
        assert isinstance(writer, DriverWriter)
        writer.apply_ddl()
        expected = populate(writer)
    writer, data = open_data(settings)  # as `billing dashboard` opens it
    try:
        yield data, expected
    finally:
        writer.close()


def test_figures_on_clickhouse_server(server_data: tuple[DashboardData,
                                                         dict[str, Expected]]) -> None:
    data, expected = server_data
    assert_shows_the_ledger(data, expected)
    invoices = [invoice for account_id in expected
                for invoice in data.account(account_id).invoices]  # type: ignore[union-attr]
    assert invoices and any(invoice["paid_by_invoice_payments"] for invoice in invoices)
    assert [row["account_id"] for row in data.accounts("odd/")] == [ODD_ACCOUNT]


def test_lists_and_can_send_on_clickhouse_server(
        server_data: tuple[DashboardData, dict[str, Expected]]) -> None:
    data, expected = server_data
    assert_lists_and_send_state(data, expected)
    totals = data.totals()
    assert totals.list_counts == {"budget=80": 1, "budget=100": 1, "invoices=unpaid": 7,
                                  "invoices=overdue": 7}
    assert 0 < totals.tier_changes_after_opening < totals.account_events["tier_changed"]
    assert totals.data_end is not None and totals.open_month == "2026-02"


def test_pages_on_clickhouse_server(server_data: tuple[DashboardData,
                                                       dict[str, Expected]]) -> None:
    data, expected = server_data
    with serving(data) as base:
        assert fetch(base + "/").status == 200
        page = fetch(base + account_href(ODD_ACCOUNT))
        assert page.status == 200 and html.escape(ODD_ACCOUNT) in page.body
        totals = orjson.loads(fetch(base + "/api/totals").body)
        assert totals["accounts"] == len(expected)
        assert fetch(base + "/accounts/nope").status == 404
        listed = fetch(base + "/accounts?status=suspended")
        assert listed.status == 200 and SUSPENDED_ACCOUNT in listed.body
        assert SUSPENDED_BANNER in fetch(base + account_href(SUSPENDED_ACCOUNT)).body
        overdue = orjson.loads(fetch(base + "/api/accounts?invoices=overdue").body)
        assert overdue["total"] == 7
