"""ClickHouse clients of every command: the target of ``BILLING_CLICKHOUSE_URL`` and its login.

clickhouse-driver hangs on 18.16 when an INSERT carries inline ``VALUES``: send rows as data
(``client.execute("INSERT INTO t VALUES", rows)``), never in the query text.
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

from clickhouse_driver import Client
from clickhouse_driver.errors import Error as ClickHouseError

from runtime.settings import ClickHouseTarget, Settings, parse_clickhouse_url

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




def chdb_lock_holder(directory: Path) -> str | None:
    """Which other live process holds the chdb ``directory`` open, as ``process 123 (command
    line)``; None when none does. chdb opens a directory in one process at a time and writes the
    holder's pid to the ``status`` file it locks (a stale file of a dead process is ignored)."""
    try:
        first = (directory / "status").read_text("utf-8", "replace").splitlines()[0]
    except (OSError, IndexError):
        return None
    label, _, value = first.partition(":")
    if label.strip() != "PID" or not value.strip().isdigit():
        return None
    pid = int(value)
    if pid == os.getpid():
        return None
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().decode("utf-8", "replace")
    except OSError:
        return None  # no such process: the file is left over
    return f"process {pid} ({' '.join(command.replace(chr(0), ' ').split())[:200]})"
