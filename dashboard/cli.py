"""``billing dashboard``: serve the read-only dashboard over the configured ClickHouse.

Everything that can be wrong is checked before the port opens, so a bad start fails at once
with a message naming what to fix: the token when the address is not loopback
(``runtime.web_auth``), a ``chdb://`` directory that does not exist (opening it would create an
empty one), and tables that are not there.

On ``chdb://`` the directory is opened for each request and closed after it (chdb lets one
process at a time open a directory): between requests ``billing sql`` and others can read it, and
a request that finds it held waits a little, then answers 503 naming the process that holds it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from functools import partial

import click
from aiohttp import web

from dashboard.app import AccessLog, build_app
from dashboard.data import DashboardData, DashboardDataError, chdb_for_one_request
from runtime.clickhouse import server_target
from runtime.logfmt import log_event
from runtime.settings import Settings, SettingsError, load_settings
from runtime.web_auth import load_token
from sinks.clickhouse import ClickHouseError, chdb_directory, open_writer

log = logging.getLogger("dashboard")


@contextmanager
def open_data(settings: Settings) -> Iterator[DashboardData]:
    """The dashboard's queries, tables checked: over a server, one connection kept open; over
    chdb, the directory opened for each request and closed after it."""
    if server_target(settings) is not None:
        with open_writer(settings) as writer:
            data = DashboardData.over(writer)
            data.check_tables()
            yield data
        return
    directory = chdb_directory(settings)
    if not directory.is_dir():
        raise DashboardDataError(
            f"BILLING_CLICKHOUSE_URL={settings.clickhouse_url}: no such directory (the demo "
            "prints the chdb:// URL of its run; a clickhouse:// URL reads a server)")
    data = DashboardData(partial(chdb_for_one_request, directory))
    data.check_tables()
    yield data


@click.command("dashboard")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; other than loopback needs BILLING_DASHBOARD_TOKEN.")
@click.option("--port", type=click.IntRange(1, 65535), default=8050, show_default=True)
def dashboard_command(host: str, port: int) -> None:
    """Serve a read-only web dashboard: totals, and each account's balance, status, limits,
    spend over time and events (BILLING_CLICKHOUSE_URL says which ClickHouse)."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    with ExitStack() as stack:
        try:
            token = load_token(host, os.environ)
            settings = load_settings()
            data = stack.enter_context(open_data(settings))
        except (SettingsError, DashboardDataError, ClickHouseError) as error:
            raise click.ClickException(str(error)) from None
        app = build_app(data, settings.clickhouse_url, token)
        log_event(log, "dashboard.start", host=host, port=port, token=token is not None,
                  clickhouse=settings.clickhouse_url)
        address = f"[{host}]" if ":" in host else host  # an IPv6 address in a URL
        click.echo(f"dashboard: http://{address}:{port}/ (read-only"
                   f"{', token required' if token else ''}) reading {settings.clickhouse_url}",
                   err=True)
        web.run_app(app, host=host, port=port, print=None, access_log_class=AccessLog,
                    access_log=log)
