"""The publishing job's rated usage: one ``RatedUsageBatch`` message per batch and partition,
split only when it would be too large, in the order the events were rated."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from billing.ledger import Ledger
from runtime.rules_files import load_config, load_pricebook
from runtime.settings import load_settings
from schemas.codec import Codec
from streams import publish
from streams.metrics import WorkerMetrics
from streams.publish import Publisher
from tests.test_sink_samples import rated

codec = Codec()


class RecordingSender:
    """Keeps what is sent; the usage-rated topic has ``partitions`` partitions."""

    def __init__(self, partitions: int) -> None:
        self.partitions = partitions
        self.sent: list[tuple[str, bytes, bytes | None, int | None]] = []

    async def send(self, topic: str, key: bytes, value: bytes | None,
                   partition: int | None = None) -> Any:
        self.sent.append((topic, key, value, partition))
        return len(self.sent)

    async def partition_count(self, topic: str) -> int:
        return self.partitions


class NoTopics:
    def topic(self, name: str) -> None:
        """Dead letters are not sent here."""


def published(records: list[dict[str, Any]], partition: int, partitions: int = 4
              ) -> tuple[list[Any], RecordingSender]:
    settings = load_settings({})
    sender = RecordingSender(partitions)
    publisher = Publisher(NoTopics(), sender, codec, settings,
                          Ledger(load_config(None), load_pricebook(None)), WorkerMetrics(), "w")
    deliveries = asyncio.run(publisher.rated_usage(partition, records))
    return deliveries, sender


def test_a_batch_rated_usage_is_one_message_on_its_partition() -> None:
    records = [rated(n) for n in range(5)]
    deliveries, sender = published(records, 2)
    assert deliveries == [1]
    [(topic, key, value, partition)] = sender.sent
    assert (topic, key, partition) == ("billing.usage-rated", b"", 2)
    assert value is not None and codec.decode("usage_rated", value) == {"records": records}


def test_nothing_rated_sends_nothing() -> None:
    deliveries, sender = published([], 0)
    assert deliveries == [] and sender.sent == []


def test_fewer_partitions_on_the_topic_wrap_around() -> None:
    _, sender = published([rated(1)], 3, partitions=2)
    assert [partition for *_, partition in sender.sent] == [1]


def test_a_large_batch_is_split_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past the record bound, then halved while a message is over the byte bound."""
    monkeypatch.setattr(publish, "RATED_BATCH_RECORDS", 4)
    monkeypatch.setattr(publish, "RATED_BATCH_BYTES", 250)
    records = [rated(n) for n in range(10)]
    single = len(codec.encode("usage_rated", {"records": records[:1]}))
    assert 2 * single < 250 < 4 * single  # so a message of 4 is halved, one of 2 is not
    _, sender = published(records, 0)
    batches = [codec.decode("usage_rated", value)["records"] for _, _, value, _ in sender.sent]
    assert [len(batch) for batch in batches] == [2, 2, 2, 2, 2]
    assert [record for batch in batches for record in batch] == records
