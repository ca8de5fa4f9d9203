"""The worker's batched sends (``streams/sender.py``) on the real broker: records reach their
partition in the order sent, batches that fill are followed by new ones, tombstones go through, and
each delivery future gives the offset of its batch's last record."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from runtime.settings import Settings
from streams.sender import BatchSender, partition_of

pytestmark = pytest.mark.integration


async def _send_and_read(settings: Settings, topic: str, records: list[tuple[bytes, bytes | None]],
                         max_batch_size: int) -> tuple[list[int], list[int], dict[int, list]]:
    """Send ``records`` (key, value) through a BatchSender: the partitions it chose, the offsets
    their delivery futures gave, and what each partition holds, read back."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=5,
                                max_batch_size=max_batch_size, acks=-1)
    await producer.start()
    try:
        sender = BatchSender(lambda: producer)
        futures = []
        for key, value in records:
            futures.append(await sender.send(topic, key, value))
            if len(futures) % 50 == 0:
                await asyncio.sleep(0)  # let the drain tasks submit while records keep coming
        offsets = await asyncio.wait_for(asyncio.gather(*futures), 60)
        partitions = [partition_of(key, 3) for key, _ in records]
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=settings.kafka_bootstrap,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    held: dict[int, list] = {0: [], 1: [], 2: []}
    try:
        while sum(map(len, held.values())) < len(records):
            for tp, messages in (await consumer.getmany(timeout_ms=10_000)).items():
                held[tp.partition] += messages
    finally:
        await consumer.stop()
    return partitions, list(offsets), held


def test_records_arrive_in_order_in_their_key_partition_with_their_batch_offset(
        stack: Settings) -> None:
    topic = f"sender-test-{uuid.uuid4().hex[:8]}"
    asyncio.run(_create(stack, topic))
    records: list[tuple[bytes, bytes | None]] = [
        (f"acct-{n % 17}".encode(), None if n % 97 == 0 else f"value-{n}".encode() * 40)
        for n in range(3_000)]
    # 16 KiB batches: ~3 MB of records fill many, so full batches are followed by new ones.
    partitions, offsets, held = asyncio.run(_send_and_read(stack, topic, records, 16 * 1024))
    for partition, messages in held.items():
        sent = [record for record, chosen in zip(records, partitions, strict=True)
                if chosen == partition]
        assert [(message.key, message.value) for message in messages] == sent
        assert [message.offset for message in messages] == list(range(len(sent)))
    batch_ends: dict[int, set[int]] = {0: set(), 1: set(), 2: set()}
    for partition, offset in zip(partitions, offsets, strict=True):
        batch_ends[partition].add(offset)
    for partition, ends in batch_ends.items():
        # Each future gives its batch's last offset: the partition's last record ends the last
        # batch, and there were several batches per partition, not one send per record.
        assert max(ends) == len(held[partition]) - 1
        assert 1 < len(ends) < len(held[partition]) / 10
    position = {0: 0, 1: 0, 2: 0}
    for partition, offset in zip(partitions, offsets, strict=True):
        assert offset >= position[partition]  # a record's batch ends at or after the record
        position[partition] += 1


async def _create(settings: Settings, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
    finally:
        await admin.close()
