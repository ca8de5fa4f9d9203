"""A private copy of the pipeline on a shared broker: its own topics, and the worker as a child.

The end-to-end tests and ``billing demo`` both run the real ``billing worker`` against a broker
that other runs use too. Each gets topics named ``<prefix>.<topic>`` and the app id
``ledger-<prefix>`` (the consumer group and the changelog topics), so runs never read each other's
events or state, and a re-run starts from empty topics.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

from kafka import KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from runtime.observe import group_lag, wait_until
from runtime.settings import Settings
from runtime.topics import admin_client, ensure_topics
from schemas.topics import Topics
from streams.intake import EXIT_STUCK
from streams.sender import partition_of

# A row of Faust's "Highwater" and "Reading Starts At" log tables: topic | partition | offset.
RECOVERY_TABLE_ROW = re.compile(rb"^\| (\S+)\s+\| (\d+)\s+\| (-?\d+)\s+\|$")


def private_pipeline(settings: Settings, prefix: str) -> tuple[Settings, str]:
    """Settings whose topics are ``<prefix>.<configured name>``, created on the broker, and the
    matching app id ``ledger-<prefix>``."""
    topics = Topics(**{name: f"{prefix}.{getattr(settings.topics, name)}"
                       for name in Topics.__dataclass_fields__})
    private = replace(settings, topics=topics)
    ensure_topics(private)
    return private, f"ledger-{prefix}"


class WorkerExited(RuntimeError):
    """The worker process ended while it was expected to run; the message ends with its log."""


class WorkerProcess:
    """``billing worker`` as a child process with the given settings and app id.

    A child rather than a thread because the worker runs its own asyncio loop and Faust owns the
    process's signals; as a separate process it also gets a core of its own. Its table store is
    ``memory://`` by default (recovered from the changelog at each start; ``rocksdb://`` for the
    production configuration) and its output goes to ``log_path``.

    Like a production supervisor, it restarts a worker that exited with
    :data:`~streams.intake.EXIT_STUCK` (it made no progress, see ``billing worker --help``) and
    counts those restarts in :attr:`stuck_restarts`.
    """

    def __init__(self, settings: Settings, app_id: str, log_path: Path,
                 store: str = "memory://", module: str = "commands.cli",
                 env: dict[str, str] | None = None) -> None:
        """``module`` is the one run with ``python -m MODULE worker`` (tests wrap the CLI);
        ``env``: more variables for the worker (its web port, say)."""
        self.settings, self.app_id, self.log_path, self.store = settings, app_id, log_path, store
        self.module, self.env = module, env or {}
        self.process: subprocess.Popen[bytes] | None = None
        self.stuck_restarts = 0

    def start(self) -> WorkerProcess:
        env = {**os.environ, **self.settings.to_env(), "BILLING_APP_ID": self.app_id,
               "BILLING_TABLE_STORE": self.store, "BILLING_SESSION_TIMEOUT": "10",
               "BILLING_STUCK_SECONDS": "60", **self.env}
        log = open(self.log_path, "ab")  # noqa: SIM115 (owned by the child)
        self.process = subprocess.Popen(
            [sys.executable, "-m", self.module, "worker", "--loglevel", "info"],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def check_running(self) -> None:
        """Raise :class:`WorkerExited` (with the end of its log) if the worker has ended."""
        if self.process is not None and self.process.poll() == EXIT_STUCK:
            self.stuck_restarts += 1
            self.start()
            return
        if self.process is None or self.process.poll() is not None:
            code = None if self.process is None else self.process.returncode
            raise WorkerExited(f"the worker is not running (exit code {code}); "
                               f"end of {self.log_path}:\n{self.log_tail()}")

    def lag(self) -> int:
        """Input messages the worker's consumer group has not committed yet."""
        return group_lag(self.settings, self.app_id, self.settings.topics.inputs)

    def lag_reached(self, at_most: int) -> bool:
        """Whether the lag is down to ``at_most``, for polling: raises if the worker ended, and
        says no while the broker or its group coordinator is (re)starting."""
        self.check_running()
        try:
            return self.lag() <= at_most
        except KafkaError:
            return False

    def run_to_end(self, timeout: float) -> WorkerProcess:
        """Start, wait until every input is committed, stop (also when waiting fails)."""
        self.start()
        try:
            self.wait_drained(timeout)
        finally:
            self.stop()
        return self

    def wait_drained(self, timeout: float) -> None:
        """Until the group has committed every input (twice in a row, a commit apart); raises
        :class:`TimeoutError` with the lag and the log's end, or :class:`WorkerExited`."""
        def drained() -> bool:
            return self.lag_reached(0)
        try:
            wait_until(drained, timeout, interval=1.0, what="the worker to drain its inputs")
            wait_until(drained, 30, interval=4.0, what="the worker to stay drained")
        except TimeoutError as error:
            raise TimeoutError(f"{error}; lag={self.lag()}\n{self.log_tail()}") from None


def create_changelog(settings: Settings, topic: str) -> None:
    """A table's changelog topic as Faust declares it: compacted, one partition per table
    partition (Faust finds it existing when the worker starts)."""
    with admin_client(settings) as admin, contextlib.suppress(TopicAlreadyExistsError):
        admin.create_topics([NewTopic(topic, settings.partitions,
                                      settings.replication_factor,
                                      topic_configs={"cleanup.policy": "compact"})])


def fill_changelog(settings: Settings, topic: str,
                   records: Iterable[tuple[bytes, bytes]]) -> int:
    """Write (account id, value) table records, each in the partition the worker would write
    it to (that of the account's input events); return the value bytes written."""
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks=1, linger_ms=50,
                             batch_size=1024 * 1024, max_request_size=16 * 1024 * 1024)
    written = 0
    try:
        for key, value in records:
            producer.send(topic, key=key, value=value,
                          partition=partition_of(key, settings.partitions))
            written += len(value)
        producer.flush()
    finally:
        producer.close()
    return written


def recovery_tables(log: bytes, table_topic: str) -> tuple[dict[int, int], dict[int, int]]:
    """(high-water, start offset) by partition of a table's changelog, from the last "Highwater"
    and "Reading Starts At" tables Faust logged in ``log`` for its active partitions."""
    tables: dict[bytes, dict[int, int]] = {b"Highwater": {}, b"Reading Starts At": {}}
    current: dict[int, int] | None = None
    topic = b""
    for line in log.splitlines():
        if line.startswith(b"+") and line.lstrip(b"+").split(b" - ")[0] in tables:
            current = tables[line.lstrip(b"+").split(b" - ")[0]]
            continue
        row = RECOVERY_TABLE_ROW.match(line.strip()) if current is not None else None
        if row:
            topic = row.group(1) if row.group(1) != "〃".encode() else topic
            if topic == table_topic.encode():
                current[int(row.group(2))] = int(row.group(3))  # type: ignore[index]
    return tables[b"Highwater"], tables[b"Reading Starts At"]


def records_to_recover(log: bytes, table_topic: str) -> int:
    """The changelog records of a table that the worker's last recovery in ``log`` read: the sum
    of (high-water - start offset) over its partitions (start -1: from the beginning)."""
    highwater, start = recovery_tables(log, table_topic)
    return sum(max(0, mark - start.get(partition, -1)) for partition, mark in highwater.items())
