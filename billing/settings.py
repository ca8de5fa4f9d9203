"""Runtime settings: where Kafka and ClickHouse are, what the topics are called, where data lives.

Everything is read from environment variables (``BILLING_*``) with defaults that point at the local
stack started by ``billing stack up``, so the same code runs against an existing cluster by setting
variables and nothing else. Values are validated here, once, so a bad setting fails at start with a
message that names the variable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable and the fix."""


@dataclass(frozen=True)
class Topics:
    """Kafka topic names (section 3 of the billing rules)."""

    usage: str = "billing.usage"
    payments: str = "billing.payments"
    accounts: str = "billing.accounts"
    control: str = "billing.control"
    account_state: str = "billing.account-state"
    dead_letter: str = "billing.dead-letter"
    usage_rated: str = "billing.usage-rated"

    @property
    def inputs(self) -> tuple[str, ...]:
        """The co-partitioned input topics, in the order the worker subscribes to them."""
        return (self.usage, self.payments, self.accounts, self.control)

    @property
    def all(self) -> tuple[str, ...]:
        return (*self.inputs, self.account_state, self.dead_letter, self.usage_rated)


@dataclass(frozen=True)
class Settings:
    """Where everything is. Build with :func:`load_settings`; never mutate."""

    data_dir: Path
    kafka_bootstrap: str
    kafka_port: int
    kafka_controller_port: int
    clickhouse_url: str
    clickhouse_port: int
    clickhouse_http_port: int
    partitions: int
    replication_factor: int
    schema_registry_url: str | None
    topics: Topics = field(default_factory=Topics)
    # Downloaded tools of the local stack (Maven repo, Kafka jars); None means data_dir. Kept apart
    # so a test session's throw-away data_dir reuses jars that were downloaded once.
    cache_dir: Path | None = None

    def to_env(self) -> dict[str, str]:
        """The ``BILLING_*`` variables that reproduce these settings in a child process."""
        env = {
            "BILLING_DATA_DIR": str(self.data_dir),
            "BILLING_KAFKA_BOOTSTRAP": self.kafka_bootstrap,
            "BILLING_KAFKA_PORT": str(self.kafka_port),
            "BILLING_KAFKA_CONTROLLER_PORT": str(self.kafka_controller_port),
            "BILLING_CLICKHOUSE_URL": self.clickhouse_url,
            "BILLING_CLICKHOUSE_PORT": str(self.clickhouse_port),
            "BILLING_CLICKHOUSE_HTTP_PORT": str(self.clickhouse_http_port),
            "BILLING_PARTITIONS": str(self.partitions),
            "BILLING_REPLICATION_FACTOR": str(self.replication_factor),
        }
        if self.schema_registry_url:
            env["BILLING_SCHEMA_REGISTRY_URL"] = self.schema_registry_url
        if self.cache_dir is not None:
            env["BILLING_CACHE_DIR"] = str(self.cache_dir)
        for name, variable in TOPIC_VARIABLES:
            env[variable] = getattr(self.topics, name)
        return env

    @property
    def uses_local_kafka(self) -> bool:
        """True when the bootstrap servers are the local stack's (``billing stack`` runs it)."""
        return self.kafka_bootstrap == f"127.0.0.1:{self.kafka_port}"


TOPIC_VARIABLES = (
    ("usage", "BILLING_TOPIC_USAGE"),
    ("payments", "BILLING_TOPIC_PAYMENTS"),
    ("accounts", "BILLING_TOPIC_ACCOUNTS"),
    ("control", "BILLING_TOPIC_CONTROL"),
    ("account_state", "BILLING_TOPIC_ACCOUNT_STATE"),
    ("dead_letter", "BILLING_TOPIC_DEAD_LETTER"),
    ("usage_rated", "BILLING_TOPIC_USAGE_RATED"),
)


def _int(env: Mapping[str, str], name: str, default: int, low: int = 1, high: int = 65535) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a whole number") from None
    if not low <= value <= high:
        raise SettingsError(f"{name}={value} is out of range [{low}, {high}]")
    return value


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read settings from ``env`` (default: the process environment) and validate them."""
    env = os.environ if env is None else env
    data_dir = Path(env.get("BILLING_DATA_DIR") or REPO_ROOT / "var").expanduser().resolve()
    kafka_port = _int(env, "BILLING_KAFKA_PORT", 19092)
    controller_port = _int(env, "BILLING_KAFKA_CONTROLLER_PORT", kafka_port + 1)
    clickhouse_port = _int(env, "BILLING_CLICKHOUSE_PORT", 19000)
    clickhouse_http_port = _int(env, "BILLING_CLICKHOUSE_HTTP_PORT", 18123)
    bootstrap = env.get("BILLING_KAFKA_BOOTSTRAP") or f"127.0.0.1:{kafka_port}"
    if any(not part.rpartition(":")[2].isdigit() for part in bootstrap.split(",")):
        raise SettingsError(
            f"BILLING_KAFKA_BOOTSTRAP={bootstrap!r} must be host:port[,host:port...]"
        )
    clickhouse_url = env.get("BILLING_CLICKHOUSE_URL") or "chdb://" + str(data_dir / "chdb")
    if not clickhouse_url.startswith(("chdb://", "clickhouse://")):
        raise SettingsError(
            f"BILLING_CLICKHOUSE_URL={clickhouse_url!r} must start with clickhouse:// "
            "(a server, native protocol) or chdb:// (embedded, a directory path)"
        )
    topics = Topics(**{name: env[var] for name, var in TOPIC_VARIABLES if env.get(var)})
    return Settings(
        data_dir=data_dir,
        kafka_bootstrap=bootstrap,
        kafka_port=kafka_port,
        kafka_controller_port=controller_port,
        clickhouse_url=clickhouse_url,
        clickhouse_port=clickhouse_port,
        clickhouse_http_port=clickhouse_http_port,
        partitions=_int(env, "BILLING_PARTITIONS", 4, high=1024),
        replication_factor=_int(env, "BILLING_REPLICATION_FACTOR", 1, high=16),
        schema_registry_url=env.get("BILLING_SCHEMA_REGISTRY_URL") or None,
        topics=topics,
        cache_dir=Path(env["BILLING_CACHE_DIR"]).expanduser().resolve()
        if env.get("BILLING_CACHE_DIR")
        else None,
    )
