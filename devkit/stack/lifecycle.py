"""The whole stack at once: start, stop and inspect Kafka and ClickHouse together.

Shared by ``billing stack up|down|status`` and the test fixtures, so both start the stack the same
way. Parts the settings point elsewhere (``BILLING_KAFKA_BOOTSTRAP`` / ``BILLING_CLICKHOUSE_URL`` at
an existing cluster) are not started, only probed: the same code then runs against that cluster.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from devkit.stack.clickhouse import ClickHouseServer
from devkit.stack.kafka import KafkaServer, kafka_answers
from runtime import clickhouse
from runtime.clickhouse import clickhouse_answers
from runtime.kafka_security import kafka_python_security
from runtime.logfmt import log_event
from runtime.settings import Settings, make_private, private_dir
from runtime.topics import ensure_topics

log = logging.getLogger("devkit.stack")


@dataclass(frozen=True)
class PartStatus:
    """What ``billing stack status`` reports for one part."""

    name: str
    state: str  # running | stopped | external
    address: str
    answers: bool
    pid: int | None = None
    note: str = ""
    required: bool = True  # False for the server when the project uses embedded chdb

    @property
    def healthy(self) -> bool:
        return self.answers or not self.required

    def line(self) -> str:
        fields = [f"{self.name}: {self.state}"]
        if self.pid is not None:
            fields.append(f"pid={self.pid}")
        fields += [f"address={self.address}", f"answers={'yes' if self.answers else 'no'}"]
        if self.note:
            fields.append(f"({self.note})")
        return " ".join(fields)


def start_stack(
    settings: Settings, *, with_clickhouse: bool = True, timeout: float = 120.0
) -> dict[str, str]:
    """Start what is local and not running, create the topics; return part -> what happened.

    The data directory is created private (0700) when missing; the servers' homes and the
    worker's RocksDB directory (``faust/``) inside it are made private in any case."""
    outcome = {}
    private_dir(settings.data_dir)
    make_private(settings.data_dir / "faust")
    kafka_server = KafkaServer(settings) if settings.uses_local_kafka else None
    ch_server = (
        ClickHouseServer(settings) if with_clickhouse and clickhouse.is_managed(settings) else None
    )
    for part in (kafka_server, ch_server):
        if part is not None and not part.is_running():
            part.check_ports_free()  # all clashes up front, before anything is started
    if kafka_server is not None:
        started = kafka_server.start(timeout)
        outcome["kafka"] = "started" if started else "already running"
    else:
        outcome["kafka"] = f"external ({settings.kafka_bootstrap}), not started"
    if not with_clickhouse:
        outcome["clickhouse"] = "skipped (--no-clickhouse)"
    elif ch_server is not None:
        started = ch_server.start(timeout)
        target = clickhouse.server_target(settings)
        if target is not None:
            ch_server.ensure_database(target.database)
        log_event(log, "clickhouse.ready", version=ch_server.version(), **ch_server.ports)
        outcome["clickhouse"] = "started" if started else "already running"
    else:
        outcome["clickhouse"] = f"external ({settings.clickhouse_url}), not started"
    created = ensure_topics(settings)
    outcome["topics"] = f"created {', '.join(created)}" if created else "all present"
    return outcome


def stop_stack(settings: Settings, timeout: float = 30.0) -> dict[str, str]:
    """Stop both local servers (whatever the settings point at); return part -> what happened."""
    return {
        server.name: "stopped" if server.stop(timeout) else "not running"
        for server in (ClickHouseServer(settings), KafkaServer(settings))
    }


def stack_status(settings: Settings) -> list[PartStatus]:
    """Each part: running or not, where, and whether it answers a real request."""
    return [_kafka_status(settings), _clickhouse_status(settings)]


def _kafka_status(settings: Settings) -> PartStatus:
    if not settings.uses_local_kafka:
        return PartStatus(
            "kafka", "external", settings.kafka_bootstrap,
            kafka_answers(settings.kafka_bootstrap, security=kafka_python_security(settings)),
        )
    server = KafkaServer(settings)
    pid = server.pid
    return PartStatus(
        "kafka",
        "running" if pid else "stopped",
        server.bootstrap,
        pid is not None and server.answers(),
        pid,
        f"controller port {settings.kafka_controller_port}, data {server.log_dirs}",
    )


def _clickhouse_status(settings: Settings) -> PartStatus:
    target = clickhouse.server_target(settings)
    if target is not None and not clickhouse.is_managed(settings):
        return PartStatus(
            "clickhouse", "external", f"{target.host}:{target.port}", clickhouse_answers(target)
        )
    server = ClickHouseServer(settings)
    pid = server.pid
    note = f"http port {settings.clickhouse_http_port}, data {server.home / 'data'}"
    if target is None:
        note += "; BILLING_CLICKHOUSE_URL is embedded chdb, the server is optional"
    return PartStatus(
        "clickhouse",
        "running" if pid else "stopped",
        f"127.0.0.1:{settings.clickhouse_port}",
        pid is not None and server.answers(),
        pid,
        note,
        required=target is not None,
    )
