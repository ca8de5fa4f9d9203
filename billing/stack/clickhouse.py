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
from urllib.parse import urlsplit

from clickhouse_driver import Client
from clickhouse_driver.errors import Error as ClickHouseError

from billing.settings import Settings
from billing.stack.install import STACK_DIR, ensure_clickhouse_binary
from billing.stack.process import BackgroundServer, StackError

TEMPLATES = STACK_DIR / "clickhouse"
LOCAL_HOSTS = ("127.0.0.1", "localhost")
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def clickhouse_client(
    host: str, port: int, timeout: float = 10.0, database: str = "default"
) -> Client:
    """A native-protocol client with bounded timeouts (the driver's defaults wait minutes)."""
    return Client(
        host=host,
        port=port,
        database=database,
        connect_timeout=timeout,
        send_receive_timeout=timeout,
        sync_request_timeout=timeout,
    )


def clickhouse_answers(host: str, port: int, timeout: float = 2.0) -> bool:
    """``SELECT 1`` on ``host:port`` succeeds within about ``timeout`` seconds."""
    try:
        socket.create_connection((host, port), timeout).close()
    except OSError:
        return False
    client = clickhouse_client(host, port, timeout)
    try:
        return client.execute("SELECT 1") == [(1,)]
    except (ClickHouseError, OSError, EOFError):
        return False
    finally:
        client.disconnect()


def server_target(settings: Settings) -> tuple[str, int, str] | None:
    """(host, port, database) of a ``clickhouse://`` URL; None for embedded ``chdb://``."""
    url = urlsplit(settings.clickhouse_url)
    if url.scheme != "clickhouse":
        return None
    return url.hostname or "127.0.0.1", url.port or 9000, url.path.strip("/") or "default"


def is_managed(settings: Settings) -> bool:
    """True when ``billing stack`` runs the server the settings point at (or they use chdb)."""
    target = server_target(settings)
    return target is None or (target[0] in LOCAL_HOSTS and target[1] == settings.clickhouse_port)


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
        (self.home / "data").mkdir(parents=True, exist_ok=True)
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
        return clickhouse_answers("127.0.0.1", self.settings.clickhouse_port, timeout)

    def client(self, database: str = "default") -> Client:
        """A client for our server (callers ``disconnect()`` it when done)."""
        return clickhouse_client("127.0.0.1", self.settings.clickhouse_port, database=database)

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
