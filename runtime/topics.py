"""The project's Kafka topics: created up front, because the broker never auto-creates them.

The input topics (``settings.topics.inputs``) are consumed together by key, so they must be
co-partitioned: same partition count, same partitioner. A mismatch cannot be repaired by adding
partitions (that would move keys), so it stops the run with a message instead of being papered over.
Faust creates its own (compacted) changelog topics itself; nothing is needed here for them.

Some topics need a configuration (:func:`required_configs`): the inputs append with
``message.timestamp.type=LogAppendTime`` (the broker's clock is the reference: billing rules,
section 4), and ``billing.account-status`` is compacted (each account's latest snapshot). Topics
are created with it, and an existing topic without it is fixed with an incremental alter-config
(only those keys change).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from kafka import KafkaAdminClient
from kafka.admin import AlterConfigOp, ConfigResource, ConfigResourceType
from kafka.errors import KafkaError, TopicAlreadyExistsError, for_code

from runtime.kafka_security import kafka_python_security
from runtime.logfmt import log_event
from runtime.settings import Settings


class StackError(RuntimeError):
    """A stack step failed; the message says what went wrong and what to do about it."""



log = logging.getLogger("devkit.stack")

TIMESTAMP_TYPE = "message.timestamp.type"
LOG_APPEND_TIME = "LogAppendTime"
CLEANUP_POLICY = "cleanup.policy"


def required_configs(settings: Settings) -> dict[str, dict[str, str]]:
    """Topic -> the configuration it must have: the inputs take the broker's time
    (``LogAppendTime``), the account-status topic is compacted. Other topics: the cluster's
    defaults."""
    configs = {topic: {TIMESTAMP_TYPE: LOG_APPEND_TIME} for topic in settings.topics.inputs}
    configs[settings.topics.account_status] = {CLEANUP_POLICY: "compact"}
    return configs


def set_timestamp_command(bootstrap: str, topic: str) -> str:
    """The Kafka CLI command that switches ``topic`` to ``LogAppendTime`` (for messages)."""
    return (f"kafka-configs.sh --bootstrap-server {bootstrap} --alter --entity-type topics "
            f"--entity-name {topic} --add-config {TIMESTAMP_TYPE}={LOG_APPEND_TIME}")


@contextmanager
def admin_client(settings: Settings, timeout: float = 30.0) -> Iterator[KafkaAdminClient]:
    """A KafkaAdminClient for ``settings.kafka_bootstrap``, closed on exit."""
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=settings.kafka_bootstrap.split(","),
            client_id="billing-stack",
            bootstrap_timeout_ms=int(timeout * 1000),
            request_timeout_ms=int(timeout * 1000),
            **kafka_python_security(settings),
        )
    except KafkaError as error:
        raise StackError(
            f"Kafka at {settings.kafka_bootstrap} does not answer ({error}). "
            "Start the local stack with `billing stack up`, or fix BILLING_KAFKA_BOOTSTRAP."
        ) from None
    try:
        yield admin
    finally:
        admin.close()


def partition_counts(admin: KafkaAdminClient, topics: Iterable[str]) -> dict[str, int]:
    """Topic -> partition count, for those of ``topics`` that exist."""
    counts = {}
    for topic in admin.describe_topics(list(topics)):
        if topic["error_code"] == 0:
            counts[topic["name"]] = len(topic["partitions"])
    return counts


def ensure_topics(settings: Settings) -> list[str]:
    """Create the missing ``settings.topics.all``; return the names created (idempotent).

    Raises StackError when an existing input topic has another partition count than
    ``settings.partitions``; other topics with a different count are only logged.
    """
    wanted = settings.topics.all
    with admin_client(settings) as admin:
        existing = partition_counts(admin, wanted)
        missing = [topic for topic in wanted if topic not in existing]
        created = []
        if missing:
            configs = required_configs(settings)
            response = admin.create_topics(
                {
                    topic: {
                        "num_partitions": settings.partitions,
                        "replication_factor": settings.replication_factor,
                        "configs": configs.get(topic, {}),
                    }
                    for topic in missing
                },
                raise_errors=False,
                wait_for_metadata=True,
            )
            for result in response["topics"]:
                error = for_code(result["error_code"])
                if error is TopicAlreadyExistsError:  # created concurrently: checked below
                    continue
                if result["error_code"] != 0:
                    raise StackError(
                        f"Creating topic {result['name']} on {settings.kafka_bootstrap} failed: "
                        f"{error.__name__}: {result['error_message']}"
                    )
                created.append(result["name"])
            existing = partition_counts(admin, wanted)
        _check_partitions(settings, existing)
        fixed = _fix_configs(settings, admin)
    log_event(
        log,
        "topics.ready",
        created=",".join(created) or "-",
        fixed=",".join(fixed) or "-",
        partitions=settings.partitions,
        bootstrap=settings.kafka_bootstrap,
    )
    return created


def _fix_configs(settings: Settings, admin: KafkaAdminClient) -> list[str]:
    """Set :func:`required_configs` where a topic lacks them (a topic created earlier, by hand
    or by an older version): one incremental alter-config, which changes only those keys.
    Returns the topics changed."""
    required = required_configs(settings)
    current = topic_configs(admin, required, keys={k for c in required.values() for k in c})
    changes = {topic: {key: value for key, value in wanted.items()
                       if current[topic].get(key) != value}
               for topic, wanted in required.items()}
    changes = {topic: change for topic, change in changes.items() if change}
    if not changes:
        return []
    try:
        response = admin.alter_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic,
                            {key: (AlterConfigOp.SET, value) for key, value in change.items()})
             for topic, change in changes.items()],
            raise_on_unknown=False, incremental=True)
        results = response.get("topic", {})
    except KafkaError as error:
        results = dict.fromkeys(changes, repr(error))
    failed = {topic: results.get(topic, "no answer") for topic in changes
              if results.get(topic) != "OK"}
    if failed:
        fixes = "; ".join(
            set_timestamp_command(settings.kafka_bootstrap, topic)
            if TIMESTAMP_TYPE in changes[topic]
            else f"set {', '.join(f'{k}={v}' for k, v in changes[topic].items())} on {topic}"
            for topic in failed)
        raise StackError(
            f"Could not set the required configuration of {', '.join(failed)} on "
            f"{settings.kafka_bootstrap}: {'; '.join(f'{t}: {e}' for t, e in failed.items())}. "
            "The principal needs ALTER_CONFIGS and DESCRIBE_CONFIGS on the topics "
            f"(docs/operations.md, ACLs), or set it yourself: {fixes} (on a managed cluster: "
            "the same topic property in the provider's console or Terraform).")
    _wait_for_configs(admin, changes)
    for topic, change in changes.items():
        log_event(log, "topics.config_fixed", level=logging.WARNING, topic=topic,
                  **{key.replace(".", "_"): value for key, value in change.items()},
                  was=",".join(f"{key}={current[topic].get(key)}" for key in change))
    return list(changes)


def _wait_for_configs(admin: KafkaAdminClient, wanted: dict[str, dict[str, str]],
                      timeout: float = 30.0) -> None:
    """Until the brokers describe ``wanted`` (topic -> configs): an alter-config is answered
    once the controller has it, and the brokers apply it a moment later, so a worker started
    right after could still see the old value."""
    keys = {key for configs in wanted.values() for key in configs}
    deadline = time.monotonic() + timeout
    while True:
        current = topic_configs(admin, wanted, keys)
        if all(current[topic].get(key) == value
               for topic, configs in wanted.items() for key, value in configs.items()):
            return
        if time.monotonic() > deadline:
            raise StackError(f"The brokers still describe {current} after {timeout:.0f}s; "
                             f"wanted {wanted}. Run `billing stack topics` again.")
        time.sleep(0.2)


def topic_configs(admin: KafkaAdminClient, topics: Iterable[str],
                  keys: Iterable[str] | None = None) -> dict[str, dict[str, str]]:
    """Topic -> {config key: effective value} (defaults included; only ``keys`` if given). A
    topic whose configuration could not be read (it does not exist, or the principal lacks
    DESCRIBE_CONFIGS: Kafka then answers with an error the client does not raise) maps to {}."""
    names = list(topics)
    wanted = None if keys is None else sorted(keys)
    response = admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, name, wanted) for name in names],
        config_filter="all",
    )
    described = response.get("topic", {})
    return {
        name: {key: entry["value"] for key, entry in described.get(name, {}).items()}
        for name in names
    }


def _check_partitions(settings: Settings, counts: dict[str, int]) -> None:
    mismatched = {topic: count for topic, count in counts.items() if count != settings.partitions}
    inputs = {topic: mismatched[topic] for topic in settings.topics.inputs if topic in mismatched}
    if inputs:
        found = ", ".join(f"{topic} has {count}" for topic, count in inputs.items())
        raise StackError(
            f"Input topics must be co-partitioned with BILLING_PARTITIONS={settings.partitions}, "
            f"but {found}. Either set BILLING_PARTITIONS to match the existing topics, or delete "
            "and recreate them (for the local stack: `billing stack down` and remove "
            f"{settings.data_dir / 'kafka'})."
        )
    for topic, count in mismatched.items():
        log_event(
            log,
            "topics.partition_mismatch",
            level=logging.WARNING,
            topic=topic,
            partitions=count,
            expected=settings.partitions,
        )


def describe_topic_configs(settings: Settings, topics: Iterable[str]) -> dict[str, dict[str, str]]:
    """Topic -> {config key: value} for every config (defaults included), e.g. for tests that
    check a changelog topic is compacted (``cleanup.policy``)."""
    with admin_client(settings) as admin:
        return topic_configs(admin, topics)
