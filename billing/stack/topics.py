"""The project's Kafka topics: created up front, because the broker never auto-creates them.

The input topics (``settings.topics.inputs``) are consumed together by key, so they must be
co-partitioned: same partition count, same partitioner. A mismatch cannot be repaired by adding
partitions (that would move keys), so it stops the run with a message instead of being papered over.
Faust creates its own (compacted) changelog topics itself; nothing is needed here for them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType
from kafka.errors import KafkaError, TopicAlreadyExistsError, for_code

from billing.kafka_security import kafka_python_security
from billing.settings import Settings
from billing.stack.logfmt import log_event
from billing.stack.process import StackError

log = logging.getLogger("billing.stack")


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
            response = admin.create_topics(
                {
                    topic: {
                        "num_partitions": settings.partitions,
                        "replication_factor": settings.replication_factor,
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
    log_event(
        log,
        "topics.ready",
        created=",".join(created) or "-",
        partitions=settings.partitions,
        bootstrap=settings.kafka_bootstrap,
    )
    return created


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
    names = list(topics)
    with admin_client(settings) as admin:
        response = admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name) for name in names],
            config_filter="all",
        )
    described = response.get("topic", {})
    return {
        name: {key: entry["value"] for key, entry in described.get(name, {}).items()}
        for name in names
    }
