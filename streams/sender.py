"""Records to Kafka in batches, on the app's own aiokafka producer.

Faust's ``Topic.send`` costs ~85 µs per message (its FutureMessage, callbacks, the producer
buffer); aiokafka's ``send_batch`` ~2.3 µs per record. The worker's outputs and changelog records
go through :class:`BatchSender` instead: each record is appended to the open batch of its
topic-partition, and one drain task per topic-partition submits the open batches in order, one
at a time. While aiokafka holds the previous batch of that topic-partition (its linger, or a
request in flight), new records gather in the next one, so a burst of events costs a few batches,
not one send per record.

:meth:`BatchSender.send` returns the delivery future of the record's batch: the commit queue waits
for it exactly as it waited for Faust's (``streams/commit.py``); its result is the offset of the
batch's last record, which the changelog's persisted offset needs. Records of one topic-partition
reach Kafka in the order they were sent. A batch lost with the process (not yet submitted) held
nothing acknowledged: its inputs are redelivered.

Under ``--guarantee exactly_once`` too: Kafka transactions hold only the changelog records and
the input offsets (the commit queue sends the changelog through Faust, ``streams/commit.py``).
Faust picks a record's transaction by its destination partition, from its consumer's metadata,
which knows the input and changelog topics only: its own ``Topic.send`` of an output went out of
any transaction all the same (checked: no transaction marker on the output topics), and a
month-close broadcast to every control partition joined transactions that its cause does not
commit. So these sends serve both guarantees, outside any transaction, at least once; the commit
queue's order (outputs delivered before the changelog and the offsets) is what makes that safe.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2
from faust.types import TP


def partition_of(key: bytes, partitions: int) -> int:
    """Kafka's default partitioner (murmur2), as every producer of the input topics uses."""
    return _positive_hash(key) % partitions


@lru_cache(maxsize=1 << 16)
def _positive_hash(key: bytes) -> int:
    """aiokafka's murmur2 is pure Python, ~4.3 µs a key; the worker sends about three records
    per event keyed by the same account (output, rated usage, status), so the recent ones are
    kept (~10 MB at most)."""
    return murmur2(key) & 0x7FFFFFFF


class _OpenBatch:
    """Records appended to one topic-partition, not yet submitted."""

    __slots__ = ("builder", "delivered", "records")

    def __init__(self, builder: Any) -> None:
        self.builder = builder
        self.records = 0
        self.delivered: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def resolve(self, sent: asyncio.Future[Any]) -> None:
        """aiokafka confirmed (or refused) the batch: the offset of its last record."""
        if sent.cancelled():
            self.delivered.cancel()
        elif sent.exception() is not None:
            self.delivered.set_exception(sent.exception())  # type: ignore[arg-type]
        else:
            self.delivered.set_result(sent.result().offset + self.records - 1)


class BatchSender:
    """Batched sends of keyed records (see the module docstring)."""

    def __init__(self, producer: Callable[[], AIOKafkaProducer]) -> None:
        self._producer = producer  # looked up at the first send: Faust starts it with the app
        self._open: dict[TP, deque[_OpenBatch]] = {}  # the last one takes new records
        self._partitions: dict[str, int] = {}
        self._drains: set[asyncio.Task[None]] = set()  # running drain tasks (kept referenced)

    async def send(self, topic: str, key: bytes, value: bytes | None,
                   partition: int | None = None) -> asyncio.Future[int]:
        """Queue one record (``value`` None: a tombstone) for ``partition``, by default the
        key's; return its batch's delivery future."""
        if partition is None:
            partition = partition_of(key, await self.partition_count(topic))
        tp = TP(topic, partition)
        batches = self._open.get(tp)
        if batches is None:
            batches = self._open[tp] = deque()
            drain = asyncio.get_running_loop().create_task(self._drain(tp, batches))
            self._drains.add(drain)
            drain.add_done_callback(self._drains.discard)
        batch = batches[-1] if batches else None
        if batch is None or batch.builder.append(timestamp=None, key=key, value=value) is None:
            batch = self._new_batch()  # none open, or the last one is full or submitted
            batches.append(batch)
            batch.builder.append(timestamp=None, key=key, value=value)  # a lone record fits
        batch.records += 1
        return batch.delivered

    def _new_batch(self) -> _OpenBatch:
        return _OpenBatch(self._producer().create_batch())

    async def partition_count(self, topic: str) -> int:
        """``topic``'s partitions, asked of the producer's metadata once."""
        count = self._partitions.get(topic)
        if count is None:
            count = self._partitions[topic] = len(await self._producer().partitions_for(topic))
        return count

    async def _drain(self, tp: TP, batches: deque[_OpenBatch]) -> None:
        """Submit ``tp``'s batches in order until none is left; aiokafka holds a submission
        while its previous batch of ``tp`` is not yet on its way, and records go on gathering."""
        producer = self._producer()
        while batches:
            batch = batches[0]
            batch.builder.close()  # later records go to a new batch
            try:
                sent = await producer.send_batch(batch.builder, tp.topic, partition=tp.partition)
            except Exception as error:  # the producer refused it: the commit queue raises it
                batch.delivered.set_exception(error)
            else:
                sent.add_done_callback(batch.resolve)
            batches.popleft()
        del self._open[tp]  # the next record opens a new batch, and a new drain
