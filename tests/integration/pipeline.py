"""Helpers for the end-to-end tests: isolated topics, publishing a workload, running the worker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

from kafka import KafkaProducer

from billing.codec import encode
from billing.events import TOPIC_OF_TYPE, dumps
from billing.ledger import to_millis
from billing.settings import Settings, Topics
from billing.stack.topics import ensure_topics
from streams.merge import KIND_RANK
from streams.observe import group_lag, wait_until


def isolated(settings: Settings, label: str) -> tuple[Settings, str]:
    """Fresh topics and a fresh app id, so tests sharing one broker do not see each other."""
    suffix = f"{label}-{uuid.uuid4().hex[:8]}"
    topics = Topics(**{name: f"{suffix}.{getattr(Topics(), name)}"
                       for name in Topics.__dataclass_fields__})
    isolated_settings = replace(settings, topics=topics)
    ensure_topics(isolated_settings)
    return isolated_settings, f"ledger-{suffix}"


def in_merge_order(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Events as the worker applies them: by event time, then topic rank (stable otherwise)."""
    return sorted(events, key=lambda event: (to_millis(event["timestamp"]),
                                             KIND_RANK[TOPIC_OF_TYPE[event["type"]]]))


def publish(settings: Settings, events: list[dict[str, Any]]) -> None:
    """Send canonical events to their topics, keyed by account, and wait for every ack."""
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all",
                             linger_ms=20, batch_size=256 * 1024)
    try:
        for event in events:
            kind = TOPIC_OF_TYPE[event["type"]]
            producer.send(getattr(settings.topics, kind), key=event["account_id"].encode(),
                          value=encode(kind, event))
        producer.flush()
    finally:
        producer.close()


def write_jsonl(path: Path, events: list[dict[str, Any]]) -> Path:
    path.write_bytes(b"".join(dumps(event) + b"\n" for event in events))
    return path


class WorkerProcess:
    """``billing worker`` as a child process with the test's settings."""

    def __init__(self, settings: Settings, app_id: str, log_path: Path) -> None:
        self.settings, self.app_id, self.log_path = settings, app_id, log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        env = {**os.environ, **self.settings.to_env(), "BILLING_APP_ID": self.app_id,
               "BILLING_TABLE_STORE": "memory://", "BILLING_SESSION_TIMEOUT": "10"}
        log = open(self.log_path, "ab")  # noqa: SIM115 (owned by the child)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "billing.cli", "worker", "--loglevel", "info"],
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

    def lag(self) -> int:
        return group_lag(self.settings, self.app_id, self.settings.topics.inputs)

    def wait_drained(self, timeout: float) -> None:
        """Until the group has committed every input (twice in a row, a commit apart)."""
        def drained() -> bool:
            assert self.process is not None and self.process.poll() is None, \
                f"worker exited:\n{self.log_tail()}"
            return self.lag() == 0
        try:
            wait_until(drained, timeout, interval=1.0, what="the worker to drain its inputs")
            wait_until(drained, 30, interval=4.0, what="the worker to stay drained")
        except TimeoutError as error:
            raise AssertionError(f"{error}; lag={self.lag()}\n{self.log_tail()}") from None
