"""The pipeline on a broker that requires SASL and enforces ACLs, as a managed Kafka does.

A private broker (the stack's own, plus a SASL_PLAINTEXT listener and Kafka's KRaft authorizer)
runs for this module. Each component connects as its own user, with the SASL mechanism shown in
:data:`USERS`, and holds exactly the ACLs that ``docs/operations.md`` lists for it
(:data:`ACLS`): topics are created with ``billing stack topics``, events sent with
``EventProducer``, the real ``billing worker`` (Faust over aiokafka, SCRAM-SHA-512) bills them, the
operator reads the state back from the changelog, and ``billing sink run`` (kafka-python,
SCRAM-SHA-256) loads them into an embedded ClickHouse. Nothing may log a password.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from string import Template

import pytest
from click.testing import CliRunner
from kafka.admin import (
    ACL,
    ACLOperation,
    ACLPermissionType,
    ACLResourcePatternType,
    ResourcePattern,
    ResourceType,
    UserScramCredentialUpsertion,
)

from commands.cli import main
from devkit.harness import WorkerProcess
from devkit.stack.kafka import KafkaServer, kafka_answers
from devkit.stack.process import port_in_use
from runtime.kafka_security import kafka_python_security
from runtime.observe import changelog_topic, group_lag, table_snapshots
from runtime.produce import EventProducer
from runtime.settings import REPO_ROOT, Settings, load_settings
from runtime.topics import admin_client

pytestmark = pytest.mark.integration

APP_ID = "billing-ledger"
SINK_GROUP = "billing-clickhouse-sink"
# user -> (SASL mechanism, password). PLAIN users are in the broker's config; SCRAM users are
# created through the admin API, as on a managed cluster's console.
USERS = {
    "ops": ("PLAIN", "ops-pw-5e1"),
    "gateway": ("PLAIN", "gateway-pw-2c9"),
    "worker": ("SCRAM-SHA-512", "worker-pw-8d4"),
    "sink": ("SCRAM-SHA-256", "sink-pw-7a0"),
}

SASL_CONFIG = Template("""
# Added by tests/integration/test_kafka_sasl.py: a SASL listener and ACLs. PLAINTEXT stays, for
# the readiness probe and the controller, as the (super) user ANONYMOUS.
listeners=PLAINTEXT://127.0.0.1:${port},SASL_PLAINTEXT://127.0.0.1:${sasl_port},\
CONTROLLER://127.0.0.1:${controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:${port},SASL_PLAINTEXT://127.0.0.1:${sasl_port}
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,\
SASL_PLAINTEXT:SASL_PLAINTEXT
sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512
listener.name.sasl_plaintext.plain.sasl.jaas.config=\
org.apache.kafka.common.security.plain.PlainLoginModule required ${plain_users};
listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config=\
org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config=\
org.apache.kafka.common.security.scram.ScramLoginModule required;
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users=User:ANONYMOUS
""")

READ, WRITE, CREATE, DESCRIBE = (ACLOperation.READ, ACLOperation.WRITE, ACLOperation.CREATE,
                                 ACLOperation.DESCRIBE)
DESCRIBE_CONFIGS, ALTER_CONFIGS = ACLOperation.DESCRIBE_CONFIGS, ACLOperation.ALTER_CONFIGS
TOPIC, GROUP = ResourceType.TOPIC, ResourceType.GROUP
LITERAL, PREFIXED = ACLResourcePatternType.LITERAL, ACLResourcePatternType.PREFIXED


def acls(settings: Settings) -> dict[str, list[tuple[ResourceType, str, object, ACLOperation]]]:
    """user -> (resource type, name, pattern type, operation): the table of docs/operations.md
    ("ACLs"). READ and WRITE imply DESCRIBE."""
    topics = settings.topics
    return {
        "ops": [*((TOPIC, "billing.", PREFIXED, op) for op in (
                    CREATE, DESCRIBE, DESCRIBE_CONFIGS, ALTER_CONFIGS)),
                (TOPIC, topics.dead_letter, LITERAL, READ), (TOPIC, f"{APP_ID}-", PREFIXED, READ),
                (GROUP, APP_ID, LITERAL, DESCRIBE), (GROUP, SINK_GROUP, LITERAL, DESCRIBE)],
        "gateway": [(TOPIC, topic, LITERAL, WRITE) for topic in topics.inputs],
        "worker": [*((TOPIC, topic, LITERAL, op) for topic in topics.inputs
                     for op in (READ, DESCRIBE_CONFIGS)),
                   *((TOPIC, topic, LITERAL, WRITE) for topic in (
                       topics.account_state, topics.usage_rated, topics.dead_letter,
                       topics.control, topics.account_status)),
                   *((TOPIC, f"{APP_ID}-", PREFIXED, op) for op in (CREATE, READ, WRITE)),
                   (GROUP, APP_ID, LITERAL, READ)],
        "sink": [(TOPIC, topics.account_state, LITERAL, READ),
                 (TOPIC, topics.usage_rated, LITERAL, READ),
                 (TOPIC, topics.account_status, LITERAL, READ),
                 (GROUP, SINK_GROUP, LITERAL, READ)],
    }


class SaslKafkaServer(KafkaServer):
    """The stack's broker, with the SASL listener and authorizer of :data:`SASL_CONFIG`."""

    def __init__(self, settings: Settings, sasl_port: int) -> None:
        super().__init__(settings)
        self.sasl_port = sasl_port

    @property
    def ports(self) -> dict[str, int]:
        return {**super().ports, "sasl_port": self.sasl_port}

    def prepare(self) -> list[str]:
        command = super().prepare()
        plain_users = " ".join(f'user_{name}="{password}"'
                               for name, (mechanism, password) in USERS.items()
                               if mechanism == "PLAIN")
        with self.config_file.open("a") as config:  # later keys win in a properties file
            config.write(SASL_CONFIG.substitute(plain_users=plain_users, **self.ports))
        return command


def _free_ports(count: int) -> list[int]:
    candidates = (port for port in random.sample(range(20000, 32000), 200)
                  if not port_in_use(port))
    return [next(candidates) for _ in range(count)]


@pytest.fixture(scope="module")
def sasl_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Starts the broker, creates the SCRAM users and the ACLs; yields the base environment of
    a client of the SASL listener (no user yet)."""
    port, controller_port, sasl_port = _free_ports(3)
    data_dir = tmp_path_factory.mktemp("sasl-stack")
    env = {"BILLING_DATA_DIR": str(data_dir), "BILLING_CACHE_DIR": str(REPO_ROOT / "var"),
           "BILLING_KAFKA_PORT": str(port), "BILLING_KAFKA_CONTROLLER_PORT": str(controller_port)}
    superuser = load_settings(env)  # PLAINTEXT, the stack's usual port
    server = SaslKafkaServer(superuser, sasl_port)
    server.start(timeout=180)
    try:
        with admin_client(superuser) as admin:
            errors = admin.alter_user_scram_credentials([
                UserScramCredentialUpsertion(name, mechanism, password)
                for name, (mechanism, password) in USERS.items() if mechanism != "PLAIN"])
            assert not any(errors.values()), errors
            rules = [ACL(f"User:{user}", "*", operation, ACLPermissionType.ALLOW,
                         ResourcePattern(kind, name, pattern))
                     for user, grants in acls(superuser).items()
                     for kind, name, pattern, operation in grants]
            assert not admin.create_acls(rules)["failed"]
        yield {**env, "BILLING_KAFKA_BOOTSTRAP": f"127.0.0.1:{sasl_port}",
               "BILLING_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT"}
    finally:
        server.stop()


def as_user(base: dict[str, str], user: str, password: str | None = None) -> Settings:
    mechanism, known = USERS[user]
    return load_settings({**base, "BILLING_KAFKA_SASL_MECHANISM": mechanism,
                          "BILLING_KAFKA_SASL_USERNAME": user,
                          "BILLING_KAFKA_SASL_PASSWORD": password or known})


START = datetime(2026, 3, 1, 12, tzinfo=UTC)
EVENTS = [
    {"type": "account_opened", "event_id": "open-1", "account_id": "acct-1", "timestamp": START,
     "created_at": START, "contract": "self_serve"},
    {"type": "credits_purchased", "event_id": "buy-1", "account_id": "acct-1",
     "timestamp": START + timedelta(minutes=1), "amount": "20.00", "payment_id": "pay-1"},
    *({"type": "usage", "event_id": f"use-{n}", "account_id": "acct-1",
       "timestamp": START + timedelta(minutes=2 + n), "product": "llama-v3p1-8b",
       "quantities": {"input_tokens": 1_000_000}} for n in range(2)),
]


def test_a_wrong_password_is_refused(sasl_broker: dict[str, str]) -> None:
    for settings, answers in ((as_user(sasl_broker, "ops"), True),
                              (as_user(sasl_broker, "ops", password="wrong"), False)):
        assert kafka_answers(settings.kafka_bootstrap, timeout=10,
                             security=kafka_python_security(settings)) is answers


def test_every_component_works_with_its_own_user_and_acls(sasl_broker: dict[str, str],
                                                          tmp_path: Path) -> None:
    ops, worker_settings, sink = (as_user(sasl_broker, user) for user in ("ops", "worker", "sink"))
    created = CliRunner().invoke(main, ["stack", "topics"], env=ops.to_env())
    assert created.exit_code == 0 and "created" in created.output, created.output

    with EventProducer(as_user(sasl_broker, "gateway")) as producer:
        for event in EVENTS:
            producer.send(event)

    WorkerProcess(worker_settings, APP_ID, tmp_path / "worker.log").run_to_end(timeout=300)
    # $1 free credit + $20, two usages of 1M llama tokens at $0.20 each.
    snapshot = table_snapshots(ops, APP_ID)["acct-1"]
    assert snapshot["lifetime_spend"] == Decimal("0.400000")
    assert snapshot["credit_balance"] == Decimal("20.600000")
    assert changelog_topic(APP_ID).startswith(f"{APP_ID}-")  # the prefix the ACLs grant
    assert group_lag(ops, APP_ID, ops.topics.inputs) == 0
    listed = CliRunner().invoke(main, ["deadletter", "list"], env=ops.to_env())
    assert listed.exit_code == 0, listed.output

    chdb = {"BILLING_CLICKHOUSE_URL": f"chdb://{tmp_path / 'chdb'}"}
    _run_sink_until_caught_up(sink, chdb, tmp_path / "sink.log")
    counted = subprocess.run(
        [sys.executable, "-m", "commands.cli", "sql",
         "SELECT (SELECT count() FROM rated_usage FINAL) AS rated, "
         "(SELECT count() FROM account_state_events FINAL) > 0 AS outputs"],
        env={**os.environ, **chdb}, capture_output=True, text=True, timeout=120, check=True)
    assert counted.stdout.splitlines()[2].split() == ["2", "1"], counted.stdout
    assert group_lag(ops, SINK_GROUP, (ops.topics.account_state, ops.topics.usage_rated,
                                       ops.topics.account_status)) == 0

    for log in (tmp_path / "worker.log", tmp_path / "sink.log"):
        text = log.read_text(errors="replace")
        assert not any(password in text for _, password in USERS.values()), log


def _run_sink_until_caught_up(settings: Settings, extra_env: dict[str, str], log: Path,
                              timeout: float = 180) -> None:
    """``billing sink run`` as a child until it reports messages written and no lag."""
    with log.open("wb") as out:
        sink = subprocess.Popen(
            [sys.executable, "-m", "commands.cli", "sink", "run", "--progress-seconds", "1"],
            env={**os.environ, **settings.to_env(), **extra_env}, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lines = [line for line in log.read_text(errors="replace").splitlines()
                     if line.startswith("messages ")]
            if lines and not lines[-1].startswith("messages 0 ") and " lag 0 " in lines[-1]:
                return
            assert sink.poll() is None, log.read_text(errors="replace")
            time.sleep(1)
        raise TimeoutError(f"the sink did not catch up:\n{log.read_text(errors='replace')}")
    finally:
        sink.terminate()
        sink.wait(60)
