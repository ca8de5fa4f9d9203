"""The Kafka broker of the local stack: one KRaft node (broker + controller) on 127.0.0.1.

Runs ``kafka.Kafka`` straight from the Maven-resolved jars (no tarball, no shell scripts), with a
config generated from ``stack/kafka/server.properties.template``. Storage is formatted once, on
first start, with a cluster id generated here; after that the data dir (topics, committed offsets,
transaction state) is reused, so a restart keeps everything.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import socket
import subprocess
import uuid
from collections.abc import Mapping
from pathlib import Path
from string import Template
from typing import Any

from kafka import KafkaAdminClient
from kafka.errors import KafkaError

from devkit.stack.install import STACK_DIR, cache_dir, ensure_kafka_libs, find_java
from devkit.stack.process import BackgroundServer
from runtime.logfmt import log_event
from runtime.settings import make_private
from runtime.topics import StackError

log = logging.getLogger("devkit.stack")

TEMPLATE = STACK_DIR / "kafka" / "server.properties.template"
LOG4J_CONFIG = STACK_DIR / "kafka" / "log4j2.properties"
# Sized for the project's 2-core, 24 GiB machines, which also run the worker, sink and tests.
HEAP = ("-Xms512m", "-Xmx1g")
JVM_OPTS = (
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-Djava.awt.headless=true",
)


def new_cluster_id() -> str:
    """A KRaft cluster id as Kafka makes them: 16 random bytes, URL-safe base64, no padding."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):  # Kafka avoids these too: they read as CLI flags
            return cluster_id


def kafka_answers(bootstrap: str, timeout: float = 2.0,
                  security: Mapping[str, Any] | None = None) -> bool:
    """A metadata request to ``bootstrap`` succeeds within about ``timeout`` seconds.

    ``security``: kafka-python keywords for a cluster that needs TLS or SASL
    (:func:`runtime.kafka_security.kafka_python_security`); our own broker needs none."""
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap.split(","),
            client_id="billing-stack-probe",
            bootstrap_timeout_ms=int(timeout * 1000),
            request_timeout_ms=int(timeout * 1000),
            reconnect_backoff_max_ms=500,
            **(security or {}),
        )
    except KafkaError:
        return False
    try:
        admin.list_topics()
    except KafkaError:
        return False
    finally:
        admin.close()
    return True


class KafkaServer(BackgroundServer):
    """``KafkaServer(settings).start()`` / ``.stop()`` / ``.is_running()`` / ``.answers()``."""

    name = "kafka"

    @property
    def config_file(self) -> Path:
        return self.home / "server.properties"

    @property
    def server_log(self) -> Path:
        return self.home / "server.log"

    @property
    def log_dirs(self) -> Path:
        """Kafka's ``log.dirs``: topics, offsets, and ``meta.properties`` with the cluster id."""
        return self.home / "data"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.settings.kafka_port}"

    @property
    def ports(self) -> dict[str, int]:
        return {
            "port": self.settings.kafka_port,
            "controller_port": self.settings.kafka_controller_port,
        }

    @property
    def cluster_id(self) -> str | None:
        """The id written by the first format, or None before it."""
        try:
            text = (self.log_dirs / "meta.properties").read_text()
        except FileNotFoundError:
            return None
        for line in text.splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "cluster.id":
                return value.strip()
        return None

    def prepare(self) -> list[str]:
        java = str(find_java())
        classpath = f"{ensure_kafka_libs(self.settings)}/*"
        make_private(self.home)
        make_private(self.log_dirs)  # format accepts an empty directory
        self.config_file.write_text(
            Template(TEMPLATE.read_text()).substitute(
                port=self.settings.kafka_port,
                controller_port=self.settings.kafka_controller_port,
                log_dirs=self.log_dirs,
                partitions=self.settings.partitions,
            )
        )
        common = [
            f"-Dkafka.logs.dir={self.home}",
            f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
            "-cp",
            classpath,
        ]
        if self.cluster_id is None:
            self._format(java, common)
        return [
            java,
            *HEAP,
            *JVM_OPTS,
            *self._class_data_sharing(),
            *common,
            "kafka.Kafka",
            str(self.config_file),
        ]

    @property
    def cds_archive(self) -> Path:
        """The broker's class-data-sharing archive, next to the jars it was made from."""
        return cache_dir(self.settings) / "kafka-libs" / "kafka.jsa"

    def _class_data_sharing(self) -> list[str]:
        """JVM options that map the broker's classes from an archive: a start on 2 busy cores
        takes about half the time. Without an archive yet, this run writes one when it exits
        (to a draft of this server's own; :meth:`stop` publishes it, so stacks that share the jar
        cache never read a half-written file). A stale or foreign archive is ignored by the JVM."""
        quiet = "-Xlog:cds*=off"  # its per-class warnings are noise in stdout.log
        if self.cds_archive.exists():
            return [f"-XX:SharedArchiveFile={self.cds_archive}", quiet]
        return [f"-XX:ArchiveClassesAtExit={self._cds_draft}", quiet]

    @property
    def _cds_draft(self) -> Path:
        """Beside the archive (so publishing is an atomic rename), named after this home."""
        owner = hashlib.sha256(str(self.home).encode()).hexdigest()[:12]
        return self.cds_archive.with_name(f"kafka.jsa.{owner}.draft")

    def stop(self, timeout: float = 30.0) -> bool:
        stopped = super().stop(timeout)
        if self._cds_draft.exists() and not self.cds_archive.exists():
            self._cds_draft.replace(self.cds_archive)
            log_event(log, "kafka.cds_archive", path=self.cds_archive)
        self._cds_draft.unlink(missing_ok=True)
        return stopped

    def _format(self, java: str, common: list[str]) -> None:
        """``kafka-storage format`` once: writes meta.properties and the bootstrap metadata."""
        cluster_id = new_cluster_id()
        result = subprocess.run(
            [
                java,
                "-Xmx256m",
                *common,
                "kafka.tools.StorageTool",
                "format",
                "-t",
                cluster_id,
                "-c",
                str(self.config_file),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise StackError(
                f"kafka storage format failed (exit {result.returncode}):\n"
                f"{result.stdout}{result.stderr}"
            )
        log_event(log, "kafka.formatted", cluster_id=cluster_id, log_dirs=self.log_dirs)

    def answers(self, timeout: float = 2.0) -> bool:
        """Our broker answers a metadata request (an open port alone is not enough)."""
        try:
            socket.create_connection(("127.0.0.1", self.settings.kafka_port), timeout).close()
        except OSError:
            return False
        return kafka_answers(self.bootstrap, timeout)
