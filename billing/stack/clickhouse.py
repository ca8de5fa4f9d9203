"""The ClickHouse server of the local stack: Debian's 18.16 ``clickhouse-server`` on 127.0.0.1.

The package's own config (``/etc/clickhouse-server``) is left alone: config.xml and users.xml are
generated from ``stack/clickhouse/*.template`` into ``<data_dir>/clickhouse/`` so the server runs as
the invoking user with project-local data, ports from settings, and the profile the sink needs.

clickhouse-driver hangs on 18.16 when an INSERT carries inline ``VALUES``: send rows as data
(``client.execute("INSERT INTO t VALUES", rows)``), never in the query text.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path
from string import Template

from clickhouse_driver import Client
from clickhouse_driver.errors import Error as ClickHouseError

from billing.settings import ClickHouseTarget, Settings, make_private, parse_clickhouse_url
from billing.stack.install import STACK_DIR, ensure_clickhouse_binary
from billing.stack.process import BackgroundServer, StackError

TEMPLATES = STACK_DIR / "clickhouse"
LOCAL_HOSTS = ("127.0.0.1", "localhost")
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def clickhouse_client(target: ClickHouseTarget, *, database: str | None = None,
                      timeout: float = 10.0, query_timeout: float | None = None) -> Client:
    """The native-protocol client of every command: ``target``'s user, password and TLS, in
    ``database`` (default the target's), with bounded timeouts. ``query_timeout`` (default
    ``timeout``; the driver's own is 5 minutes) bounds each read and write of a query."""
    return Client(
        host=target.host,
        port=target.port,
        database=target.database if database is None else database,
        user=target.user,
        password=target.password or "",
        secure=target.secure,
        ca_certs=None if target.ca_certs is None else str(target.ca_certs),
        connect_timeout=timeout,
        send_receive_timeout=timeout if query_timeout is None else query_timeout,
        sync_request_timeout=timeout,
    )


def local_target(settings: Settings) -> ClickHouseTarget:
    """The local stack's server, as its passwordless ``default`` user (``users.xml``)."""
    return ClickHouseTarget("127.0.0.1", settings.clickhouse_port, "default")


def clickhouse_answers(target: ClickHouseTarget, timeout: float = 2.0) -> bool:
    """``SELECT 1`` on ``target`` succeeds within about ``timeout`` seconds (with its login)."""
    try:
        socket.create_connection((target.host, target.port), timeout).close()
    except OSError:
        return False
    client = clickhouse_client(target, timeout=timeout)
    try:
        return client.execute("SELECT 1") == [(1,)]
    except (ClickHouseError, OSError, EOFError):
        return False
    finally:
        client.disconnect()


def server_target(settings: Settings) -> ClickHouseTarget | None:
    """The server of ``BILLING_CLICKHOUSE_URL`` with its login (``BILLING_CLICKHOUSE_PASSWORD``)
    and TLS; None for embedded ``chdb://``. The one place the URL is read."""
    return parse_clickhouse_url(settings.clickhouse_url, settings.clickhouse_password)


def is_managed(settings: Settings) -> bool:
    """True when ``billing stack`` runs the server the settings point at (or they use chdb)."""
    target = server_target(settings)
    return target is None or (target.host in LOCAL_HOSTS
                              and target.port == settings.clickhouse_port)


class ClickHouseServer(BackgroundServer):
    """``ClickHouseServer(settings).start()`` / ``.stop()`` / ``.is_running()`` / ``.answers()``."""

    name = "clickhouse"

    @property
    def config_file(self) -> Path:
        return self.home / "config.xml"

    @property
    def server_log(self) -> Path:
        return self.home / "server.log"

    @property
    def ports(self) -> dict[str, int]:
        return {
            "tcp_port": self.settings.clickhouse_port,
            "http_port": self.settings.clickhouse_http_port,
        }

    def prepare(self) -> list[str]:
        binary = ensure_clickhouse_binary()
        make_private(self.home)
        make_private(self.home / "data")
        values = {
            "home": self.home,
            "tcp_port": self.settings.clickhouse_port,
            "http_port": self.settings.clickhouse_http_port,
        }
        for name in ("config.xml", "users.xml"):
            template = Template((TEMPLATES / f"{name}.template").read_text())
            (self.home / name).write_text(template.substitute(values))
        return [str(binary), f"--config-file={self.config_file}"]

    def answers(self, timeout: float = 2.0) -> bool:
        return clickhouse_answers(local_target(self.settings), timeout)

    def client(self, database: str = "default") -> Client:
        """A client for our server (callers ``disconnect()`` it when done)."""
        return clickhouse_client(local_target(self.settings), database=database)

    def version(self) -> str:
        client = self.client()
        try:
            return str(client.execute("SELECT version()")[0][0])
        finally:
            client.disconnect()

    def ensure_database(self, database: str) -> None:
        """Create the database a ``clickhouse://.../<db>`` URL names, so clients can connect."""
        if not IDENTIFIER.fullmatch(database):
            raise StackError(
                f"BILLING_CLICKHOUSE_URL names database {database!r}: not an identifier"
            )
        client = self.client()
        try:
            client.execute(f"CREATE DATABASE IF NOT EXISTS `{database}`")
        finally:
            client.disconnect()
