"""``billing dashboard``: serve the read-only dashboard over the configured ClickHouse.

Everything that can be wrong is checked before the port opens, so a bad start fails at once
with a message naming what to fix: the token when the address is not loopback
(``runtime.web_auth``), a ``chdb://`` directory that does not exist (opening it would create an
empty one), and tables that are not there.

On ``chdb://`` the dashboard holds the directory open while it runs: chdb lets one process at a
time open a directory, and opening it for each request instead costs about 135 ms and leaks about
2 MB per open (chdb 4.4). Other commands on the directory meanwhile fail with a message naming
this process (``runtime.clickhouse.chdb_lock_holder``); the start message says so too.
"""

from __future__ import annotations

import logging
import os

import click
from aiohttp import web

from dashboard.app import AccessLog, build_app
from dashboard.data import DashboardData, DashboardDataError
from runtime.clickhouse import server_target
from runtime.logfmt import log_event
from runtime.settings import Settings, SettingsError, load_settings
from runtime.web_auth import load_token
from sinks.clickhouse import ClickHouseError, ClickHouseWriter, chdb_directory, open_writer

log = logging.getLogger("dashboard")


def open_data(settings: Settings) -> tuple[ClickHouseWriter, DashboardData]:
    """The connection (the caller closes it) and the queries over it, tables checked."""
    if server_target(settings) is None:
        directory = chdb_directory(settings)
        if not directory.is_dir():
            raise DashboardDataError(
                f"BILLING_CLICKHOUSE_URL={settings.clickhouse_url}: no such directory (the demo "
                "prints the chdb:// URL of its run; a clickhouse:// URL reads a server)")
    writer = open_writer(settings)
    data = DashboardData(writer)
    try:
        data.check_tables()
    except BaseException:
        writer.close()
        raise
    return writer, data


@click.command("dashboard")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; other than loopback needs BILLING_DASHBOARD_TOKEN.")
@click.option("--port", type=click.IntRange(1, 65535), default=8050, show_default=True)
def dashboard_command(host: str, port: int) -> None:
    """Serve a read-only web dashboard: totals, and each account's balance, status, limits,
    spend over time and events (BILLING_CLICKHOUSE_URL says which ClickHouse)."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        token = load_token(host, os.environ)
        settings = load_settings()
        writer, data = open_data(settings)
    except (SettingsError, DashboardDataError, ClickHouseError) as error:
        raise click.ClickException(str(error)) from None
    try:
        app = build_app(data, settings.clickhouse_url, token)
        log_event(log, "dashboard.start", host=host, port=port, token=token is not None,
                  clickhouse=settings.clickhouse_url)
        address = f"[{host}]" if ":" in host else host  # an IPv6 address in a URL
        click.echo(f"dashboard: http://{address}:{port}/ (read-only"
                   f"{', token required' if token else ''}) reading {settings.clickhouse_url}",
                   err=True)
        if server_target(settings) is None:
            click.echo(f"dashboard: holds {chdb_directory(settings)} open until it stops "
                       f"(pid {os.getpid()}): chdb lets one process at a time open a directory, "
                       "other commands on it fail meanwhile", err=True)
        web.run_app(app, host=host, port=port, print=None, access_log_class=AccessLog,
                    access_log=log)
    finally:
        writer.close()
