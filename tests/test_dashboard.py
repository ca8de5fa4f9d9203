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
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from commands.cli import main
from dashboard.data import (
    DashboardData,
    blocking_history,
    daily_series,
    is_partial,
    send_state,
)
from dashboard.pages import account_href, money, send_text, status_badge
from dashboard.report import SERVED_WHILE_BLOCKED, TIER_CHANGES_LABEL, dollars
from runtime.clickhouse import chdb_lock_holder
from runtime.settings import SettingsError
from runtime.web_auth import COOKIE_NAME, TOKEN_VARIABLE, is_loopback, load_token
from tests.dashboard_support import (
    BUDGET_ACCOUNT,
    ODD_ACCOUNT,
    ODD_NET_BALANCE,
    SUSPENDED_ACCOUNT,
    SUSPENDED_BANNER,
    Expected,
    assert_lists_and_send_state,
    assert_shows_the_ledger,
    dashboard_process,
    fetch,
    populate,
    serving,
)
from tests.test_sink_samples import chdb_with_tables

TOKEN = "a-test-token-0123456789"
PAUSED_ACCOUNT = "acct-000024"


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
    assert view.open_month == "2026-02"  # the latest billed month of all the data
    assert (view.open_month_spend, view.budget_used_percent) == (0, Decimal("0.0"))
    assert view.daily_spend[0][1] == Decimal("0.800000")
    # Jan 15 to Feb 1, where the data ends (its last usage is on Jan 20), the days between as 0
    assert len(view.daily_spend) == 18 and view.daily_spend[-1] == (date(2026, 2, 1), 0)
    assert view.daily_spend[1][1] == Decimal(0)
    assert view.partial_last_day  # the data ends at 05:55 on Feb 1
    assert view.snapshot["has_payment_method"] is False


def test_daily_series_fills_the_days_between_and_on_to_the_last_day() -> None:
    assert daily_series([(date(2026, 1, 30), Decimal(1)), (date(2026, 2, 2), Decimal(2))]) == (
        (date(2026, 1, 30), Decimal(1)), (date(2026, 1, 31), Decimal(0)),
        (date(2026, 2, 1), Decimal(0)), (date(2026, 2, 2), Decimal(2)))
    assert daily_series([(date(2026, 1, 30), Decimal(1))], date(2026, 2, 1)) == (
        (date(2026, 1, 30), Decimal(1)), (date(2026, 1, 31), Decimal(0)),
        (date(2026, 2, 1), Decimal(0)))
    assert daily_series([]) == ()
    end = datetime(2026, 2, 1, 5, 55, tzinfo=UTC)
    assert is_partial(date(2026, 2, 1), end) and not is_partial(date(2026, 1, 31), end)
    assert not is_partial(date(2026, 2, 1), None) and not is_partial(None, end)


def test_money_to_the_cent_exact_on_hover() -> None:
    assert money(Decimal("1234.567891")) == (
        '<span class="money" title="$1,234.567891">$1,234.57</span>')
    assert money(Decimal("-0.005")) == '<span class="money" title="-$0.005000">$0.00</span>'
    assert money(Decimal("1234567.125")) == (  # half to even, as `billing invoice` rounds
        '<span class="money" title="$1,234,567.125000">$1,234,567.12</span>')
    assert money(None) == "—"


def _change(day: int, hour: int, event_type: str, reason: str | None, status: str,
            reasons: list[str]) -> dict[str, object]:
    return {"timestamp": datetime(2026, 1, day, hour, 3, tzinfo=UTC), "type": event_type,
            "reason": reason, "status_after": status, "pause_reasons_after": reasons}


def test_since_when_and_why_an_account_cannot_send() -> None:
    changes = [
        _change(2, 9, "usage_paused", "budget_reached", "paused", ["budget_reached"]),
        _change(3, 9, "usage_resumed", "budget_reached", "active", []),
        _change(5, 9, "usage_paused", "credits_exhausted", "paused", ["credits_exhausted"]),
        _change(6, 9, "usage_paused", "top_up_failed", "paused",
                ["credits_exhausted", "top_up_failed"]),
        _change(7, 9, "account_suspended", "free_credit_exhausted", "suspended",
                ["credits_exhausted", "top_up_failed"]),
        _change(8, 9, "account_reinstated", None, "paused", ["credits_exhausted"]),
        _change(12, 14, "account_suspended", "free_credit_exhausted", "suspended",
                ["credits_exhausted"]),
        _change(13, 9, "usage_paused", "credits_exhausted", "suspended", ["credits_exhausted"]),
    ]
    held, periods = blocking_history(changes)
    # The latest suspension after the last reinstatement; the pause since it began (Jan 5).
    assert held == {"suspended": (datetime(2026, 1, 12, 14, 3, tzinfo=UTC),
                                  "free_credit_exhausted"),
                    "credits_exhausted": (datetime(2026, 1, 5, 9, 3, tzinfo=UTC), None)}
    assert [(p.status, p.start.day, p.end and p.end.day) for p in periods] == [
        ("paused", 2, 3), ("paused", 5, 7), ("suspended", 7, 8), ("paused", 8, 12),
        ("suspended", 12, None)]
    snapshot = {"status": "suspended", "pause_reasons": ["credits_exhausted"],
                "as_of": datetime(2026, 1, 13, 9, 3, tzinfo=UTC)}
    state = send_state(None, snapshot, held)
    assert (state.may_send, state.source) == (False, "latest snapshot")
    assert send_text(state) == ("Cannot send: suspended (free_credit_exhausted) since "
                                "2026-01-12 14:03 UTC; paused: credits_exhausted since "
                                "2026-01-05 09:03 UTC")
    current = {"may_send": 1, "blocked_reasons": [], "status": "active",
               "updated_at": datetime(2026, 1, 14, tzinfo=UTC)}
    assert send_text(send_state(current, snapshot, held)) == "Can send"  # the gateway's view
    # The badge never shows a pause reason as the suspension's.
    assert [status_badge(*args).split(">")[1].split("<")[0] for args in (
        ("suspended", ["credits_exhausted"]), ("paused", ["budget_reached", "credits_exhausted"]),
        ("active", []))] == ["suspended; paused: credits_exhausted",
                             "paused: budget_reached, credits_exhausted", "active"]
    paused = send_state({**current, "may_send": 0, "status": "paused",
                         "blocked_reasons": ["top_up_failed"]}, snapshot, held)
    assert send_text(paused) == "Cannot send: paused: top_up_failed"  # no event says since when


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
    for amount in (totals.usage_spend, totals.net_balance):
        assert str(money(amount)) in reply.body
    assert f'<a href="/accounts">{len(expected)}</a>' in reply.body
    suspended = sum(1 for figures in expected.values() if figures.status == "suspended")
    assert f'<a href="/accounts?status=suspended">suspended {suspended}</a>' in reply.body
    for query in ("budget=80", "budget=100", "invoices=unpaid", "invoices=overdue"):
        assert f'<a href="/accounts?{query}">{totals.list_counts[query]}</a>' in reply.body
    assert (totals.list_counts["budget=100"], totals.list_counts["invoices=unpaid"]) == (1, 7)
    assert f"<td>{SERVED_WHILE_BLOCKED}</td><td>{totals.over_limit_usage_events}</td>" in (
        reply.body)
    assert reply.body.count("<svg") == 3  # spend per day, status, tier
    assert "partial day" in reply.body and ">2026-01-01</text>" in reply.body  # dated with year
    top = _top_spender(expected)
    assert f'href="{html.escape(account_href(top))}"' in reply.body
    assert "<script" not in reply.body


def test_tier_changes_exclude_openings_as_in_the_report(
        url: str, filled: tuple[DashboardData, dict[str, Expected]]) -> None:
    data, expected = filled
    totals = data.totals()
    # Every account of the ledger run opened with one tier_changed (from_tier NULL).
    assert totals.tier_changes_after_opening == totals.account_events["tier_changed"] - (
        len(expected) - 2)
    assert (f"<td>{TIER_CHANGES_LABEL}</td><td>{totals.tier_changes_after_opening}</td>"
            in fetch(url + "/").body)


def test_lists_and_why_an_account_cannot_send(
        filled: tuple[DashboardData, dict[str, Expected]]) -> None:
    data, expected = filled
    assert_lists_and_send_state(data, expected)


def test_list_pages_and_json(url: str, filled: tuple[DashboardData, dict[str, Expected]]
                             ) -> None:
    _, expected = filled
    suspended = sorted(a for a, figures in expected.items() if figures.status == "suspended")
    page = fetch(url + "/accounts?status=suspended")
    assert page.status == 200 and "<h1>Suspended accounts</h1>" in page.body
    assert f"1 to {len(suspended)} of {len(suspended)} accounts" in page.body
    for account_id in suspended:
        assert f'<a href="{account_href(account_id)}">{account_id}</a>' in page.body
    assert "acct-000012" not in page.body  # active
    api = orjson.loads(fetch(url + "/api/accounts?status=suspended").body)
    assert api["total"] == len(suspended) and api["filter"] == {"kind": "status",
                                                                "value": "suspended"}
    assert sorted(row["account_id"] for row in api["rows"]) == suspended
    overdue = orjson.loads(fetch(url + "/api/accounts?invoices=overdue").body)
    assert overdue["total"] == 7 and overdue["rows"][0]["unpaid"].count(".") == 1  # exact text
    budget = fetch(url + "/accounts?budget=80")
    assert "≥ 80 % of their monthly budget in 2026-02" in budget.body
    assert "<td class=\"num\">105.0 %</td>" in budget.body
    assert "next →" not in page.body
    paged = fetch(url + "/accounts?offset=25")
    assert f"26 to {len(expected)} of {len(expected)}" in paged.body
    assert '<a href="/accounts">← previous</a>' in paged.body
    for bad in ("status=gone", "budget=0", "budget=x", "invoices=all", "offset=-1",
                "status=active&budget=80"):
        refused = fetch(url + "/accounts?" + bad)
        assert refused.status == 400, bad
        assert fetch(url + "/api/accounts?" + bad).status == 400, bad


def test_suspended_account_page_says_it_cannot_send_why_and_since_when(url: str) -> None:
    body = fetch(url + account_href(SUSPENDED_ACCOUNT)).body
    assert f'<p class="banner bad">{SUSPENDED_BANNER}</p>' in body
    assert "(not in force: it cannot send)" in body
    assert 'class="shade-suspended"' in body and "<title>suspended from" in body
    active = fetch(url + account_href(BUDGET_ACCOUNT)).body  # not in accounts_current
    assert '<p class="banner ok">Can send</p>' in active and "from latest snapshot" in active


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


def test_account_page_status_is_the_gateway_s_when_newer_than_the_last_event(
        url: str, data: DashboardData) -> None:
    # The ledger run's paused account: its last event (Jan 31) paused it for credits while its
    # January budget pause held; the month rolled over since, which lifts the budget pause
    # without an event, and its accounts_current record says so.
    view = data.account(PAUSED_ACCOUNT)
    assert view is not None
    assert view.snapshot["pause_reasons"] == ["budget_reached", "credits_exhausted"]
    assert [blocker.reason for blocker in view.send.blockers] == ["credits_exhausted"]
    body = fetch(url + account_href(PAUSED_ACCOUNT)).body
    assert f"{status_badge('paused', ['credits_exhausted'])}</h1>" in body
    assert "<td>pause reasons</td><td>credits_exhausted</td>" in body
    assert "Cannot send: paused: credits_exhausted since 2026-01-31 17:06 UTC" in body


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


# -- chdb: one process at a time --------------------------------------------------------------


def _billing(directory: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BILLING_CLICKHOUSE_URL": f"chdb://{directory}"}
    return subprocess.run([sys.executable, "-m", "commands.cli", *arguments], env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def test_the_process_holding_a_chdb_directory_is_named(tmp_path: Path) -> None:
    # Processes of their own: this one holds the module's chdb directory open.
    directory = tmp_path / "chdb"
    created = _billing(directory, "sql", "SELECT count() AS rows FROM rated_usage")  # migrates
    assert created.returncode == 0, created.stderr
    log_path = tmp_path / "dashboard.log"
    with dashboard_process(directory, log_path) as (base, dashboard):
        assert fetch(base + "/api/totals").status == 200
        refused = _billing(directory, "sql", "SELECT count() FROM accounts_current")
        assert refused.returncode == 1
        message = refused.stderr.strip().splitlines()[-1]  # chdb prints its own line before
        assert message.startswith(f"Error: ClickHouse at chdb://{directory}: opening chdb at")
        assert f"in use by process {dashboard.pid} (" in message
        assert "commands.cli dashboard --port" in message and "one process at a time" in message
    assert f"holds {directory} open until it stops (pid {dashboard.pid})" in log_path.read_text()
    read = _billing(directory, "sql", "SELECT count() AS accounts FROM accounts_current")
    assert read.returncode == 0 and read.stdout.split()[:3] == ["accounts", "--------", "0"]

    holder = subprocess.Popen(
        [sys.executable, "-c", "import pathlib, sys\nfrom sinks.clickhouse import ChdbWriter"
         "\nwriter = ChdbWriter(pathlib.Path(sys.argv[1]))\nprint('open', flush=True)\n"
         "sys.stdin.read()\nwriter.close()", str(directory)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "open\n"
        started = _billing(directory, "dashboard", "--port", "9")
        assert started.returncode == 1
        assert f"in use by process {holder.pid} (" in started.stderr.strip().splitlines()[-1]
    finally:
        holder.communicate(input="", timeout=60)


def test_lock_holder_is_a_live_other_process_only(tmp_path: Path) -> None:
    assert chdb_lock_holder(tmp_path) is None  # no status file
    status = tmp_path / "status"
    status.write_text(f"PID: {os.getpid()}\nStarted at: 2026-12-06 09:59:15\n")
    assert chdb_lock_holder(tmp_path) is None  # this process: not another one
    sleeper = subprocess.Popen([sys.executable, "-c", "print('up', flush=True)\ninput()"],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert sleeper.stdout is not None and sleeper.stdout.readline() == "up\n"
        status.write_text(f"PID: {sleeper.pid}\n")
        assert chdb_lock_holder(tmp_path) == (
            f"process {sleeper.pid} ({sys.executable} -c print('up', flush=True) input())")
    finally:
        sleeper.kill()
        sleeper.wait()
    assert chdb_lock_holder(tmp_path) is None  # a file left over by a process that is gone
    status.write_text("garbage\n")
    assert chdb_lock_holder(tmp_path) is None
