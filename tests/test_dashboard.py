"""The dashboard over embedded ClickHouse (chdb) filled with a ledger run: its figures against the
ledger's, the pages and JSON over real HTTP, escaping, read-only methods, and the token.

One chdb directory for the whole module (chdb holds one per process at a time): it is opened,
filled and closed by the ``data`` fixture. The browser test is tests/integration/.
"""

from __future__ import annotations

import html
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from commands.cli import main
from dashboard.data import DashboardData, daily_series
from dashboard.pages import account_href, status_badge
from dashboard.report import dollars
from runtime.settings import SettingsError
from runtime.web_auth import COOKIE_NAME, TOKEN_VARIABLE, is_loopback, load_token
from tests.dashboard_support import (
    ODD_ACCOUNT,
    ODD_NET_BALANCE,
    Expected,
    assert_shows_the_ledger,
    fetch,
    populate,
    serving,
)
from tests.test_sink_samples import chdb_with_tables

TOKEN = "a-test-token-0123456789"


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DashboardData,
                                                                         dict[str, Expected]]]:
    with chdb_with_tables(tmp_path_factory.mktemp("dashboard") / "chdb") as writer:
        expected = populate(writer)
        yield DashboardData(writer), expected


@pytest.fixture(scope="module")
def data(filled: tuple[DashboardData, dict[str, Expected]]) -> DashboardData:
    return filled[0]


@pytest.fixture(scope="module")
def url(data: DashboardData) -> Iterator[str]:
    with serving(data) as base:
        yield base


def _top_spender(expected: dict[str, Expected]) -> str:
    return max(expected, key=lambda account_id: expected[account_id].lifetime_spend)


# -- figures ----------------------------------------------------------------------------------


def test_every_figure_is_the_ledger_s(filled: tuple[DashboardData, dict[str, Expected]]) -> None:
    data, expected = filled
    data.check_tables()
    assert_shows_the_ledger(data, expected)


def test_balance_is_brought_up_to_date_from_usage_after_the_last_event(
        data: DashboardData) -> None:
    view = data.account(ODD_ACCOUNT)
    assert view is not None
    assert view.snapshot["credit_balance"] == Decimal("0.200000")  # as of the last event
    assert view.usage_since_snapshot == Decimal("0.250000")
    assert view.net_balance == ODD_NET_BALANCE
    assert view.budget_used_percent == Decimal("21.0")  # $1.05 of $5
    assert view.daily_spend[0][1] == Decimal("0.800000")
    assert len(view.daily_spend) == 6  # Jan 15 to Jan 20, the days between as zero
    assert view.daily_spend[1][1] == Decimal(0)
    assert view.snapshot["has_payment_method"] is False


def test_daily_series_fills_the_days_between() -> None:
    assert daily_series([(date(2026, 1, 30), Decimal(1)), (date(2026, 2, 2), Decimal(2))]) == (
        (date(2026, 1, 30), Decimal(1)), (date(2026, 1, 31), Decimal(0)),
        (date(2026, 2, 1), Decimal(0)), (date(2026, 2, 2), Decimal(2)))
    assert daily_series([]) == ()


def test_search_and_top_accounts(data: DashboardData) -> None:
    top = data.accounts(limit=5)
    assert len(top) == 5
    assert [row["lifetime_spend"] for row in top] == sorted(
        (row["lifetime_spend"] for row in top), reverse=True)
    assert [row["account_id"] for row in data.accounts("odd/<b>")] == [ODD_ACCOUNT]
    assert data.accounts("no such text") == []


# -- pages and JSON over HTTP -----------------------------------------------------------------


def test_home_page_shows_totals_charts_and_top_accounts(
        url: str, filled: tuple[DashboardData, dict[str, Expected]]) -> None:
    data, expected = filled
    reply = fetch(url + "/")
    assert reply.status == 200 and reply.headers["Content-Type"].startswith("text/html")
    totals = data.totals()
    assert dollars(totals.usage_spend) in reply.body
    assert dollars(totals.net_balance) in reply.body
    assert f"{len(expected)}</td>" in reply.body
    assert reply.body.count("<svg") == 3  # spend per day, status, tier
    top = _top_spender(expected)
    assert f'href="{html.escape(account_href(top))}"' in reply.body
    assert "<script" not in reply.body


def test_search_page_lists_matches_only(url: str) -> None:
    reply = fetch(url + "/?q=odd%2F%3Cb")
    assert reply.status == 200
    assert "contains “odd/&lt;b”" in reply.body  # escaped once
    assert 'value="odd/&lt;b"' in reply.body
    assert html.escape(ODD_ACCOUNT) in reply.body
    assert "acct-0000" not in reply.body


def test_account_page_shows_balance_status_limits_spend_and_events(
        url: str, filled: tuple[DashboardData, dict[str, Expected]]) -> None:
    data, expected = filled
    account_id = _top_spender(expected)
    figures = expected[account_id]
    reply = fetch(url + account_href(account_id))
    assert reply.status == 200
    view = data.account(account_id)
    assert view is not None
    for text in (account_id, dollars(figures.net_balance), dollars(figures.lifetime_spend),
                 f"{figures.rpm_limit:,} requests/min", "Spend per day", "<polyline",
                 "Account events", view.events[0]["type"]):
        assert text in reply.body, text
    assert status_badge(figures.status, view.snapshot["pause_reasons"]) in reply.body


def test_data_is_escaped_and_odd_ids_route(url: str) -> None:
    reply = fetch(url + account_href(ODD_ACCOUNT))
    assert reply.status == 200
    assert html.escape(ODD_ACCOUNT) in reply.body
    assert "<b>" not in reply.body
    assert dollars(ODD_NET_BALANCE) in reply.body
    api = fetch(url + "/api" + account_href(ODD_ACCOUNT))
    assert orjson.loads(api.body)["account_id"] == ODD_ACCOUNT


def test_unknown_account_is_a_404_page_and_json(url: str) -> None:
    page = fetch(url + "/accounts/%3Cscript%3Enope")
    assert page.status == 404 and "Account not found" in page.body
    assert "&lt;script&gt;nope" in page.body and "<script>" not in page.body
    api = fetch(url + "/api/accounts/nope")
    assert api.status == 404 and orjson.loads(api.body) == {"error": "unknown account 'nope'"}
    assert fetch(url + "/no/such/page").status == 404


def test_json_money_is_exact_strings(
        url: str, filled: tuple[DashboardData, dict[str, Expected]]) -> None:
    _, expected = filled
    totals = orjson.loads(fetch(url + "/api/totals").body)
    assert totals["accounts"] == len(expected)
    assert totals["usage_spend"] == str(sum(f.lifetime_spend for f in expected.values()))
    assert totals["net_balance"] == f"{sum(f.net_balance for f in expected.values()):.6f}"
    assert {"day", "cost"} == set(totals["daily_spend"][0])
    account = orjson.loads(fetch(url + "/api" + account_href(ODD_ACCOUNT)).body)
    assert account["net_balance"] == "-0.050000"
    assert account["snapshot"]["monthly_budget"] == "5.000000"
    assert account["daily_spend"][0] == {"day": "2026-01-15", "cost": "0.800000"}


def test_read_only_and_locked_down(url: str) -> None:
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        refused = fetch(url + "/", method)
        assert refused.status == 405 and "GET" in refused.headers["Allow"], method
    head = fetch(url + "/", "HEAD")
    assert head.status == 200 and head.body == ""
    headers = fetch(url + "/healthz").headers
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert fetch(url + "/healthz").body == "ok\n"


def test_without_token_only_loopback_names_are_answered(url: str) -> None:
    # A page whose domain resolves to 127.0.0.1 (DNS rebinding) sends its own name as Host.
    assert fetch(url + "/api/totals", headers={"Host": "attacker.example"}).status == 421
    assert fetch(url + "/healthz", headers={"Host": "localhost"}).status == 200


# -- the token --------------------------------------------------------------------------------


def test_token_bearer_cookie_and_nothing_else(data: DashboardData,
                                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="dashboard")
    with serving(data, TOKEN) as base:
        for path in ("/", "/api/totals", account_href(ODD_ACCOUNT), "/no/such/page"):
            refused = fetch(base + path)
            assert refused.status == 401, path
            assert refused.headers["WWW-Authenticate"].startswith("Bearer")
        assert fetch(base + "/", headers={"Authorization": "Bearer wrong-token-0123456789"}
                     ).status == 401
        assert fetch(base + "/", headers={"Authorization": f"Bearer {TOKEN}"}).status == 200
        assert fetch(base + "/healthz").status == 200  # probes need no token

        assert fetch(base + "/?token=not-the-token").status == 401
        login = fetch(base + f"/?q=odd&token={TOKEN}")
        assert login.status == 303 and login.headers["Location"] == "/?q=odd"
        cookie = login.headers["Set-Cookie"]
        assert cookie.startswith(f"{COOKIE_NAME}=") and "HttpOnly" in cookie
        assert TOKEN not in cookie  # an HMAC of it
        cookie_header = {"Cookie": cookie.split(";")[0]}
        assert fetch(base + "/api/totals", headers=cookie_header).status == 200
        assert fetch(base + "/api/totals", headers={"Cookie": f"{COOKIE_NAME}={TOKEN}x"}
                     ).status == 401
    assert "path=/ " in caplog.text  # the access log is on...
    assert TOKEN not in caplog.text  # ...and never shows the token


def test_token_rules_at_start() -> None:
    assert load_token("127.0.0.1", {}) is None
    assert load_token("::1", {TOKEN_VARIABLE: TOKEN}) == TOKEN  # enforced on loopback too
    for host in ("0.0.0.0", "192.168.1.5", "example.org"):
        with pytest.raises(SettingsError, match=TOKEN_VARIABLE):
            load_token(host, {})
    with pytest.raises(SettingsError, match="at least 16"):
        load_token("127.0.0.1", {TOKEN_VARIABLE: "short"})
    assert is_loopback("localhost") and is_loopback("127.0.0.2")
    assert not is_loopback("::") and not is_loopback("localhost.example.org")


def test_command_refuses_to_start_exposed_without_token(tmp_path: Path) -> None:
    env = {"BILLING_CLICKHOUSE_URL": f"chdb://{tmp_path}", TOKEN_VARIABLE: ""}
    result = CliRunner().invoke(main, ["dashboard", "--host", "0.0.0.0"], env=env)
    assert result.exit_code == 1
    assert TOKEN_VARIABLE in result.output and "not a loopback address" in result.output
    short = CliRunner().invoke(main, ["dashboard"], env={**env, TOKEN_VARIABLE: "too-short"})
    assert short.exit_code == 1 and "at least 16" in short.output


def test_command_refuses_a_missing_chdb_directory(tmp_path: Path) -> None:
    env = {"BILLING_CLICKHOUSE_URL": f"chdb://{tmp_path / 'nothing'}", TOKEN_VARIABLE: None}
    result = CliRunner().invoke(main, ["dashboard"], env=env)
    assert result.exit_code == 1 and "no such directory" in result.output
    assert not (tmp_path / "nothing").exists()


def test_command_refuses_clickhouse_without_the_tables(tmp_path: Path) -> None:
    # A process of its own: this one holds the module's chdb directory open.
    env = {**os.environ, "BILLING_CLICKHOUSE_URL": f"chdb://{tmp_path}"}
    env.pop(TOKEN_VARIABLE, None)
    result = subprocess.run([sys.executable, "-m", "commands.cli", "dashboard", "--port", "9"],
                            env=env, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 1, result.stderr
    assert "no billing tables" in result.stderr and "billing sink migrate" in result.stderr
