"""The ClickHouse server of the local stack: Debian's 18.16 ``clickhouse-server`` on 127.0.0.1.

The package's own config (``/etc/clickhouse-server``) is left alone: config.xml and users.xml are
generated from ``stack/clickhouse/*.template`` into ``<data_dir>/clickhouse/`` so the server runs as
the invoking user with project-local data, ports from settings, and the profile the sink needs.

clickhouse-driver hangs on 18.16 when an INSERT carries inline ``VALUES``: send rows as data
(``client.execute("INSERT INTO t VALUES", rows)``), never in the query text.
"""

from __future__ import annotations

from pathlib import Path
from string import Template

from clickhouse_driver import Client

from devkit.stack.install import STACK_DIR, ensure_clickhouse_binary
from devkit.stack.process import BackgroundServer
from runtime.clickhouse import IDENTIFIER, clickhouse_answers, clickhouse_client, local_target
from runtime.settings import make_private
from runtime.topics import StackError

TEMPLATES = STACK_DIR / "clickhouse"


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
